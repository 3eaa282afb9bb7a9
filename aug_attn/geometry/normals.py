"""Surface normals from point positions: PCA over k nearest neighbours with an equivariant sign.

The normal of ``p`` is the eigenvector of the smallest eigenvalue of the covariance of its ``k``
nearest neighbours (Hoppe et al. 1992). PCA fixes the axis, not its sign, and a sign that flips
under rotation breaks every invariant built on it (RISurConv's public code has this defect: its
features change by up to 2 when a normal flips). The sign rule here is rotation-equivariant,
because it only compares the normal with vectors that rotate with the cloud, taking the first
that is decisive (``|score| > tol``):

1. away from the cloud's centroid ``c``: ``n . (p - c) > 0``;
2. away from the local centroid of the neighbours: ``n . (p - c_local) > 0``;
3. along the axes of the cloud's canonical frame (:func:`~aug_attn.geometry.frame.principal_frame`),
   ``e_3`` first, then ``e_1``, ``e_2``: ``n . e_i > 0``. This decides planar and nearly planar
   clouds (a flat mesh, a scanned wall), where every point is level with both centroids along its
   normal: the plane's normal ``e_3 = e_1 x e_2`` is oriented by the in-plane third moments.

A **linear** neighbourhood (its two smaller covariance eigenvalues below ``tol`` times the largest:
a wire, an edge, a collinear cloud) has no normal axis: ``eigh`` would return an arbitrary direction
perpendicular to the line. Its normal is instead the part of ``p - c`` perpendicular to the line
(pointing away from the centroid), else of ``e_3``, else of ``e_2``: equivariant where the cloud is
not itself a line, and shared by all points of a collinear cloud, which is all the features need
(they only compare normals with each other and with the line).

Only where all of them are within ``tol`` (a plane whose in-plane third moments both vanish, e.g.
a centred symmetric grid) is the sign ``eigh`` returned kept: no frame-free rule exists there
without ordering points. Scores are compared as cosines: ``tol = sqrt(machine eps)``, the first two
divided by the cloud radius. Normals are computed without gradient: ``eigh``'s backward is undefined
for repeated eigenvalues (flat or linear patches).

``weighted=True`` weights each neighbour by a Gaussian of its distance (bandwidth: half the distance
to the farthest of the ``k``), so the nearest points count most: on unevenly sampled or voxelised
surfaces a large ``k`` then smooths staircases and noise without its far neighbours (across
another sheet of the surface, around a sharp edge) tilting the normal.
"""

from __future__ import annotations

import torch
from torch import Tensor

from aug_attn.geometry.frame import principal_frame
from aug_attn.geometry.neighbors import DEFAULT_CHUNK_SIZE, gather, knn

__all__ = ["estimate_normals"]


