"""Rotation-invariant point cloud networks built from :class:`~aug_attn.layers.RISurConv`.

Zhang, Yang & Xiang, "RISurConv", ECCV 2024 (arXiv:2408.06110). Paper / public-code defaults,
which are the constructor defaults here:

- classification (ModelNet40, 1024 points with normals): the stages of :data:`CLASSIFIER_STAGES`
  (centres ``M``, neighbours ``K`` and width of each), a global layer to 512, a 3-layer transformer
  (8 heads), head 512 -> 256 -> 128 -> classes with BatchNorm and dropout 0.4;
- part segmentation (ShapeNet part, 2048 points, 16 categories, 50 parts): the stages of
  :data:`SEGMENTER_STAGES` (the same sampling, twice the widths), feature propagation back to every
  point, one-hot category at the last level, head 128 -> parts.

Deliberate differences from the public code:

- its transformer is built sequence-first but fed batch-first tensors, so it attends across the
  shapes of a batch. Here the transformer attends over the last stage's centre tokens **of one
  cloud** (relative logits from their surface geometry), and a cloud's logits never depend on the
  other clouds of the batch (in eval mode; train-mode BatchNorm statistics are batch-wide by design);
- the global layer is a shared MLP on the last centres followed by max pooling, not a grouping of
  all points around the origin;
- feature propagation interpolates by inverse distance over the 3 nearest coarser points
  (PointNet++), not through another RI convolution.

Addition (``global_context=True``, off by default so the paper's network stays the default): every
input point and, in the classifier, every last-stage centre also gets the 5 rotation-invariant
coordinates of :func:`~aug_attn.geometry.frame_features` in the cloud's canonical principal frame
(signs fixed equivariantly by third moments, faded out where the spectrum is degenerate). Local
features cannot tell apart parts that look alike locally; these say where in the shape a part is,
and keep exact invariance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aug_attn.attention import RelativeMultiheadAttention
from aug_attn.geometry import (
    NUM_GLOBAL_FEATURES,
    Neighborhoods,
    frame_features,
    interpolate,
    point_inputs,
    principal_frame,
)
from aug_attn.geometry.neighbors import DEFAULT_CHUNK_SIZE
from aug_attn.layers.surface import RISurConv, SharedMLP, dense_points
from aug_attn.positional.surface import SurfacePositionEncoder

__all__ = ["CLASSIFIER_STAGES", "SEGMENTER_STAGES", "RISurConvClassifier", "RISurConvSegmenter", "Stages", "SurfaceTransformerBlock"]


@dataclass(frozen=True)
class Stages:
    """The encoder's stages, one entry per stage: ``samples`` centres ``M`` drawn by farthest point
    sampling, ``neighbors`` ``K`` grouped around each, ``channels`` the stage's output width. The
    constructors take the three as the arguments (and config keys) of the same names."""

    samples: tuple[int, ...]
    neighbors: tuple[int, ...]
    channels: tuple[int, ...]


# The paper's / public code's stages: the constructors' defaults, which a config without these keys gets.
CLASSIFIER_STAGES = Stages(samples=(512, 256, 128, 64), neighbors=(8, 16, 32, 64), channels=(32, 64, 128, 256))
SEGMENTER_STAGES = Stages(CLASSIFIER_STAGES.samples, CLASSIFIER_STAGES.neighbors, channels=(64, 128, 256, 512))


class SurfaceTransformerBlock(nn.Module):
    """Pre-norm transformer encoder layer over the ``M`` tokens of each cloud separately,
    ``x + MHA(LN(x))`` then ``x + FFN(LN(x))``, with :class:`SurfacePositionEncoder` relative logits
    from the tokens' positions and normals (rotation invariant).

    Shapes: ``x (B, M, C)``, ``pos = (xyz, normal)`` each ``(B, M, 3)`` -> ``(B, M, C)``.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int,
        ffn_channels: int,
        dropout: float = 0.0,
        pair_hidden: int = 16,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        encoder = SurfacePositionEncoder(channels // num_heads, num_heads, pair_hidden, **factory)
        self.norm1 = nn.LayerNorm(channels, **factory)
        self.attn = RelativeMultiheadAttention(channels, channels, channels, num_heads, encoder, dropout, **factory)
        self.norm2 = nn.LayerNorm(channels, **factory)
        self.ffn = nn.Sequential(
            nn.Linear(channels, ffn_channels, **factory),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(ffn_channels, channels, **factory),
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, pos: tuple[Tensor, Tensor]) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x), pos))  # (B, M, C)
        return x + self.drop(self.ffn(self.norm2(x)))


