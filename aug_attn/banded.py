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

CPU only (the kernels are ``aten._scaled_dot_product_flash_attention_for_cpu`` and its backward,
which return and take the log-sum-exp); float32 and float64, no dropout, no padding mask. On CUDA
:func:`flex_band_attention` gathers the clipped table inside FlexAttention's kernel instead.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

__all__ = ["banded_block_attention", "banded_is_faster", "banded_supported", "flex_band_attention"]


def banded_is_faster(tokens: int, band: int) -> bool:
    """The cost rule for the band path: most keys of a query block lie beyond its window of about
    ``2D`` keys (at ``N = 4D`` the window is half the keys; see ``scripts/bench_attention.py``)."""
    return 4 * band <= tokens


def banded_supported(q: Tensor, dropout_p: float, masked: bool) -> bool:
    """Whether :func:`banded_block_attention` runs for these queries (CPU float32/64, no dropout or mask)."""
    return (
        q.device.type == "cpu"
        and q.dtype in (torch.float32, torch.float64)
        and dropout_p == 0.0
        and not masked
        and not torch.compiler.is_exporting()  # exporters know no private flash op
    )


def _flash(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Fused attention of pre-scaled queries: output ``(B, h, c, d_v)`` and log-sum-exp ``(B, h, c)``."""
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, scale=1.0)
    return out, lse.to(q.dtype)


class _BandedAttention(torch.autograd.Function):
    """Softmax attention of a query block over window keys (given logits) and the far keys on each
    side (constant logits per query), merged through the parts' log-sum-exps."""

    @staticmethod
    def forward(ctx, q, k, v, window_logits, edge_left, edge_right, key_start: int, key_end: int):
        # q (B, h, c, d), k/v (B, h, N, d), window_logits (B, h, c, key_end - key_start), edges (B, h, c)
        window = slice(key_start, key_end)
        scores = q @ k[:, :, window].transpose(-1, -2) + window_logits  # (B, h, c, n_w)
        lse_window = scores.logsumexp(-1)  # (B, h, c)
        outs, lses = [torch.exp(scores - lse_window[..., None]) @ v[:, :, window]], [lse_window]
        for keys, edge in _far_parts(k.shape[2], key_start, key_end, edge_left, edge_right):
            out, lse = _flash(q, k[:, :, keys], v[:, :, keys])
            outs.append(out)
            lses.append(lse + edge)
        lse = torch.logsumexp(torch.stack(lses), dim=0)  # (B, h, c)
        out = sum(torch.exp(part_lse - lse)[..., None] * part for part, part_lse in zip(outs, lses))
        ctx.save_for_backward(q, k, v, window_logits, edge_left, edge_right, out, lse, *outs[1:], *lses[1:])
        ctx.key_range = (key_start, key_end)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, window_logits, edge_left, edge_right, out, lse, *far = ctx.saved_tensors
        key_start, key_end = ctx.key_range
        grad_out = grad_out.contiguous()
        delta = (grad_out * out).sum(-1)  # (B, h, c): dO . o, the softmax Jacobian's row term
        window = slice(key_start, key_end)
        k_window, v_window = k[:, :, window], v[:, :, window]
        probs = torch.exp(q @ k_window.transpose(-1, -2) + window_logits - lse[..., None])  # (B, h, c, n_w)
        grad_scores = probs * (grad_out @ v_window.transpose(-1, -2) - delta[..., None])  # (B, h, c, n_w)
        grad_q = grad_scores @ k_window
        grad_k, grad_v = {window.start: grad_scores.transpose(-1, -2) @ q}, {window.start: probs.transpose(-1, -2) @ grad_out}
        grad_edges = [torch.zeros_like(edge_left), torch.zeros_like(edge_right)]
        parts = list(_far_parts(k.shape[2], key_start, key_end, edge_left, edge_right))
        for (keys, edge), part_out, part_lse in zip(parts, far[: len(parts)], far[len(parts) :]):
            # The merged output and log-sum-exp (less the part's constant): the part's share of the gradients.
            dq, grad_k[keys.start], grad_v[keys.start] = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
                grad_out, q, k[:, :, keys], v[:, :, keys], out, lse - edge, 0.0, False, scale=1.0
            )
            grad_q = grad_q + dq
            weight = torch.exp(part_lse - lse)  # (B, h, c): the part's share of the softmax
            grad_edges[keys.start > 0] = weight * ((grad_out * part_out).sum(-1) - delta)
        grad_k = torch.cat([grad_k[key] for key in sorted(grad_k)], dim=2)  # key ranges in order
        grad_v = torch.cat([grad_v[key] for key in sorted(grad_v)], dim=2)
        return grad_q, grad_k, grad_v, grad_scores, grad_edges[0], grad_edges[1], None, None


def _far_parts(tokens: int, key_start: int, key_end: int, edge_left: Tensor, edge_right: Tensor):
    """The non-empty far key ranges with their constant logits: ``[0, key_start)``, ``[key_end, N)``."""
    if key_start > 0:
        yield slice(0, key_start), edge_left
    if key_end < tokens:
        yield slice(key_end, tokens), edge_right


def banded_block_attention(q: Tensor, k: Tensor, v: Tensor, encoder: Any, pos: Any, start: int, end: int, band: int) -> Tensor:
    """Attention of the query block ``q (B, h, c, d)`` (pre-scaled) over all keys, for an encoder with a band.

    The encoder gives the logits of the window ``[start - D, end + D)``; its diagonals at the
    window's two ends are the constant logits of the far keys on each side.

    Returns:
        ``(B, h, c, d_v)``.
    """
    tokens = k.shape[2]
    logits = encoder.band_logits(q, pos, start, end, start - band, end + band)  # (B, h, c, c + 2D)
    edge_left = logits.diagonal(0, -2, -1)  # (B, h, c): offset -D
    edge_right = logits.diagonal(2 * band, -2, -1)  # (B, h, c): offset +D
    key_start, key_end = max(0, start - band), min(tokens, end + band)
    window_logits = logits[..., key_start - (start - band) : key_end - (start - band)]  # (B, h, c, n_w)
    return _BandedAttention.apply(q, k, v, window_logits.to(q.dtype), edge_left, edge_right, key_start, key_end)


def flex_band_attention(q: Tensor, k: Tensor, v: Tensor, table_logits: Tensor, band: int) -> Tensor:
    """CUDA: attention with logits ``q.k + table_logits[..., i, clip(j - i) + D]`` in FlexAttention's kernel.

    Args:
        q, k, v: ``(B, h, N, d)``, q pre-scaled.
        table_logits: ``(B, h, N, 2D + 1)``, ``q_i . r[m - D]``: the relative table seen by each query,
            gathered inside the kernel (CUDA computes the gradient of such captured tensors).

    Returns:
        ``(B, h, N, d)``.
    """
    def score_mod(score, b, h, q_idx, kv_idx):
        return score + table_logits[b, h, q_idx, (kv_idx - q_idx).clamp(-band, band) + band]

    return _compiled_flex()(q, k, v, score_mod=score_mod, scale=1.0)


@functools.cache
def _compiled_flex():
    """FlexAttention compiled once: uncompiled, it runs an unfused reference implementation."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)
