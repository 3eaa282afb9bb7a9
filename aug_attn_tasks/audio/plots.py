"""The tagging task's picture of a run folder for ``aug-attn plot`` (:mod:`aug_attn_tasks.plot`):
``roc_auc_per_tag.png``, per-tag test ROC-AUC bars from ``per_tag_metrics.tsv``, the chance line's
legend right of the axes (bar charts' legends never cover bars)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from aug_attn_tasks.audio.metrics import PER_TAG_FILE
from aug_attn_tasks.viz import legend_outside, pyplot

__all__ = ["RUN_FILES", "run_figures"]

RUN_FILES = (PER_TAG_FILE,)


def _roc_auc_figure(path: Path) -> Any:
    plt = pyplot()
    with open(path, encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle, delimiter="\t") if r["roc_auc"] != "nan"]
    rows.sort(key=lambda r: -float(r["roc_auc"]))
    fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(rows) + 1), 3.6))
    ax.bar([r["tag"] for r in rows], [float(r["roc_auc"]) for r in rows], color="tab:blue")
    ax.axhline(0.5, color="0.4", linestyle="--", linewidth=1, label="chance")
    ax.set_ylim(0, 1)
    ax.set_ylabel("test ROC-AUC")
    ax.tick_params(axis="x", rotation=90)
    legend_outside(ax)
    return fig


def run_figures(run_dir: Path) -> list[tuple[str, Any]]:
    """``[(file name, figure)]`` of the pictures that ``run_dir``'s files allow (none: ``[]``)."""
    path = run_dir / PER_TAG_FILE
    return [("roc_auc_per_tag.png", _roc_auc_figure(path))] if path.is_file() else []
