"""The shared multi-head attention core with relative position logits.

Bello et al., "Attention Augmented Convolutional Networks", ICCV 2019 (arXiv:1904.09925), Sec. 3.1-3.2:

.. math::
    O_h = \\mathrm{softmax}\\Big(\\frac{Q_h K_h^\\top + S^{rel}_h}{\\sqrt{d_k^h}}\\Big) V_h,
    \\qquad \\mathrm{MHA}(X) = \\mathrm{Concat}[O_1, \\dots, O_{N_h}]\\, W^O

where ``S^rel[i, j] = q_i . r(i, j)`` comes from a :class:`~aug_attn.positional.RelativePositionEncoder`
(1D offsets, 2D offsets, surface geometry); this module knows nothing about the modality.

Mixed precision: under ``torch.autocast`` attention with relative logits or a padding mask (logits,
softmax, weighted sum) runs in float32 and returns the autocast dtype; plain attention uses the fused
SDPA kernels, which accumulate in float32; projections stay in the low precision.

Memory: the ``(N x N)`` logits are computed for blocks of queries whose size keeps each block under
``max_logits_elements``; when there is more than one block and gradients are needed, each block is
recomputed in the backward pass (activation checkpointing), so peak memory grows with ``N`` times
the block size, not ``N^2``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from aug_attn import attention_maps
from aug_attn.positional.base import RelativePositionEncoder

__all__ = ["RelativeMultiheadAttention", "relative_attention", "split_heads", "merge_heads"]

DEFAULT_MAX_LOGITS_ELEMENTS = 1 << 24  # 64 MiB of float32 logits per query block


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


def _block_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    encoder: RelativePositionEncoder | None,
    pos: Any,
    start: int,
    end: int,
    key_padding_mask: Tensor | None,
    dropout_p: float,
) -> Tensor:
    """Attention of the query block ``q (B, h, c, d)`` over all keys; returns ``(B, h, c, d_v)``."""
    bias = encoder(q, pos, start, end) if encoder is not None else None  # (B, h, c, N)
    if bias is not None and tuple(bias.shape[-2:]) != (end - start, k.shape[2]):
        # e.g. a position description (pos) of another number of tokens: broadcasting would hide it
        raise ValueError(
            f"{type(encoder).__name__} gave logits {tuple(bias.shape)} for pos={pos!r}; expected "
            f"(..., {end - start}, {k.shape[2]}) for {end - start} queries over {k.shape[2]} keys"
        )
    if key_padding_mask is not None:
        masked = key_padding_mask[:, None, None, :]  # (B, 1, 1, N)
        bias = (
            torch.zeros(masked.shape, dtype=q.dtype, device=q.device).masked_fill(masked, float("-inf"))
            if bias is None
            else bias.masked_fill(masked, float("-inf"))
        )
    elif bias is not None:
        bias = bias.to(q.dtype)
    # q is pre-scaled so that the relative logits share the 1/sqrt(d) factor (the paper's convention).
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=1.0)


def relative_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    encoder: RelativePositionEncoder | None = None,
    pos: Any = None,
    key_padding_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    max_logits_elements: int = DEFAULT_MAX_LOGITS_ELEMENTS,
) -> Tensor:
    """Scaled dot-product attention with relative logits, chunked over queries.

    Args:
        q: ``(B, h, N, d_k)`` queries, **not** yet scaled.
        k: ``(B, h, N, d_k)`` keys.
        v: ``(B, h, N, d_v)`` values.
        encoder: supplies ``(B, h, c, N)`` relative logits for query blocks; ``None`` for none.
        pos: position description passed to the encoder (e.g. ``L`` or ``(H, W)``).
        key_padding_mask: ``(B, N)`` bool, True where the key is padding and must get no weight.
        dropout_p: dropout on the attention weights.
        max_logits_elements: query blocks are sized so ``B * h * c * N`` stays below this.

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
    materialized = encoder is not None or key_padding_mask is not None
    if materialized and torch.is_autocast_enabled(q.device.type):
        # Explicit logits, relative logits and softmax stay float32 under mixed precision: in bfloat16
        # (8 mantissa bits) a logit of 10 moves by up to 0.04, i.e. 4% of its softmax weight. Output in
        # q's dtype. Without them, the fused SDPA kernels below already accumulate in float32.
        with torch.autocast(q.device.type, enabled=False):
            out = relative_attention(
                q.float(), k.float(), v.float(), encoder, pos, key_padding_mask, dropout_p, max_logits_elements
            )
        return out.to(q.dtype)
    q = q * head_dim**-0.5
    if not materialized:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=1.0)

    block = encoder.block_size(pos) if encoder is not None else 1
    rows = max(block, (max_logits_elements // max(1, batch * heads * tokens)) // block * block)
    if rows >= tokens:
        return _block_attention(q, k, v, encoder, pos, 0, tokens, key_padding_mask, dropout_p)
    recompute = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    outputs = []
    for start in range(0, tokens, rows):
        end = min(tokens, start + rows)
        args = (q[:, :, start:end], k, v, encoder, pos, start, end, key_padding_mask, dropout_p)
        if recompute:
            outputs.append(checkpoint(_block_attention, *args, use_reentrant=False))
        else:
            outputs.append(_block_attention(*args))
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
        if attention_maps.recording():  # off by default: aug_attn.attention_maps.record_attention
            attention_maps.observe(self, q, k, pos, key_padding_mask)
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
