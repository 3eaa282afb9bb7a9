"""MuSLCAT and MuSLCAN: multi-scale, multi-level convolutional attention taggers on raw waveforms.

Kai Middlebrook, Shyam Sudhakaran, David Guy Brizan, "MuSLCAT: Multi-Scale Multi-Level Convolutional
Attention Transformer for Discriminative Music Modeling on Raw Waveforms", 2021 (arXiv:2104.02309).
The paper describes the architecture in words and publishes no code, so this is our reading of it;
every choice below that the paper does not pin down is ours and says why.

Architecture (``x``: ``(B, L)`` waveform at 16 kHz, 59,049 samples by default)::

    branch s (one per entry of ``scales``):  stem Conv1d(kernel k_s, stride s) -> blocks
        block = (Conv1d | AAConv1d)(3, "same") -> BN -> ReLU -> MaxPool(3)
    multi-level: last ``levels`` block outputs of every branch, max-pooled onto the coarsest grid,
        concatenated over channels, 1x1 conv -> ``d_model`` tokens (B, N, d_model)
    back end:   MuSLCAT: [CLS] + pre-LN transformer encoder with relative-position attention
                MuSLCAN: one AAC block, then mean || max over time
    head:       dropout -> Linear -> ``num_tags`` logits

Design choices (ours where the paper is silent):

- **Sample-level front end.** Blocks are SampleCNN's (Lee et al. 2017): 3-sample convolutions and
  max-pool 3, so every block triples the hop and the model keeps SampleCNN's inductive bias.
- **Multi-scale = two stems.** Default ``scales = ((3, 3), (27, 9))``: the fine branch starts like
  SampleCNN (non-overlapping 3-sample frames), the coarse one with overlapping 27-sample filters at
  hop 9, which resolve lower frequencies in the first layer. The coarse branch has one block fewer
  so both end on the same grid; a branch of stem stride ``3^k`` times the smallest uses the widths
  of the fine branch from depth ``k`` on, so features at the same resolution have the same width.
- **Attention only where sequences are short.** The last ``attention_blocks`` blocks of each branch
  use :class:`~aug_attn.layers.AAConv1d` (Bello et al. 2019); with the defaults they attend over
  243 and 81 frames of a 59,049-sample input. Earlier blocks see up to 19,683 frames, where
  quadratic attention is unaffordable on a CPU and 3-sample convolutions do the job. AAConv is
  followed by BatchNorm as in Bello et al.; ``dk = dv = 0.25`` of the width and 4 heads keep at
  least 16 key dimensions per head at width 256 (Bello recommends about 20).
- **Multi-level = last three blocks.** Following the multi-level idea of Lee et al. 2017
  ("Multi-level and multi-scale feature aggregation"), the outputs of the last ``levels`` blocks are
  max-pooled (windows 9, 3, 1) onto the final grid and concatenated: mid-level (timbre, onsets) and
  high-level features both reach the back end. Max pooling keeps the strongest response in each
  window, as SampleCNN's pooling does.
- **BERT-like back end.** A learned [CLS] token is prepended to the sequence; its final state feeds
  the head, as in BERT. Positions are relative (one learned table of offsets per layer, shared by
  the heads; [CLS] sits at offset position 0) rather than BERT's absolute embeddings, so any input
  length works. Layers are pre-LayerNorm with GELU feed-forward: stable from scratch on small data
  without warm-up tricks. Default 2 layers, 8 heads, ``d_model`` 256.
- **MuSLCAN back end.** One AAC block (AAConv1d kernel 3 over the fused tokens, BN, ReLU) replaces
  the transformer, then mean and max over time are concatenated: mean summarises sustained
  tags (genre, instrument), max keeps brief events (a vocal phrase, a drum fill).
- **Any length.** All pooling is fixed-window, so any ``L >= min_length`` (the total hop, 2,187
  samples by default: one token) works; fixed-size chunks for evaluation, sliding windows at
  inference. The relative tables clip offsets beyond ``max_distance``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aug_attn.attention import RelativeMultiheadAttention
from aug_attn.layers.aaconv import AAConv1d
from aug_attn.models.samplecnn import as_waveform_batch, conv_block
from aug_attn.positional.grid import RelativePositionEncoder1d

__all__ = ["MuSLCAT", "MuSLCAN", "AACBlock", "RelativeTransformerLayer"]

DEFAULT_CHANNELS = (128, 128, 128, 256, 256, 256, 256)
DEFAULT_SCALES = ((3, 3), (27, 9))


class AACBlock(nn.Module):
    """``AAConv1d(3, "same") -> BatchNorm1d -> ReLU [-> MaxPool1d(pool)]``.

    Shapes: ``(B, C_in, L) -> (B, C_out, L // pool)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        pool: int = 3,
        dk: int | float = 0.25,
        dv: int | float = 0.25,
        num_heads: int = 4,
        max_distance: int = 1024,
    ) -> None:
        super().__init__()
        self.conv = AAConv1d(in_channels, out_channels, 3, dk=dk, dv=dv, num_heads=num_heads, max_distance=max_distance)
        self.norm = nn.BatchNorm1d(out_channels)
        self.pool = nn.MaxPool1d(pool) if pool > 1 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))  # (B, C_out, L // pool)


