"""Robustness tests of a tagger or sound classifier, as Won et al. 2020 measure them (their section 5,
after McFee et al.'s MUDA deformations): the test split evaluated again with every clip perturbed,
over a grid of strengths.

The ``robustness`` role of the tagging task (:mod:`aug_attn_tasks.registry`): the kinds and their
default grids, the config change that perturbs the test clips, and the metrics to report; the loop
over strengths is :func:`aug_attn_tasks.robustness.robustness` (``aug-attn test CKPT --perturb
time_stretch|pitch_shift|compression|white_noise [--strengths 0.1,0.2]``).
"""

from __future__ import annotations

import json
from typing import Any

from aug_attn_tasks.audio.transforms import PERTURBATIONS

__all__ = ["PERTURBATIONS", "perturb_overrides", "metric_names"]


def perturb_overrides(kind: str, strength: float) -> list[str]:
    """The ``--section.key VALUE`` overrides that perturb every test clip by ``kind`` at ``strength``
    (``data.perturb``, :func:`~aug_attn_tasks.audio.transforms.perturb`)."""
    return ["--data.perturb", json.dumps({"kind": kind, "strength": float(strength)})]


def metric_names(config: dict[str, Any]) -> tuple[str, ...]:
    """The test metrics a robustness table reports: ROC-AUC and PR-AUC of a tagger, accuracy and
    macro accuracy of a single-label classifier."""
    return ("test/roc_auc", "test/pr_auc") if config["data"]["multi_label"] else ("test/accuracy", "test/macro_accuracy")
