"""Tagging metrics against the textbook definitions (hand-computed cases, ties, random data) and
chunked (16-window) evaluation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from aug_attn_tasks.audio.datasets import ClipDataset
from aug_attn_tasks.audio.metrics import tagging_metrics
from aug_attn_tasks.audio.recipe import TaggingModule

TOL = 1e-6  # torchmetrics returns the areas in float32


def pairwise_roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Textbook ROC-AUC: the share of (positive, negative) pairs ranked correctly, ties counting 1/2."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = [1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)]
    return float(np.mean(wins))


def threshold_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Textbook average precision: ``sum_t (R_t - R_prev) P_t`` over the distinct thresholds t,
    where ``P_t, R_t`` are precision and recall of the clips scored >= t."""
    total, ap, prev_recall = labels.sum(), 0.0, 0.0
    for t in sorted(set(scores.tolist()), reverse=True):
        kept = scores >= t
        recall = labels[kept].sum() / total
        ap += (recall - prev_recall) * labels[kept].sum() / kept.sum()
        prev_recall = recall
    return float(ap)


def one_tag(scores: list[float], labels: list[int]) -> dict:
    result = tagging_metrics(np.array(scores)[:, None], np.array(labels)[:, None], ["t"])
    return result["per_tag"]["t"]


def test_roc_auc_and_average_precision_by_hand():
    # Positive-negative pairs ranked correctly: (0.9>0.8), (0.9>0.6), (0.7>0.6); wrong: (0.7<0.8) -> 3/4.
    # Precision at each positive: 1/1 at rank 1, 2/3 at rank 3; AP = (1 + 2/3) / 2.
    m = one_tag([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0])
    assert m["roc_auc"] == pytest.approx(0.75) and m["pr_auc"] == pytest.approx(5 / 6)
    assert m["positives"] == 2


def test_ties_count_half():
    m = one_tag([0.5, 0.5, 0.1], [1, 0, 0])
    assert m["roc_auc"] == pytest.approx(0.75)  # one tie (1/2) and one win, over 2 pairs
    assert m["pr_auc"] == pytest.approx(0.5)  # threshold 0.5 keeps both: precision 1/2
    # All scores tied: chance ROC-AUC, AP = the share of positives.
    m = one_tag([0.3] * 5, [1, 0, 0, 1, 0])
    assert m["roc_auc"] == pytest.approx(0.5) and m["pr_auc"] == pytest.approx(2 / 5)


def test_random_scores_with_ties_match_the_textbook_definitions():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=(40, 5)) / 5.0  # 6 distinct values: many ties
    targets = (rng.random((40, 5)) < 0.35).astype(np.int64)
    result = tagging_metrics(scores, targets, list("abcde"))
    assert result["excluded"] == {}
    for t, tag in enumerate("abcde"):
        assert result["per_tag"][tag]["roc_auc"] == pytest.approx(pairwise_roc_auc(scores[:, t], targets[:, t]), abs=TOL)
        assert result["per_tag"][tag]["pr_auc"] == pytest.approx(threshold_average_precision(scores[:, t], targets[:, t]), abs=TOL)
    roc = np.mean([pairwise_roc_auc(scores[:, t], targets[:, t]) for t in range(5)])
    assert result["roc_auc"] == pytest.approx(roc, abs=TOL)


def test_tags_without_positives_are_reported_and_excluded():
    scores = np.array([[0.9, 0.2, 0.3], [0.1, 0.4, 0.2], [0.8, 0.1, 0.9]])
    targets = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1]], dtype=np.float32)
    result = tagging_metrics(scores, targets, ["a", "b", "c"])
    assert result["excluded"] == {"b": "no positive clip", "c": "no negative clip"}
    assert list(result["per_tag"]) == ["a"]
    assert result["roc_auc"] == pytest.approx(1.0) and result["pr_auc"] == pytest.approx(1.0)
    nothing = tagging_metrics(scores[:, 1:2], targets[:, 1:2], ["b"])
    assert np.isnan(nothing["roc_auc"]) and np.isnan(nothing["pr_auc"]) and nothing["excluded"] == {"b": "no positive clip"}


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match=r"must both be \(N, 2\)"):
        tagging_metrics(np.zeros((3, 2)), np.zeros((3, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="probabilities"):
        tagging_metrics(np.array([[np.nan], [0.5]]), np.array([[1], [0]]), ["a"])
    with pytest.raises(ValueError, match="probabilities"):
        tagging_metrics(np.array([[3.0], [0.5]]), np.array([[1], [0]]), ["a"])  # logits, not probabilities
    with pytest.raises(ValueError, match="0 or 1"):
        tagging_metrics(np.array([[0.2], [0.5]]), np.array([[2], [0]]), ["a"])


def test_chunked_evaluation_averages_sigmoid_over_16_evenly_spaced_windows():
    clip = np.arange(1000, dtype=np.float32)
    dataset = ClipDataset(lambda i: clip, np.zeros((1, 2), dtype=np.float32), chunk=100, num_chunks=16)
    windows, _, index = dataset[0]
    assert windows.shape == (16, 100) and int(index) == 0
    assert windows[:, 0].tolist() == [round(i * 900 / 15) for i in range(16)]

    config = {
        "data": {"tags": ["x", "y"], "multi_label": True},
        "model": {"name": "samplecnn", "channels": [4, 4], "dropout": 0.0},
    }
    module = TaggingModule(config).eval()
    with torch.no_grad():
        scores, logits = module.clip_scores(windows.unsqueeze(0), batch_windows=5)
        expected = torch.sigmoid(module(windows)).mean(dim=0)
    assert logits.shape == (1, 16, 2)
    torch.testing.assert_close(scores[0], expected)
