"""Attention-augmented convolution on 1D sequences and 2D images.

Bello et al., "Attention Augmented Convolutional Networks", ICCV 2019 (arXiv:1904.09925):
``AAConv(X) = Concat[Conv(X), MHA(X)]``. The convolution gives ``out_channels - dv`` channels, the
relative multi-head self-attention (:class:`~aug_attn.attention.RelativeMultiheadAttention`) the
remaining ``dv``; the paper follows the layer with BatchNorm, which is left to the model.

Strides: the attention branch attends over the input average-pooled with non-overlapping windows
of size ``stride`` (the paper downsamples its attention input the same way), so both branches
produce the same grid. If the convolution's padding gives a different output size than that
pooling, the layer raises an error naming both sizes.

Relative tables hold offsets up to ``max_distance`` (default 1024 in 1D, 64 in 2D); larger
offsets are clipped, so any input size works at run time.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aug_attn.attention import DEFAULT_MAX_LOGITS_ELEMENTS, RelativeMultiheadAttention, check_head_split
from aug_attn.positional.grid import RelativePositionEncoder1d, RelativePositionEncoder2d

__all__ = ["AAConv1d", "AAConv2d", "resolve_depth"]


def resolve_depth(value: int | float, out_channels: int, num_heads: int, name: str) -> int:
    """``dk``/``dv`` as given: an int is used as is; a float in ``(0, 1]`` is a fraction of
    ``out_channels`` (the paper's kappa/upsilon), rounded to the nearest positive multiple of
    ``num_heads``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be an int or a float fraction, got {value!r}")
    if isinstance(value, float):
        if not 0.0 < value <= 1.0:
            raise ValueError(f"{name}={value} as a fraction of out_channels must be in (0, 1]")
        return max(num_heads, int(round(value * out_channels / num_heads)) * num_heads)
    return value


def _check_pooled(size: int, stride: int, target: int, axis: str) -> None:
    """Raise unless average pooling ``size`` by ``stride`` (floor or ceil) can give ``target``."""
    if target not in (size // stride, math.ceil(size / stride)):
        raise ValueError(
            f"attention branch cannot match the convolution's output {axis}={target}: the input {axis}={size} "
            f"average-pooled by stride {stride} gives {size // stride} or {math.ceil(size / stride)}; "
            "use 'same'-style padding ((kernel_size - 1) // 2 for odd kernels)"
        )


class _AAConvNd(nn.Module):
    """Shared constructor logic of :class:`AAConv1d` and :class:`AAConv2d`."""

    _conv_cls: type[nn.Module]
    _dims: int

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int = 1,
        padding: int | tuple[int, ...] | None = None,
        dilation: int = 1,
        bias: bool = True,
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
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
        if not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be a positive int, got {stride!r}")
        self.dk = resolve_depth(dk, out_channels, num_heads, "dk")
        self.dv = resolve_depth(dv, out_channels, num_heads, "dv")
        check_head_split(self.dk, self.dv, num_heads)
        if self.dv > out_channels:
            raise ValueError(f"dv={self.dv} exceeds out_channels={out_channels}")
        kernel = (kernel_size,) * self._dims if isinstance(kernel_size, int) else tuple(kernel_size)
        if padding is None:
            if any(k % 2 == 0 for k in kernel):
                raise ValueError(f"kernel_size={kernel_size} is even: pass padding explicitly")
            padding = tuple(dilation * (k - 1) // 2 for k in kernel)
        self.in_channels, self.out_channels, self.num_heads = in_channels, out_channels, num_heads
        self.kernel_size, self.stride, self.padding, self.dilation = kernel, stride, padding, dilation
        self.relative = relative
        conv_channels = out_channels - self.dv
        self.conv = (
            self._conv_cls(in_channels, conv_channels, kernel, stride, padding, dilation, bias=bias, **factory)
            if conv_channels > 0
            else None
        )
        head_dim = self.dk // num_heads
        encoder = self._make_encoder(head_dim, num_heads, max_distance, shared_heads, factory) if relative else None
        self.attn = RelativeMultiheadAttention(
            in_channels, self.dk, self.dv, num_heads, encoder, attn_dropout, max_logits_elements, bias=bias, **factory
        )

    def _make_encoder(self, head_dim, num_heads, max_distance, shared_heads, factory) -> nn.Module:
        raise NotImplementedError

    def _out_size(self, size: int, axis: int) -> int:
        pad = self.padding if isinstance(self.padding, int) else self.padding[axis]
        return (size + 2 * pad - self.dilation * (self.kernel_size[axis] - 1) - 1) // self.stride + 1

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != self._dims + 2 or x.shape[1] != self.in_channels:
            layout = "(B, C, L)" if self._dims == 1 else "(B, C, H, W)"
            raise ValueError(
                f"{type(self).__name__} expects {layout} with C={self.in_channels}, got {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dk={self.dk}, dv={self.dv}, num_heads={self.num_heads}, relative={self.relative}"
        )


class AAConv1d(_AAConvNd):
    """Attention-augmented ``nn.Conv1d``: ``Concat[Conv1d(x), MHA(x)]`` along channels.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias: as ``nn.Conv1d``
            (``padding=None`` means ``dilation * (kernel_size - 1) // 2``, "same" for stride 1).
        dk, dv: total key and value depth; ints, or floats in ``(0, 1]`` as fractions of
            ``out_channels`` (kappa, upsilon; default 0.2 and 0.1 as in the paper).
        num_heads: attention heads; ``dk`` and ``dv`` must split evenly.
        relative: add relative position logits (1D offsets).
        max_distance: largest distinguished offset (default 1024); larger ones are clipped.
        shared_heads: one relative table for all heads (the paper) or one per head.
        attn_dropout: dropout on attention weights.
        max_logits_elements: query-chunk budget of the attention core.

    Shapes:
        ``x``: ``(B, in_channels, L)``; ``key_padding_mask``: ``(B, L)`` bool, True = padding;
        output ``(B, out_channels, L_out)``, ``L_out`` as for ``nn.Conv1d``.
    """

    _conv_cls = nn.Conv1d
    _dims = 1

    def _make_encoder(self, head_dim, num_heads, max_distance, shared_heads, factory):
        return RelativePositionEncoder1d(head_dim, num_heads, max_distance or 1024, shared_heads, **factory)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        self._check_input(x)
        length_out = self._out_size(x.shape[-1], 0)
        if length_out < 1:
            raise ValueError(f"input length {x.shape[-1]} is too short for kernel_size={self.kernel_size}")
        _check_pooled(x.shape[-1], self.stride, length_out, "length")
        if key_padding_mask is not None and tuple(key_padding_mask.shape) != (x.shape[0], x.shape[-1]):
            raise ValueError(
                f"key_padding_mask must be (B, L) = ({x.shape[0]}, {x.shape[-1]}) like the input, got {tuple(key_padding_mask.shape)}"
            )
        a = x
        if self.stride > 1:
            # ceil mode then crop: the floor-mode result when the conv drops the ragged end.
            a = F.avg_pool1d(x, self.stride, self.stride, ceil_mode=True)[..., :length_out]  # (B, C, L_out)
            if key_padding_mask is not None:
                valid = (~key_padding_mask).to(x.dtype).unsqueeze(1)  # (B, 1, L)
                valid = F.max_pool1d(valid, self.stride, self.stride, ceil_mode=True)[..., :length_out]
                key_padding_mask = valid.squeeze(1) == 0  # (B, L_out)
        attn = self.attn(a.transpose(1, 2), length_out, key_padding_mask)  # (B, L_out, dv)
        attn = attn.transpose(1, 2)  # (B, dv, L_out)
        if self.conv is None:
            return attn
        return torch.cat([self.conv(x), attn], dim=1)  # (B, out_channels, L_out)


class AAConv2d(_AAConvNd):
    """Attention-augmented ``nn.Conv2d``: ``Concat[Conv2d(x), MHA(x)]`` along channels.

    Arguments as :class:`AAConv1d`; relative logits are ``q . (r^H_dy + r^W_dx)`` with
    ``max_distance`` (default 64) per axis.

    Shapes:
        ``x``: ``(B, in_channels, H, W)`` -> ``(B, out_channels, H_out, W_out)``; the attention
        branch attends over all ``H_out * W_out`` positions.
    """

    _conv_cls = nn.Conv2d
    _dims = 2

    def _make_encoder(self, head_dim, num_heads, max_distance, shared_heads, factory):
        return RelativePositionEncoder2d(head_dim, num_heads, max_distance or 64, shared_heads, **factory)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        batch, _, height, width = x.shape
        h_out, w_out = self._out_size(height, 0), self._out_size(width, 1)
        if h_out < 1 or w_out < 1:
            raise ValueError(f"input {height}x{width} is too small for kernel_size={self.kernel_size}")
        _check_pooled(height, self.stride, h_out, "height")
        _check_pooled(width, self.stride, w_out, "width")
        a = x
        if self.stride > 1:
            a = F.avg_pool2d(x, self.stride, self.stride, ceil_mode=True)[..., :h_out, :w_out]  # (B, C, H_out, W_out)
        tokens = a.flatten(2).transpose(1, 2)  # (B, H_out*W_out, C)
        attn = self.attn(tokens, (h_out, w_out))  # (B, H_out*W_out, dv)
        attn = attn.transpose(1, 2).reshape(batch, self.dv, h_out, w_out)  # (B, dv, H_out, W_out)
        if self.conv is None:
            return attn
        return torch.cat([self.conv(x), attn], dim=1)  # (B, out_channels, H_out, W_out)
