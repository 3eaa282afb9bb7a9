"""Point cloud files prepared as a checkpoint's data section prepares training shapes, for
``aug-attn classify`` and ``aug-attn explain`` (``.off``/``.ply``/``.txt``/``.npy`` clouds or meshes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["prepare_cloud"]


def prepare_cloud(path: str | Path, data: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Read a file as the datasets of the ``data`` config section prepare their shapes: meshes sampled
    by area with ``mesh_points`` points (default ``num_points``), ``num_points`` kept by the config's
    ``sampling`` (fps or random, seeded by ``sampling_seed``; ``first``, which relies on files stored
    in random order as the benchmark's are, becomes random: a user's file may be ordered), fewer points
    repeated (logged), centred and scaled into the unit sphere.

    Returns ``pos (num_points, 3)`` and unit ``normal (num_points, 3)`` or None, float32.
    """
    from aug_attn_tasks.points.datasets import MIN_POINTS, RawCloud, subsample_shape
    from aug_attn_tasks.points.io import load_point_cloud

    num_points = int(data.get("num_points", 1024))
    rng = np.random.default_rng([int(data.get("sampling_seed", 0)), 0])
    pos, normal = load_point_cloud(path, int(data.get("mesh_points") or num_points), rng)
    sampling = data.get("sampling", "fps")
    sampling = "random" if sampling == "first" else sampling
    min_points = int(data.get("min_points", MIN_POINTS))
    cloud = subsample_shape(RawCloud(pos, normal), str(path), num_points, sampling, rng, True, min_points)
    points = torch.from_numpy(cloud.pos).float()
    if cloud.normal is None:
        return points, None
    return points, torch.nn.functional.normalize(torch.from_numpy(cloud.normal).float(), dim=-1)
