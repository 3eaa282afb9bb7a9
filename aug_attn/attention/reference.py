"""The reference path: materialized logits for blocks of queries, recomputed in backward.

Any encoder works here (its :meth:`~aug_attn.positional.RelativePositionEncoder.forward` gives the
logits of a block of queries), with a padding mask and dropout, on any device and dtype: the path
every other one is tested against, and the one taken where no other applies. The ``(N x N)``
logits are computed for blocks of queries sized to keep each block under ``max_logits_elements``;
with more than one block and gradients needed, each block is recomputed in the backward pass
(activation checkpointing), so peak memory grows with ``N`` times the block size, not ``N^2``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from aug_attn.attention.common import AttentionInputs, AttentionPath, check_logits
from aug_attn.positional.base import RelativePositionEncoder

__all__ = ["PATH", "supported", "run", "block_attention", "over_query_blocks"]



def supported(inputs: AttentionInputs) -> list[str]:
    """Every call with an encoder (without one, the plain fused path runs)."""
    return [] if inputs.encoder is not None else ["no encoder: plain fused attention"]


def run(inputs: AttentionInputs) -> Tensor:
    """``(B, h, N, d_v)`` from blocks of queries with materialized logits."""
    q, k, v, encoder, pos = inputs.scaled_q(), inputs.k, inputs.v, inputs.encoder, inputs.pos
    block = encoder.block_size(pos)
    rows = max(block, (inputs.max_logits_elements // max(1, inputs.batch * inputs.heads * inputs.tokens)) // block * block)
    return over_query_blocks(
        lambda qb, s, e: block_attention(qb, k, v, encoder, pos, s, e, inputs.key_padding_mask, inputs.dropout_p), q, k, v, rows
    )


def block_attention(
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
    """Attention of the pre-scaled query block ``q (B, h, c, d)`` over all keys; returns ``(B, h, c, d_v)``."""
    bias = encoder(q, pos, start, end)  # (B, h, c, N)
    check_logits(bias, encoder, pos, start, end, k.shape[2])
    bias = bias.to(q.dtype)
    if key_padding_mask is not None:
        bias = bias.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))  # (B, h, c, N)
    # q is pre-scaled so that the relative logits share the 1/sqrt(d) factor (the paper's convention).
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=1.0)


def over_query_blocks(block_fn: Callable[[Tensor, int, int], Tensor], q: Tensor, k: Tensor, v: Tensor, rows: int) -> Tensor:
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


PATH = AttentionPath("reference", supported, run)
