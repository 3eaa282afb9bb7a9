"""The factorized path: relative logits as extra depth of one fused SDPA call, no logits tensor.

An encoder with a factorized form (:meth:`~aug_attn.positional.RelativePositionEncoder.factorized`)
writes its logits as ``a_i . b_j``, so attention with them is plain attention on ``[q_i, a_i]`` and
``[k_j, b_j]`` at depth ``d_k + a`` (``a = H + W`` in 2D): PyTorch's fused kernels on any device,
with a padding mask and dropout. :mod:`~aug_attn.attention.tiled` runs the same over tiles of keys
at a smaller depth on the CPU.
"""

from __future__ import annotations

import torch
from torch import Tensor

from aug_attn.attention.common import AttentionInputs, AttentionPath, encoder_factors, fused_attention

__all__ = ["PATH", "supported", "run", "factorized_is_faster", "wanted", "FACTORIZED_MAX_DEPTH", "FACTORIZED_MAX_DEPTH_ONE_BLOCK"]

FACTORIZED_MAX_DEPTH = 160  # see factorized_is_faster
FACTORIZED_MAX_DEPTH_ONE_BLOCK = 32


def factorized_is_faster(head_dim: int, value_dim: int, extra: int, one_block: bool) -> bool:
    """The cost rule between the factorized (fused) and the reference (materialized logits) path.

    The fused kernel's work per query-key pair grows with its depth ``max(d_k + a, d_v)``
    (``a = H + W`` in 2D); the reference path's is a few passes over each materialized logit, 1.5x
    more when the logits exceed one block and are recomputed in backward. Measured on CPU
    (``scripts/bench_attention.py``, 2 cores): where the logits fit one block (16x16 maps, depth 40
    and 52) the reference path is about 10% faster; where they are recomputed the fused path wins up
    to depth 116 (2.6x at depth 72, 3.7x at 116). Hence fused up to ``FACTORIZED_MAX_DEPTH`` when
    the reference path would recompute, and up to ``FACTORIZED_MAX_DEPTH_ONE_BLOCK`` otherwise.
    """
    depth = max(head_dim + extra, value_dim)
    return depth <= (FACTORIZED_MAX_DEPTH_ONE_BLOCK if one_block else FACTORIZED_MAX_DEPTH)


def wanted(inputs: AttentionInputs) -> list[str]:
    """Why the factorized form is not to be used (refusals shared with the tiled path): no encoder or
    no factorized form, ``factorize=False``, or (``factorize=None``) :func:`factorized_is_faster` says no."""
    if inputs.encoder is None or inputs.factorized_dim is None:
        return ["the encoder has no factorized form for these positions"]
    if inputs.factorize is False:
        return ["factorize=False"]
    if inputs.factorize is None:
        one_block = inputs.batch * inputs.heads * inputs.tokens * inputs.tokens <= inputs.max_logits_elements
        if not factorized_is_faster(inputs.head_dim, inputs.value_dim, inputs.factorized_dim, one_block):
            depth = max(inputs.head_dim + inputs.factorized_dim, inputs.value_dim)
            return [f"cost rule: fused depth {depth} is slower than materialized logits ({'one block' if one_block else 'recomputed blocks'})"]
    return []


def supported(inputs: AttentionInputs) -> list[str]:
    return wanted(inputs)


def run(inputs: AttentionInputs) -> Tensor:
    """``(B, h, N, d_v)``: fused SDPA on ``[q, a]`` and ``[k, b]``."""
    q, k = inputs.scaled_q(), inputs.k
    q_aug, k_aug = encoder_factors(inputs.encoder, q, inputs.pos, inputs.tokens)  # (B, h, N, a), (N, a)
    k_aug = k_aug.to(k.dtype).expand(inputs.batch, inputs.heads, inputs.tokens, inputs.factorized_dim)  # (B, h, N, a)
    # q_aug is built from the scaled q, so q_aug . k_aug is the relative term of the paper's scaling.
    return fused_attention(torch.cat([q, q_aug], dim=-1), torch.cat([k, k_aug], dim=-1), inputs.v, inputs.allowed(), inputs.dropout_p)


PATH = AttentionPath("factorized", supported, run)
