"""Which exact path computes :func:`relative_attention`: one priority list, one choice per call.

Every path computes the same function (Bello et al. 2019, Sec. 3.1-3.2),

.. math::
    O_h = \\mathrm{softmax}\\Big(\\frac{Q_h K_h^\\top + S^{rel}_h}{\\sqrt{d_k^h}}\\Big) V_h,

with ``S^rel[i, j] = q_i . r(i, j)`` from a :class:`~aug_attn.positional.RelativePositionEncoder`;
they differ in what they need and what they cost. The first path in :data:`PATHS` whose
``supported(inputs)`` gives no reason to refuse runs:

==============  ================================================================  ====================
path            needs (and cost rule)                                             module
==============  ================================================================  ====================
``plain``       no encoder (a padding mask and dropout are fine)                  :mod:`.plain`
``flex_grid``   CUDA, a grid encoder (2D), no mask or dropout                     :mod:`.flex`
``flex_band``   CUDA, a band encoder (clipped 1D) with ``N >= 4D``                :mod:`.flex`
``native``      CPU float32/64, a grid encoder, no mask or dropout, the kernel    :mod:`.native`
``tiled``       CPU float32/64, a factorized form with key tiles, no mask or      :mod:`.tiled`
                dropout; factorized form wanted and tiles' depth 1.5x smaller
``factorized``  a factorized form; its cost rule (fused depth vs. logits)         :mod:`.factorized`
``banded``      CPU float32/64, a band with ``N >= 4D``, no mask or dropout       :mod:`.banded`
``reference``   any encoder: materialized logits per query block                  :mod:`.reference`
==============  ================================================================  ====================

``factorize=True`` forces the factorized form (``native``, ``flex_grid``, ``tiled`` or
``factorized``), ``False`` forbids it; :func:`disabled_paths` takes paths out of the list for a
block (benchmarks and tests compare paths that way). :func:`attention_path` says which path a call
takes and why each path before it refused; the logger ``aug_attn.attention.dispatch`` at DEBUG
level says the same for every call (outside ``torch.compile``).

**Mixed precision.** Under ``torch.autocast`` a call with relative logits or a padding mask runs
in float32 with autocast off and returns the autocast dtype: in bfloat16 (8 mantissa bits) a logit
of 10 moves by up to 0.04, i.e. 4% of its softmax weight. The FlexAttention paths take queries,
keys and values in the autocast dtype and the per-query logits tables in float32; their kernel
forms the logits and the softmax in float32. Plain attention uses the fused SDPA kernels, which
accumulate in float32; projections stay in the low precision.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from aug_attn.attention import banded, factorized, flex, native, plain, reference, tiled
from aug_attn.attention.common import DEFAULT_MAX_LOGITS_ELEMENTS, AttentionInputs, AttentionPath
from aug_attn.positional.base import RelativePositionEncoder

__all__ = ["PATHS", "PathChoice", "attention_path", "disabled_paths", "relative_attention"]

log = logging.getLogger(__name__)

PATHS: tuple[AttentionPath, ...] = (
    plain.PATH,
    flex.GRID_PATH,
    flex.BAND_PATH,
    native.PATH,
    tiled.PATH,
    factorized.PATH,
    banded.PATH,
    reference.PATH,
)
_DISABLED: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PathChoice:
    """The path a call takes and, for each path tried before it, why it refused."""

    path: str
    refused: dict[str, list[str]]

    def __str__(self) -> str:
        lines = [f"path: {self.path}"] + [f"  not {name}: {'; '.join(reasons)}" for name, reasons in self.refused.items()]
        return "\n".join(lines)


@contextmanager
def disabled_paths(*names: str) -> Iterator[None]:
    """Run a block with the named paths out of :data:`PATHS` (``reference`` always stays)."""
    global _DISABLED
    unknown = set(names) - {path.name for path in PATHS}
    if unknown or "reference" in names:
        raise ValueError(f"cannot disable {sorted(unknown | ({'reference'} & set(names)))}; paths: {[p.name for p in PATHS]}")
    previous, _DISABLED = _DISABLED, _DISABLED | frozenset(names)
    try:
        yield
    finally:
        _DISABLED = previous


def _inputs(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    encoder: RelativePositionEncoder | None,
    pos: Any,
    key_padding_mask: Tensor | None,
    dropout_p: float,
    max_logits_elements: int,
    factorize: bool | None,
) -> AttentionInputs:
    """Check a call's arguments and collect them (shapes in :func:`relative_attention`)."""
    batch, heads, tokens, _ = q.shape
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
    device = q.device.type
    autocast_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
    inputs = AttentionInputs(q, k, v, encoder, pos, key_padding_mask, dropout_p, max_logits_elements, factorize, autocast_dtype)
    if factorize and encoder is not None and inputs.factorized_dim is None:
        raise ValueError(f"factorize=True, but {type(encoder).__name__} has no factorized form for pos={pos!r}")
    return inputs


