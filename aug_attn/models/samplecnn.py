"""SampleCNN: sample-level deep CNN for music auto-tagging on raw waveforms.

Lee, Park, Kim, Nam, "Sample-level Deep Convolutional Neural Networks for Music Auto-tagging Using
Raw Waveforms", SMC 2017 (arXiv:1703.01789), the "3^9 model": a strided 3-sample convolution, then
nine blocks of (3-sample conv, BatchNorm, ReLU, max-pool 3) take 59,049 = 3^10 samples to a single
frame; a 1x1 conv, dropout 0.5 and a linear layer give the tag logits.

Where it differs from the paper: the final frames are global-max-pooled, so inputs longer than
``3^(num_blocks + 1)`` samples work too (the paper fixes the length); ``channels`` and the block
count are arguments so smaller variants can be built for quick runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SampleCNN", "WaveformConv1d", "as_waveform_batch", "conv_block"]

# The paper's widths for the strided stem and its nine blocks.
PAPER_CHANNELS = (128, 128, 128, 256, 256, 256, 256, 256, 256, 512)


class WaveformConv1d(nn.Module):
    """``nn.Conv1d(1, out_channels, kernel_size, stride, padding, bias=False)`` on a raw waveform,
    computed as framing plus one matrix product.

    Why: on CPU, oneDNN's strided convolution with a single input channel is up to 10x slower than
    ``unfold`` + ``matmul`` (measured with PyTorch 2.14, kernel 27 / stride 9), and the stem is the
    layer that sees the most samples. Same weights layout and output as ``nn.Conv1d``.

    Shapes: ``(B, 1, L) -> (B, out_channels, (L + 2 padding - kernel_size) // stride + 1)``.
    """

    def __init__(self, out_channels: int, kernel_size: int, stride: int, padding: int = 0) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.weight = nn.Parameter(torch.empty(out_channels, 1, kernel_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv1d's default

    def forward(self, x: Tensor) -> Tensor:
        frames = F.pad(x, (self.padding, self.padding)).unfold(-1, self.kernel_size, self.stride)  # (B, 1, N, k)
        # contiguous: a channels-last view here breaks the compiled backward of the BatchNorm after it.
        return (frames.squeeze(1) @ self.weight.squeeze(1).t()).transpose(1, 2).contiguous()  # (B, C, N)

    def extra_repr(self) -> str:
        return f"1, {self.weight.shape[0]}, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


def conv_block(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, pool: int = 1) -> nn.Sequential:
    """``Conv1d -> BatchNorm1d -> ReLU [-> MaxPool1d(pool)]``; ``(B, C_in, L) -> (B, C_out, L_conv // pool)``.

    Stride-1 convolutions use "same" padding, strided ones (the stems) ``(kernel_size - stride) // 2``,
    so a stem of stride ``s`` maps ``L`` to ``L // s`` when ``s`` divides ``L``. Waveform stems
    (``in_channels == 1``, ``stride > 1``) use :class:`WaveformConv1d`. No conv bias: BatchNorm follows.
    """
    padding = (kernel_size - 1) // 2 if stride == 1 else (kernel_size - stride) // 2
    conv = (
        WaveformConv1d(out_channels, kernel_size, stride, padding)
        if in_channels == 1 and stride > 1
        else nn.Conv1d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
    )
    layers: list[nn.Module] = [
        conv,
        nn.BatchNorm1d(out_channels),
        nn.ReLU(inplace=True),
    ]
    if pool > 1:
        layers.append(nn.MaxPool1d(pool))
    return nn.Sequential(*layers)


class SampleCNN(nn.Module):
    """SampleCNN tagger; ``(B, L)`` or ``(B, 1, L)`` waveform -> ``(B, num_tags)`` logits.

    Args:
        num_tags: output logits (tags or classes).
        channels: widths of the strided stem and each block; ``len(channels) - 1`` blocks.
            Default: the paper's 3^9 model (nine blocks).
        dropout: before the output layer (paper: 0.5).

    The minimum input length is :attr:`receptive_field` ``= 3^len(channels)`` (59,049 by default).
    """

    def __init__(self, num_tags: int, channels: Sequence[int] = PAPER_CHANNELS, dropout: float = 0.5) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"channels needs a stem width and at least one block width, got {list(channels)}")
        self.num_tags = num_tags
        self.receptive_field = 3 ** len(channels)
        stem = conv_block(1, channels[0], kernel_size=3, stride=3)
        blocks = [conv_block(c_in, c_out, pool=3) for c_in, c_out in zip(channels[:-1], channels[1:])]
        self.features = nn.Sequential(stem, *blocks)
        # The paper's last "conv" is 1x1 over a single frame: a per-frame linear layer.
        self.mix = conv_block(channels[-1], channels[-1], kernel_size=1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels[-1], num_tags)

    def forward(self, x: Tensor) -> Tensor:
        x = as_waveform_batch(x, self.receptive_field, type(self).__name__)  # (B, 1, L)
        x = self.mix(self.features(x))  # (B, C, L // 3^n)
        x = x.amax(dim=-1)  # (B, C)
        return self.head(self.dropout(x))  # (B, num_tags)


def as_waveform_batch(x: Tensor, min_length: int, model: str) -> Tensor:
    """Accept ``(B, L)`` or ``(B, 1, L)``; return ``(B, 1, L)`` or raise naming the shape."""
    if x.dim() == 2:
        x = x.unsqueeze(1)
    if x.dim() != 3 or x.shape[1] != 1:
        raise ValueError(f"{model} expects a mono waveform batch (B, L) or (B, 1, L), got {tuple(x.shape)}")
    if x.shape[-1] < min_length:
        raise ValueError(f"{model} needs at least {min_length} samples (its receptive field), got {x.shape[-1]}")
    return x

