"""Confusion matrices of single-label test runs, written into the run folder for ``aug-attn plot``.

A module that sets ``test_confusions: dict[str, Tensor]`` (name -> ``(C, C)`` counts, rows = true
class, columns = predicted) at the end of its test epoch gets ``confusion_<name>.tsv`` files from
:func:`write_confusions` (called by :func:`aug_attn_tasks.train.fit` and ``evaluate``). Tab-separated, a header
``true \\ predicted<TAB>class...`` and one row per true class; any ``confusion_*.tsv`` in this layout
(e.g. a single-label audio report's ``confusion_matrix.tsv``) is read and drawn alike.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the CLI imports this module to build its parser: torch is imported on use
    from torch import nn

__all__ = ["write_confusions", "read_confusion", "CONFUSION_GLOB"]

CONFUSION_GLOB = "confusion_*.tsv"


def write_confusions(module: nn.Module, run_dir: str | Path) -> list[Path]:
    """Write the module's ``test_confusions`` (if any) as ``run_dir/confusion_<name>.tsv``, labelled
    with its ``class_names``; returns the files written."""
    written = []
    for name, matrix in getattr(module, "test_confusions", {}).items():
        path = Path(run_dir) / f"confusion_{name}.tsv"
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, delimiter="\t")
            writer.writerow(["true \\ predicted", *module.class_names])
            writer.writerows([label, *row] for label, row in zip(module.class_names, matrix.tolist()))
        written.append(path)
    return written


def read_confusion(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Class names and the ``(C, C)`` counts of a file written by :func:`write_confusions`."""
    with open(path, newline="", encoding="utf-8") as handle:
        header, *rows = list(csv.reader(handle, delimiter="\t"))
    names = header[1:]
    matrix = np.array([[int(v) for v in row[1:]] for row in rows], dtype=np.int64)
    if matrix.shape != (len(names), len(names)):
        raise ValueError(f"{path}: expected a {len(names)}x{len(names)} confusion matrix, got {matrix.shape}")
    return names, matrix
