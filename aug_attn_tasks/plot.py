"""``aug-attn plot RUN_DIR [--out DIR]``: the pictures of a run folder written by ``aug-attn train``
(or of the ``eval`` folder of ``aug-attn test``), as PNG files named in what it prints:

- ``curves.png``: per epoch, train vs validation loss, and the monitored metric (``checkpoint.monitor``
  of the run's ``hparams.yaml``) with its training counterpart when logged; from ``metrics.csv``;
- ``confusion_<name>.png``: test confusion matrices (single-label runs, from ``confusion_<name>.tsv``;
  one per rotation protocol for point clouds), rows normalised to the true class;
- the pictures of the tasks' ``plots`` modules (:mod:`aug_attn_tasks.registry`), each drawn where
  its files are: ``roc_auc_per_tag.png``, per-tag test ROC-AUC bars (tagging,
  :mod:`aug_attn_tasks.audio.plots`), and ``accuracy_per_rotation.png``, OA and mAcc per rotation
  protocol (points, :mod:`aug_attn_tasks.points.plots`).

Needs the ``[viz]`` extra (matplotlib).
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from aug_attn_tasks.confusion import CONFUSION_GLOB, read_confusion
from aug_attn_tasks.registry import task_modules
from aug_attn_tasks.viz import pyplot, save_figure

__all__ = ["epoch_curves", "plot_run", "add_commands"]


def epoch_curves(path: str | Path) -> dict[str, dict[int, float]]:
    """``metric -> {epoch: value}`` from a Lightning ``metrics.csv``: the last value logged in each epoch
    (step-wise columns ``*_step`` are left out: their ``*_epoch`` twins are the per-epoch values)."""
    curves: dict[str, dict[int, float]] = defaultdict(dict)
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if not row.get("epoch"):
                continue
            epoch = int(float(row["epoch"]))
            for name, value in row.items():
                if name in ("epoch", "step") or name.endswith("_step") or value in ("", None):
                    continue
                curves[name.removesuffix("_epoch")][epoch] = float(value)
    return dict(curves)


def _monitor(run_dir: Path) -> str | None:
    hparams = run_dir / "hparams.yaml"
    if not hparams.is_file():
        return None
    config = (yaml.safe_load(hparams.read_text()) or {}).get("config", {})
    return config.get("checkpoint", {}).get("monitor", "val/loss")


def _curves_figure(curves: dict[str, dict[int, float]], monitor: str | None) -> Any:
    plt = pyplot()
    metric = monitor if monitor in curves and monitor != "val/loss" else None
    if metric is None:  # no monitor known: the first validation metric other than the loss
        metric = next((n for n in sorted(curves) if n.startswith("val/") and n != "val/loss" and n.count("/") == 1), None)
    panels = [("loss", ["train/loss", "val/loss"])] + ([(metric.split("/", 1)[1], [metric.replace("val/", "train/", 1), metric])] if metric else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (title, names) in zip(axes[0], panels):
        for name in names:
            if name in curves:
                epochs = sorted(curves[name])
                ax.plot(epochs, [curves[name][e] for e in epochs], marker="o", label=name)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(title + (" (monitored)" if metric and metric.endswith("/" + title) else ""))
        ax.legend()
        ax.grid(alpha=0.3)
    return fig


def _confusion_figure(path: Path) -> Any:
    plt = pyplot()
    names, matrix = read_confusion(path)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    side = max(3.5, 0.3 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    ax.set_title(f"{path.name}: accuracy {accuracy:.3f} ({matrix.sum()} test inputs)", fontsize=9)
    fig.colorbar(image, ax=ax, label="fraction of the true class")
    return fig


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Draw every picture the files of ``run_dir`` allow into ``out_dir`` (default ``run_dir``);
    returns the PNG paths. A folder with none of those files is a FileNotFoundError."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    out = Path(out_dir) if out_dir is not None else run_dir
    tasks = task_modules("plots")
    figures = []
    if (run_dir / "metrics.csv").is_file():
        figures.append(("curves.png", _curves_figure(epoch_curves(run_dir / "metrics.csv"), _monitor(run_dir))))
    for path in sorted(run_dir.glob(CONFUSION_GLOB)):
        figures.append((path.with_suffix(".png").name, _confusion_figure(path)))
    for plots in tasks.values():
        figures += plots.run_figures(run_dir)
    if not figures:
        looked = ["metrics.csv", CONFUSION_GLOB, *dict.fromkeys(name for plots in tasks.values() for name in plots.RUN_FILES)]
        raise FileNotFoundError(
            f"{run_dir}: nothing to plot (looked for {', '.join(looked)}); give a run folder such as runs/<config>/version_N"
        )
    return [save_figure(fig, out / name) for name, fig in figures]


def _plot(args: argparse.Namespace) -> int:
    for path in plot_run(args.run_dir, args.out):
        print(f"wrote {path}")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``plot`` to the ``aug-attn`` parser."""
    plot = subparsers.add_parser("plot", help="draw a run folder's training curves and test pictures (PNG)")
    plot.add_argument("run_dir", help="a run folder, e.g. runs/<config>/version_N (or a checkpoint's eval/ folder)")
    plot.add_argument("--out", help="folder for the pictures (default: the run folder)")
    plot.set_defaults(handler=_plot)
