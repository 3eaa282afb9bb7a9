"""Tagging metrics as the field reports them: macro ROC-AUC and PR-AUC (average precision) over tags.

Both come from torchmetrics' exact (``thresholds=None``) binary curves: ROC-AUC is the trapezoidal
area under the ROC curve over the distinct score thresholds, which equals the Mann-Whitney statistic
``P(s_pos > s_neg) + 0.5 P(s_pos = s_neg)``; average precision is ``sum_n (R_n - R_{n-1}) P_n`` over
the distinct thresholds (scikit-learn's definition, no interpolation), as Won et al. 2020 report it.

Tags without both a positive and a negative clip in the evaluated split have no defined ROC-AUC
(and a trivial average precision); they are listed in ``excluded`` and left out of the macro
averages rather than failing the evaluation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc, binary_average_precision

__all__ = ["tagging_metrics", "PER_TAG_FILE"]

PER_TAG_FILE = "per_tag_metrics.tsv"  # the per-tag test table of a run folder (written by the recipe's report)


def tagging_metrics(scores: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor, tags: list[str]) -> dict[str, Any]:
    """Macro ROC-AUC and PR-AUC of ``scores, targets: (N, T)``; ``scores`` are probabilities in [0, 1].

    Returns ``{"roc_auc", "pr_auc", "per_tag": {tag: {"roc_auc", "pr_auc", "positives"}}, "excluded": {tag: reason}}``;
    the macro values are NaN when every tag is excluded.
    """
    # float64: torchmetrics treats scores outside [0, 1] as logits, and float32 scores of close
    # clips could tie where the model did not.
    scores = torch.as_tensor(scores, dtype=torch.float64)
    targets = torch.as_tensor(targets)
    if scores.shape != targets.shape or scores.ndim != 2 or scores.shape[1] != len(tags):
        raise ValueError(f"scores {tuple(scores.shape)} and targets {tuple(targets.shape)} must both be (N, {len(tags)})")
    if not torch.isfinite(scores).all() or scores.min() < 0 or scores.max() > 1:
        raise ValueError("tagging scores must be finite probabilities in [0, 1]")
    if not ((targets == 0) | (targets == 1)).all():
        raise ValueError("tagging targets must be 0 or 1")
    targets = targets.long()
    positives = targets.sum(dim=0).tolist()
    excluded = {
        tag: "no positive clip" if count == 0 else "no negative clip"
        for tag, count in zip(tags, positives)
        if count in (0, targets.shape[0])
    }
    per_tag = {
        tag: {
            "roc_auc": float(binary_auroc(scores[:, t], targets[:, t], thresholds=None)),
            "pr_auc": float(binary_average_precision(scores[:, t], targets[:, t], thresholds=None)),
            "positives": int(positives[t]),
        }
        for t, tag in enumerate(tags)
        if tag not in excluded
    }
    macro = {
        name: float(np.mean([m[name] for m in per_tag.values()])) if per_tag else float("nan") for name in ("roc_auc", "pr_auc")
    }
    return {**macro, "per_tag": per_tag, "excluded": excluded}
