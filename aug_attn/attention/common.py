"""Pieces every attention path shares: the inputs of one call, head splitting, the fused SDPA call,
the CPU flash kernels with their log-sum-exp, and the log-sum-exp merge of partial softmaxes.

Paths import from here, never from :mod:`aug_attn.attention.dispatch` or from each other (except
:mod:`~aug_attn.attention.tiled`, a form of :mod:`~aug_attn.attention.factorized`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from aug_attn.positional.base import RelativePositionEncoder

__all__ = [
    "AttentionInputs",
    "AttentionPath",
    "split_heads",
    "merge_heads",
    "fused_attention",
    "flash_cpu",
    "flash_cpu_backward",
    "flash_cpu_supported",
    "merge_partial",
    "check_logits",
    "encoder_factors",
    "band_rows",
    "banded_is_faster",
    "DEFAULT_MAX_LOGITS_ELEMENTS",
]

DEFAULT_MAX_LOGITS_ELEMENTS = 1 << 24  # 64 MiB of float32 logits per query block
CUDA_DEPTH_MULTIPLE = 8  # see fused_attention


@dataclass
class AttentionInputs:
    """One call of :func:`~aug_attn.attention.relative_attention` as the paths see it.

    Attributes:
        q: ``(B, h, N, d_k)`` queries, **not** yet scaled (:meth:`scaled_q` scales them).
        k: ``(B, h, N, d_k)``; v: ``(B, h, N, d_v)``.
        encoder, pos: the relative position encoder and its position description (``None``: none).
        key_padding_mask: ``(B, N)`` bool, True at padding keys; None for none.
        dropout_p: dropout on the attention weights.
        max_logits_elements: the budget of materialized logits per query block.
        factorize: True/False force/forbid the factorized paths; None: their cost rules.
        autocast_dtype: the autocast dtype of the call's device, None outside autocast.
        factorized_dim, grid, band: the encoder's :meth:`~RelativePositionEncoder.factorized_dim`,
            :meth:`~RelativePositionEncoder.factorized_grid` (where it has a factorized form) and
            :meth:`~RelativePositionEncoder.band` for ``pos``; None without an encoder.
    """

    q: Tensor
    k: Tensor
    v: Tensor
    encoder: RelativePositionEncoder | None = None
    pos: Any = None
    key_padding_mask: Tensor | None = None
    dropout_p: float = 0.0
    max_logits_elements: int = DEFAULT_MAX_LOGITS_ELEMENTS
    factorize: bool | None = None
    autocast_dtype: torch.dtype | None = None
    factorized_dim: int | None = field(init=False)
    grid: tuple[int, int] | None = field(init=False)
    band: int | None = field(init=False)

    def __post_init__(self) -> None:
        encoder = self.encoder
        self.factorized_dim = encoder.factorized_dim(self.pos) if encoder is not None else None
        self.grid = encoder.factorized_grid(self.pos) if self.factorized_dim is not None else None
        self.band = encoder.band(self.pos) if encoder is not None else None

    @property
    def batch(self) -> int:
        return self.q.shape[0]

    @property
    def heads(self) -> int:
        return self.q.shape[1]

    @property
    def tokens(self) -> int:
        return self.q.shape[2]

    @property
    def head_dim(self) -> int:
        return self.q.shape[3]

    @property
    def value_dim(self) -> int:
        return self.v.shape[3]

    @property
    def masked(self) -> bool:
        return self.key_padding_mask is not None

    @property
    def materialized(self) -> bool:
        """Whether the logits carry more than ``q . k`` (relative terms or a padding mask): such
        calls run in float32 under autocast (see :func:`~aug_attn.attention.relative_attention`)."""
        return self.encoder is not None or self.key_padding_mask is not None

    def scaled_q(self) -> Tensor:
        """``q / sqrt(d_k)``: relative logits computed from it share the paper's scaling."""
        return self.q * self.head_dim**-0.5

    def allowed(self) -> Tensor | None:
        """``(B, 1, 1, N)`` bool, True where a key may be attended; None without a padding mask."""
        return None if self.key_padding_mask is None else ~self.key_padding_mask[:, None, None, :]

    def in_float32(self) -> AttentionInputs:
        """The same call with ``q``, ``k``, ``v`` in float32, as run with autocast switched off."""
        return replace(self, q=self.q.float(), k=self.k.float(), v=self.v.float())


@dataclass(frozen=True)
class AttentionPath:
    """One exact way of computing :func:`~aug_attn.attention.relative_attention`.

    Attributes:
        name: what :func:`~aug_attn.attention.attention_path` reports.
        supported: ``inputs -> reasons`` it cannot run them (its conditions and its cost rule); empty
            where it runs.
        run: ``inputs -> (B, h, N, d_v)``.
        keeps_autocast: the path takes autocast's low-precision inputs itself; the others see a call
            with relative logits or a padding mask in float32 with autocast off (the dispatcher
            casts the output back).
    """

    name: str
    supported: Callable[[AttentionInputs], list[str]]
    run: Callable[[AttentionInputs], Tensor]
    keeps_autocast: bool = False


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