@torch.no_grad()
def estimate_normals(
    pos: Tensor,
    k: int = 16,
    mask: Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    weighted: bool = False,
) -> Tensor:
    """Unit normals by PCA over the ``k`` nearest neighbours (the point included), signed as above.

    Args:
        pos: ``(B, N, 3)``.
        k: neighbourhood size (fewer valid points: neighbours repeat, see :func:`~aug_attn.geometry.knn`).
        mask: ``(B, N)`` bool, True at real points (padding gets an arbitrary unit normal).
        chunk_size: query block of the neighbour search.
        weighted: Gaussian distance weights in the covariance (module docstring).

    Returns:
        ``(B, N, 3)`` unit normals, equivariant under rotations: ``n(p R^T) = n(p) R^T``.
    """
    idx, dist = knn(pos, pos, k, mask, chunk_size)  # (B, N, k)
    neighbours = gather(pos, idx)  # (B, N, k, 3)
    if weighted:
        # the farthest neighbour: with fewer than k valid points the last slots repeat p itself (distance 0)
        bandwidth = 0.5 * dist.amax(-1, keepdim=True).clamp_min(torch.finfo(pos.dtype).tiny)  # (B, N, 1)
        weight = torch.exp(-((dist / bandwidth) ** 2)).unsqueeze(-1)  # (B, N, k, 1): 1 at p, e^-4 at the k-th
        local_centroid = (neighbours * weight).sum(2) / weight.sum(2)  # (B, N, 3)
        spread = (neighbours - local_centroid.unsqueeze(2)) * weight.sqrt()  # (B, N, k, 3)
    else:
        local_centroid = neighbours.sum(2) / k  # (B, N, 3)
        spread = neighbours - local_centroid.unsqueeze(2)  # (B, N, k, 3)
    # Autocast off: a bfloat16 covariance (8 mantissa bits) tilts the normals by several degrees.
    with torch.autocast(pos.device.type, enabled=False):
        values, vectors = torch.linalg.eigh(spread.transpose(-1, -2) @ spread)  # ascending
    frame = principal_frame(pos, mask)  # its centre is the cloud's centroid
    outward = pos - frame.centre.unsqueeze(1)  # (B, N, 3)
    distance = outward.norm(dim=-1)  # (B, N)
    if mask is not None:  # padding (at the origin) must not widen a cloud's tolerance
        distance = distance.masked_fill(~mask, 0.0)
    radius = distance.amax(1, keepdim=True).clamp_min(torch.finfo(pos.dtype).tiny)  # (B, 1)
    tol = torch.finfo(pos.dtype).eps ** 0.5
    axes = frame.axes  # (B, 3, 3): rows e_1, e_2, e_3
    # k copies of one point: no spread at all, so eigh's vectors are a fixed basis that does not rotate
    # with the cloud; such a neighbourhood gets no line direction (the outward rule of a line decides).
    isolated = values[..., 2] <= torch.finfo(pos.dtype).eps * radius.square()  # (B, N)
    linear = (values[..., 1] <= tol * values[..., 2]) | isolated  # (B, N)
    direction = vectors[..., 2].masked_fill(isolated.unsqueeze(-1), 0.0)  # (B, N, 3)
    normal = torch.where(
        linear.unsqueeze(-1), _line_normals(outward / radius.unsqueeze(-1), direction, axes, tol), vectors[..., 0]
    )  # (B, N, 3)
    along_axes = normal @ axes.transpose(1, 2)  # (B, N, 3): n . e_i
    scores = [
        (normal * outward).sum(-1) / radius,
        (normal * (pos - local_centroid)).sum(-1) / radius,
        along_axes[..., 2],
        along_axes[..., 0],
        along_axes[..., 1],
    ]  # (B, N) each, in the order of the rules
    score = scores[-1]
    for earlier in reversed(scores[:-1]):
        score = torch.where(earlier.abs() > tol, earlier, score)
    return torch.where((score < -tol).unsqueeze(-1), -normal, normal)


def _line_normals(outward: Tensor, direction: Tensor, axes: Tensor, tol: float) -> Tensor:
    """Normals of linear neighbourhoods: the first of ``outward``, ``e_3``, ``e_2`` with a part
    longer than ``tol`` perpendicular to the line ``direction``, that part normalised.

    Args:
        outward: ``(B, N, 3)`` ``(p - c) / radius``.
        direction: ``(B, N, 3)`` unit direction of each point's line (either sign), or zero where
            the neighbourhood is one repeated point.
        axes: ``(B, 3, 3)`` the cloud's frame, rows ``e_1, e_2, e_3``.

    Returns:
        ``(B, N, 3)`` unit vectors perpendicular to ``direction``.
    """
    candidates = [outward, axes[:, None, 2].expand_as(outward), axes[:, None, 1].expand_as(outward)]
    across = [v - (v * direction).sum(-1, keepdim=True) * direction for v in candidates]  # (B, N, 3) each
    chosen = across[-1]
    for part in reversed(across[:-1]):
        chosen = torch.where(part.norm(dim=-1, keepdim=True) > tol, part, chosen)
    return torch.nn.functional.normalize(chosen, dim=-1)
