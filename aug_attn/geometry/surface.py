"""Rotation-invariant local surface features (after RISurConv, Zhang, Yang & Xiang, ECCV 2024,
arXiv:2408.06110; built on RIConv++, Zhang et al., IJCV 2022).

For a centre ``p`` with unit normal ``n_p`` and ``K`` neighbours ``x_i`` with normals ``n_i``:

1. **Order.** Project ``d_i = x_i - p`` on the tangent plane, ``t_i = d_i - (d_i . n_p) n_p``; the
   longest projection is the reference direction ``e_1``, ``e_2 = n_p x e_1``; neighbours are sorted
   by the signed angle ``atan2(t_i . e_2, t_i . e_1)`` in ``[0, 2 pi)``. Every quantity used rotates
   with the cloud, so the cyclic order is rotation invariant (a reflection reverses it).
2. **Triangles.** Neighbour ``x = x_i`` with its cyclic predecessor ``a = x_{i-1}`` and successor
   ``b = x_{i+1}`` spans the triangles ``(p, x, a)`` and ``(p, x, b)``; with ``u(v) = v / |v|`` and
   ``e = u(x - p)`` the 14 features are

   ====  =====================================  ====  =========================================
   0     ``|x - p|``                            7     ``n_p . n_x``
   1     ``cos`` angle at ``p`` in (p, x, a)    8     ``n_x . n_a``
   2     ``cos`` angle at ``x`` in (p, x, a)    9     ``n_x . n_b``
   3     ``cos`` angle at ``p`` in (p, x, b)    10    ``n_a . u(a - x)``
   4     ``cos`` angle at ``x`` in (p, x, b)    11    ``n_b . u(b - x)``
   5     ``n_p . e``                            12    ``u(m_a) . u(m_b)`` (dihedral-like)
   6     ``n_x . e``                            13    ``n_p . u(m_a)``
   ====  =====================================  ====  =========================================

   with the triangle normals ``m_a = (a - p) x (x - p)`` and ``m_b = (x - p) x (b - p)``, both
   oriented by the cyclic order. The paper's exact list differs in detail; these are the same
   kinds of quantity (a length, interior angles, normal-edge and normal-normal cosines, a dihedral).

All features are exactly invariant to rotations and translations of ``(positions, normals)``;
feature 0 scales with the cloud, the others are scale invariant. Degenerate inputs (duplicate
points, the centre among its neighbours, collinear or coplanar neighbours) give finite values:
zero vectors normalise to zero (:func:`safe_normalize`), so their cosines are 0.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from aug_attn.geometry.neighbors import DEFAULT_CHUNK_SIZE, farthest_point_sample, gather, knn

__all__ = [
    "NUM_SURFACE_FEATURES",
    "NUM_PAIR_FEATURES",
    "safe_normalize",
    "stable_argsort",
    "cyclic_order",
    "surface_features",
    "pair_features",
    "Neighborhoods",
    "build_neighborhoods",
]

NUM_SURFACE_FEATURES = 14
NUM_PAIR_FEATURES = 4
EPS = 1e-8  # below this length a vector has no direction (clouds are assumed roughly unit size)


def safe_normalize(v: Tensor, eps: float = EPS) -> Tensor:
    """``v / max(|v|, eps)`` along the last dim: finite values and gradients, zero stays zero."""
    return v * torch.rsqrt((v * v).sum(-1, keepdim=True).clamp_min(eps * eps))


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(-1)


def cyclic_order(rel: Tensor, normal: Tensor, eps: float = EPS) -> Tensor:
    """Rotation-invariant cyclic order of neighbours around the centre's normal.

    Tie-breaks, all frame-free: the reference is the longest tangent projection (lowest slot on
    ties); neighbours with no tangent component (the centre itself, points along the normal) come
    first; angles within ``sqrt(machine eps)`` of the reference count as 0 so that rounding cannot
    wrap them to ``2 pi``, and those within it of ``pi`` count as ``pi``; equal angles keep their
    slot order (stable sort). With no tangent
    component at all (every neighbour on the normal line) the slot order is kept.

    Args:
        rel: ``(..., K, 3)`` neighbour offsets ``x_i - p``.
        normal: ``(..., 3)`` unit normal ``n_p`` of the centre.

    Returns:
        ``(..., K)`` int64 permutation: ``rel.gather(-2, perm)`` is in counter-clockwise order
        around ``n_p`` starting at the reference direction.
    """
    n = normal.unsqueeze(-2)  # (..., 1, 3)
    tangent = rel - _dot(rel, n).unsqueeze(-1) * n  # (..., K, 3)
    length2 = _dot(tangent, tangent)  # (..., K)
    ref = tangent.gather(-2, length2.argmax(-1, keepdim=True).unsqueeze(-1).expand_as(n))  # (..., 1, 3)
    e1 = safe_normalize(ref, eps)
    e2 = torch.linalg.cross(n, e1)
    angle = torch.atan2(_dot(tangent, e2), _dot(tangent, e1))  # (..., K) in (-pi, pi]
    tol = torch.finfo(rel.dtype).eps ** 0.5
    angle = torch.where(angle < -tol, angle + 2 * math.pi, angle)
    # Neighbours on the reference's line (collinear neighbourhoods) sit at 0 or pi up to rounding,
    # which would order them: snap them, so that their slots (nearest first) decide.
    for snap in (0.0, math.pi):
        angle = torch.where((angle - snap).abs() <= tol, torch.full_like(angle, snap), angle)
    angle = angle.masked_fill(length2 <= eps * eps, -1.0)
    if torch.compiler.is_exporting():  # ONNX has no stable sort
        return stable_argsort(angle)
    return torch.sort(angle, dim=-1, stable=True).indices


def stable_argsort(values: Tensor) -> Tensor:
    """``torch.sort(values, dim=-1, stable=True).indices`` from ``K x K`` comparisons, for small ``K``.

    The rank of slot ``i`` is the number of smaller values plus the number of equal values in earlier
    slots; the permutation inverts the ranks. Built from comparisons and sums only, so it exports to
    ONNX. Memory ``(..., K, K)``.

    Args:
        values: ``(..., K)`` finite.

    Returns:
        ``(..., K)`` int64.
    """
    k = values.shape[-1]
    slots = torch.arange(k, device=values.device)
    a, b = values.unsqueeze(-1), values.unsqueeze(-2)  # value of slot i (rows), of slot j (columns)
    before = (b < a) | ((b == a) & (slots[None, :] < slots[:, None]))  # (..., K, K): j sorts before i
    rank = before.sum(-1)  # (..., K), a permutation of 0..K-1
    return ((rank.unsqueeze(-2) == slots[:, None]).long() * slots).sum(-1)  # (..., K): slot of rank r


def surface_features(rel: Tensor, normal: Tensor, centre_normal: Tensor, eps: float = EPS) -> Tensor:
    """The 14 triangle features of the module docstring, per neighbour.

    Args:
        rel: ``(..., K, 3)`` offsets ``x_i - p`` in cyclic order (:func:`cyclic_order`).
        normal: ``(..., K, 3)`` unit normals ``n_i`` of the neighbours, same order.
        centre_normal: ``(..., 3)`` unit normal ``n_p``.

    Returns:
        ``(..., K, 14)``.
    """
    n_p = centre_normal.unsqueeze(-2)  # (..., 1, 3)
    a, b = rel.roll(1, dims=-2), rel.roll(-1, dims=-2)  # predecessor / successor offsets (..., K, 3)
    n_a, n_b = normal.roll(1, dims=-2), normal.roll(-1, dims=-2)
    e, u_a, u_b = (safe_normalize(v, eps) for v in (rel, a, b))  # directions from p
    f_a, f_b = safe_normalize(a - rel, eps), safe_normalize(b - rel, eps)  # directions from x
    m_a = safe_normalize(torch.linalg.cross(a, rel), eps)
    m_b = safe_normalize(torch.linalg.cross(rel, b), eps)
    features = [
        rel.norm(dim=-1),
        _dot(u_a, e),
        -_dot(e, f_a),
        _dot(u_b, e),
        -_dot(e, f_b),
        _dot(n_p, e),
        _dot(normal, e),
        _dot(n_p, normal),
        _dot(normal, n_a),
        _dot(normal, n_b),
        _dot(n_a, f_a),
        _dot(n_b, f_b),
        _dot(m_a, m_b),
        _dot(n_p, m_a),
    ]
    return torch.stack(features, dim=-1)


def pair_features(pos_i: Tensor, normal_i: Tensor, pos_j: Tensor, normal_j: Tensor, eps: float = EPS) -> Tensor:
    """Rotation-invariant relation of every ``i`` to every ``j`` (point pair features, Drost et
    al. 2010, as PyG's ``PPFConv``, with cosines instead of angles so they stay smooth):
    ``[|d|, n_i . n_j, n_i . u(d), n_j . u(d)]``, ``d = x_j - x_i``.

    Args:
        pos_i, normal_i: ``(B, c, 3)`` queries.
        pos_j, normal_j: ``(B, N, 3)`` keys.

    Returns:
        ``(B, c, N, 4)``.
    """
    d = pos_j.unsqueeze(1) - pos_i.unsqueeze(2)  # (B, c, N, 3)
    u = safe_normalize(d, eps)
    n_i, n_j = normal_i.unsqueeze(2), normal_j.unsqueeze(1)  # (B, c, 1, 3), (B, 1, N, 3)
    return torch.stack([d.norm(dim=-1), _dot(n_i, n_j).expand(u.shape[:-1]), _dot(n_i, u), _dot(n_j, u)], dim=-1)


class Neighborhoods(NamedTuple):
    """Sampled centres and their cyclically ordered neighbourhoods (``B`` clouds, ``M`` centres, ``K`` neighbours).

    Attributes:
        centre_idx: ``(B, M)`` indices of the centres in the input cloud.
        pos, normal: ``(B, M, 3)`` centres and their unit normals.
        idx: ``(B, M, K)`` neighbour indices in the input cloud, in cyclic order.
        rel: ``(B, M, K, 3)`` neighbour offsets ``x_i - p``.
        neighbor_normal: ``(B, M, K, 3)``.
        features: ``(B, M, K, 14)`` :func:`surface_features`.
    """

    centre_idx: Tensor
    pos: Tensor
    normal: Tensor
    idx: Tensor
    rel: Tensor
    neighbor_normal: Tensor
    features: Tensor


def build_neighborhoods(
    pos: Tensor,
    normal: Tensor,
    num_samples: int,
    k: int,
    mask: Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Neighborhoods:
    """Sample ``M`` centres by FPS, take their ``K`` nearest neighbours (the centre included),
    order them cyclically and compute the surface features: the whole parameter-free geometry
    stage of a RISurConv layer.

    Args:
        pos: ``(B, N, 3)``; normal: ``(B, N, 3)`` unit normals; mask: ``(B, N)`` bool, True = real.
        num_samples: ``M`` centres per cloud; k: ``K`` neighbours per centre.

    Returns:
        :class:`Neighborhoods`.
    """
    centre_idx = farthest_point_sample(pos, num_samples, mask)  # (B, M)
    centre, centre_normal = gather(pos, centre_idx), gather(normal, centre_idx)  # (B, M, 3)
    idx, _ = knn(centre, pos, k, mask, chunk_size)  # (B, M, K)
    rel = gather(pos, idx) - centre.unsqueeze(2)  # (B, M, K, 3)
    idx = idx.gather(-1, cyclic_order(rel, centre_normal))
    rel = gather(pos, idx) - centre.unsqueeze(2)
    neighbor_normal = gather(normal, idx)  # (B, M, K, 3)
    features = surface_features(rel, neighbor_normal, centre_normal)
    return Neighborhoods(centre_idx, centre, centre_normal, idx, rel, neighbor_normal, features)
