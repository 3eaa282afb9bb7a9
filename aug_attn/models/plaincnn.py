"""A plain strided 1D CNN on raw waveforms: the baseline any waveform model should beat.

After the "M5" network of Dai, Dai, Qu, Li, Das, "Very Deep Convolutional Neural Networks for Raw
Waveforms", ICASSP 2017 (arXiv:1610.00087): a long strided first convolution (80 samples, hop 4:
5 ms at 16 kHz, a learned filterbank), then 3-sample convolutions, each block BatchNorm, ReLU and
max-pool 4, global average pooling and a linear layer. No attention, no multi-scale or multi-level
tricks. Where it differs from M5: widths and depth are arguments (defaults ~0.2M parameters,
five blocks), dropout before the output layer, and the stem runs as framing + matmul
(:class:`~aug_attn.models.samplecnn.WaveformConv1d`, faster on CPU, same function).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from aug_attn.models.samplecnn import as_waveform_batch, conv_block

__all__ = ["PlainCNN"]


class PlainCNN(nn.Module):
    """``(B, L)`` or ``(B, 1, L)`` waveform -> ``(B, num_tags)`` logits.

    Args:
        num_tags: output logits (classes or tags).
        channels: width of the stem and of each following block (``len(channels)`` blocks, each pooled).
        kernel_size, stride: of the stem convolution (M5: 80, 4).
        pool: max-pool window and hop after every block (M5: 4).
        dropout: before the output layer.

    The minimum input length :attr:`min_length` ``= stride * pool^len(channels)`` leaves one frame.
    """

    def __init__(
        self,
        num_tags: int,
        channels: Sequence[int] = (32, 64, 128, 128, 256),
        kernel_size: int = 80,
        stride: int = 4,
        pool: int = 4,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if not channels:
            raise ValueError("channels needs at least the stem width")
        self.min_length = stride * pool ** len(channels)
        blocks = [conv_block(1, channels[0], kernel_size=kernel_size, stride=stride, pool=pool)]
        blocks += [conv_block(c_in, c_out, pool=pool) for c_in, c_out in zip(channels[:-1], channels[1:])]
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels[-1], num_tags))

    def forward(self, x: Tensor) -> Tensor:
        x = as_waveform_batch(x, self.min_length, type(self).__name__)  # (B, 1, L)
        x = self.features(x)  # (B, C, L // (stride * pool^n))
        return self.head(x.mean(dim=-1))  # (B, num_tags)