class RelativeTransformerLayer(nn.Module):
    """Pre-LN transformer layer with relative-position self-attention.

    ``x + Drop(MHA(LN(x)))`` then ``x + Drop(FFN(LN(x)))``, FFN = Linear-GELU-Linear of width
    ``ff_mult * d_model``; attention is :class:`~aug_attn.attention.RelativeMultiheadAttention` with a
    :class:`~aug_attn.positional.RelativePositionEncoder1d`.

    Shapes: ``(B, N, d_model) -> (B, N, d_model)``.
    """

    def __init__(
        self, d_model: int, num_heads: int = 8, ff_mult: int = 4, dropout: float = 0.1, max_distance: int = 512
    ) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} must be a multiple of num_heads={num_heads}")
        encoder = RelativePositionEncoder1d(d_model // num_heads, num_heads, max_distance)
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = RelativeMultiheadAttention(d_model, d_model, d_model, num_heads, encoder, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, ff_mult * d_model), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_mult * d_model, d_model)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.dropout(self.attn(self.norm1(x), x.shape[1]))  # (B, N, d)
        return x + self.dropout(self.ff(self.norm2(x)))  # (B, N, d)


class _Branch(nn.Module):
    """One front-end branch: a strided stem and sample-level blocks; returns every block's output."""

    def __init__(
        self, kernel: int, stride: int, channels: Sequence[int], attention_blocks: int, attention: dict
    ) -> None:
        super().__init__()
        self.stem = conv_block(1, channels[0], kernel_size=kernel, stride=stride)
        num_blocks = len(channels) - 1
        self.blocks = nn.ModuleList(
            AACBlock(c_in, c_out, pool=3, **attention) if i >= num_blocks - attention_blocks else conv_block(c_in, c_out, pool=3)
            for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:]))
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)  # (B, C_0, L / stride)
        outputs = []
        for block in self.blocks:
            x = block(x)  # (B, C_i, L_{i-1} // 3)
            outputs.append(x)
        return outputs


