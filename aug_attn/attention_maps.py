"""Attention weights out of the shared core, to look at what a model attends to.

The core (:func:`aug_attn.attention.relative_attention`) never keeps its ``(N x N)`` weights: fused
kernels and query blocks compute them on the fly. This module recomputes them from the layer's
queries and keys, off the training path:

- :func:`relative_logits`: an encoder's relative logits alone, ``e(q, i, j)``, ``(B, h, N_q, N)``;
- :func:`attention_weights`: ``softmax_j((q_i . k_j + e(i, j)) / sqrt(d))`` with the key padding
  mask, ``(B, h, N_q, N)``, the weights the core applies to the values (Bello et al. 2019, Sec. 3.1);
- :class:`record_attention`: a context manager that records these weights for every
  :class:`~aug_attn.attention.RelativeMultiheadAttention` of a model that runs inside it.

The recorder works from outside, as timm's ``attention_extract`` does: it attaches forward hooks to
the model's attention modules while it is active and removes them on exit; a hook recomputes the
layer's queries and keys from its input, in the module's dtype and under the caller's autocast, as
its forward did. The core knows nothing of it and pays nothing when no one records. Weights are
float32 (float64 for a float64 module; the softmax over those queries and keys, whatever autocast
does), detached, without dropout (eval semantics).

Example::

    with record_attention(model) as records:
        model(x)
    records[-1].name, records[-1].weights.shape  # ('backend.2.attn', (B, h, N, N))
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from aug_attn.attention import RelativeMultiheadAttention, split_heads
from aug_attn.positional.base import RelativePositionEncoder

__all__ = ["AttentionRecord", "record_attention", "attention_weights", "relative_logits"]

DEFAULT_MAX_ELEMENTS = 1 << 24  # float32 logits per query block, as the core's default budget


def _query_blocks(tokens: int, block: int, rows: int, queries: Tensor | None) -> list[tuple[int, int]]:
    """``(start, end)`` of the query blocks: all ``tokens`` queries in blocks of ``rows`` (a multiple
    of the encoder's ``block``), or only the blocks of size ``block`` that hold ``queries``."""
    if queries is None:
        return [(start, min(tokens, start + rows)) for start in range(0, tokens, rows)]
    starts = sorted({int(i) // block * block for i in queries.tolist()})
    return [(start, min(tokens, start + block)) for start in starts]


def _check_queries(queries: Sequence[int] | Tensor | None, tokens: int) -> Tensor | None:
    if queries is None:
        return None
    queries = torch.as_tensor(queries, dtype=torch.long).flatten()
    if queries.numel() == 0 or int(queries.min()) < 0 or int(queries.max()) >= tokens:
        raise ValueError(f"queries {queries.tolist()} must be token indices in [0, {tokens})")
    return queries


def _parameter_dtype(module: nn.Module, default: torch.dtype) -> torch.dtype:
    """The dtype of ``module``'s floating-point parameters, ``default`` if it has none."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), default)


def _gather_logits(
    q: Tensor, keys: Tensor | None, encoder: RelativePositionEncoder | None, pos: Any,
    queries: Tensor | None, max_elements: int,
) -> Tensor:
    """``(B, h, N_q, N)`` of ``q . k`` (when ``keys`` is given) plus the encoder's logits, for scaled ``q``."""
    batch, heads, tokens, _ = q.shape
    num_keys = tokens if keys is None else keys.shape[2]
    block = encoder.block_size(pos) if encoder is not None else 1
    # the encoder reads queries in its own dtype, as in the core (e.g. a float64 layer's tables)
    encoder_dtype = _parameter_dtype(encoder, q.dtype) if encoder is not None else q.dtype
    rows = max(block, (max_elements // max(1, batch * heads * num_keys)) // block * block)
    parts, order = [], []
    for start, end in _query_blocks(tokens, block, rows, queries):
        logits = q.new_zeros(batch, heads, end - start, num_keys)  # (B, h, c, N)
        if keys is not None:
            logits = logits + q[:, :, start:end] @ keys.transpose(-1, -2)
        if encoder is not None:
            logits = logits + encoder(q[:, :, start:end].to(encoder_dtype), pos, start, end).to(q.dtype)
        parts.append(logits)
        order.append(torch.arange(start, end))
    logits, index = torch.cat(parts, dim=2), torch.cat(order)  # (B, h, N_blocks, N), (N_blocks,)
    if queries is None:
        return logits
    where = torch.searchsorted(index, queries)  # blocks are sorted and disjoint
    return logits[:, :, where.to(logits.device)]  # (B, h, N_q, N)


def relative_logits(
    q: Tensor,
    encoder: RelativePositionEncoder,
    pos: Any,
    queries: Sequence[int] | Tensor | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> Tensor:
    """The encoder's relative logits ``e(q, i, j)`` alone, as the core adds them before the softmax.

    Args:
        q: ``(B, h, N, d)`` queries, **not** scaled (scaled here by ``d**-0.5``, the core's convention).
        encoder: a :class:`~aug_attn.positional.RelativePositionEncoder`.
        pos: its position description for the ``N`` tokens (``L``, ``(H, W)``, surface geometry).
        queries: token indices of the rows to return (default: all ``N``).
        max_elements: query blocks are sized so that ``B * h * c * N`` stays below this.

    Returns:
        ``(B, h, N_q, N)`` in ``q``'s dtype.
    """
    queries = _check_queries(queries, q.shape[2])
    return _gather_logits(q * q.shape[-1] ** -0.5, None, encoder, pos, queries, max_elements)


def attention_weights(
    q: Tensor,
    k: Tensor,
    encoder: RelativePositionEncoder | None = None,
    pos: Any = None,
    key_padding_mask: Tensor | None = None,
    queries: Sequence[int] | Tensor | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> Tensor:
    """``softmax_j((q_i . k_j + q_i . r(i, j)) / sqrt(d))``: the weights of :func:`~aug_attn.attention.relative_attention`.

    Args:
        q, k: ``(B, h, N, d)`` queries (not scaled) and keys.
        encoder, pos: as :func:`relative_logits`; ``None``: plain dot-product attention.
        key_padding_mask: ``(B, N)`` bool, True where the key gets no weight.
        queries, max_elements: as :func:`relative_logits`.

    Returns:
        ``(B, h, N_q, N)``, rows summing to 1, in ``q``'s dtype.
    """
    queries = _check_queries(queries, q.shape[2])
    logits = _gather_logits(q * q.shape[-1] ** -0.5, k, encoder, pos, queries, max_elements)
    if key_padding_mask is not None:
        logits = logits.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    return torch.softmax(logits, dim=-1)


@dataclass
class AttentionRecord:
    """The weights of one call of one attention module.

    Attributes:
        name: the module's qualified name in the recorded model (``model.get_submodule(name)``).
        weights: ``(B, h, N_q, N)`` float32 (float64 for a float64 module) on the module's device.
        queries: ``(N_q,)`` token indices of the rows, or None for all ``N`` queries.
        pos: the position description the module was called with (e.g. ``(H, W)``).
    """

    name: str
    weights: Tensor
    queries: Tensor | None
    pos: Any


class record_attention:
    """Context manager recording the attention weights of every ``RelativeMultiheadAttention`` of
    ``model`` that runs inside it, in call order (a module called twice gives two records).

    Args:
        model: the model whose attention modules are recorded (others running meanwhile are not).
        queries: token indices whose rows are kept (default all), the same for every module; an index
            beyond a module's ``N`` is an error.

    Yields:
        the list of :class:`AttentionRecord`, filled as the model runs.
    """

    def __init__(self, model: nn.Module, queries: Sequence[int] | None = None) -> None:
        self.model, self.queries = model, queries
        self.records: list[AttentionRecord] = []
        self.handles: list[Any] = []

    def __enter__(self) -> list[AttentionRecord]:
        for name, module in self.model.named_modules():
            if isinstance(module, RelativeMultiheadAttention):
                self.handles.append(module.register_forward_hook(functools.partial(self._hook, name), with_kwargs=True))
        return self.records

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _hook(self, name: str, module: RelativeMultiheadAttention, args: tuple, kwargs: dict, output: Tensor) -> None:
        """Recompute the module's queries and keys from its input ``x (B, N, C)`` and record the weights."""
        call = inspect.signature(module.forward).bind(*args, **kwargs)
        call.apply_defaults()
        x, pos, key_padding_mask = call.arguments["x"], call.arguments["pos"], call.arguments["key_padding_mask"]
        with torch.no_grad():
            # The projection as the forward ran it (the module's dtype, the caller's autocast): the
            # queries and keys are those the layer attended with, not a float32 recomputation of them.
            q, k, _ = module.qkv(x).split([module.dk, module.dk, module.dv], dim=-1)  # (B, N, dk) each
            dtype = torch.promote_types(q.dtype, torch.float32)
            q, k = split_heads(q, module.num_heads).to(dtype), split_heads(k, module.num_heads).to(dtype)  # (B, h, N, d)
            queries = _check_queries(self.queries, q.shape[2])
            # at least float32 and no autocast: the weights a user reads should not carry bfloat16 rounding.
            with torch.autocast(x.device.type, enabled=False):
                weights = attention_weights(q, k, module.encoder, pos, key_padding_mask, queries)
        self.records.append(AttentionRecord(name, weights, queries, pos))
