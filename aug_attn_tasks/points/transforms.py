"""Rotations, augmentations and the rotation protocols of the rotation-invariance literature.

Samples are the dicts the datasets return (``pos (N, 3)``, ``normal (N, 3)`` or ``(N, 0)``, ``index``).
Every transform moves ``pos`` and ``normal`` together, so ``pos . normal`` relations survive.

Protocols ("train/test"): ``z`` = a random rotation about the vertical axis, ``SO3`` = a uniformly
random 3D rotation. ``z/SO3`` (train upright, test arbitrarily rotated) is the one that exposes
networks that are not rotation invariant (PointNet++: 89.3 under z/z, 28.6 under z/SO3).
The vertical axis is the dataset's ``up_axis``: ``"y"`` for the PointNet-era files (resampled
ModelNet, ModelNet hdf5, ShapeNet part, ScanObjectNN), ``"z"`` for the ModelNet meshes and the
synthetic shapes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "AXES",
    "Compose",
    "Jitter",
    "RandomRotation",
    "RandomScale",
    "ROTATIONS",
    "ToData",
    "quaternion_to_matrix",
    "random_rotation",
    "rotate",
    "rotation_about_axis",
    "rotation_protocol",
    "rotation_transforms",
]

AXES = {"x": 0, "y": 1, "z": 2}
ROTATIONS = ("none", "z", "so3")
Sample = dict[str, Any]


def rotation_about_axis(angle: Tensor, axis: str = "z") -> Tensor:
    """Right-handed rotation matrices by ``angle (...)`` radians about ``axis``; returns ``(..., 3, 3)``."""
    if axis not in AXES:
        raise ValueError(f"axis must be one of {sorted(AXES)}, got {axis!r}")
    i = AXES[axis]
    j, k = (i + 1) % 3, (i + 2) % 3  # (j, k) spans the plane the rotation turns, in right-handed order
    cos, sin = torch.cos(angle), torch.sin(angle)
    matrix = torch.zeros(*angle.shape, 3, 3, dtype=angle.dtype, device=angle.device)
    matrix[..., i, i] = 1
    matrix[..., j, j], matrix[..., j, k] = cos, -sin
    matrix[..., k, j], matrix[..., k, k] = sin, cos
    return matrix


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """Rotation matrices from quaternions ``q (..., 4)`` as ``(w, x, y, z)`` (normalised here); ``(..., 3, 3)``."""
    w, x, y, z = (q / q.norm(dim=-1, keepdim=True)).unbind(-1)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


def random_rotation(
    kind: str, up_axis: str = "z", generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """One random ``(3, 3)`` rotation: ``"none"`` (identity), ``"z"`` (uniform angle about ``up_axis``)
    or ``"so3"`` (uniform on SO(3): a normalised 4D Gaussian is a uniform unit quaternion)."""
    if kind == "none":
        return torch.eye(3, dtype=dtype)
    if kind == "z":
        angle = torch.rand((), generator=generator, dtype=torch.float64) * (2 * math.pi)
        return rotation_about_axis(angle, up_axis).to(dtype)
    if kind == "so3":
        return quaternion_to_matrix(torch.randn(4, generator=generator, dtype=torch.float64)).to(dtype)
    raise ValueError(f"rotation kind must be one of {ROTATIONS}, got {kind!r}")


def rotate(sample: Sample, rotation: Tensor) -> Sample:
    """Rotate ``pos`` and ``normal`` (when present) of a sample by ``rotation (3, 3)``: ``p -> R p``."""
    out = dict(sample)
    out["pos"] = sample["pos"] @ rotation.T.to(sample["pos"].dtype)  # (N, 3)
    normal = sample.get("normal")
    if normal is not None and normal.shape[-1] == 3:
        out["normal"] = normal @ rotation.T.to(normal.dtype)  # (N, 3)
    return out


def _sample_generator(seed: int | None, sample: Sample) -> torch.Generator | None:
    """A generator seeded from ``(seed, sample index)``, so a fixed test set gets the same rotation per
    shape whatever the loading order or worker count; None (global RNG) when ``seed`` is None."""
    if seed is None:
        return None
    index = int(sample.get("index", 0))
    return torch.Generator().manual_seed(seed * 1_000_003 + index)


class RandomRotation:
    """Rotate each sample by :func:`random_rotation` (``kind`` ``"none"``, ``"z"``, ``"so3"``).

    With ``seed`` set, the rotation of a sample depends only on ``(seed, sample["index"])``:
    reproducible rotated test sets. Without it, the global torch RNG (augmentation during training).

    Takes a sample dict or a PyTorch Geometric ``Data`` (after :class:`ToData`): either way ``normal``
    turns with ``pos``. PyG's own ``RandomRotate`` turns ``pos`` only, which silently breaks a model
    that reads normals (RISurConv's invariance); use this one in PyG pipelines.
    """

    def __init__(self, kind: str = "so3", up_axis: str = "z", seed: int | None = None) -> None:
        if kind not in ROTATIONS:
            raise ValueError(f"rotation kind must be one of {ROTATIONS}, got {kind!r}")
        if up_axis not in AXES:
            raise ValueError(f"up_axis must be one of {sorted(AXES)}, got {up_axis!r}")
        self.kind, self.up_axis, self.seed = kind, up_axis, seed

    def __call__(self, sample: Any) -> Any:
        if self.kind == "none":
            return sample
        if isinstance(sample, dict):
            return rotate(sample, random_rotation(self.kind, self.up_axis, _sample_generator(self.seed, sample)))
        index = getattr(sample, "index", None)  # a PyG Data: ToData keeps the sample's index as (1,)
        rotation = random_rotation(self.kind, self.up_axis, _sample_generator(self.seed, {} if index is None else {"index": index}))
        fields = {"pos": sample.pos, "normal": getattr(sample, "normal", None)}
        rotated = rotate(fields, rotation)
        out = sample.clone()
        out.pos = rotated["pos"]
        if fields["normal"] is not None:
            out.normal = rotated["normal"]
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, up_axis={self.up_axis!r}, seed={self.seed})"


class RandomScale:
    """Scale ``pos`` by a factor drawn uniformly from ``[low, high]``, one per axis if ``anisotropic``.

    Normals transform by the inverse scale and are renormalised, so they stay perpendicular to the
    stretched surface.
    """

    def __init__(self, low: float = 0.8, high: float = 1.25, anisotropic: bool = False, seed: int | None = None):
        if not 0 < low <= high:
            raise ValueError(f"need 0 < low <= high, got low={low}, high={high}")
        self.low, self.high, self.anisotropic, self.seed = low, high, anisotropic, seed

    def __call__(self, sample: Sample) -> Sample:
        pos = sample["pos"]
        draw = torch.rand(3 if self.anisotropic else 1, generator=_sample_generator(self.seed, sample))
        scale = (self.low + (self.high - self.low) * draw).to(pos.dtype)  # (3,) or (1,)
        out = dict(sample, pos=pos * scale)
        normal = sample.get("normal")
        if self.anisotropic and normal is not None and normal.shape[-1] == 3:
            out["normal"] = torch.nn.functional.normalize(normal / scale, dim=-1)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(low={self.low}, high={self.high}, anisotropic={self.anisotropic})"


class Jitter:
    """Add clipped Gaussian noise ``clip(N(0, sigma^2), -clip, clip)`` to ``pos`` (normals unchanged:
    the noise is small against the surface's curvature)."""

    def __init__(self, sigma: float = 0.01, clip: float = 0.05, seed: int | None = None) -> None:
        if sigma < 0 or clip < 0:
            raise ValueError(f"sigma and clip must be >= 0, got sigma={sigma}, clip={clip}")
        self.sigma, self.clip, self.seed = sigma, clip, seed

    def __call__(self, sample: Sample) -> Sample:
        pos = sample["pos"]
        noise = torch.randn(pos.shape, generator=_sample_generator(self.seed, sample), dtype=pos.dtype)
        return dict(sample, pos=pos + (self.sigma * noise).clamp(-self.clip, self.clip))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma}, clip={self.clip})"


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[Sample], Sample]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for transform in self.transforms:
            sample = transform(sample)
        return sample

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transforms})"


