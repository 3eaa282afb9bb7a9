"""The file reader and model runner of ``aug-attn classify`` for point clouds (see :mod:`aug_attn_tasks.batch`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from aug_attn_tasks.points.prepare import prepare_cloud
from aug_attn_tasks.points.io import POINT_SUFFIXES
from aug_attn_tasks.points.recipe import PointCloudModule

__all__ = ["PointPredictor", "predictor"]

logger = logging.getLogger(__name__)


class PointPredictor:
    """Classifies clouds prepared by :func:`~aug_attn_tasks.points.prepare.prepare_cloud`.

    ``load(path)`` gives ``(pos (N, 3), normal (N, 3) or None)``; ``predict`` stacks the clouds
    (those with normals and those without run as two batches: files without normals get them
    estimated by RISurConv; a model that reads normals as features, ``pointnet2`` with
    ``use_normals``, fails on them) and returns softmax probabilities ``(len(items), classes)``.
    """

    suffixes = POINT_SUFFIXES

    def __init__(self, module: PointCloudModule, config: dict[str, Any]) -> None:
        if module.segmentation:
            raise ValueError("a part segmentation checkpoint: `aug-attn classify` needs a point cloud classifier")
        self.module, self.data, self.labels = module, config["data"], module.class_names

    def load(self, path: Path) -> tuple[Tensor, Tensor | None]:
        pos, normal = prepare_cloud(path, self.data)
        if normal is None and self.module.use_normals:
            logger.warning(
                "%s has no normals: they are estimated; a model trained on data with normals (data.use_normals) "
                "may predict worse on estimated ones (for such files, train with --data.use_normals false)",
                path,
            )
        return pos, normal

    def predict(self, items: list[tuple[Tensor, Tensor | None]]) -> Tensor:
        probs = torch.empty(len(items), len(self.labels))
        for with_normals in (True, False):
            index = [i for i, (_, normal) in enumerate(items) if (normal is not None) == with_normals]
            if not index:
                continue
            pos = torch.stack([items[i][0] for i in index])  # (b, N, 3)
            normal = torch.stack([items[i][1] for i in index]) if with_normals else None
            with torch.inference_mode():
                probs[index] = torch.softmax(self.module(pos, normal).float(), dim=-1)  # (b, classes)
        return probs


def predictor(module: PointCloudModule, config: dict[str, Any]) -> PointPredictor:
    """The batch predictor of ``aug-attn classify`` for point cloud files."""
    return PointPredictor(module, config)