def category_features(category: Tensor | None, num_categories: int, pos: Tensor) -> Tensor | None:
    """A segmenter's ``category (B,)`` labels, checked against its ``num_categories`` (0: none
    expected) and the batch of ``pos (B, N, 3)``, as one-hot features repeated at every point:
    ``(B, N, num_categories)`` in ``pos``'s dtype (None without categories)."""
    if (category is None) != (num_categories == 0):
        raise ValueError(f"category labels are {'required' if num_categories else 'not expected'}")
    if category is None:
        return None
    if category.shape != pos.shape[:1]:
        raise ValueError(f"category must be (B,) = ({pos.shape[0]},) labels, got {tuple(category.shape)}")
    onehot = F.one_hot(category, num_categories).to(pos.dtype)  # (B, num_categories)
    return onehot.unsqueeze(1).expand(-1, pos.shape[1], -1)


class _RISurConvEncoder(nn.Module):
    """The hierarchy of sample / group / RISurConv stages shared by both networks."""

    def __init__(
        self,
        in_channels: int,
        samples: Sequence[int],
        neighbors: Sequence[int],
        channels: Sequence[int],
        feature_channels: Sequence[int],
        num_heads: int,
        pair_hidden: int,
        normal_k: int,
        chunk_size: int,
        global_context: bool,
        normal_weighted: bool,
        factory: dict,
    ) -> None:
        super().__init__()
        if not len(samples) == len(neighbors) == len(channels) >= 1:
            raise ValueError(
                f"samples {tuple(samples)}, neighbors {tuple(neighbors)}, channels {tuple(channels)} must have one entry per stage"
            )
        self.in_channels, self.normal_k, self.chunk_size = in_channels, normal_k, chunk_size
        self.global_context, self.normal_weighted = global_context, normal_weighted
        # The first stage reads the user's features and, with global context, the frame features.
        self.point_channels = in_channels + NUM_GLOBAL_FEATURES * global_context
        widths = (self.point_channels, *channels)
        self.stages = nn.ModuleList(
            RISurConv(
                widths[i], widths[i + 1], samples[i], neighbors[i], feature_channels,
                num_heads=num_heads, pair_hidden=pair_hidden, chunk_size=chunk_size, **factory,
            )
            for i in range(len(channels))
        )  # fmt: skip

    def neighborhoods(self, pos: Tensor, normal: Tensor, mask: Tensor | None = None) -> list[Neighborhoods]:
        """The parameter-free geometry of every stage (FPS, kNN, ordering, features) for dense input."""
        hoods = []
        for stage in self.stages:
            hoods.append(stage.neighborhoods(pos, normal, mask))
            pos, normal, mask = hoods[-1].pos, hoods[-1].normal, None
        return hoods

    def encode(
        self, pos: Tensor, normal: Tensor | None, batch: Tensor | None, x: Tensor | None
    ) -> tuple[list[Tensor | None], list[Neighborhoods], Tensor, Tensor | None, Tensor | None]:
        """Features of every level (input points first), the neighbourhoods, dense ``pos`` and ``mask``,
        and the frame features of the last centres ``(B, M_last, 5)`` (None without global context)."""
        pos, normal, x, mask = dense_points(pos, normal, batch, x, self.normal_k, self.chunk_size, self.normal_weighted)
        hoods = self.neighborhoods(pos, normal, mask)
        last = None
        if self.global_context:
            frame = principal_frame(pos, mask)
            dtype = self.stages[0].norm.weight.dtype
            context = frame_features(pos, frame).to(dtype)  # (B, N, 5)
            x = context if x is None else torch.cat([x, context], dim=-1)
            last = frame_features(hoods[-1].pos, frame).to(dtype)  # (B, M_last, 5)
        features = [x]
        for stage, hood in zip(self.stages, hoods):
            features.append(stage.aggregate(features[-1], hood))  # (B, M_i, C_i)
        return features, hoods, pos, mask, last