def flash_cpu_supported(inputs: AttentionInputs) -> list[str]:
    """Why the CPU flash kernels with log-sum-exp (:func:`flash_cpu`) cannot serve a path built on
    them inside an ``autograd.Function`` (the band and tiled paths); empty where they can."""
    reasons = []
    if inputs.q.device.type != "cpu":
        reasons.append(f"needs CPU tensors, got {inputs.q.device.type}")
    if inputs.q.dtype not in (torch.float32, torch.float64):
        reasons.append(f"needs float32/float64, got {inputs.q.dtype}")
    if inputs.dropout_p:
        reasons.append("no dropout")
    if inputs.masked:
        reasons.append("no padding mask")
    if torch.compiler.is_compiling():
        reasons.append("not while compiling (private aten ops inside an autograd.Function)")
    if torch.jit.is_tracing():
        reasons.append("not while TorchScript-tracing")
    return reasons


def flash_cpu(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """CPU flash attention of pre-scaled ``q (B, h, c, d)`` over ``k (B, h, n, d)``, ``v (B, h, n, d)``
    (one depth), with an optional additive ``bias (B, h, c, n)``.

    Returns:
        output ``(B, h, c, d)`` and log-sum-exp ``(B, h, c)`` in ``q``'s dtype.
    """
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=bias, scale=1.0)
    return out, lse.to(q.dtype)


def flash_cpu_backward(
    grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The backward kernel of :func:`flash_cpu` without bias. Given the output and log-sum-exp of the
    *whole* softmax (of which these keys are a part), it returns exactly this part's share of the
    gradients ``(dq, dk, dv)``: the rule by which the band and tiled paths differentiate their merge."""
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        grad_out, q, k, v, out, lse, 0.0, False, scale=1.0
    )


def merge_partial(out: Tensor | None, lse: Tensor | None, part: Tensor, part_lse: Tensor) -> tuple[Tensor, Tensor]:
    """Merge softmax attention over two disjoint key sets into the softmax over their union, exactly
    (the merge of flash and ring attention): ``o = e^{l_1 - l} o_1 + e^{l_2 - l} o_2`` with
    ``l = log(e^{l_1} + e^{l_2})``. Folded over parts, one running output is alive at a time.

    Args:
        out, lse: the merged parts so far, ``(B, h, c, d)`` and ``(B, h, c)``; None before the first.
        part, part_lse: the next part's output and log-sum-exp.

    Returns:
        the merged output ``(B, h, c, d)`` and log-sum-exp ``(B, h, c)``.
    """
    if out is None or lse is None:
        return part, part_lse
    merged = torch.logaddexp(lse, part_lse)
    return torch.exp(lse - merged)[..., None] * out + torch.exp(part_lse - merged)[..., None] * part, merged


def check_logits(bias: Tensor, encoder: RelativePositionEncoder, pos: Any, start: int, end: int, tokens: int) -> None:
    """Refuse encoder logits ``(B, h, c, N')`` that are not ``(..., end - start, tokens)``: e.g. a
    position description (pos) of another number of tokens, which broadcasting would hide."""
    if tuple(bias.shape[-2:]) != (end - start, tokens):
        raise ValueError(
            f"{type(encoder).__name__} gave logits {tuple(bias.shape)} for pos={pos!r}; expected "
            f"(..., {end - start}, {tokens}) for {end - start} queries over {tokens} keys"
        )


def encoder_factors(encoder: RelativePositionEncoder, q: Tensor, pos: Any, tokens: int) -> tuple[Tensor, Tensor]:
    """The encoder's factorized form ``(B, h, N, a), (N, a)``; an error naming ``pos`` where it
    describes another number of tokens than the queries have."""
    q_aug, k_aug = encoder.factorized(q, pos)
    if k_aug.shape[0] != tokens:
        raise ValueError(
            f"{type(encoder).__name__} gave key factors for {k_aug.shape[0]} tokens for pos={pos!r}; expected {tokens}"
        )
    return q_aug, k_aug


def banded_is_faster(tokens: int, band: int) -> bool:
    """The cost rule of the band paths (CPU :mod:`~aug_attn.attention.banded`, CUDA
    :mod:`~aug_attn.attention.flex`): most keys of a query block lie beyond its window of about
    ``2D`` keys (at ``N = 4D`` the window is half the keys; see ``scripts/bench_attention.py``)."""
    return 4 * band <= tokens


def band_rows(pairs: int, band: int, max_logits_elements: int) -> int:
    """Query block size of the band paths: the largest ``c`` whose window logits ``c * (c + 2D)``
    per (batch, head) pair stay within ``max_logits_elements`` over the ``pairs``."""
    per_query = max(1, max_logits_elements // max(1, pairs))
    return max(1, math.isqrt(band * band + per_query) - band)
