"""Factorized relative attention over tiles of keys: a shallower fused kernel, merged exactly.

The factorized form (:meth:`~aug_attn.positional.RelativePositionEncoder.factorized`) writes the
relative logits as ``a_i . b_j``, so attention with them is plain attention on ``[q_i, a_i]`` and
``[k_j, b_j]``, of depth ``d + A`` (``A = H + W`` for a 2D grid). The key factors are sparse: the 2D
encoder's ``b_j`` is ``onehot(y_j) || onehot(x_j)``. Over a tile of keys (a ``s x s`` block of the
grid) only ``2s`` of the ``A`` columns are non-zero, so the tile's attention needs depth ``d + 2s``,
not ``d + H + W``. Each tile runs through the CPU flash kernel, which returns its log-sum-exp, and
the tiles are merged exactly (the merge of blockwise softmaxes of flash and ring attention):

.. math::
    o_i = \\sum_t e^{\\ell_{t,i} - \\ell_i}\\, o_{t,i}, \\qquad \\ell_i = \\log \\sum_t e^{\\ell_{t,i}}.

The backward pass runs the flash backward kernel of every tile with the *merged* output and
log-sum-exp, which gives exactly that tile's share of the gradients of the one softmax over all
keys. Nothing of size ``N x N`` is stored; the forward keeps one running output.

CPU only (:func:`~aug_attn.attention.common.flash_cpu` and its backward, the kernels of the band
path); float32 and float64, no dropout, no padding mask. Taken where the factorized form is wanted
(:func:`~aug_attn.attention.factorized.wanted`) and :func:`tiled_is_faster`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from aug_attn.attention.common import (
    AttentionInputs,
    AttentionPath,
    encoder_factors,
    flash_cpu,
    flash_cpu_backward,
    flash_cpu_supported,
    merge_partial,
)
from aug_attn.attention.factorized import wanted as factorized_wanted

__all__ = ["PATH", "supported", "run", "tiled_factorized_attention", "tiled_is_faster", "tile_side", "TILED_MIN_SAVING"]

TILED_MIN_SAVING = 1.5  # see tiled_is_faster
TILE_MIN_SIDE = 8  # see tile_side


def tile_side(head_dim: int) -> int:
    """Side ``s`` of the key tiles: tile depth ``d + 2s`` with ``s = 0.8 d``, at least
    ``TILE_MIN_SIDE``. Smaller tiles mean more and shorter fused calls; for the WRN-28-10 layer
    (``d = 20``) sides 10 to 20 were timed on CPU and 16 was the fastest at 32x32 and 64x64
    (``scripts/bench_attention.py``)."""
    return max(TILE_MIN_SIDE, (4 * head_dim) // 5)


def tiled_is_faster(full_depth: int, tile_depth: int) -> bool:
    """The cost rule between one fused call of depth ``full_depth = max(d + A, d_v)`` and the tiles'
    calls of depth ``tile_depth``: both do ``N^2`` query-key pairs, so the work goes with the depth,
    and the tiles' extra passes (one flash call per tile, the merge) are paid back once the depth
    shrinks by ``TILED_MIN_SAVING`` (``scripts/bench_attention.py``)."""
    return full_depth >= TILED_MIN_SAVING * tile_depth


def supported(inputs: AttentionInputs) -> list[str]:
    """The factorized form wanted, the CPU flash kernels usable, tiles from the encoder, and
    :func:`tiled_is_faster` than one fused call."""
    reasons = factorized_wanted(inputs) + flash_cpu_supported(inputs)
    if reasons:
        return reasons
    tiles = inputs.encoder.factorized_tiles(inputs.pos, tile_side(inputs.head_dim))
    if tiles is None:
        return [f"{type(inputs.encoder).__name__} has no key tiles"]
    full_depth = max(inputs.head_dim + inputs.factorized_dim, inputs.value_dim)
    tile_depth = max(inputs.head_dim + max(columns.numel() for _, columns in tiles), inputs.value_dim)
    if not tiled_is_faster(full_depth, tile_depth):
        return [f"cost rule: tile depth {tile_depth} saves too little over depth {full_depth}"]
    return []


def run(inputs: AttentionInputs) -> Tensor:
    """``(B, h, N, d_v)`` by :func:`tiled_factorized_attention` over the encoder's tiles."""
    q = inputs.scaled_q()
    q_aug, k_aug = encoder_factors(inputs.encoder, q, inputs.pos, inputs.tokens)  # (B, h, N, a), (N, a)
    tiles = inputs.encoder.factorized_tiles(inputs.pos, tile_side(inputs.head_dim))
    return tiled_factorized_attention(q, inputs.k, inputs.v, q_aug, k_aug, tiles)


