"""Attention-augmented convolution on 1D sequences and 2D images.

Bello et al., "Attention Augmented Convolutional Networks", ICCV 2019 (arXiv:1904.09925):
``AAConv(X) = Concat[Conv(X), MHA(X)]``. The convolution gives ``out_channels - dv`` channels, the
relative multi-head self-attention (:class:`~aug_attn.attention.RelativeMultiheadAttention`) the
remaining ``dv``; the paper follows the layer with BatchNorm, which is left to the model.

The layers take ``nn.Conv1d``/``nn.Conv2d``'s arguments, and the convolution branch is exactly that
convolution; the attention branch must produce the same output grid. Per axis, with the kernel's
footprint ``e = dilation * (kernel_size - 1) + 1``, stride ``s`` and padding ``p``, the attention
tokens are the input cropped by ``max(0, (e - s) // 2 - p)`` positions at the start (only when the
padding is well below "same": the tokens then sit at, or half a step before, the centres of the
convolution's windows), average-pooled over non-overlapping windows of size ``s`` (the paper
downsamples its attention input the same way; a ragged last window averages the positions it
covers) and cut to the convolution's output size. This works for any input size whenever ``p <= (e - 1) // 2``; a larger padding would
need tokens outside the input and is refused at construction. So:

=====================  ==========================================================================
``padding``            output size per axis (input size ``n``)
=====================  ==========================================================================
``None`` (default)     ``(e - 1) // 2`` on each side: ``n`` at stride 1, ``ceil(n / s)`` at stride
                       ``s`` ("same"); odd kernel sizes only (the layers' behaviour since the start)
``'same'``             as the default, and even footprints at stride 1 like ``nn.Conv`` (the extra
                       position padded at the end); with a stride > 1 odd footprints only
``'valid'``, ``0``     ``(n - e) // s + 1``, as ``nn.Conv`` without padding
int or tuple ``p``     ``(n + 2p - e) // s + 1`` as ``nn.Conv``, for ``0 <= p <= (e - 1) // 2``
=====================  ==========================================================================

``stride`` and ``dilation`` take an int or one int per axis (``stride=(2, 1)`` works);
``padding_mode`` ('zeros', 'reflect', 'replicate', 'circular') pads the convolution branch only,
since the attention branch never pads. ``groups`` must be 1: the attention branch mixes all input
channels.

Relative tables hold offsets up to ``max_distance`` (default 1024 in 1D, 64 in 2D); larger
offsets are clipped, so any input size works at run time.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aug_attn.attention import DEFAULT_MAX_LOGITS_ELEMENTS, RelativeMultiheadAttention, check_head_split
from aug_attn.positional.grid import RelativePositionEncoder1d, RelativePositionEncoder2d

__all__ = ["AAConv1d", "AAConv2d", "resolve_depth"]

log = logging.getLogger(__name__)

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def resolve_depth(value: int | float, out_channels: int, num_heads: int, name: str) -> int:
    """``dk``/``dv`` as given: an int is used as is (it must be a multiple of ``num_heads``, which
    :func:`~aug_attn.attention.check_head_split` checks); a float in ``(0, 1]`` is a fraction of
    ``out_channels`` (the paper's kappa/upsilon), rounded to the nearest positive multiple of
    ``num_heads``, with a logged warning naming the requested and the used depth when they differ."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be an int or a float fraction, got {value!r}")
    if isinstance(value, int):
        return value
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name}={value} as a fraction of out_channels must be in (0, 1]")
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1, got {num_heads}")
    requested = value * out_channels
    used = max(num_heads, round(requested / num_heads) * num_heads)
    if not math.isclose(used, requested):  # 0.07 * 100 is 7.000000000000001
        log.warning(
            "%s=%s of out_channels=%d asks for %.4g channels; using %s=%d, the nearest positive multiple of num_heads=%d",
            name, value, out_channels, requested, name, used, num_heads,
        )  # fmt: skip
    return used


