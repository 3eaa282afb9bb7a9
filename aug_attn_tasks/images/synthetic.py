"""A deterministic procedural image set: 10 classes of shapes and textures, the offline default.

Every image is drawn from its own random parameters (position, size, rotation, texture period,
foreground/background colours, pixel noise), all taken from a ``torch.Generator`` seeded by
``seed``, so a split is identical on every machine. Classes:

====  ==================  =====================================================
 id   name                what the foreground mask is (u, v: rotated local coordinates)
====  ==================  =====================================================
 0    disk                ``u^2 + v^2 < r^2``
 1    square              ``max(|u|, |v|) < 0.8 r``
 2    triangle            an upright triangle of height ``1.5 r``
 3    ring                ``0.55 r < |(u, v)| < r``
 4    cross               two bars of width ``0.6 r`` and length ``2 r``
 5    ellipse             ``(u / r)^2 + (v / 0.45 r)^2 < 1``
 6    stripes             ``sin(2 pi u / p) > 0`` over the whole image
 7    checkerboard        ``sin(2 pi u / p) sin(2 pi v / p) > 0``
 8    dots                ``cos(2 pi u / p) + cos(2 pi v / p) > 1.1``
 9    concentric rings    ``sin(2 pi |(u, v)| / p) > 0``
====  ==================  =====================================================

The rotation is uniform, so a class is a shape up to rotation (square and diamond are one class).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["SYNTHETIC_CLASSES", "synthetic_images"]

SYNTHETIC_CLASSES = [
    "disk",
    "square",
    "triangle",
    "ring",
    "cross",
    "ellipse",
    "stripes",
    "checkerboard",
    "dots",
    "concentric rings",
]


def _mask(label: int, u: Tensor, v: Tensor, r: Tensor, period: Tensor) -> Tensor:
    """Foreground mask ``(N, H, W)`` of class ``label``; ``u, v (N, H, W)``, ``r, period (N, 1, 1)``."""
    dist = torch.sqrt(u**2 + v**2)
    wu, wv = 2 * math.pi * u / period, 2 * math.pi * v / period
    masks = [
        lambda: dist < r,
        lambda: torch.maximum(u.abs(), v.abs()) < 0.8 * r,
        lambda: (v > -0.5 * r) & (v < r) & (u.abs() < (r - v) / math.sqrt(3)),
        lambda: (dist > 0.55 * r) & (dist < r),
        lambda: ((u.abs() < 0.3 * r) & (v.abs() < r)) | ((v.abs() < 0.3 * r) & (u.abs() < r)),
        lambda: (u / r) ** 2 + (v / (0.45 * r)) ** 2 < 1,
        lambda: torch.sin(wu) > 0,
        lambda: torch.sin(wu) * torch.sin(wv) > 0,
        lambda: torch.cos(wu) + torch.cos(wv) > 1.1,
        lambda: torch.sin(2 * math.pi * dist / period) > 0,
    ]
    return masks[label]()


def synthetic_images(num_samples: int, seed: int, size: int = 32, noise: float = 0.08) -> tuple[Tensor, Tensor]:
    """Draw ``num_samples`` images with balanced labels.

    Args:
        num_samples: images to draw.
        seed: generator seed (use different seeds for train and test).
        size: image height and width in pixels.
        noise: standard deviation of the Gaussian pixel noise (in [0, 1] intensity units).

    Returns:
        ``images`` ``(N, 3, size, size)`` uint8 and ``labels`` ``(N,)`` int64 in ``0..9``.
    """
    if num_samples < 1 or size < 8:
        raise ValueError(f"num_samples={num_samples} must be >= 1 and size={size} >= 8")
    gen = torch.Generator().manual_seed(seed)
    n = num_samples
    labels = (torch.arange(n) % len(SYNTHETIC_CLASSES))[torch.randperm(n, generator=gen)]

    def uniform(low: float, high: float, *shape: int) -> Tensor:
        return low + (high - low) * torch.rand(n, *shape, generator=gen)

    center = uniform(0.35, 0.65, 2, 1, 1) * size  # (N, 2, 1, 1)
    radius = uniform(0.22, 0.38, 1, 1) * size  # (N, 1, 1)
    angle = uniform(0.0, 2 * math.pi, 1, 1)
    period = uniform(3.5, 7.0, 1, 1)
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    dy, dx = grid.view(1, size, 1) - center[:, 0], grid.view(1, 1, size) - center[:, 1]  # (N, size, size) each
    u = dx * torch.cos(angle) + dy * torch.sin(angle)
    v = -dx * torch.sin(angle) + dy * torch.cos(angle)
    mask = torch.zeros(n, 1, size, size)
    for label in range(len(SYNTHETIC_CLASSES)):
        idx = (labels == label).nonzero().squeeze(1)
        mask[idx, 0] = _mask(label, u[idx], v[idx], radius[idx], period[idx]).float()
    foreground = uniform(0.0, 1.0, 3, 1, 1)
    # Background shifted by 0.25-0.75 (mod 1) per channel so that every shape keeps its contrast.
    background = (foreground + uniform(0.25, 0.75, 3, 1, 1)) % 1.0
    images = background + mask * (foreground - background)  # (N, 3, size, size)
    images = images + noise * torch.randn(images.shape, generator=gen)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8), labels