class ToData:
    """Turn a sample dict into a PyTorch Geometric ``Data(pos, normal, y, index)``, so a dataset
    feeds PyG's ``DataLoader`` and transforms (``transform=Compose([ToData(), T.RandomJitter(0.01)])``)
    and the point models take the batches directly (``model(batch)``).

    ``y`` is the class ``(1,)`` (batched to ``(B,)``, PyG's graph-label convention); for part
    segmentation ``y`` is the per-point part ``(N,)`` and ``category (1,)`` the object class (PyG's
    ``ShapeNet`` convention). ``normal`` is left out when the data has none (``(N, 0)``).
    Rotate with :class:`RandomRotation` (before or after this), which turns normals with positions;
    PyG's ``RandomRotate`` turns ``pos`` only.
    """

    def __call__(self, sample: Sample) -> Any:
        from torch_geometric.data import Data

        fields = {"pos": sample["pos"], "index": sample["index"].reshape(1)}
        if sample["normal"].shape[-1] == 3:
            fields["normal"] = sample["normal"]
        if "part" in sample:
            fields.update(y=sample["part"], category=sample["category"].reshape(1))
        else:
            fields["y"] = sample["label"].reshape(1)
        return Data(**fields)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def rotation_protocol(name: str) -> tuple[str, str]:
    """Parse ``"z/z"``, ``"z/SO3"``, ``"SO3/SO3"`` (case-insensitive; also ``"none"`` on either side)
    into ``(train_rotation, test_rotation)`` kinds for :class:`RandomRotation`."""
    parts = name.strip().lower().split("/")
    if len(parts) != 2 or any(part not in ROTATIONS for part in parts):
        raise ValueError(
            f"unknown rotation protocol {name!r}: expected 'train/test' with each side one of "
            f"'z', 'SO3', 'none' (e.g. 'z/z', 'z/SO3', 'SO3/SO3')"
        )
    return parts[0], parts[1]


def rotation_transforms(name: str, up_axis: str = "z", test_seed: int = 0) -> tuple[RandomRotation, RandomRotation]:
    """The train (random each epoch) and test (fixed by ``test_seed`` per sample) rotations of a protocol."""
    train, test = rotation_protocol(name)
    return RandomRotation(train, up_axis), RandomRotation(test, up_axis, seed=test_seed)
