"""The CUDA paths of the attention core: relative logits added inside FlexAttention's fused kernel.

FlexAttention (``torch.nn.attention.flex_attention``) runs a flash-style kernel whose scores pass
through a ``score_mod(score, b, h, q_idx, kv_idx)`` before the softmax; nothing of size ``N x N``
is stored, and gradients reach tensors that the ``score_mod`` reads. The two encoders with a small
per-query form use it:

* **band** (clipped 1D offsets, :meth:`~aug_attn.positional.RelativePositionEncoder.band`): each
  query's ``2D + 1`` logits of its band (:func:`band_table`), read at ``clip(j - i, -D, D) + D``;
* **grid** (2D, :meth:`~aug_attn.positional.RelativePositionEncoder.factorized_grid`): the factors
  ``a = [q r^H, q r^W]`` gathered, ``s_ij = q_i . k_j + a[i, y_j] + a[i, H + x_j]``: the same two
  additions per query-key pair as the native CPU kernel (:mod:`aug_attn.attention.native`), at the plain depth
  ``d`` instead of the factorized SDPA path's ``d + H + W``.

**Precision.** Under ``torch.autocast`` the queries, keys and values enter the kernel in the
autocast dtype (what the projections give) while the per-query logits tables stay float32; the
kernel accumulates ``q . k``, adds the relative terms and takes the softmax in float32, so the
logits are float32 as on the other paths (only ``P V`` runs on the low-precision weights, as in any
flash kernel). Without autocast everything is float32 or float64.

CUDA only: FlexAttention's backward exists on CUDA (its CPU form is forward-only and runs here only
in tests of the ``score_mod``), no dropout or padding mask, not while exporting.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from aug_attn.attention.common import AttentionInputs, AttentionPath, band_rows, banded_is_faster, encoder_factors

__all__ = [
    "GRID_PATH",
    "BAND_PATH",
    "flex_supported",
    "band_table",
    "flex_band_attention",
    "flex_grid_attention",
    "FLEX_MIN_DEPTH",
]

FLEX_MIN_DEPTH = 16  # the kernel's matrix products take depths of at least 16 (Triton's tl.dot)
FLEX_MAX_SHAPES = 64  # compiled kernels per process, see _shapes_allowed


def flex_refusals(q: Tensor, dropout_p: float, masked: bool) -> list[str]:
    """Why the FlexAttention paths cannot run: they need CUDA (FlexAttention's backward, with
    gradients to the tensors a ``score_mod`` reads, exists there), no dropout or mask, not exporting."""
    reasons = []
    if not q.is_cuda:
        reasons.append(f"needs CUDA tensors, got {q.device.type}")
    if not _has_flex():
        reasons.append("needs torch >= 2.5 (FlexAttention)")
    if dropout_p:
        reasons.append("no dropout")
    if masked:
        reasons.append("no padding mask")
    if torch.compiler.is_exporting():
        reasons.append("not while exporting")
    return reasons


@functools.cache
def _has_flex() -> bool:
    return importlib.util.find_spec("torch.nn.attention.flex_attention") is not None


def flex_supported(q: Tensor, dropout_p: float, masked: bool) -> bool:
    """Whether the FlexAttention paths can run (:func:`flex_refusals` is empty)."""
    return not flex_refusals(q, dropout_p, masked)


def _grid_supported(inputs: AttentionInputs) -> list[str]:
    if inputs.grid is None:
        return ["the encoder has no grid form for these positions"]
    if inputs.factorize is False:
        return ["factorize=False"]
    return flex_refusals(inputs.q, inputs.dropout_p, inputs.masked)


def _band_supported(inputs: AttentionInputs) -> list[str]:
    if inputs.band is None:
        return ["the encoder has no band for these positions"]
    if not banded_is_faster(inputs.tokens, inputs.band):
        return [f"cost rule: {inputs.tokens} tokens is under 4 x band {inputs.band}"]
    return flex_refusals(inputs.q, inputs.dropout_p, inputs.masked)


def _scaled(inputs: AttentionInputs) -> Tensor:
    """Pre-scaled queries; float32 under autocast (the per-query logits tables are built from them)."""
    q = inputs.q.float() if inputs.autocast_dtype is not None else inputs.q
    return q * inputs.head_dim**-0.5


def _run_grid(inputs: AttentionInputs) -> Tensor:
    with torch.autocast(inputs.q.device.type, enabled=False):
        q = _scaled(inputs)
        q_aug, _ = encoder_factors(inputs.encoder, q, inputs.pos, inputs.tokens)  # (B, h, N, H + W)
        return flex_grid_attention(q, inputs.k, inputs.v, q_aug, inputs.grid, inputs.autocast_dtype)


def _run_band(inputs: AttentionInputs) -> Tensor:
    with torch.autocast(inputs.q.device.type, enabled=False):
        q = _scaled(inputs)
        rows = band_rows(inputs.batch * inputs.heads, inputs.band, inputs.max_logits_elements)
        table = band_table(inputs.encoder, q, inputs.pos, inputs.band, rows)  # (B, h, N, 2D + 1)
        return flex_band_attention(q, inputs.k, inputs.v, table, inputs.band, inputs.autocast_dtype)


def _padded_depth(depth: int) -> int:
    """The next power of two from ``FLEX_MIN_DEPTH``: the kernel's own rounding, made explicit so
    that no torch version meets a depth it cannot tile (WRN-28-10: ``d_k = 20``, ``d_v = 2``)."""
    return max(FLEX_MIN_DEPTH, 1 << (depth - 1).bit_length())


def _flex(q: Tensor, k: Tensor, v: Tensor, score_mod: Callable[..., Tensor], dtype: torch.dtype | None) -> Tensor:
    """FlexAttention of pre-scaled ``q (B, h, N, d)`` with ``k`` and ``v (B, h, N, d_v)``, depths
    zero-padded (zero columns add nothing to ``q . k``; zero value columns are cut off), in ``dtype``
    (None: the inputs'). Returns ``(B, h, N, d_v)`` in that dtype."""
    if dtype is not None:
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    depth, value_depth = q.shape[-1], v.shape[-1]
    qk_pad, v_pad = _padded_depth(depth) - depth, _padded_depth(value_depth) - value_depth
    if qk_pad:
        q, k = F.pad(q, (0, qk_pad)), F.pad(k, (0, qk_pad))
    if v_pad:
        v = F.pad(v, (0, v_pad))
    with torch.autocast(q.device.type, enabled=False), _shapes_allowed():
        out = _compiled_flex()(q, k, v, score_mod=score_mod, scale=1.0)
    return out[..., :value_depth] if v_pad else out


def _shapes_allowed() -> AbstractContextManager:
    """Room for ``FLEX_MAX_SHAPES`` compiled kernels. FlexAttention compiles one kernel per shape
    (``dynamic=False``: its dynamic-shape build fails on the CPU in torch 2.14), and a training run
    meets several (batch sizes, the last partial batch of each loader, grid sizes, precisions).
    Past Dynamo's default of 8 it would fall back to FlexAttention's unfused reference, which
    materializes the ``N x N`` scores: slow and large, without a word."""
    import torch._dynamo

    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    if torch.compiler.is_compiling() or getattr(config, name) >= FLEX_MAX_SHAPES:
        return nullcontext()
    return config.patch(**{name: FLEX_MAX_SHAPES})


def band_table(encoder: Any, q: Tensor, pos: Any, band: int, rows: int) -> Tensor:
    """Each query's logits for the keys of its band, ``table[..., i, m]`` for key ``i + m - D``.

    Computed from :meth:`band_logits` over blocks of ``rows`` queries (window ``[s - D, e + D]``)
    and read along the diagonals, so any encoder with a band works.

    Returns:
        ``(B, h, N, 2D + 1)``.
    """
    tokens, parts = q.shape[2], []
    for start in range(0, tokens, rows):
        end = min(tokens, start + rows)
        logits = encoder.band_logits(q[:, :, start:end], pos, start, end, start - band, end + band + 1)  # (B, h, c, c + 2D + 1)
        index = torch.arange(end - start, device=q.device)[:, None] + torch.arange(2 * band + 1, device=q.device)  # (c, 2D + 1)
        parts.append(logits.gather(-1, index.expand(*logits.shape[:2], *index.shape)))
    return torch.cat(parts, dim=2)


def flex_band_attention(q: Tensor, k: Tensor, v: Tensor, table_logits: Tensor, band: int, dtype: torch.dtype | None = None) -> Tensor:
    """Attention with logits ``q.k + table_logits[..., i, clip(j - i) + D]`` in FlexAttention's kernel.

    Args:
        q, k: ``(B, h, N, d)``, q pre-scaled; v: ``(B, h, N, d_v)``.
        table_logits: ``(B, h, N, 2D + 1)`` from :func:`band_table`, gathered inside the kernel.
        dtype: the kernel's input dtype (the autocast dtype), None for the inputs' own.

    Returns:
        ``(B, h, N, d_v)``.
    """

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + table_logits[b, h, q_idx, (kv_idx - q_idx).clamp(-band, band) + band]

    return _flex(q, k, v, score_mod, dtype)


def flex_grid_attention(q: Tensor, k: Tensor, v: Tensor, q_aug: Tensor, grid: tuple[int, int], dtype: torch.dtype | None = None) -> Tensor:
    """2D relative attention, ``s_ij = q_i . k_j + a[i, y_j] + a[i, H + x_j]``, in FlexAttention's kernel.

    Args:
        q, k: ``(B, h, N, d)``, q pre-scaled; v: ``(B, h, N, d_v)``; ``N = H * W`` raster order.
        q_aug: ``(B, h, N, H + W)`` factors of :meth:`~aug_attn.positional.RelativePositionEncoder.factorized`
            (clipping included; differentiable: the kernel's backward sends their gradient on).
        grid: ``(H, W)``.
        dtype: the kernel's input dtype (the autocast dtype), None for the inputs' own.

    Returns:
        ``(B, h, N, d_v)``.
    """
    height, width = grid
    if q_aug.shape[-1] != height + width or q_aug.shape[2] != height * width:
        raise ValueError(f"grid factors {tuple(q_aug.shape)} do not fit a {height}x{width} grid")

    # Two tensors, each read once per score: FlexAttention's backward cannot take the gradient of a
    # tensor that a score_mod indexes twice (torch 2.11).
    rows, cols = q_aug[..., :height].contiguous(), q_aug[..., height:].contiguous()  # (B, h, N, H), (B, h, N, W)

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + rows[b, h, q_idx, kv_idx // width] + cols[b, h, q_idx, kv_idx % width]

    return _flex(q, k, v, score_mod, dtype)


@functools.cache
def _compiled_flex():
    """FlexAttention compiled once: uncompiled, it runs an unfused reference implementation."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


GRID_PATH = AttentionPath("flex_grid", _grid_supported, _run_grid, keeps_autocast=True)
BAND_PATH = AttentionPath("flex_band", _band_supported, _run_band, keeps_autocast=True)