def _per_axis(value: int | Sequence[int], dims: int, name: str, minimum: int = 1) -> tuple[int, ...]:
    """``value`` as one int per axis; a ValueError naming ``name`` unless every entry is an int
    >= ``minimum``."""
    values = (value,) * dims if isinstance(value, int) else tuple(value) if isinstance(value, (tuple, list)) else None
    if values is None or len(values) != dims or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in values):
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {kind} or a tuple of {dims} such ints, got {value!r}")
    return values


class _AAConvNd(nn.Module):
    """Shared constructor logic of :class:`AAConv1d` and :class:`AAConv2d`."""

    _conv_cls: type[nn.Module]
    _dims: int
    _axes: tuple[str, ...]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: str | int | tuple[int, ...] | None = None,
        dilation: int | tuple[int, ...] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        dk: int | float = 0.2,
        dv: int | float = 0.1,
        num_heads: int = 8,
        relative: bool = True,
        max_distance: int | None = None,
        shared_heads: bool = True,
        attn_dropout: float = 0.0,
        max_logits_elements: int = DEFAULT_MAX_LOGITS_ELEMENTS,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        name = type(self).__name__
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
        kernel = _per_axis(kernel_size, self._dims, "kernel_size")
        stride = _per_axis(stride, self._dims, "stride")
        dilation = _per_axis(dilation, self._dims, "dilation")
        if isinstance(groups, bool) or groups != 1:
            raise ValueError(f"groups={groups!r}: {name} supports groups=1 only (the attention branch mixes all input channels)")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode={padding_mode!r}: expected one of {', '.join(map(repr, PADDING_MODES))}")
        self.dk = resolve_depth(dk, out_channels, num_heads, "dk")
        self.dv = resolve_depth(dv, out_channels, num_heads, "dv")
        check_head_split(self.dk, self.dv, num_heads)
        if self.dv > out_channels:
            raise ValueError(f"dv={self.dv} exceeds out_channels={out_channels}")
        footprint = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
        conv_padding, self._pad_total = self._resolve_padding(padding, kernel, stride, footprint)
        # Crop of the attention input at the start of each axis: zero unless the padding is well
        # below "same", where it centres the pooling windows on the convolution's windows.
        self._crop = tuple(
            0 if padding == "same" else max(0, (e - s) // 2 - total // 2)
            for e, s, total in zip(footprint, stride, self._pad_total)
        )
        self._footprint = footprint
        # Whether the attention tokens differ from the input positions (else it attends over x as is).
        self._resamples = any(self._crop) or any(s > 1 for s in stride) or self._pad_total != tuple(e - 1 for e in footprint)
        self.in_channels, self.out_channels, self.num_heads = in_channels, out_channels, num_heads
        self.kernel_size, self.stride, self.dilation = kernel, stride, dilation
        self.padding = padding if isinstance(padding, str) else conv_padding
        self.groups, self.padding_mode, self.relative = 1, padding_mode, relative
        conv_channels = out_channels - self.dv
        self.conv = (
            self._conv_cls(
                in_channels, conv_channels, kernel, stride, conv_padding, dilation, bias=bias, padding_mode=padding_mode, **factory
            )
            if conv_channels > 0
            else None
        )
        head_dim = self.dk // num_heads
        encoder = self._make_encoder(head_dim, num_heads, max_distance, shared_heads, factory) if relative else None
        self.attn = RelativeMultiheadAttention(
            in_channels, self.dk, self.dv, num_heads, encoder, attn_dropout, max_logits_elements, bias=bias, **factory
        )

    def _resolve_padding(
        self, padding: str | int | tuple[int, ...] | None, kernel: tuple[int, ...], stride: tuple[int, ...], footprint: tuple[int, ...]
    ) -> tuple[str | tuple[int, ...], tuple[int, ...]]:
        """The convolution's ``padding`` argument and the total padding of each axis (both sides),
        or a ValueError naming ``padding`` when the attention branch cannot follow it."""
        if padding is None:
            if any(k % 2 == 0 for k in kernel):
                raise ValueError(f"kernel_size={kernel} is even: pass padding explicitly (an int, or 'same' at stride 1)")
            padding_ints = tuple((e - 1) // 2 for e in footprint)
        elif padding == "same":
            if all(s == 1 for s in stride):  # nn.Conv pads an even footprint one more at the end
                return "same", tuple(e - 1 for e in footprint)
            if any(e % 2 == 0 for e in footprint):
                raise ValueError(
                    f"padding='same' with stride={stride} needs an odd footprint dilation * (kernel_size - 1) + 1 on "
                    f"every axis, got {footprint}: pass padding as an int"
                )
            padding_ints = tuple((e - 1) // 2 for e in footprint)
        elif padding == "valid":
            padding_ints = (0,) * self._dims
        elif isinstance(padding, str):
            raise ValueError(f"padding={padding!r}: expected 'same', 'valid', an int or a tuple of {self._dims} ints")
        else:
            padding_ints = _per_axis(padding, self._dims, "padding", minimum=0)
        for axis, p, e in zip(self._axes, padding_ints, footprint):
            if p > (e - 1) // 2:
                raise ValueError(
                    f"padding={padding!r} is larger than 'same' along the {axis} (at most (dilation * (kernel_size - 1)) // 2 "
                    f"= {(e - 1) // 2}): the attention branch attends over input positions only and cannot produce the "
                    "convolution's wider output"
                )
        return padding_ints, tuple(2 * p for p in padding_ints)

    def _make_encoder(self, head_dim, num_heads, max_distance, shared_heads, factory) -> nn.Module:
        raise NotImplementedError

    def _out_sizes(self, sizes: Sequence[int]) -> tuple[int, ...]:
        """The output grid of both branches for an input grid ``sizes``; a ValueError if empty."""
        out = tuple(
            (n + total - e) // s + 1 for n, total, e, s in zip(sizes, self._pad_total, self._footprint, self.stride)
        )
        if min(out) < 1:
            raise ValueError(
                f"input {'x'.join(map(str, sizes))} is too small for kernel_size={self.kernel_size}, "
                f"dilation={self.dilation}, padding={self.padding}"
            )
        return out

    def _on_output_grid(self, x: Tensor, out: tuple[int, ...], pool: Callable[..., Tensor]) -> Tensor:
        """``x`` ``(B, C, *grid)`` cropped by ``_crop`` at the start of each axis, ``pool``-ed over
        non-overlapping ``stride`` windows (ceil mode: a ragged last window covers what is left) and
        cut to ``out``: ``(B, C, *out)``, one token per output position."""
        if not self._resamples:
            return x
        if any(self._crop):
            x = x[(..., *(slice(a, None) for a in self._crop))]
        if any(s > 1 for s in self.stride):
            x = pool(x, self.stride, self.stride, ceil_mode=True)
        return x[(..., *(slice(0, n) for n in out))]

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != self._dims + 2 or x.shape[1] != self.in_channels:
            layout = "(B, C, L)" if self._dims == 1 else "(B, C, H, W)"
            raise ValueError(
                f"{type(self).__name__} expects {layout} with C={self.in_channels}, got {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        if any(d != 1 for d in self.dilation):
            text += f", dilation={self.dilation}"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode!r}"
        return text + f", dk={self.dk}, dv={self.dv}, num_heads={self.num_heads}, relative={self.relative}"


class AAConv1d(_AAConvNd):
    """Attention-augmented ``nn.Conv1d``: ``Concat[Conv1d(x), MHA(x)]`` along channels.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode:
            as ``nn.Conv1d``, except that ``padding`` defaults to "same" (``None``:
            ``dilation * (kernel_size - 1) // 2``, odd kernels) and may not exceed that, and
            ``groups`` must be 1 (module docstring: the padding rules).
        dk, dv: total key and value depth (keyword only); ints (multiples of ``num_heads``), or
            floats in ``(0, 1]`` as fractions of ``out_channels`` (kappa, upsilon; default 0.2 and
            0.1 as in the paper), rounded to the nearest multiple of ``num_heads`` with a logged
            warning when that changes them.
        num_heads: attention heads; ``dk`` and ``dv`` must split evenly.
        relative: add relative position logits (1D offsets).
        max_distance: largest distinguished offset (default 1024); larger ones are clipped.
        shared_heads: one relative table for all heads (the paper) or one per head.
        attn_dropout: dropout on attention weights.
        max_logits_elements: query-chunk budget of the attention core.

    Shapes:
        ``x``: ``(B, in_channels, L)``; ``key_padding_mask``: ``(B, L)`` bool, True = padding (an
        output token is padding when every input position it summarises is);
        output ``(B, out_channels, L_out)``, ``L_out`` as for ``nn.Conv1d``.
    """

    _conv_cls = nn.Conv1d
    _dims = 1
    _axes = ("length",)

    def _make_encoder(self, head_dim, num_heads, max_distance, shared_heads, factory):
        return RelativePositionEncoder1d(head_dim, num_heads, max_distance or 1024, shared_heads, **factory)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        self._check_input(x)
        (length_out,) = out = self._out_sizes(x.shape[2:])
        if key_padding_mask is not None and tuple(key_padding_mask.shape) != (x.shape[0], x.shape[-1]):
            raise ValueError(
                f"key_padding_mask must be (B, L) = ({x.shape[0]}, {x.shape[-1]}) like the input, got {tuple(key_padding_mask.shape)}"
            )
        a = self._on_output_grid(x, out, F.avg_pool1d)  # (B, C, L_out)
        if key_padding_mask is not None and self._resamples:
            valid = (~key_padding_mask).to(x.dtype).unsqueeze(1)  # (B, 1, L)
            key_padding_mask = self._on_output_grid(valid, out, F.max_pool1d).squeeze(1) == 0  # (B, L_out)
        attn = self.attn(a.transpose(1, 2), length_out, key_padding_mask)  # (B, L_out, dv)
        attn = attn.transpose(1, 2)  # (B, dv, L_out)
        if self.conv is None:
            return attn
        return torch.cat([self.conv(x), attn], dim=1)  # (B, out_channels, L_out)


class AAConv2d(_AAConvNd):
    """Attention-augmented ``nn.Conv2d``: ``Concat[Conv2d(x), MHA(x)]`` along channels.

    Arguments as :class:`AAConv1d`, per axis as ``nn.Conv2d`` (``kernel_size``, ``stride``,
    ``padding``, ``dilation``: an int or a ``(height, width)`` pair); relative logits are
    ``q . (r^H_dy + r^W_dx)`` with ``max_distance`` (default 64) per axis.

    Shapes:
        ``x``: ``(B, in_channels, H, W)`` -> ``(B, out_channels, H_out, W_out)``, ``H_out, W_out``
        as for ``nn.Conv2d``; the attention branch attends over all ``H_out * W_out`` positions.
    """

    _conv_cls = nn.Conv2d
    _dims = 2
    _axes = ("height", "width")

    def _make_encoder(self, head_dim, num_heads, max_distance, shared_heads, factory):
        return RelativePositionEncoder2d(head_dim, num_heads, max_distance or 64, shared_heads, **factory)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        batch = x.shape[0]
        h_out, w_out = out = self._out_sizes(x.shape[2:])
        a = self._on_output_grid(x, out, F.avg_pool2d)  # (B, C, H_out, W_out)
        tokens = a.flatten(2).transpose(1, 2)  # (B, H_out*W_out, C)
        attn = self.attn(tokens, (h_out, w_out))  # (B, H_out*W_out, dv)
        attn = attn.transpose(1, 2).reshape(batch, self.dv, h_out, w_out)  # (B, dv, H_out, W_out)
        if self.conv is None:
            return attn
        return torch.cat([self.conv(x), attn], dim=1)  # (B, out_channels, H_out, W_out)