def _runs(index: Tensor) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of the consecutive values of a sorted index vector."""
    values = index.tolist()
    runs, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[i - 1] + 1:
            runs.append((values[start], values[i - 1] + 1))
            start = i
    return runs


def _take(x: Tensor, dim: int, index: Tensor, runs: list[tuple[int, int]] | None) -> Tensor:
    """``x.index_select(dim, index)``, by slices where the index has few consecutive runs (a grid
    tile's keys are ``s`` runs of ``s`` tokens; its columns two runs): much cheaper than a gather."""
    if runs is None:
        return x.index_select(dim, index)
    return torch.cat([x.narrow(dim, start, stop - start) for start, stop in runs], dim=dim)


def _plan(tiles: list[tuple[Tensor, Tensor]]) -> list[tuple[Tensor, Tensor, list | None, list | None]]:
    """Per tile: keys, columns and their runs (None where a gather is cheaper than many slices)."""
    plan = []
    for keys, columns in tiles:
        key_runs, column_runs = _runs(keys), _runs(columns)
        plan.append((keys, columns, key_runs if len(key_runs) <= 64 else None, column_runs if len(column_runs) <= 8 else None))
    return plan


def _tile_inputs(q, k, q_aug, k_aug, tile, extra: int):
    """``[q, a[cols]]`` ``(B, h, N, d + extra)`` and ``[k[keys], b[keys, cols]]`` ``(B, h, n_t, d + extra)``,
    zero-padded from ``len(cols)`` to ``extra`` columns so that every tile has one depth."""
    keys, columns, key_runs, column_runs = tile
    batch, heads = q.shape[:2]
    pad = extra - columns.numel()
    parts = [q, _take(q_aug, -1, columns, column_runs)]
    if pad:
        parts.append(q.new_zeros(*q.shape[:-1], pad))
    q_tile = torch.cat(parts, dim=-1)
    factors = F.pad(k_aug[keys][:, columns], (0, pad)).to(k.dtype).expand(batch, heads, -1, -1)
    k_tile = torch.cat([_take(k, 2, keys, key_runs), factors], dim=-1)
    return q_tile, k_tile


class _TiledAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v_padded, q_aug, k_aug, tiles, extra: int):
        # q/k (B, h, N, d), v_padded (B, h, N, d + extra), q_aug (B, h, N, A), k_aug (N, A)
        out = lse = None
        plan = _plan(tiles)
        for tile in plan:
            q_tile, k_tile = _tile_inputs(q, k, q_aug, k_aug, tile, extra)
            part, part_lse = flash_cpu(q_tile, k_tile, _take(v_padded, 2, tile[0], tile[2]))  # (B, h, N, .), (B, h, N)
            out, lse = merge_partial(out, lse, part, part_lse)
        ctx.save_for_backward(q, k, v_padded, q_aug, k_aug, out, lse)
        ctx.plan, ctx.extra = plan, extra
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v_padded, q_aug, k_aug, out, lse = ctx.saved_tensors
        depth = q.shape[-1]
        grad_out = grad_out.contiguous()
        grad_q, grad_q_aug = torch.zeros_like(q), torch.zeros_like(q_aug)
        grad_k, grad_v = torch.zeros_like(k), torch.zeros_like(v_padded)
        for tile in ctx.plan:
            keys, columns = tile[0], tile[1]
            q_tile, k_tile = _tile_inputs(q, k, q_aug, k_aug, tile, ctx.extra)
            # The merged output and log-sum-exp: this tile's share of the one softmax's gradients.
            dq, dk, dv = flash_cpu_backward(grad_out, q_tile, k_tile, _take(v_padded, 2, keys, tile[2]), out, lse)
            grad_q += dq[..., :depth]
            grad_q_aug.index_add_(-1, columns, dq[..., depth : depth + columns.numel()])
            grad_k.index_copy_(2, keys, dk[..., :depth])  # every key lies in one tile
            grad_v.index_copy_(2, keys, dv)
        return grad_q, grad_k, grad_v, grad_q_aug, None, None, None


def tiled_factorized_attention(q: Tensor, k: Tensor, v: Tensor, q_aug: Tensor, k_aug: Tensor, tiles: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Attention of pre-scaled ``q`` with logits ``q . k + q_aug . k_aug``, tile by tile (module docstring).

    Args:
        q, k: ``(B, h, N, d)``; v: ``(B, h, N, d_v)``.
        q_aug: ``(B, h, N, A)`` query factors (differentiable: the encoder's tables get gradients).
        k_aug: ``(N, A)`` key factors (constants, e.g. one-hot grid coordinates).
        tiles: per tile of keys, ``(keys, columns)``: int64 indices of its keys (every key in one
            tile) and of the factor columns in which any of its key factors is non-zero (the
            encoder's :meth:`~aug_attn.positional.RelativePositionEncoder.factorized_tiles`).

    Returns:
        ``(B, h, N, d_v)``.
    """
    if k_aug.requires_grad:
        raise ValueError("tiled factorized attention takes constant key factors (k_aug must not require grad)")
    extra = max(columns.numel() for _, columns in tiles)
    value_depth = v.shape[-1]
    if value_depth > q.shape[-1] + extra:  # the kernel takes one depth: pad the queries' side instead
        extra = value_depth - q.shape[-1]
    v_padded = F.pad(v, (0, q.shape[-1] + extra - value_depth))
    out = _TiledAttention.apply(q, k, v_padded, q_aug, k_aug.detach(), tiles, extra)
    return out[..., :value_depth]


PATH = AttentionPath("tiled", supported, run)
