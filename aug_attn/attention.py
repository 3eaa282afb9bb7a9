"""The shared multi-head attention core with relative position logits.

Bello et al., "Attention Augmented Convolutional Networks", ICCV 2019 (arXiv:1904.09925), Sec. 3.1-3.2:

.. math::
    O_h = \\mathrm{softmax}\\Big(\\frac{Q_h K_h^\\top + S^{rel}_h}{\\sqrt{d_k^h}}\\Big) V_h,
    \\qquad \\mathrm{MHA}(X) = \\mathrm{Concat}[O_1, \\dots, O_{N_h}]\\, W^O

where ``S^rel[i, j] = q_i . r(i, j)`` comes from a :class:`~aug_attn.positional.RelativePositionEncoder`
(1D offsets, 2D offsets, surface geometry); this module knows nothing about the modality.

Mixed precision: under ``torch.autocast`` attention with relative logits or a padding mask (logits,
softmax, weighted sum) runs in float32 and returns the autocast dtype; plain attention uses the fused
SDPA kernels, which accumulate in float32; projections stay in the low precision. The FlexAttention
paths take queries, keys and values in the autocast dtype and the per-query logits tables in
float32; their kernel forms the logits and the softmax in float32.

Paths (all exact, chosen per call by :func:`relative_attention`): on CUDA, an encoder whose
factorized form is a grid's (2D) or that has a band (clipped 1D offsets) runs FlexAttention with the
relative terms added inside its kernel (:mod:`aug_attn.flex`); on the CPU, a grid encoder runs the
native kernel of :mod:`aug_attn.native`, which does the same in its own fused loop; elsewhere an
encoder with a factorized form runs as plain
fused SDPA on augmented queries and keys (per tile of keys on the CPU), never building logits; an
encoder with a band (clipped 1D offsets) materializes only the band around each query block and
sends the keys beyond it through a fused kernel (:mod:`aug_attn.banded`); otherwise the ``(N x N)``
logits are computed for blocks of queries whose size keeps each block under
``max_logits_elements``; when there is more than one block and gradients are needed, each block is
recomputed in the backward pass (activation checkpointing), so peak memory grows with ``N`` times
the block size, not ``N^2``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from aug_attn.banded import banded_block_attention, banded_is_faster, banded_supported
from aug_attn.flex import band_table, flex_band_attention, flex_grid_attention, flex_supported
from aug_attn.native import grid_attention, grid_attention_supported
from aug_attn.positional.base import RelativePositionEncoder
from aug_attn.tiled import tiled_factorized_attention, tiled_is_faster, tiled_supported

__all__ = [
    "RelativeMultiheadAttention",
    "relative_attention",
    "fused_attention",
    "factorized_is_faster",
    "split_heads",
    "merge_heads",
]

DEFAULT_MAX_LOGITS_ELEMENTS = 1 << 24  # 64 MiB of float32 logits per query block
FACTORIZED_MAX_DEPTH = 160  # see factorized_is_faster
FACTORIZED_MAX_DEPTH_ONE_BLOCK = 32
TILE_MIN_SIDE = 8  # see tile_side
CUDA_DEPTH_MULTIPLE = 8  # see fused_attention


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """``(B, N, h*d)`` -> ``(B, h, N, d)``."""
    batch, tokens, channels = x.shape
    return x.reshape(batch, tokens, num_heads, channels // num_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """``(B, h, N, d)`` -> ``(B, N, h*d)``."""
    batch, heads, tokens, dim = x.shape
    x = x.transpose(1, 2)  # (B, N, h, d)
    if torch.compiler.is_exporting():
        # An explicit copy: reshape would be traced as a view of SDPA's output layout, which the
        # ONNX exporter's decomposed SDPA does not have.
        x = x.clone(memory_format=torch.contiguous_format)
    return x.reshape(batch, tokens, heads * dim)


def _check_logits(bias: Tensor, encoder: RelativePositionEncoder, pos: Any, start: int, end: int, tokens: int) -> None:
    """Refuse encoder logits ``(B, h, c, N')`` that are not ``(..., end - start, tokens)``: e.g. a
    position description (pos) of another number of tokens, which broadcasting would hide."""
    if tuple(bias.shape[-2:]) != (end - start, tokens):
        raise ValueError(
            f"{type(encoder).__name__} gave logits {tuple(bias.shape)} for pos={pos!r}; expected "
            f"(..., {end - start}, {tokens}) for {end - start} queries over {tokens} keys"
        )


def _block_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    encoder: RelativePositionEncoder,
    pos: Any,
    start: int,
    end: int,
    key_padding_mask: Tensor | None,
    dropout_p: float,
) -> Tensor:
    """Attention of the query block ``q (B, h, c, d)`` over all keys; returns ``(B, h, c, d_v)``."""
    bias = encoder(q, pos, start, end)  # (B, h, c, N)
    _check_logits(bias, encoder, pos, start, end, k.shape[2])
    bias = bias.to(q.dtype)
    if key_padding_mask is not None:
        bias = bias.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))  # (B, h, c, N)
    # q is pre-scaled so that the relative logits share the 1/sqrt(d) factor (the paper's convention).
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=1.0)


def fused_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None, dropout_p: float = 0.0) -> Tensor:
    """SDPA of pre-scaled queries (scale 1) in a form its fused kernels take.

    The flash kernels (CPU and CUDA) need equal query/key and value depths, and the CUDA kernels
    depths in multiples of 8; otherwise SDPA falls back to its math backend, which materializes the
    logits (at WRN-28-10's ``d_k = 20, d_v = 2`` per head that is 7x slower on CPU). So the
    shallower side is zero-padded (on CUDA both sides, up to the next multiple of 8): zero value
    columns give zero output columns, which are cut off; zero query/key columns add nothing to the
    logits.

    Args:
        q, k: ``(B, h, N, d_k)``; v: ``(B, h, N, d_v)``.
        attn_mask: bool, True where a key may be attended, broadcastable to ``(B, h, N, N)``.

    Returns:
        ``(B, h, N, d_v)``.
    """
    depth, value_depth = q.shape[-1], v.shape[-1]
    common = max(depth, value_depth)
    if q.is_cuda:  # the CUDA flash and memory-efficient kernels take depths in multiples of 8
        common = -(-common // CUDA_DEPTH_MULTIPLE) * CUDA_DEPTH_MULTIPLE
    if value_depth < common:
        v = F.pad(v, (0, common - value_depth))
    if depth < common:
        q, k = F.pad(q, (0, common - depth)), F.pad(k, (0, common - depth))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=1.0)
    return out[..., :value_depth] if value_depth < common else out


def tile_side(head_dim: int) -> int:
    """Side ``s`` of the key tiles of the tiled factorized path (:mod:`aug_attn.tiled`): tile depth
    ``d + 2s`` with ``s = 0.8 d``, at least ``TILE_MIN_SIDE``. Smaller tiles mean more and shorter
    fused calls; for the WRN-28-10 layer (``d = 20``) sides 10 to 20 were timed on CPU and 16 was the
    fastest at 32x32 and 64x64 (``scripts/bench_attention.py``)."""
    return max(TILE_MIN_SIDE, (4 * head_dim) // 5)


def factorized_is_faster(head_dim: int, value_dim: int, extra: int, one_block: bool) -> bool:
    """The cost rule between the factorized (fused) and the blocked (materialized logits) path.

    The fused kernel's work per query-key pair grows with its depth ``max(d_k + a, d_v)``
    (``a = H + W`` in 2D); the blocked path's is a few passes over each materialized logit, 1.5x
    more when the logits exceed one block and are recomputed in backward. Measured on CPU
    (``scripts/bench_attention.py``, 2 cores): where the logits fit one block (16x16 maps, depth 40
    and 52) the blocked path is about 10% faster; where they are recomputed the fused path wins up
    to depth 116 (2.6x at depth 72, 3.7x at 116). Hence fused up to ``FACTORIZED_MAX_DEPTH`` when
    the blocked path would recompute, and up to ``FACTORIZED_MAX_DEPTH_ONE_BLOCK`` otherwise.
    """
    depth = max(head_dim + extra, value_dim)
    return depth <= (FACTORIZED_MAX_DEPTH_ONE_BLOCK if one_block else FACTORIZED_MAX_DEPTH)


def relative_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    encoder: RelativePositionEncoder | None = None,
    pos: Any = None,
    key_padding_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    max_logits_elements: int = DEFAULT_MAX_LOGITS_ELEMENTS,
    factorize: bool | None = None,
) -> Tensor:
    """Scaled dot-product attention with relative logits.

    Exact paths, chosen per call: without an encoder, fused SDPA; on CUDA (no mask or dropout),
    FlexAttention with the relative terms inside its kernel for a grid encoder (``factorize`` not
    False) or a band encoder where :func:`~aug_attn.banded.banded_is_faster`
    (:func:`~aug_attn.flex.flex_supported`, :mod:`aug_attn.flex`); with an encoder whose factorized
    form is a grid's (:meth:`RelativePositionEncoder.factorized_grid`) and where
    :func:`~aug_attn.native.grid_attention_supported` (CPU float32/64, no mask or dropout, not
    exporting to ONNX; ``factorize`` not False), the native fused kernel (a registered op); with an encoder that has a
    factorized form (:meth:`RelativePositionEncoder.factorized`) and where
    :func:`factorized_is_faster`, fused SDPA on augmented queries and keys (no logits tensor); with
    an encoder that has a band (:meth:`RelativePositionEncoder.band`) and where
    :func:`~aug_attn.banded.banded_is_faster`, the band's logits per query block and the keys beyond
    it fused (:mod:`aug_attn.banded`; CPU float32/64, no mask or dropout); otherwise blocks
    of queries with materialized logits, recomputed in backward.

    Args:
        q: ``(B, h, N, d_k)`` queries, **not** yet scaled.
        k: ``(B, h, N, d_k)`` keys.
        v: ``(B, h, N, d_v)`` values.
        encoder: supplies ``(B, h, c, N)`` relative logits for query blocks; ``None`` for none.
        pos: position description passed to the encoder (e.g. ``L`` or ``(H, W)``).
        key_padding_mask: ``(B, N)`` bool, True where the key is padding and must get no weight.
        dropout_p: dropout on the attention weights.
        max_logits_elements: query blocks are sized so ``B * h * c * N`` (band path: the window's
            ``B * h * c * (c + 2D)``) stays below this; also the factorized path's cost rule.
        factorize: force (True) or forbid (False) the factorized path; None: the cost rule. The
            native kernel and the FlexAttention grid path (factorized paths) run for None and True
            where they apply; switch the native kernel off with :func:`aug_attn.native.set_native_kernels`.

    Returns:
        ``(B, h, N, d_v)``.
    """
    batch, heads, tokens, head_dim = q.shape
    if k.shape[:3] != (batch, heads, tokens) or v.shape[:3] != (batch, heads, tokens):
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} disagree on (B, h, N)")
    if key_padding_mask is not None:
        if key_padding_mask.shape != (batch, tokens) or key_padding_mask.dtype != torch.bool:
            raise ValueError(
                f"key_padding_mask must be a bool tensor of shape (B, N) = ({batch}, {tokens}), "
                f"got {key_padding_mask.dtype} {tuple(key_padding_mask.shape)}"
            )
        if bool(key_padding_mask.all(dim=1).any()):
            raise ValueError("key_padding_mask masks every key of at least one sample; attention is undefined")
    autocast = torch.is_autocast_enabled(q.device.type)
    if encoder is not None and flex_supported(q, dropout_p, key_padding_mask is not None):
        # CUDA: the relative terms inside FlexAttention's kernel (aug_attn.flex), logits float32 there.
        out = _flex_path(q, k, v, encoder, pos, factorize, max_logits_elements, torch.get_autocast_dtype(q.device.type) if autocast else None)
        if out is not None:
            return out
    materialized = encoder is not None or key_padding_mask is not None
    if materialized and autocast:
        # Explicit logits, relative logits and softmax stay float32 under mixed precision: in bfloat16
        # (8 mantissa bits) a logit of 10 moves by up to 0.04, i.e. 4% of its softmax weight. Output in
        # q's dtype. Without them, the fused SDPA kernels below already accumulate in float32.
        with torch.autocast(q.device.type, enabled=False):
            out = relative_attention(
                q.float(), k.float(), v.float(), encoder, pos, key_padding_mask, dropout_p, max_logits_elements, factorize
            )
        return out.to(q.dtype)
    q = q * head_dim**-0.5
    allowed = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]  # (B, 1, 1, N)
    if encoder is None:
        return fused_attention(q, k, v, allowed, dropout_p)
    extra = encoder.factorized_dim(pos)
    grid = encoder.factorized_grid(pos) if extra is not None and factorize is not False else None
    if grid is not None and grid_attention_supported(q, v, dropout_p, allowed is not None):
        # CPU: the relative terms added inside one fused kernel, at the plain depth (aug_attn.native).
        q_aug, _ = _factors(encoder, q, pos, tokens)  # (B, h, N, H + W)
        return grid_attention(q, k, v, q_aug, grid)
    if factorize is None:
        one_block = batch * heads * tokens * tokens <= max_logits_elements
        factorize = extra is not None and factorized_is_faster(head_dim, v.shape[-1], extra, one_block)
    if factorize:
        if extra is None:
            raise ValueError(f"{type(encoder).__name__} has no factorized form for pos={pos!r}")
        q_aug, k_aug = _factors(encoder, q, pos, tokens)  # (B, h, N, a), (N, a)
        if tiled_supported(q, dropout_p, allowed is not None):
            tiles = encoder.factorized_tiles(pos, tile_side(head_dim))
            if tiles is not None:
                tile_depth = max(head_dim + max(columns.numel() for _, columns in tiles), v.shape[-1])
                if tiled_is_faster(max(head_dim + extra, v.shape[-1]), tile_depth):
                    # CPU: one shallower fused call per tile of keys, merged by log-sum-exp (aug_attn.tiled).
                    return tiled_factorized_attention(q, k, v, q_aug, k_aug, tiles)
        k_aug = k_aug.to(k.dtype).expand(batch, heads, tokens, extra)  # (B, h, N, a)
        # q_aug is built from the scaled q, so q_aug . k_aug is the relative term of the paper's scaling.
        return fused_attention(torch.cat([q, q_aug], dim=-1), torch.cat([k, k_aug], dim=-1), v, allowed, dropout_p)

    band = encoder.band(pos)
    if band is not None and banded_is_faster(tokens, band):
        rows = _band_rows(batch * heads, band, max_logits_elements)
        if banded_supported(q, dropout_p, key_padding_mask is not None) and v.shape[-1] <= head_dim:
            # The band path never builds a full logits row, so the check of _block_attention runs on one query.
            with torch.no_grad():
                _check_logits(encoder(q[:, :, :1], pos, 0, 1), encoder, pos, 0, 1, tokens)
            # CPU: logits only inside the band around each query block; the keys beyond it run fused.
            # Its flash kernel takes one head size for q, k and v: zero value columns, cut off after.
            v_padded = F.pad(v, (0, head_dim - v.shape[-1]))
            rows = min(rows, max(32, band // 4))  # a window of about 2D keys, not 2D + c
            out = torch.cat(
                [
                    banded_block_attention(q[:, :, s : s + rows], k, v_padded, encoder, pos, s, min(tokens, s + rows), band)
                    for s in range(0, tokens, rows)
                ],
                dim=2,
            )  # (B, h, N, d_k)
            return out[..., : v.shape[-1]]
    block = encoder.block_size(pos)
    rows = max(block, (max_logits_elements // max(1, batch * heads * tokens)) // block * block)
    return _over_query_blocks(
        lambda qb, s, e: _block_attention(qb, k, v, encoder, pos, s, e, key_padding_mask, dropout_p), q, k, v, rows
    )


def _band_rows(pairs: int, band: int, max_logits_elements: int) -> int:
    """Query block size of the band paths: the largest ``c`` whose window logits ``c * (c + 2D)``
    per (batch, head) pair stay within ``max_logits_elements`` over the ``pairs``."""
    per_query = max(1, max_logits_elements // max(1, pairs))
    return max(1, math.isqrt(band * band + per_query) - band)


def _flex_path(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    encoder: RelativePositionEncoder,
    pos: Any,
    factorize: bool | None,
    max_logits_elements: int,
    dtype: torch.dtype | None,
) -> Tensor | None:
    """The FlexAttention paths of :mod:`aug_attn.flex` (CUDA): a grid encoder (unless ``factorize``
    is False) or a band encoder where :func:`~aug_attn.banded.banded_is_faster`; None where neither
    applies. ``q`` unscaled; ``dtype``: the autocast dtype the kernel takes its inputs in (the
    per-query logits tables are float32 then), None without autocast."""
    batch, heads, tokens, head_dim = q.shape
    with torch.autocast(q.device.type, enabled=False):
        q = (q.float() if dtype is not None else q) * head_dim**-0.5  # the tables from float32 queries under autocast
        grid = encoder.factorized_grid(pos) if factorize is not False and encoder.factorized_dim(pos) is not None else None
        if grid is not None:
            q_aug, _ = _factors(encoder, q, pos, tokens)  # (B, h, N, H + W)
            return flex_grid_attention(q, k, v, q_aug, grid, dtype)
        band = encoder.band(pos)
        if band is not None and banded_is_faster(tokens, band):
            table = band_table(encoder, q, pos, band, _band_rows(batch * heads, band, max_logits_elements))  # (B, h, N, 2D + 1)
            return flex_band_attention(q, k, v, table, band, dtype)
    return None


def _factors(encoder: RelativePositionEncoder, q: Tensor, pos: Any, tokens: int) -> tuple[Tensor, Tensor]:
    """The encoder's factorized form ``(B, h, N, a), (N, a)``; an error naming ``pos`` where it
    describes another number of tokens than the queries have."""
    q_aug, k_aug = encoder.factorized(q, pos)
    if k_aug.shape[0] != tokens:
        raise ValueError(
            f"{type(encoder).__name__} gave key factors for {k_aug.shape[0]} tokens for pos={pos!r}; expected {tokens}"
        )
    return q_aug, k_aug


def _over_query_blocks(block_fn: Callable[[Tensor, int, int], Tensor], q: Tensor, k: Tensor, v: Tensor, rows: int) -> Tensor:
    """``block_fn(q[:, :, s:e], s, e)`` over blocks of ``rows`` queries, concatenated: ``(B, h, N, d_v)``.

    With more than one block and gradients needed, each block is recomputed in the backward pass
    (activation checkpointing), so only one block's logits are alive at a time.
    """
    tokens = q.shape[2]
    if rows >= tokens:
        return block_fn(q, 0, tokens)
    recompute = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    outputs = []
    for start in range(0, tokens, rows):
        end = min(tokens, start + rows)
        if recompute:
            outputs.append(checkpoint(block_fn, q[:, :, start:end], start, end, use_reentrant=False))
        else:
            outputs.append(block_fn(q[:, :, start:end], start, end))
    return torch.cat(outputs, dim=2)


class RelativeMultiheadAttention(nn.Module):
    """Multi-head self-attention over ``N`` tokens with logits from a pluggable position encoder.

    One fused projection gives queries, keys and values (the paper's 1x1 convolution); heads split
    ``dk`` and ``dv`` evenly; the output projection ``W^O`` maps ``dv`` to ``dv``.

    Args:
        in_channels: token features ``C``.
        dk: total key/query depth (split over heads).
        dv: total value depth (split over heads) = output channels.
        num_heads: ``N_h``.
        encoder: a :class:`RelativePositionEncoder` built for head dim ``dk // num_heads``, or None.
        dropout: dropout on attention weights (training only).
        max_logits_elements: query-block budget, see :func:`relative_attention`.

    Shapes:
        ``x``: ``(B, N, C)`` -> ``(B, N, dv)``.
    """

    def __init__(
        self,
        in_channels: int,
        dk: int,
        dv: int,
        num_heads: int,
        encoder: RelativePositionEncoder | None = None,
        dropout: float = 0.0,
        max_logits_elements: int = DEFAULT_MAX_LOGITS_ELEMENTS,
        bias: bool = True,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_head_split(dk, dv, num_heads)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        factory = {"device": device, "dtype": dtype}
        self.in_channels, self.dk, self.dv, self.num_heads = in_channels, dk, dv, num_heads
        self.dropout, self.max_logits_elements = dropout, max_logits_elements
        self.qkv = nn.Linear(in_channels, 2 * dk + dv, bias=bias, **factory)
        self.proj = nn.Linear(dv, dv, bias=bias, **factory)
        self.encoder = encoder
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.qkv.reset_parameters()
        self.proj.reset_parameters()

    def forward(self, x: Tensor, pos: Any = None, key_padding_mask: Tensor | None = None) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.in_channels:
            raise ValueError(f"expected tokens (B, N, {self.in_channels}), got {tuple(x.shape)}")
        q, k, v = self.qkv(x).split([self.dk, self.dk, self.dv], dim=-1)  # (B, N, dk), (B, N, dk), (B, N, dv)
        q, k, v = (split_heads(t, self.num_heads) for t in (q, k, v))  # (B, h, N, d)
        out = relative_attention(
            q,
            k,
            v,
            self.encoder,
            pos,
            key_padding_mask,
            self.dropout if self.training else 0.0,
            self.max_logits_elements,
        )  # (B, h, N, dv/h)
        return self.proj(merge_heads(out))  # (B, N, dv)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, dk={self.dk}, dv={self.dv}, num_heads={self.num_heads}, dropout={self.dropout}"


def check_head_split(dk: int, dv: int, num_heads: int) -> None:
    """Raise a ValueError unless ``dk`` and ``dv`` are positive multiples of ``num_heads``."""
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1, got {num_heads}")
    for name, value in (("dk", dk), ("dv", dv)):
        if value < 1 or value % num_heads:
            raise ValueError(f"{name}={value} must be a positive multiple of num_heads={num_heads}")
