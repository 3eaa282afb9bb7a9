"""The attention layer of every modality: projections, heads, and the core of :mod:`.dispatch`."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from aug_attn.attention.common import DEFAULT_MAX_LOGITS_ELEMENTS, merge_heads, split_heads
from aug_attn.attention.dispatch import relative_attention
from aug_attn.positional.base import RelativePositionEncoder

__all__ = ["RelativeMultiheadAttention", "check_head_split"]


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
        max_logits_elements: query-block budget, see :func:`~aug_attn.attention.relative_attention`.

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
