"""Surface normals from point positions: PCA over k nearest neighbours with an equivariant sign.

The normal of ``p`` is the eigenvector of the smallest eigenvalue of the covariance of its ``k``
nearest neighbours (Hoppe et al. 1992). PCA fixes the axis, not its sign, and a sign that flips
under rotation breaks every invariant built on it (RISurConv's public code has this defect: its
features change by up to 2 when a normal flips). The sign rule here is rotation-equivariant,
because it only compares the normal with vectors that rotate with the cloud:

1. orient ``n`` away from the cloud's centroid ``c``: ``n . (p - c) > 0``;
2. if ``|n . (p - c)| <= tol`` (``p`` level with the centroid along ``n``), orient away from the
   local centroid of the neighbours: ``n . (p - c_local) > 0``;
3. if that is also within ``tol`` (a locally flat patch through the centroid plane), the sign
   ``eigh`` returned is kept: no frame-free rule exists there without ordering points, so such
   normals are the one documented source of non-invariance.

``tol = sqrt(machine eps) * cloud radius``. Normals are computed without gradient: ``eigh``'s
backward is undefined for repeated eigenvalues (flat or linear patches).
"""

from __future__ import annotations

import torch
from torch import Tensor

from aug_attn.geometry.neighbors import DEFAULT_CHUNK_SIZE, gather, knn, masked_centroid

__all__ = ["estimate_normals"]


@torch.no_grad()
def estimate_normals(
    pos: Tensor, k: int = 16, mask: Tensor | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Tensor:
    """Unit normals by PCA over the ``k`` nearest neighbours (the point included), signed as above.

    Args:
        pos: ``(B, N, 3)``.
        k: neighbourhood size (fewer valid points: neighbours repeat, see :func:`~aug_attn.geometry.knn`).
        mask: ``(B, N)`` bool, True at real points (padding gets an arbitrary unit normal).
        chunk_size: query block of the neighbour search.

    Returns:
        ``(B, N, 3)`` unit normals, equivariant under rotations: ``n(p R^T) = n(p) R^T``.
    """
    idx, _ = knn(pos, pos, k, mask, chunk_size)
    neighbours = gather(pos, idx)  # (B, N, k, 3)
    local_centroid = neighbours.mean(2)  # (B, N, 3)
    spread = neighbours - local_centroid.unsqueeze(2)  # (B, N, k, 3)
    # Autocast off: a bfloat16 covariance (8 mantissa bits) tilts the normals by several degrees.
    with torch.autocast(pos.device.type, enabled=False):
        _, vectors = torch.linalg.eigh(spread.transpose(-1, -2) @ spread)  # eigenvalues ascending
    normal = vectors[..., 0]  # (B, N, 3)
    outward = pos - masked_centroid(pos, mask).unsqueeze(1)  # (B, N, 3)
    distance = outward.norm(dim=-1)  # (B, N)
    if mask is not None:  # padding (at the origin) must not widen a cloud's tolerance
        distance = distance.masked_fill(~mask, 0.0)
    radius = distance.amax(1, keepdim=True)  # (B, 1)
    tol = torch.finfo(pos.dtype).eps ** 0.5 * radius
    score = (normal * outward).sum(-1)  # (B, N)
    local_score = (normal * (pos - local_centroid)).sum(-1)
    score = torch.where(score.abs() > tol, score, local_score)
    return torch.where((score < -tol).unsqueeze(-1), -normal, normal)
