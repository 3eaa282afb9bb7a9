"""One shape prepared for a model: checked, subsampled to ``num_points``, centred and scaled into
the unit sphere (:func:`subsample_shape`), as the datasets of :mod:`aug_attn_tasks.points.datasets`
prepare every training shape; and a user's file prepared the same way (:func:`prepare_cloud`), for
``aug-attn classify`` and ``aug-attn explain`` (``.off``/``.ply``/``.txt``/``.npy`` clouds or meshes).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from aug_attn.geometry import farthest_point_sample
from aug_attn_tasks.points.io import load_point_cloud

__all__ = ["MIN_POINTS", "SAMPLINGS", "RawCloud", "normalize_unit_sphere", "subsample_shape", "prepare_cloud"]

logger = logging.getLogger(__name__)

MIN_POINTS = 3  # fewer distinct points span no surface: no normal, no neighbourhood
SAMPLINGS = ("fps", "random", "first")


class RawCloud(NamedTuple):
    """One shape as read: ``pos (M, 3)``, ``normal (M, 3)`` or None, per-point ``part (M,)`` or None."""

    pos: np.ndarray
    normal: np.ndarray | None
    part: np.ndarray | None = None


def normalize_unit_sphere(pos: np.ndarray, name: str = "points") -> np.ndarray:
    """Centre ``pos (N, 3)`` on its mean and scale its farthest point to radius 1."""
    centred = pos - pos.mean(0)
    # Scaled by the largest coordinate before squaring: squares of coordinates near 1e200 overflow to
    # inf, and dividing by that would put every point at the origin.
    largest = np.abs(centred).max(initial=0.0)
    if not (np.isfinite(largest) and largest > 0):
        raise ValueError(f"{name}: degenerate point cloud (all points coincide, or coordinates beyond float range)")
    centred = centred / largest
    return centred / np.sqrt((centred**2).sum(1).max())


def subsample_shape(
    raw: RawCloud,
    name: str,
    num_points: int,
    sampling: str,
    rng: np.random.Generator,
    allow_fewer: bool,
    min_points: int = MIN_POINTS,
) -> RawCloud:
    """Check a shape, pick ``num_points`` of its points, normalise it; errors name the file.

    A shape with fewer than ``min_points`` distinct points (what the model needs, e.g. its first
    neighbourhood) is refused even with ``allow_fewer``: repeating 2 points gives a model nothing to
    see, and a prediction on it would be noise.
    """
    count = len(raw.pos)
    if count == 0:
        raise ValueError(f"{name}: no points")
    if not np.isfinite(raw.pos).all() or (raw.normal is not None and not np.isfinite(raw.normal).all()):
        raise ValueError(f"{name}: NaN or inf in coordinates or normals")
    if count < num_points and not allow_fewer:
        raise ValueError(f"{name}: has {count} points, {num_points} requested (pass allow_fewer=True to repeat points)")
    distinct = len(np.unique(raw.pos, axis=0))
    if distinct < min_points:
        raise ValueError(f"{name}: has {distinct} distinct points, the model needs at least {min_points} (data.min_points)")
    if count < num_points:
        logger.warning("%s: has %d points, repeating some to reach %d", name, count, num_points)
        index = np.concatenate([rng.permutation(count), rng.choice(count, num_points - count)])
    elif sampling == "fps":
        pos = torch.from_numpy(raw.pos).float()[None]  # float32: half the memory traffic of float64
        index = farthest_point_sample(pos, num_points)[0].numpy()
    elif sampling == "random":
        index = rng.choice(count, num_points, replace=False)
    else:
        index = np.arange(num_points)
    normal = None
    if raw.normal is not None:
        normal = raw.normal[index]
        length = np.linalg.norm(normal, axis=1, keepdims=True)
        normal = np.where(length > 0, normal / np.maximum(length, 1e-12), 0.0)  # files store near-unit normals
    part = raw.part[index] if raw.part is not None else None
    return RawCloud(normalize_unit_sphere(raw.pos[index], name), normal, part)




def prepare_cloud(path: str | Path, data: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Read a file as the datasets of the ``data`` config section prepare their shapes: meshes sampled
    by area with ``mesh_points`` points (default ``num_points``), ``num_points`` kept by the config's
    ``sampling`` (fps or random, seeded by ``sampling_seed``; ``first``, which relies on files stored
    in random order as the benchmark's are, becomes random: a user's file may be ordered), fewer points
    repeated (logged), centred and scaled into the unit sphere.

    Returns ``pos (num_points, 3)`` and unit ``normal (num_points, 3)`` or None, float32.
    """
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
