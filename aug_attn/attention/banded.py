"""Exact attention with band-limited relative logits: a fused kernel for the keys beyond the band.

With offsets clipped at ``D`` (Shaw et al. 2018; the 1D tables here), the relative logit of query
``i`` and key ``j`` is ``q_i . r[clip(j - i, -D, D)]``: beyond the band ``|j - i| < D`` it is one
number per query and side, ``e^-_i = q_i . r[-D]`` and ``e^+_i = q_i . r[D]``. For a block of
queries ``[s, e)`` the keys split into the window ``[s - D, e + D)``, whose logits are
materialized as usual, and the far keys ``[0, s - D)`` and ``[e + D, N)``, whose logits are
``q_i . k_j + e^-_i`` and ``q_i . k_j + e^+_i``: plain attention shifted by a constant per query,
which a flash kernel computes without logits. The three parts are merged through their
log-sum-exps, exactly (the merge of blockwise softmaxes, as in flash and ring attention):

.. math::
    o_i = \\sum_p e^{\\ell_{p,i} - \\ell_i}\\, o_{p,i}, \\qquad \\ell_i = \\log \\sum_p e^{\\ell_{p,i}}.

The backward pass runs the flash backward kernel of each far part with the *merged* output and
log-sum-exp (shifted by the part's constant), which gives exactly that part's share of the
gradients of the one softmax over all keys; the constant's gradient is the part's weight times
``dO . (o_p - o)``.

CPU only (:func:`~aug_attn.attention.common.flash_cpu` and its backward, which return and take the
log-sum-exp); float32 and float64, no dropout, no padding mask, values no deeper than queries. On
CUDA :func:`~aug_attn.attention.flex.flex_band_attention` gathers the clipped table inside
FlexAttention's kernel instead.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from aug_attn.attention.common import (
    AttentionInputs,
    AttentionPath,
    band_rows,
    banded_is_faster,
    check_logits,
    flash_cpu,
    flash_cpu_backward,
    flash_cpu_supported,
    merge_partial,
)

__all__ = ["PATH", "supported", "run", "banded_block_attention", "banded_is_faster"]

MIN_ROWS = 32  # see run


def supported(inputs: AttentionInputs) -> list[str]:
    """An encoder with a band where :func:`~aug_attn.attention.common.banded_is_faster`, the CPU
    flash kernels usable, ``d_v <= d_k`` (the kernel takes one depth: values are zero-padded)."""
    if inputs.band is None:
        return ["the encoder has no band for these positions"]
    if not banded_is_faster(inputs.tokens, inputs.band):
        return [f"cost rule: {inputs.tokens} tokens is under 4 x band {inputs.band}"]
    reasons = flash_cpu_supported(inputs)
    if inputs.value_dim > inputs.head_dim:
        reasons.append(f"value depth {inputs.value_dim} > query depth {inputs.head_dim}")
    return reasons


def run(inputs: AttentionInputs) -> Tensor:
    """``(B, h, N, d_v)``: the band's logits per query block, the keys beyond it fused."""
    q, k, v, encoder, pos, band, tokens = inputs.scaled_q(), inputs.k, inputs.v, inputs.encoder, inputs.pos, inputs.band, inputs.tokens
    # The band path never builds a full logits row, so the reference's shape check runs on one query.
    with torch.no_grad():
        check_logits(encoder(q[:, :, :1], pos, 0, 1), encoder, pos, 0, 1, tokens)
    v_padded = F.pad(v, (0, inputs.head_dim - inputs.value_dim))  # zero value columns, cut off after
    rows = band_rows(inputs.batch * inputs.heads, band, inputs.max_logits_elements)
    rows = min(rows, max(MIN_ROWS, band // 4))  # a window of about 2D keys, not 2D + c
    out = torch.cat(
        [banded_block_attention(q[:, :, s : s + rows], k, v_padded, encoder, pos, s, min(tokens, s + rows), band) for s in range(0, tokens, rows)],
        dim=2,
    )  # (B, h, N, d_k)
    return out[..., : inputs.value_dim]


def _window(encoder: Any, q: Tensor, pos: Any, start: int, end: int, band: int, tokens: int):
    """Logits of the query block ``[start, end)`` for its window of keys, and the far keys' constants.

    Returns:
        ``window_logits (B, h, c, n_w)`` for keys ``[key_start, key_end)`` (the window
        ``[start - D, end + D)`` cut to the sequence), ``edge_left``, ``edge_right`` ``(B, h, c)``
        (the logits at offsets ``-D`` and ``+D``: the diagonals at the window's two ends),
        ``key_start``, ``key_end``.
    """
    logits = encoder.band_logits(q, pos, start, end, start - band, end + band).to(q.dtype)  # (B, h, c, c + 2D)
    edge_left, edge_right = logits.diagonal(0, -2, -1), logits.diagonal(2 * band, -2, -1)  # (B, h, c)
    key_start, key_end = max(0, start - band), min(tokens, end + band)
    window_logits = logits[..., key_start - (start - band) : key_end - (start - band)]  # (B, h, c, n_w)
    return window_logits, edge_left, edge_right, key_start, key_end


def _far_parts(tokens: int, key_start: int, key_end: int, edge_left: Tensor, edge_right: Tensor):
    """The non-empty far key ranges with their constant logits: ``[0, key_start)``, ``[key_end, N)``."""
    if key_start > 0:
        yield slice(0, key_start), edge_left
    if key_end < tokens:
        yield slice(key_end, tokens), edge_right


class _BandedAttention(torch.autograd.Function):
    """Softmax attention of a query block over its window of keys (encoder logits) and the far keys
    on each side (constant logits per query), merged through the parts' log-sum-exps.

    Saves no logits: the backward pass recomputes the window's (one block's worth at a time) and
    sends their gradient through the encoder to the queries and the encoder's parameters.
    """

    @staticmethod
    def forward(ctx, q, k, v, encoder, pos, start: int, end: int, band: int, *params):
        # q (B, h, c, d), k/v (B, h, N, d)
        tokens = k.shape[2]
        with torch.no_grad():
            window_logits, edge_left, edge_right, key_start, key_end = _window(encoder, q, pos, start, end, band, tokens)
        window = slice(key_start, key_end)
        out, lse = flash_cpu(q, k[:, :, window], v[:, :, window], window_logits)
        far_outs, far_lses = [], []
        for keys, edge in _far_parts(tokens, key_start, key_end, edge_left, edge_right):
            part, part_lse = flash_cpu(q, k[:, :, keys], v[:, :, keys])
            part_lse = part_lse + edge  # the far keys' constant logit
            far_outs.append(part)
            far_lses.append(part_lse)
            out, lse = merge_partial(out, lse, part, part_lse)
        ctx.save_for_backward(q, k, v, out, lse, *far_outs, *far_lses, *params)
        ctx.args = (encoder, pos, start, end, band, len(params))
        return out

    @staticmethod
    def backward(ctx, grad_out):
        encoder, pos, start, end, band, num_params = ctx.args
        q, k, v, out, lse, *rest = ctx.saved_tensors
        far, params = rest[: len(rest) - num_params], rest[len(rest) - num_params :]
        with torch.enable_grad():
            q_leaf = q.detach().requires_grad_()
            window_logits, edge_left, edge_right, key_start, key_end = _window(encoder, q_leaf, pos, start, end, band, k.shape[2])
        grad_out = grad_out.contiguous()
        delta = (grad_out * out).sum(-1)  # (B, h, c): dO . o, the softmax Jacobian's row term
        window = slice(key_start, key_end)
        k_window, v_window = k[:, :, window], v[:, :, window]
        probs = torch.exp(q @ k_window.transpose(-1, -2) + window_logits.detach() - lse[..., None])  # (B, h, c, n_w)
        grad_scores = probs * (grad_out @ v_window.transpose(-1, -2) - delta[..., None])  # (B, h, c, n_w)
        grad_q = grad_scores @ k_window
        grad_k, grad_v = {key_start: grad_scores.transpose(-1, -2) @ q}, {key_start: probs.transpose(-1, -2) @ grad_out}
        grad_edges = [torch.zeros_like(edge_left), torch.zeros_like(edge_right)]
        parts = list(_far_parts(k.shape[2], key_start, key_end, edge_left.detach(), edge_right.detach()))
        for (keys, edge), part_out, part_lse in zip(parts, far[: len(parts)], far[len(parts) :]):
            # The merged output and log-sum-exp (less the part's constant): the part's share of the gradients.
            dq, grad_k[keys.start], grad_v[keys.start] = flash_cpu_backward(grad_out, q, k[:, :, keys], v[:, :, keys], out, lse - edge)
            grad_q = grad_q + dq
            weight = torch.exp(part_lse - lse)  # (B, h, c): the part's share of the softmax
            grad_edges[keys.start > 0] = weight * ((grad_out * part_out).sum(-1) - delta)
        grad_encoder = torch.autograd.grad(
            (window_logits, edge_left, edge_right), (q_leaf, *params), (grad_scores, *grad_edges), allow_unused=True
        )
        grad_q = grad_q + grad_encoder[0]
        grad_k = torch.cat([grad_k[key] for key in sorted(grad_k)], dim=2)  # key ranges in order
        grad_v = torch.cat([grad_v[key] for key in sorted(grad_v)], dim=2)
        return grad_q, grad_k, grad_v, None, None, None, None, None, *grad_encoder[1:]


def banded_block_attention(q: Tensor, k: Tensor, v: Tensor, encoder: Any, pos: Any, start: int, end: int, band: int) -> Tensor:
    """Attention of the query block ``q (B, h, c, d)`` (pre-scaled) over all keys, for an encoder with a band.

    Returns:
        ``(B, h, c, d_v)``.
    """
    params = [p for p in encoder.parameters() if p.requires_grad]
    return _BandedAttention.apply(q, k, v, encoder, pos, start, end, band, *params)


PATH = AttentionPath("banded", supported, run)
