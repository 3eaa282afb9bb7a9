"""Neighbourhood search on point clouds: FPS, kNN, ball query, gathering, interpolation.

Every function takes dense clouds ``(B, N, 3)`` with an optional validity ``mask (B, N)`` (True =
real point, PyTorch Geometric's ``to_dense_batch`` convention), so PyG ragged ``(pos, batch)``
inputs work after :func:`to_dense`. Distances come from ``torch.cdist`` in its exact (no matmul)
mode, computed for blocks of ``chunk_size`` queries, so memory is ``B * chunk_size * N`` floats
and a chunked search returns exactly what an unchunked one does.

Neighbour lists are always full: when a cloud has fewer than ``k`` valid points (or, for ball
query, fewer inside the radius) the missing slots repeat the nearest neighbour, as the grouping
of PointNet++ (Qi et al. 2017) repeats its first hit. Indices are never differentiated.

**Backends.** Where PyTorch Geometric's ``torch_cluster`` is installed (the ``cluster`` extra),
:func:`knn` and :func:`farthest_point_sample` run its compiled kernels (a KD-tree per cloud on CPU)
and give the same indices: kNN candidates are re-ranked by the exact distances of the pure-torch
path, and FPS is handed each cloud with its frame-independent start point first. The pure-torch
path runs when ``torch_cluster`` is absent, while compiling or exporting (its custom ops have no
ONNX form), for dtypes other than float32/float64, and on GPUs for a CPU-only build of it.
:func:`set_neighbor_backend` (or the environment variable ``AUG_ATTN_NEIGHBORS``) picks ``"auto"``
(default), ``"torch"`` or ``"torch_cluster"`` (an error when it is not installed).
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from aug_attn.optional import MissingExtraError, import_extra
from aug_attn.switch import Switch

__all__ = [
    "point_inputs", "to_dense", "gather", "masked_centroid", "farthest_point_sample", "knn", "ball_query", "interpolate",
    "NEIGHBOR_BACKENDS", "set_neighbor_backend", "neighbor_backend", "resolved_neighbor_backend",
]  # fmt: skip

DEFAULT_CHUNK_SIZE = 1024
NEIGHBOR_BACKENDS = ("auto", "torch", "torch_cluster")
_BACKEND = Switch("the neighbour backend", "AUG_ATTN_NEIGHBORS", NEIGHBOR_BACKENDS)


def set_neighbor_backend(name: str) -> str:
    """Choose the kNN/FPS backend: ``"auto"`` (``torch_cluster`` when installed), ``"torch"`` or
    ``"torch_cluster"``. Returns the previous choice."""
    return _BACKEND.set(name)


def neighbor_backend(name: str) -> AbstractContextManager[None]:
    """``with neighbor_backend("torch"): ...`` runs the block with that backend."""
    return _BACKEND.using(name)


@functools.cache
def _torch_cluster() -> ModuleType | MissingExtraError:
    try:
        return import_extra("torch_cluster", "cluster", "the torch_cluster neighbour backend")
    except MissingExtraError as error:
        return error


def resolved_neighbor_backend(pos: Tensor | None = None) -> str:
    """The backend that a call on ``pos`` runs now: ``"torch"`` or ``"torch_cluster"``."""
    choice = _BACKEND.current()
    if choice == "torch":
        return "torch"
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return "torch"
    module = _torch_cluster()
    if isinstance(module, MissingExtraError):
        if choice == "torch_cluster":
            raise module
        return "torch"
    if pos is not None and pos.dtype not in (torch.float32, torch.float64):
        return "torch"
    if pos is not None and pos.device.type != "cpu" and torch.ops.torch_cluster.cuda_version() == -1:
        return "torch"  # a CPU-only build of torch_cluster
    return "torch_cluster"


def to_dense(batch: Tensor, *values: Tensor, batch_size: int | None = None) -> tuple[list[Tensor], Tensor]:
    """Pad PyG ragged tensors into dense batches.

    Args:
        batch: ``(P,)`` sorted cloud index of each point (PyG's ``batch`` vector).
        values: tensors ``(P, ...)`` (``pos``, ``normal``, ``x``), ``None`` passes through.
        batch_size: number of clouds ``B`` (default ``batch.max() + 1``).

    Returns:
        The values as ``(B, N_max, ...)`` (zeros in padding) and ``mask (B, N_max)``, True at real
        points; ``dense[mask]`` gives the ragged tensor back.
    """
    if batch.dim() != 1:
        raise ValueError(f"batch must be a sorted 1D index vector, got shape {tuple(batch.shape)}")
    if batch.numel() > 1:
        ordered = (batch[1:] >= batch[:-1]).all()
        if torch.compiler.is_compiling() or torch.compiler.is_exporting():  # no guard on values: checked when run
            torch._assert_async(ordered, "batch must be a sorted 1D index vector (PyG's batch), got one out of order")
        elif not bool(ordered):
            raise ValueError("batch must be a sorted 1D index vector (PyG's batch), got one out of order")
    counts = torch.bincount(batch, minlength=batch_size or 0)
    starts = counts.cumsum(0) - counts
    slot = torch.arange(batch.numel(), device=batch.device) - starts[batch]  # (P,) index within its cloud
    size = (counts.numel(), int(counts.max()) if counts.numel() else 0)
    mask = torch.zeros(size, dtype=torch.bool, device=batch.device)
    mask[batch, slot] = True
    dense = []
    for value in values:
        if value is None:
            dense.append(None)
            continue
        if value.shape[0] != batch.numel():
            raise ValueError(f"value of shape {tuple(value.shape)} does not match batch of length {batch.numel()}")
        out = value.new_zeros(size + tuple(value.shape[1:]))
        out[batch, slot] = value
        dense.append(out)
    return dense, mask


def point_inputs(
    pos: Tensor | Any,
    normal: Tensor | None = None,
    batch: Tensor | None = None,
    x: Tensor | None = None,
    category: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
    """The inputs of a point model, given as tensors or as one PyTorch Geometric ``Data``/``Batch``.

    A ``Data``/``Batch`` (duck-typed: anything with a ``pos`` tensor, so the library does not import
    PyG) gives its ``pos (P, 3)``, ``normal``, ``x``, ``category`` (when present) and ``batch``; a
    single ``Data`` has no ``batch`` and becomes a batch of one cloud. Tensors pass through.

    Returns:
        ``pos, normal, batch, x, category``.
    """
    if isinstance(pos, Tensor):
        return pos, normal, batch, x, category
    data = pos
    if not isinstance(getattr(data, "pos", None), Tensor):
        raise TypeError(f"expected pos as a tensor or a PyG Data/Batch with a pos tensor, got {type(data).__name__}")
    if any(value is not None for value in (normal, batch, x)):
        raise ValueError("pass either a PyG Data/Batch or the tensors pos, normal, batch, x, not both")
    pos = data.pos
    batch = getattr(data, "batch", None)
    if batch is None:
        batch = torch.zeros(len(pos), dtype=torch.long, device=pos.device)
    category = getattr(data, "category", None) if category is None else category
    return pos, getattr(data, "normal", None), batch, getattr(data, "x", None), category


def gather(x: Tensor, idx: Tensor) -> Tensor:
    """``out[b, i..., :] = x[b, idx[b, i...], :]``.

    Args:
        x: ``(B, N, C)``.
        idx: ``(B, ...)`` int64 indices into ``N``.

    Returns:
        ``(B, ..., C)``.
    """
    batch, channels = x.shape[0], x.shape[-1]
    flat = idx.reshape(batch, -1, 1).expand(-1, -1, channels)  # (B, I, C)
    return x.gather(1, flat).reshape(*idx.shape, channels)


def _valid(pos: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return torch.ones(pos.shape[:2], dtype=torch.bool, device=pos.device)
    if mask.shape != pos.shape[:2] or mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool of shape {tuple(pos.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}")
    # A data-dependent check: skipped while compiling or exporting, where it would break the graph.
    if not torch.compiler.is_compiling() and not bool(mask.any(dim=1).all()):
        raise ValueError("mask leaves a cloud without any point")
    return mask


def masked_centroid(pos: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean of the valid points: ``(B, N, 3)`` -> ``(B, 3)``."""
    weight = _valid(pos, mask).to(pos.dtype).unsqueeze(-1)  # (B, N, 1)
    return (pos * weight).sum(1) / weight.sum(1)


@torch.no_grad()
def farthest_point_sample(pos: Tensor, num_samples: int, mask: Tensor | None = None) -> Tensor:
    """Iterative farthest point sampling, batched over clouds.

    Starts from the point farthest from the centroid (ties: lowest index), a choice that does
    not depend on the frame, so the selected indices are invariant to rotations and translations
    (up to float ties). Each step adds ``argmax_j min_{s in S} |x_j - x_s|``; ``O(M N)`` per cloud.
    Ties go to the start point, then to the lowest index, so a cloud with fewer than
    ``num_samples`` distinct valid points repeats its start point once they are all taken.

    Args:
        pos: ``(B, N, 3)``.
        num_samples: ``M``.
        mask: ``(B, N)`` bool, True at real points.

    Returns:
        ``(B, M)`` int64 indices.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    valid = _valid(pos, mask)
    # -1 on padding: never the argmax.
    start = ((pos - masked_centroid(pos, valid)[:, None]) ** 2).sum(-1).masked_fill(~valid, -1).argmax(1)  # (B,)
    if resolved_neighbor_backend(pos) == "torch_cluster":
        return _fps_torch_cluster(pos, valid, start, num_samples)
    rows = torch.arange(pos.shape[0], device=pos.device)
    farthest = start
    # -1 on padding: min(-1, d) keeps it below every valid point.
    min_dist = torch.full(pos.shape[:2], float("inf"), dtype=pos.dtype, device=pos.device).masked_fill(~valid, -1)
    out = torch.empty(pos.shape[0], num_samples, dtype=torch.long, device=pos.device)
    for i in range(num_samples):
        out[:, i] = farthest
        dist = ((pos - pos[rows, farthest].unsqueeze(1)) ** 2).sum(-1)  # (B, N)
        min_dist = torch.minimum(min_dist, dist)
        # Ties: the lowest index (max's first maximum), but the start point when the farthest is at
        # distance 0 (every distinct point taken; the start's own distance is exactly 0).
        best, farthest = min_dist.max(1)
        farthest = torch.where(best > 0, farthest, start)
    return out


def _fps_torch_cluster(pos: Tensor, valid: Tensor, start: Tensor, num_samples: int) -> Tensor:
    """The FPS of :func:`farthest_point_sample` through ``torch_cluster.fps``, which starts at each
    cloud's first point: each cloud goes in the order start point, then its other valid points by
    index (so its ties fall as in the torch path), and the picks are mapped back."""
    index = torch.arange(pos.shape[1], device=pos.device)
    order = torch.where(valid, index, index + pos.shape[1]).scatter(1, start[:, None], -1).argsort(1)  # (B, N)
    pos, valid = gather(pos, order), valid.gather(1, order)
    counts = valid.sum(1)  # (B,)
    rows, slots = valid.nonzero(as_tuple=True)  # (P,) cloud and index of each valid point (they come first)
    # It takes ceil(ratio * count) points per cloud: M - 1/2 over the count rounds up to exactly M.
    ratio = (num_samples - 0.5) / counts.to(torch.float64)
    picked = _torch_cluster().fps(pos[valid], rows, ratio=ratio.to(pos.dtype), random_start=False, batch_size=pos.shape[0])
    if picked.numel() != pos.shape[0] * num_samples:
        raise RuntimeError(f"torch_cluster.fps returned {picked.numel()} indices for {pos.shape[0]} x {num_samples}")
    return order.gather(1, slots[picked].reshape(pos.shape[0], num_samples))


@torch.no_grad()
def knn(
    query: Tensor, pos: Tensor, k: int, mask: Tensor | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest valid points of ``pos`` to each query, nearest first.

    Args:
        query: ``(B, M, 3)``.
        pos: ``(B, N, 3)``.
        k: neighbours per query; slots beyond the cloud's valid points repeat the nearest.
        mask: ``(B, N)`` bool, True at real points of ``pos``.
        chunk_size: queries per ``cdist`` block (memory ``B * chunk_size * N``; the torch path only).

    Returns:
        ``idx (B, M, k)`` int64 and Euclidean ``dist (B, M, k)``, ascending; equal distances in
        index order (two points tied at the ``k``-th place: either may be the one kept; compiled and
        exported models keep ``topk``'s order of ties).
    """
    if k < 1 or chunk_size < 1:
        raise ValueError(f"k and chunk_size must be >= 1, got k={k}, chunk_size={chunk_size}")
    if query.dim() != 3 or pos.dim() != 3 or query.shape[0] != pos.shape[0] or query.shape[-1] != pos.shape[-1]:
        raise ValueError(f"knn expects query (B, M, D) and pos (B, N, D), got {tuple(query.shape)}, {tuple(pos.shape)}")
    valid = _valid(pos, mask)
    if resolved_neighbor_backend(pos) == "torch_cluster":
        return _knn_torch_cluster(query, pos, k, valid)
    found = min(k, pos.shape[1])
    dists, idxs = [], []
    for start in range(0, query.shape[1], chunk_size):
        dist = _distances(query[:, start : start + chunk_size], pos)
        dist = dist.masked_fill(~valid[:, None], float("inf"))  # (B, c, N)
        d, i = dist.topk(found, dim=-1, largest=False, sorted=True)  # (B, c, found)
        dists.append(d)
        idxs.append(i)
    idx, dist = _by_distance_then_index(torch.cat(idxs, 1), torch.cat(dists, 1))  # (B, M, found); topk ties in any order
    if found < k:
        dist = torch.cat([dist, dist[..., :1].expand(-1, -1, k - found)], -1)
        idx = torch.cat([idx, idx[..., :1].expand(-1, -1, k - found)], -1)
    return _repeat_nearest(idx, dist, torch.isinf(dist))


def _knn_torch_cluster(query: Tensor, pos: Tensor, k: int, valid: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`knn` through ``torch_cluster.knn`` (one KD-tree per cloud on CPU). Its candidates are
    re-ranked by the exact distances of the pure-torch path (stable in index order on ties), so the
    neighbour order does not depend on the tree's float arithmetic."""
    batch, num_query, num_pos = query.shape[0], query.shape[1], pos.shape[1]
    counts = valid.sum(1)  # (B,)
    full = bool((counts == num_pos).all())
    rows_x, slots = valid.nonzero(as_tuple=True)  # (P,) cloud and index within it of each valid point
    flat_query = query.reshape(batch * num_query, -1)
    rows_y = torch.arange(batch, device=query.device).repeat_interleave(num_query)  # (B M,)
    points = pos.reshape(-1, pos.shape[-1]) if full else pos[valid]  # (P, D)
    found = _torch_cluster().knn(points, flat_query, k, rows_x, rows_y, batch_size=batch)  # (2, E): query, point
    target, point = found[0], found[1]
    if full and num_pos >= k and target.numel() == batch * num_query * k:
        # Every query got k points, listed query by query: dense (B, M, k) without scattering.
        idx = point.view(batch, num_query, k) - (torch.arange(batch, device=pos.device) * num_pos)[:, None, None]
        grouped = torch.equal(target.view(-1, k), torch.arange(batch * num_query, device=target.device)[:, None].expand(-1, k))
        if grouped and bool((idx >= 0).all()) and bool((idx < num_pos).all()):
            dist = _pair_distances(query, gather(pos, idx))  # (B, M, k)
            return _by_distance_then_index(idx, dist)
    if target.numel() > 1 and bool((target[1:] < target[:-1]).any()):  # it lists them query by query: keep it so
        order = target.argsort(stable=True)
        target, point = target[order], point[order]
    slot = slots[point]
    per_query = torch.bincount(target, minlength=batch * num_query)
    rank = torch.arange(target.numel(), device=target.device) - (per_query.cumsum(0) - per_query)[target]
    idx = torch.zeros(batch * num_query, k, dtype=torch.long, device=query.device)
    out = torch.full((batch * num_query, k), float("inf"), dtype=query.dtype, device=query.device)
    idx[target, rank] = slot
    out[target, rank] = _pair_distances(flat_query[target][:, None], points[point][:, None])[:, 0]
    idx, out = _by_distance_then_index(idx.reshape(batch, num_query, k), out.reshape(batch, num_query, k))
    return _repeat_nearest(idx, out, torch.isinf(out))


def _pair_distances(query: Tensor, points: Tensor) -> Tensor:
    """``|query_m - points_mj|`` for ``query (..., M, D)`` and ``points (..., M, k, D)`` -> ``(..., M, k)``,
    by the same ``cdist`` kernel as :func:`_distances` (so equal distances tie in both backends)."""
    flat = query.reshape(-1, 1, query.shape[-1])  # (X, 1, D)
    return _distances(flat, points.reshape(flat.shape[0], -1, points.shape[-1])).reshape(points.shape[:-1])


def _by_distance_then_index(idx: Tensor, dist: Tensor) -> tuple[Tensor, Tensor]:
    """Each row of ``idx, dist (..., k)`` nearest first, ties by index (two stable sorts, skipped when
    every row is already strictly ascending, the usual case). Not while compiling or exporting, where
    a data-dependent branch breaks the graph and ONNX has no stable sort: exact ties then stay in
    ``topk``'s order."""
    if torch.compiler.is_compiling() or torch.compiler.is_exporting() or bool((dist[..., 1:] > dist[..., :-1]).all()):
        return idx, dist
    order = idx.argsort(dim=-1, stable=True)
    idx, dist = idx.gather(-1, order), dist.gather(-1, order)
    order = dist.argsort(dim=-1, stable=True)
    return idx.gather(-1, order), dist.gather(-1, order)


def _distances(query: Tensor, pos: Tensor) -> Tensor:
    """Euclidean distances ``(B, M, N)`` of ``query (B, M, D)`` to ``pos (B, N, D)``, without the
    matmul expansion (exact for near points). Under ``torch.export`` the same sum of squared
    differences is written out (``D`` times more memory per block), since ONNX has no ``cdist``."""
    if torch.compiler.is_exporting():
        return ((query[:, :, None] - pos[:, None]) ** 2).sum(-1).sqrt()
    return torch.cdist(query, pos, compute_mode="donot_use_mm_for_euclid_dist")


def _repeat_nearest(idx: Tensor, dist: Tensor, missing: Tensor) -> tuple[Tensor, Tensor]:
    """Replace the ``missing (B, M, k)`` slots by the first (nearest) one."""
    return torch.where(missing, idx[..., :1], idx), torch.where(missing, dist[..., :1], dist)


@torch.no_grad()
def ball_query(
    query: Tensor,
    pos: Tensor,
    radius: float,
    k: int,
    mask: Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[Tensor, Tensor]:
    """The (up to) ``k`` nearest points within ``radius`` of each query, nearest first.

    Unlike PointNet++'s CUDA kernel, which keeps the first ``k`` hits in index order, this keeps
    the nearest ``k`` (rotation-invariant and independent of point order). Empty slots repeat the
    nearest point, which is kept even when it lies outside the ball so every slot is a real point.

    Args and returns as :func:`knn`.
    """
    idx, dist = knn(query, pos, k, mask, chunk_size)
    return _repeat_nearest(idx, dist, dist > radius)


def interpolate(
    pos: Tensor,
    source_pos: Tensor,
    source_x: Tensor,
    k: int = 3,
    mask: Tensor | None = None,
    eps: float = 1e-8,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    power: float = 2.0,
) -> Tensor:
    """Inverse-distance-weighted kNN interpolation of features (PointNet++ feature propagation).

    ``x_i = sum_j w_ij x_j / sum_j w_ij`` over the ``k`` nearest sources, ``w_ij = 1 / max(d_ij^p, eps)``
    with ``p = power`` (2, PointNet++'s default; its code weights by ``1 / (d^2 + eps)``, the same after
    normalization unless ``d^2`` is near ``eps``; a clamp rather than an added ``eps`` because torch
    2.14's ONNX exporter deletes an added ``1e-8`` as if it were zero).

    Args:
        pos: ``(B, N, 3)`` target points.
        source_pos: ``(B, M, 3)`` points carrying features.
        source_x: ``(B, M, C)``.
        mask: ``(B, M)`` bool validity of the sources.

    Returns:
        ``(B, N, C)``.
    """
    idx, dist = knn(pos, source_pos, k, mask, chunk_size)  # (B, N, k)
    weight = 1.0 / (dist if power == 1 else dist.pow(power)).clamp_min(eps)
    weight = weight / weight.sum(-1, keepdim=True)
    return (gather(source_x, idx) * weight.unsqueeze(-1).to(source_x.dtype)).sum(2)  # (B, N, C)
