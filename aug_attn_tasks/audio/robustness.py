"""Robustness of a trained tagger or classifier, as Won et al. 2020 measure it (their section 5,
after McFee et al.'s MUDA deformations): the test split evaluated again with every clip perturbed,
over a grid of strengths.

``aug-attn test CKPT --perturb time_stretch|pitch_shift|compression|white_noise [--strengths 0.1,0.2]``
prints the metric at each strength and writes ``<checkpoint dir>/eval/robustness_<kind>.tsv``; each
strength's own reports (per-tag table or confusion matrix) go to ``eval/robustness_<kind>/<strength>/``,
so the clean test's reports in ``eval/`` stay as they were.
The perturbations and their default grids: :data:`~aug_attn_tasks.audio.transforms.PERTURBATIONS`.
"""

from __future__ import annotations

import json
from pathlib import Path

from aug_attn_tasks.audio.transforms import PERTURBATIONS
from aug_attn_tasks.recipes import load_checkpoint

__all__ = ["robustness"]


def robustness(checkpoint: str, kind: str, strengths: list[float] | None = None, overrides: list[str] | None = None) -> list[dict[str, float]]:
    """Test metrics of ``checkpoint`` with the test clips perturbed by ``kind`` at each strength
    (default: its grid); ``overrides`` as for ``aug-attn test``. Returns one row per strength."""
    from aug_attn_tasks.train import evaluate

    if kind not in PERTURBATIONS:
        raise ValueError(f"--perturb {kind}: expected one of {', '.join(PERTURBATIONS)}")
    _, config = load_checkpoint(checkpoint)
    if config["task"] != "tagging":
        raise ValueError(f"{checkpoint}: --perturb perturbs audio; this checkpoint is of task {config['task']!r}")
    columns = ("test/roc_auc", "test/pr_auc") if config["data"]["multi_label"] else ("test/accuracy", "test/macro_accuracy")
    rows, folder = [], Path(checkpoint).resolve().parent / "eval"
    for strength in strengths if strengths is not None else PERTURBATIONS[kind]:
        spec = json.dumps({"kind": kind, "strength": float(strength)})
        metrics = evaluate(checkpoint, [*(overrides or []), "--data.perturb", spec], folder / f"robustness_{kind}" / f"{float(strength):g}")
        rows.append({"strength": float(strength), **{c: metrics[c] for c in columns}})
    table = ["strength\t" + "\t".join(c.split("/")[1] for c in columns)]
    table += [f"{row['strength']:.4g}\t" + "\t".join(f"{row[c]:.4f}" for c in columns) for row in rows]
    out = folder / f"robustness_{kind}.tsv"
    out.write_text("\n".join(table) + "\n")
    print(f"robustness to {kind} ({out}):\n" + "\n".join(table))
    return rows