def _choose(inputs: AttentionInputs, explain: bool) -> tuple[AttentionPath, AttentionInputs, dict[str, list[str]]]:
    """The first path of :data:`PATHS` that takes the call, the inputs it sees (float32 under
    autocast unless it keeps autocast), and (``explain``) the refusals of those before it."""
    refused: dict[str, list[str]] = {}
    in_float32 = None
    for path in PATHS:
        if path.name in _DISABLED:
            if explain:
                refused[path.name] = ["disabled (disabled_paths)"]
            continue
        seen = inputs
        if inputs.autocast_dtype is not None and inputs.materialized and not path.keeps_autocast:
            in_float32 = in_float32 if in_float32 is not None else inputs.in_float32()
            seen = in_float32
        reasons = path.supported(seen)
        if not reasons:
            return path, seen, refused
        if explain:
            refused[path.name] = reasons
    raise AssertionError("the reference path takes every call with an encoder, the plain path every other")


def attention_path(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    encoder: RelativePositionEncoder | None = None,
    pos: Any = None,
    key_padding_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    max_logits_elements: int = DEFAULT_MAX_LOGITS_ELEMENTS,
    factorize: bool | None = None,
) -> PathChoice:
    """Which path :func:`relative_attention` takes for these arguments, and why the paths before it
    refused (``print`` it). Call it under the same autocast and compile state as the real call."""
    inputs = _inputs(q, k, v, encoder, pos, key_padding_mask, dropout_p, max_logits_elements, factorize)
    path, _, refused = _choose(inputs, explain=True)
    return PathChoice(path.name, refused)


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
    """Scaled dot-product attention with relative logits, by the first path of :data:`PATHS` that
    takes the call (module docstring; :func:`attention_path` tells which).

    Args:
        q: ``(B, h, N, d_k)`` queries, **not** yet scaled.
        k: ``(B, h, N, d_k)`` keys.
        v: ``(B, h, N, d_v)`` values.
        encoder: supplies ``(B, h, c, N)`` relative logits for query blocks; ``None`` for none.
        pos: position description passed to the encoder (e.g. ``L`` or ``(H, W)``).
        key_padding_mask: ``(B, N)`` bool, True where the key is padding and must get no weight.
        dropout_p: dropout on the attention weights.
        max_logits_elements: query blocks are sized so ``B * h * c * N`` (band paths: the window's
            ``B * h * c * (c + 2D)``) stays below this; also the factorized path's cost rule.
        factorize: force (True) or forbid (False) the factorized form; None: the cost rules.

    Returns:
        ``(B, h, N, d_v)``.
    """
    inputs = _inputs(q, k, v, encoder, pos, key_padding_mask, dropout_p, max_logits_elements, factorize)
    explain = not torch.compiler.is_compiling() and log.isEnabledFor(logging.DEBUG)
    path, seen, refused = _choose(inputs, explain)
    if explain:
        log.debug("relative_attention %s: %s", tuple(q.shape), PathChoice(path.name, refused))
    if seen is inputs:
        return path.run(inputs)
    with torch.autocast(q.device.type, enabled=False):
        return path.run(seen).to(q.dtype)
