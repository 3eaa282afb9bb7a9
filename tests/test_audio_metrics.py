"""Tagging metrics on hand-computed examples and chunked (16-window) evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aug_attn_tasks.audio.datasets import ClipDataset
from aug_attn_tasks.audio.metrics import average_precision, roc_auc, tagging_metrics
from aug_attn_tasks.audio.recipe import TaggingModule


def test_roc_auc_and_average_precision_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    labels = np.array([1, 0, 1, 0])
    # Positive-negative pairs ranked correctly: (0.9>0.8), (0.9>0.6), (0.7>0.6); wrong: (0.7<0.8) -> 3/4.
    assert roc_auc(scores, labels) == pytest.approx(0.75)
    # Precision at each positive: 1/1 at rank 1, 2/3 at rank 3; AP = (1 + 2/3) / 2.
    assert average_precision(scores, labels) == pytest.approx(5 / 6)


def test_ties_count_half():
    scores = np.array([0.5, 0.5, 0.1])
    labels = np.array([1, 0, 0])
    assert roc_auc(scores, labels) == pytest.approx(0.75)  # one tie (1/2) and one win, over 2 pairs
    assert average_precision(scores, labels) == pytest.approx(0.5)  # threshold 0.5 keeps both: precision 1/2


def test_tags_without_positives_are_reported_and_excluded():
    scores = np.array([[0.9, 0.2, 0.3], [0.1, 0.4, 0.2], [0.8, 0.1, 0.9]])
    targets = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1]], dtype=np.float32)
    result = tagging_metrics(scores, targets, ["a", "b", "c"])
    assert result["excluded"] == {"b": "no positive clip", "c": "no negative clip"}
    assert list(result["per_tag"]) == ["a"]
    assert result["roc_auc"] == pytest.approx(1.0) and result["pr_auc"] == pytest.approx(1.0)


def test_chunked_evaluation_averages_sigmoid_over_16_evenly_spaced_windows():
    clip = np.arange(1000, dtype=np.float32)
    dataset = ClipDataset(lambda i: clip, np.zeros((1, 2), dtype=np.float32), chunk=100, num_chunks=16)
    windows, _ = dataset[0]
    assert windows.shape == (16, 100)
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
