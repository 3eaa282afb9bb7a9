"""The point cloud task's picture of a run folder for ``aug-attn plot`` (:mod:`aug_attn_tasks.plot`):
``accuracy_per_rotation.png``, OA and mAcc per rotation protocol from ``report.json`` (classifiers;
a segmenter's report holds mIoU, not drawn), the legend right of the axes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from aug_attn_tasks.viz import legend_outside, pyplot

__all__ = ["RUN_FILES", "run_figures"]

REPORT_FILE = "report.json"
RUN_FILES = (REPORT_FILE,)


def _rotation_figure(protocols: dict[str, dict[str, float]]) -> Any:
    plt = pyplot()
    names = list(protocols)
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3.6))
    width = 0.38
    for i, (metric, label) in enumerate((("oa", "OA"), ("macc", "mAcc"))):
        values = [100 * protocols[n].get(metric, math.nan) for n in names]
        bars = ax.bar(np.arange(len(names)) + (i - 0.5) * width, values, width, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 105)
    ax.set_ylabel("test accuracy (%)")
    ax.set_xlabel("train / test rotation")
    legend_outside(ax)
    return fig


def run_figures(run_dir: Path) -> list[tuple[str, Any]]:
    """``[(file name, figure)]`` of the pictures that ``run_dir``'s files allow (none: ``[]``)."""
    report = run_dir / REPORT_FILE
    protocols = json.loads(report.read_text()).get("protocols") if report.is_file() else None
    if protocols and all("oa" in values for values in protocols.values()):
        return [("accuracy_per_rotation.png", _rotation_figure(protocols))]
    return []
