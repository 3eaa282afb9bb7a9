"""Tagging metrics as the field reports them: macro ROC-AUC and PR-AUC (average precision) over tags.

Tags without both a positive and a negative clip in the evaluated split have no defined ROC-AUC
(and a trivial average precision); they are listed in ``excluded`` and left out of the macro
averages rather than failing the evaluation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata

__all__ = ["roc_auc", "average_precision", "tagging_metrics"]


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of one tag, ``scores, labels: (N,)``: the Mann-Whitney statistic
    ``P(score_pos > score_neg) + 0.5 P(tie)``, with average ranks for ties."""
    labels = labels.astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        raise ValueError(f"ROC-AUC needs positives and negatives, got {positives} and {negatives}")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision of one tag, ``sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds
    (scikit-learn's definition, no interpolation); ``scores, labels: (N,)``."""
    labels = labels.astype(np.float64)
    if labels.sum() == 0:
        raise ValueError("average precision needs at least one positive")
    order = np.argsort(-scores, kind="mergesort")
    ranked_scores, ranked = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(ranked_scores)), ranked.shape[0] - 1]  # end of each tie group
    tp, seen = np.cumsum(ranked)[last], last + 1.0
    precision, recall = tp / seen, tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def tagging_metrics(scores: np.ndarray, targets: np.ndarray, tags: list[str]) -> dict[str, Any]:
    """Macro ROC-AUC and PR-AUC of ``scores, targets: (N, T)``.

    Returns ``{"roc_auc", "pr_auc", "per_tag": {tag: {"roc_auc", "pr_auc", "positives"}}, "excluded": {tag: reason}}``;
    the macro values are NaN when every tag is excluded.
    """
    if scores.shape != targets.shape or scores.ndim != 2 or scores.shape[1] != len(tags):
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must both be (N, {len(tags)})")
    per_tag, excluded = {}, {}
    for t, tag in enumerate(tags):
        positives = int(targets[:, t].sum())
        if positives == 0 or positives == targets.shape[0]:
            excluded[tag] = "no positive clip" if positives == 0 else "no negative clip"
            continue
        per_tag[tag] = {
            "roc_auc": roc_auc(scores[:, t], targets[:, t]),
            "pr_auc": average_precision(scores[:, t], targets[:, t]),
            "positives": positives,
        }
    macro = {
        name: float(np.mean([m[name] for m in per_tag.values()])) if per_tag else float("nan") for name in ("roc_auc", "pr_auc")
    }
    return {**macro, "per_tag": per_tag, "excluded": excluded}