class RISurConvClassifier(nn.Module):
    """Rotation-invariant point cloud classifier: RISurConv stages -> global MLP -> per-cloud
    transformer over the last centres -> max pool -> MLP head.

    Args:
        num_classes: output logits.
        in_channels: extra per-point input features (must be rotation invariant to keep invariance).
        samples, neighbors, channels: per stage ``M``, ``K`` and width (defaults: :data:`CLASSIFIER_STAGES`).
        global_channels: width of the global layer and the transformer.
        transformer_layers, transformer_heads: 0 layers disables the transformer.
        head_channels: hidden widths of the head.
        dropout: head dropout (transformer dropout is 0.05, as in the public code).
        num_heads, feature_channels, pair_hidden: of every :class:`RISurConv`.
        normal_k: neighbours for normal estimation when no normals are given.
        chunk_size: query block of neighbour searches.
        global_context: add the canonical-frame features (module docstring) to the input points
            and the last centres.
        normal_weighted: distance-weighted normal estimation (see :func:`~aug_attn.geometry.estimate_normals`).

    Shapes (:meth:`forward`): ``pos (B, N, 3)`` (+ ``normal (B, N, 3)``, ``x (B, N, C)``) or PyG ragged
    ``pos (P, 3)`` with ``batch (P,)``, or a PyG ``Data``/``Batch`` -> logits ``(B, num_classes)``.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 0,
        samples: Sequence[int] = CLASSIFIER_STAGES.samples,
        neighbors: Sequence[int] = CLASSIFIER_STAGES.neighbors,
        channels: Sequence[int] = CLASSIFIER_STAGES.channels,
        global_channels: int = 512,
        transformer_layers: int = 3,
        transformer_heads: int = 8,
        head_channels: Sequence[int] = (256, 128),
        dropout: float = 0.4,
        num_heads: int = 4,
        feature_channels: Sequence[int] = (32, 64),
        pair_hidden: int = 16,
        normal_k: int = 16,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        global_context: bool = False,
        normal_weighted: bool = False,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.encoder = _RISurConvEncoder(
            in_channels, samples, neighbors, channels, feature_channels, num_heads, pair_hidden, normal_k, chunk_size,
            global_context, normal_weighted, factory,
        )  # fmt: skip
        self.global_mlp = SharedMLP((channels[-1] + NUM_GLOBAL_FEATURES * global_context, global_channels), **factory)
        self.transformer = nn.ModuleList(
            SurfaceTransformerBlock(global_channels, transformer_heads, 4 * global_channels, 0.05, pair_hidden, **factory)
            for _ in range(transformer_layers)
        )
        self.head = nn.Sequential(
            SharedMLP((global_channels, *head_channels), dropout, **factory),
            nn.Linear(head_channels[-1] if head_channels else global_channels, num_classes, **factory),
        )

    def forward(
        self, pos: Tensor | Any, normal: Tensor | None = None, batch: Tensor | None = None, x: Tensor | None = None
    ) -> Tensor:
        pos, normal, batch, x, _ = point_inputs(pos, normal, batch, x)  # a PyG Data/Batch, or tensors
        features, hoods, _, _, last = self.encoder.encode(pos, normal, batch, x)
        tokens = self.global_mlp(features[-1] if last is None else torch.cat([features[-1], last], -1))  # (B, M_last, G)
        geometry = (hoods[-1].pos, hoods[-1].normal)
        for block in self.transformer:
            tokens = block(tokens, geometry)
        return self.head(tokens.amax(1))  # (B, num_classes)


class RISurConvSegmenter(nn.Module):
    """Rotation-invariant part segmentation: RISurConv stages, then feature propagation from
    each level to the next finer one (inverse-distance interpolation over 3 neighbours, skip
    features concatenated, shared MLP) back to every input point, then a per-point head.

    Args:
        num_parts: per-point logits.
        num_categories: object categories given as one-hot input at the last level (0: none).
        in_channels: extra per-point input features (rotation invariant ones keep invariance).
        samples, neighbors, channels: encoder stages (defaults: :data:`SEGMENTER_STAGES`).
        decoder_channels: output width of each propagation step, coarsest first (one per stage).
        head_channels, dropout: hidden width and dropout of the per-point head.
        num_heads, feature_channels, pair_hidden, normal_k, chunk_size, global_context, normal_weighted:
            as :class:`RISurConvClassifier` (global context: at the input points, also skip features).

    Shapes (:meth:`forward`): dense ``pos (B, N, 3)`` -> ``(B, N, num_parts)``; PyG ragged
    ``pos (P, 3)`` with ``batch (P,)``, or a PyG ``Data``/``Batch`` (its ``category`` too, when it
    has one) -> ``(P, num_parts)``; ``category``: ``(B,)`` int64 labels.
    """

    def __init__(
        self,
        num_parts: int,
        num_categories: int = 0,
        in_channels: int = 0,
        samples: Sequence[int] = SEGMENTER_STAGES.samples,
        neighbors: Sequence[int] = SEGMENTER_STAGES.neighbors,
        channels: Sequence[int] = SEGMENTER_STAGES.channels,
        decoder_channels: Sequence[int] = (512, 256, 128, 128),
        head_channels: int = 128,
        dropout: float = 0.4,
        num_heads: int = 4,
        feature_channels: Sequence[int] = (32, 64),
        pair_hidden: int = 16,
        normal_k: int = 16,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        global_context: bool = False,
        normal_weighted: bool = False,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        if len(decoder_channels) != len(channels):
            raise ValueError(f"decoder_channels {tuple(decoder_channels)} needs one width per stage {tuple(channels)}")
        self.num_categories = num_categories
        self.encoder = _RISurConvEncoder(
            in_channels, samples, neighbors, channels, feature_channels, num_heads, pair_hidden, normal_k, chunk_size,
            global_context, normal_weighted, factory,
        )  # fmt: skip
        skips = (self.encoder.point_channels + num_categories, *channels[:-1])  # features of the target levels, finest first
        widths = (channels[-1], *decoder_channels)
        self.propagate = nn.ModuleList(
            SharedMLP((widths[i] + skips[-1 - i], widths[i + 1]), **factory) for i in range(len(decoder_channels))
        )
        self.head = nn.Sequential(
            SharedMLP((decoder_channels[-1], head_channels), dropout, **factory),
            nn.Linear(head_channels, num_parts, **factory),
        )

    def _input_features(self, x: Tensor | None, category: Tensor | None, pos: Tensor) -> Tensor | None:
        onehot = category_features(category, self.num_categories, pos)
        if onehot is None or x is None:
            return x if onehot is None else onehot
        return torch.cat([x, onehot], dim=-1)

    def forward(
        self,
        pos: Tensor | Any,
        normal: Tensor | None = None,
        batch: Tensor | None = None,
        x: Tensor | None = None,
        category: Tensor | None = None,
    ) -> Tensor:
        pos, normal, batch, x, category = point_inputs(pos, normal, batch, x, category)  # PyG Data/Batch or tensors
        features, hoods, dense_pos, mask, _ = self.encoder.encode(pos, normal, batch, x)
        features[0] = self._input_features(features[0], category, dense_pos)
        positions = [dense_pos] + [hood.pos for hood in hoods]  # finest first
        y = features[-1]  # (B, M_last, C_last)
        for step, mlp in enumerate(self.propagate):
            level = len(hoods) - 1 - step
            y = interpolate(positions[level], positions[level + 1], y, 3, chunk_size=self.encoder.chunk_size)
            skip = features[level]
            if level == 0 and mask is not None:
                # Ragged input: drop the padding before the last MLPs so BatchNorm never sees it.
                y, skip = y[mask], None if skip is None else skip[mask]  # (P, C)
            y = mlp(y if skip is None else torch.cat([y, skip], dim=-1))
        return self.head(y)  # (B, N, num_parts) or (P, num_parts)