class MuSLCAT(nn.Module):
    """Multi-scale multi-level convolutional attention transformer; see the module docstring.

    Args:
        num_tags: output logits.
        channels: stem width and block widths of the finest branch (``len - 1`` blocks).
        scales: ``(kernel, stride)`` of each branch's stem; strides must be the smallest stride
            times powers of 3 (a branch of stride ``3^k`` times the smallest has ``k`` blocks fewer).
        attention_blocks: how many of each branch's last blocks are AAC blocks.
        levels: how many of the last block outputs of each branch feed the back end.
        front_heads, dk, dv: heads and key/value depth (ints or fractions) of the front-end AAConvs.
        d_model: token width of the back end.
        back_end: ``"bert"`` (MuSLCAT) or ``"aac"`` (MuSLCAN).
        num_layers, num_heads, ff_mult: transformer depth, heads, feed-forward expansion.
        dropout: inside the transformer; ``head_dropout`` before the output layer.
        max_distance: relative-position clipping distance of all attention layers.
        pool: what the head reads of the transformer's output: ``"cls"`` (the [CLS] token, BERT's
            way) or ``"meanmax"`` (mean and max over the sequence tokens, as MuSLCAN's head; no
            [CLS] token then).

    Shapes: ``(B, L)`` or ``(B, 1, L)`` -> ``(B, num_tags)``, ``L >= min_length``.
    """

    def __init__(
        self,
        num_tags: int,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        scales: Sequence[Sequence[int]] = DEFAULT_SCALES,
        attention_blocks: int = 2,
        levels: int = 3,
        front_heads: int = 4,
        dk: int | float = 0.25,
        dv: int | float = 0.25,
        d_model: int = 256,
        back_end: str = "bert",
        num_layers: int = 2,
        num_heads: int = 8,
        ff_mult: int = 4,
        dropout: float = 0.1,
        head_dropout: float = 0.3,
        max_distance: int = 512,
        pool: str = "cls",
    ) -> None:
        super().__init__()
        if pool not in ("cls", "meanmax"):
            raise ValueError(f"pool={pool!r}: expected 'cls' or 'meanmax'")
        scales = [tuple(int(v) for v in s) for s in scales]
        finest = min(stride for _, stride in scales)
        depths = [round(math.log(stride / finest, 3)) for _, stride in scales]
        if any(finest * 3**k != stride for k, (_, stride) in zip(depths, scales)):
            raise ValueError(f"scales={scales}: each stem stride must be the smallest stride times a power of 3")
        num_blocks = len(channels) - 1
        if max(depths) + max(levels, attention_blocks) > num_blocks:
            raise ValueError(
                f"channels={list(channels)} gives {num_blocks} blocks: too few for scales={scales} with "
                f"levels={levels} and attention_blocks={attention_blocks}"
            )
        if back_end not in ("bert", "aac"):
            raise ValueError(f"back_end={back_end!r}: expected 'bert' or 'aac'")
        self.num_tags, self.back_end, self.levels, self.pool = num_tags, back_end, levels, pool
        # One token per total hop: the minimum input length.
        self.min_length = finest * 3**num_blocks
        attention = {"dk": dk, "dv": dv, "num_heads": front_heads, "max_distance": max_distance}
        self.branches = nn.ModuleList(
            _Branch(kernel, stride, channels[k:], attention_blocks, attention) for k, (kernel, stride) in zip(depths, scales)
        )
        fused = len(scales) * sum(channels[-levels:])
        self.fuse = conv_block(fused, d_model, kernel_size=1)
        if back_end == "bert":
            self.cls = nn.Parameter(torch.zeros(1, 1, d_model)) if pool == "cls" else None
            self.encoder = nn.ModuleList(
                RelativeTransformerLayer(d_model, num_heads, ff_mult, dropout, max_distance) for _ in range(num_layers)
            )
            self.norm = nn.LayerNorm(d_model)
            head_in = d_model if pool == "cls" else 2 * d_model
        else:
            self.cls = None
            self.aac = AACBlock(d_model, d_model, pool=1, dk=dk, dv=dv, num_heads=front_heads, max_distance=max_distance)
            head_in = 2 * d_model
        self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(head_in, num_tags))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.cls is not None:
            nn.init.normal_(self.cls, std=0.02)

    def tokens(self, x: Tensor) -> Tensor:
        """Multi-scale multi-level front end: ``(B, 1, L) -> (B, d_model, N)``, ``N = L // min_length``."""
        levels = []
        for branch in self.branches:
            outputs = branch(x)[-self.levels :]  # deepest last: (B, C, 3^(levels-1) N) ... (B, C, N)
            for depth, out in enumerate(outputs):
                window = 3 ** (len(outputs) - 1 - depth)
                levels.append(F.max_pool1d(out, window) if window > 1 else out)  # (B, C, N)
        return self.fuse(torch.cat(levels, dim=1))  # (B, d_model, N)

    def forward(self, x: Tensor) -> Tensor:
        x = as_waveform_batch(x, self.min_length, type(self).__name__)  # (B, 1, L)
        h = self.tokens(x)  # (B, d, N)
        if self.back_end == "bert":
            h = h.transpose(1, 2)  # (B, N, d)
            if self.cls is not None:
                h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], dim=1)  # (B, 1 + N, d)
            for layer in self.encoder:
                h = layer(h)  # (B, [1 +] N, d)
            h = self.norm(h)
            pooled = h[:, 0] if self.cls is not None else torch.cat([h.mean(dim=1), h.amax(dim=1)], dim=1)  # (B, d) or (B, 2d)
        else:
            h = self.aac(h)  # (B, d, N)
            pooled = torch.cat([h.mean(dim=-1), h.amax(dim=-1)], dim=1)  # (B, 2d)
        return self.head(pooled)  # (B, num_tags)


class MuSLCAN(MuSLCAT):
    """The light variant: :class:`MuSLCAT` with one AAC block as back end instead of the transformer.

    Arguments as :class:`MuSLCAT` (without ``back_end``, ``num_layers``, ``num_heads``, ``ff_mult``).
    """

    def __init__(self, num_tags: int, **kwargs) -> None:
        for name in ("back_end", "num_layers", "num_heads", "ff_mult"):
            if name in kwargs:
                raise TypeError(f"MuSLCAN has no transformer back end: unexpected argument {name!r}")
        super().__init__(num_tags, back_end="aac", **kwargs)
