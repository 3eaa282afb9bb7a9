"""PointNet++ (single-scale grouping) classifier and part segmenter: the non-invariant baselines of
the point branch.

Qi, Yi, Su & Guibas, "PointNet++: Deep Hierarchical Feature Learning on Point Sets in a Metric
Space", NeurIPS 2017 (arXiv:1706.02413). Each set abstraction level samples ``M`` centres by FPS,
groups their neighbours, and applies a shared MLP to ``[x_j - p, f_j]`` (offset in the global frame,
plus the neighbour's features) before a max over the group:

.. math::
    f'_p = \\max_{j \\in \\mathcal{N}(p)} \\mathrm{MLP}([x_j - p,\\; f_j])

A last level pools the whole cloud; an MLP head gives the logits. Offsets and normals are raw
coordinates, so the network is **not** rotation invariant: trained on upright shapes it fails on
arbitrarily rotated ones (z/SO3), which is what it is here to show. Nor is it exactly translation
invariant: as in the paper's code, the global level (and the segmenter's input skip features) see
absolute coordinates; the datasets centre every shape.

Paper defaults (the constructor defaults): ModelNet40 SSG with normals, centres 512 / 128, radius
0.2 / 0.4 with 32 / 64 neighbours, MLPs (64, 64, 128) / (128, 128, 256), global (256, 512, 1024),
head 512 -> 256 with dropout 0.5. Deliberate differences: groups keep the nearest ``K`` points in
the ball rather than the first ``K`` in index order (order-independent), and FPS starts from the
point farthest from the centroid rather than a random one (deterministic).

The part segmenter follows the SSG part-segmentation network of the paper's code: two set
abstraction levels (512 / 128 centres, radius 0.2 / 0.4, 64 neighbours each), a global level, then
feature propagation back to every point (inverse-distance interpolation over 3 neighbours,
skip features concatenated, shared MLPs (256, 256), (256, 128), (128, 128, 128)); the input points'
skip features are the one-hot category, the coordinates and the normals; a per-point head
128 -> dropout 0.5 -> parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from aug_attn.geometry import ball_query, farthest_point_sample, gather, interpolate, knn, point_inputs, to_dense
from aug_attn.geometry.neighbors import DEFAULT_CHUNK_SIZE
from aug_attn.layers.surface import SharedMLP
from aug_attn.models.risurconv import category_features

__all__ = ["PointNet2Classifier", "PointNet2Segmenter", "SetAbstraction"]


class SetAbstraction(nn.Module):
    """One PointNet++ set abstraction level: FPS centres, ball (or kNN) groups, shared MLP, max pool.

    Args:
        in_channels: features ``C_in`` of the input points (0: coordinates only).
        channels: widths of the shared MLP; the output has ``channels[-1]`` features.
        num_samples: centres ``M``.
        num_neighbors: points per group ``K``.
        radius: ball radius; None groups the ``K`` nearest points.
        chunk_size: query block of the neighbour search.

    Shapes: ``pos (B, N, 3)``, ``x (B, N, C_in)`` or None, ``mask (B, N)`` or None ->
    ``pos (B, M, 3)``, ``x (B, M, channels[-1])``.
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        num_samples: int,
        num_neighbors: int,
        radius: float | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        super().__init__()
        if not channels or num_samples < 1 or num_neighbors < 1 or (radius is not None and radius <= 0):
            raise ValueError(
                f"need channels, num_samples >= 1, num_neighbors >= 1 and radius > 0 or None, got "
                f"{tuple(channels)}, {num_samples}, {num_neighbors}, {radius}"
            )
        self.in_channels, self.num_samples, self.num_neighbors = in_channels, num_samples, num_neighbors
        self.radius, self.chunk_size = radius, chunk_size
        self.mlp = SharedMLP((3 + in_channels, *channels))

    def forward(self, pos: Tensor, x: Tensor | None, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        centres = gather(pos, farthest_point_sample(pos, self.num_samples, mask))  # (B, M, 3)
        if self.radius is None:
            idx, _ = knn(centres, pos, self.num_neighbors, mask, self.chunk_size)
        else:
            idx, _ = ball_query(centres, pos, self.radius, self.num_neighbors, mask, self.chunk_size)  # (B, M, K)
        group = gather(pos, idx) - centres.unsqueeze(2)  # (B, M, K, 3)
        if x is not None:
            group = torch.cat([group, gather(x, idx)], dim=-1)  # (B, M, K, 3 + C_in)
        return centres, self.mlp(group).amax(2)  # (B, M, 3), (B, M, C_out)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, num_samples={self.num_samples}, num_neighbors={self.num_neighbors}, "
            f"radius={self.radius}"
        )


def _set_abstractions(
    point_channels: int,
    samples: Sequence[int],
    neighbors: Sequence[int],
    radii: Sequence[float | None],
    channels: Sequence[Sequence[int]],
    chunk_size: int,
) -> tuple[nn.ModuleList, list[int]]:
    """The set abstraction levels of a PointNet++ network and the feature widths
    ``[point_channels, C_1, ..., C_L]`` of the input points and of each level."""
    if not len(samples) == len(neighbors) == len(radii) == len(channels):
        raise ValueError(
            f"samples {tuple(samples)}, neighbors {tuple(neighbors)}, radii {tuple(radii)} and channels "
            f"{tuple(channels)} must have one entry per level"
        )
    widths = [point_channels] + [level[-1] for level in channels]
    levels = nn.ModuleList(
        SetAbstraction(widths[i], channels[i], samples[i], neighbors[i], radii[i], chunk_size) for i in range(len(channels))
    )
    return levels, widths


def _dense_inputs(
    model: nn.Module, pos: Tensor, normal: Tensor | None, batch: Tensor | None, x: Tensor | None
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Checked dense inputs of a PointNet++ ``model``: ``pos (B, N, 3)``, point features
    ``[x, normal] (B, N, C)`` (None when it has none) and the validity ``mask (B, N)`` of PyG
    ragged input (None for dense input)."""
    if model.use_normals and normal is None:
        raise ValueError(f"{type(model).__name__}(use_normals=True) needs normals; pass normal or use_normals=False")
    parts = [t for t in (x, normal if model.use_normals else None) if t is not None]
    features = torch.cat(parts, dim=-1) if parts else None  # (B, N, C) or (P, C) or None
    mask = None
    if batch is not None:
        (pos, features), mask = to_dense(batch, pos, features)
    if pos.dim() != 3 or pos.shape[-1] != 3:
        raise ValueError(f"pos must be (B, N, 3), or (P, 3) with batch, got {tuple(pos.shape)}")
    if features is not None and features.shape[:2] != pos.shape[:2]:
        raise ValueError(f"normal / x {tuple(features.shape)} must have the points of pos {tuple(pos.shape)}")
    return pos, features, mask


class PointNet2Classifier(nn.Module):
    """PointNet++ SSG classifier: set abstraction levels, a global level (shared MLP on
    ``[x, f]`` of every remaining point, max pool), MLP head. Not rotation invariant (the baseline).

    Args:
        num_classes: output logits.
        in_channels: extra per-point input features.
        use_normals: normals are input features (then :meth:`forward` needs them).
        samples, neighbors, radii, channels: per level ``M``, ``K``, ball radius (None: kNN) and
            MLP widths (defaults: the paper's SSG).
        global_channels: MLP widths of the global level.
        head_channels, dropout: hidden widths of the head and the dropout after each.
        chunk_size: query block of neighbour searches.

    Shapes (:meth:`forward`): ``pos (B, N, 3)`` (+ ``normal (B, N, 3)``, ``x (B, N, C)``) or PyG
    ragged ``pos (P, 3)`` with ``batch (P,)``, or a PyG ``Data``/``Batch``, -> logits ``(B, num_classes)``. The signature matches
    :class:`~aug_attn.models.RISurConvClassifier`, so the two are interchangeable in a training loop.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 0,
        use_normals: bool = True,
        samples: Sequence[int] = (512, 128),
        neighbors: Sequence[int] = (32, 64),
        radii: Sequence[float | None] = (0.2, 0.4),
        channels: Sequence[Sequence[int]] = ((64, 64, 128), (128, 128, 256)),
        global_channels: Sequence[int] = (256, 512, 1024),
        head_channels: Sequence[int] = (512, 256),
        dropout: float = 0.5,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        super().__init__()
        self.use_normals, self.in_channels = use_normals, in_channels
        self.levels, widths = _set_abstractions(in_channels + 3 * use_normals, samples, neighbors, radii, channels, chunk_size)
        if not global_channels:
            raise ValueError("global_channels must not be empty")
        self.global_mlp = SharedMLP((3 + widths[-1], *global_channels))
        self.head = nn.Sequential(
            SharedMLP((global_channels[-1], *head_channels), dropout),
            nn.Linear(head_channels[-1] if head_channels else global_channels[-1], num_classes),
        )

    def forward(
        self, pos: Tensor | Any, normal: Tensor | None = None, batch: Tensor | None = None, x: Tensor | None = None
    ) -> Tensor:
        pos, normal, batch, x, _ = point_inputs(pos, normal, batch, x)  # a PyG Data/Batch, or tensors
        pos, features, mask = _dense_inputs(self, pos, normal, batch, x)  # (B, N, 3), (B, N, C) or None, (B, N) or None
        for level in self.levels:
            pos, features = level(pos, features, mask)  # (B, M, 3), (B, M, C)
            mask = None  # centres are real points (FPS repeats points of small clouds)
        group = pos if features is None else torch.cat([pos, features], dim=-1)  # (B, M, 3 + C)
        out = self.global_mlp(group)  # (B, M, G)
        if mask is not None:  # no level: pool over the real points only
            out = out.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        return self.head(out.amax(1))  # (B, num_classes)


class PointNet2Segmenter(nn.Module):
    """PointNet++ SSG part segmentation: set abstraction levels, a global level, feature propagation
    back to every input point, per-point head. Not rotation invariant (the segmentation baseline).

    Args:
        num_parts: per-point logits.
        num_categories: object categories given as one-hot input to the last propagation (0: none).
        in_channels, use_normals, samples, neighbors, radii, channels, global_channels, chunk_size:
            as :class:`PointNet2Classifier` (defaults: the paper's part-segmentation SSG).
        decoder_channels: MLP widths of each propagation step, coarsest first (one per level + 1).
        head_channels, dropout: hidden width of the per-point head and the dropout after it.

    Shapes (:meth:`forward`): dense ``pos (B, N, 3)`` -> ``(B, N, num_parts)``; PyG ragged
    ``pos (P, 3)`` with ``batch (P,)`` -> ``(P, num_parts)``; ``category``: ``(B,)`` int64 labels.
    The signature matches :class:`~aug_attn.models.RISurConvSegmenter`.
    """

    def __init__(
        self,
        num_parts: int,
        num_categories: int = 0,
        in_channels: int = 0,
        use_normals: bool = True,
        samples: Sequence[int] = (512, 128),
        neighbors: Sequence[int] = (64, 64),
        radii: Sequence[float | None] = (0.2, 0.4),
        channels: Sequence[Sequence[int]] = ((64, 64, 128), (128, 128, 256)),
        global_channels: Sequence[int] = (256, 512, 1024),
        decoder_channels: Sequence[Sequence[int]] = ((256, 256), (256, 128), (128, 128, 128)),
        head_channels: int = 128,
        dropout: float = 0.5,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        super().__init__()
        self.use_normals, self.in_channels, self.num_categories = use_normals, in_channels, num_categories
        self.chunk_size = chunk_size
        point_channels = in_channels + 3 * use_normals
        self.levels, widths = _set_abstractions(point_channels, samples, neighbors, radii, channels, chunk_size)
        if not channels:
            raise ValueError("PointNet2Segmenter needs at least one set abstraction level")
        if not global_channels or len(decoder_channels) != len(channels) + 1 or not all(decoder_channels):
            raise ValueError(
                f"global_channels {tuple(global_channels)} must not be empty and decoder_channels "
                f"{tuple(decoder_channels)} needs one non-empty MLP per level plus one for the input points"
            )
        self.global_mlp = SharedMLP((3 + widths[-1], *global_channels))
        # Skip features of the propagation targets, coarsest first: the levels' features, then the
        # input points' one-hot category, coordinates and features.
        skips = [*reversed(widths[1:]), num_categories + 3 + point_channels]
        inputs = [global_channels[-1]] + [mlp[-1] for mlp in decoder_channels[:-1]]
        self.propagate = nn.ModuleList(
            SharedMLP((inputs[i] + skips[i], *decoder_channels[i])) for i in range(len(decoder_channels))
        )
        self.head = nn.Sequential(
            SharedMLP((decoder_channels[-1][-1], head_channels), dropout), nn.Linear(head_channels, num_parts)
        )

    def forward(
        self,
        pos: Tensor | Any,
        normal: Tensor | None = None,
        batch: Tensor | None = None,
        x: Tensor | None = None,
        category: Tensor | None = None,
    ) -> Tensor:
        pos, normal, batch, x, category = point_inputs(pos, normal, batch, x, category)  # PyG Data/Batch or tensors
        pos, features, mask = _dense_inputs(self, pos, normal, batch, x)  # (B, N, 3), (B, N, C) or None, (B, N) or None
        onehot = category_features(category, self.num_categories, pos)
        inputs = [t for t in (onehot, pos, features) if t is not None]  # (B, N, num_categories + 3 + C)
        skips, positions = [torch.cat(inputs, dim=-1)], [pos]  # finest first
        level_mask = mask
        for level in self.levels:
            level_pos, features = level(positions[-1], features, level_mask)  # (B, M, 3), (B, M, C)
            level_mask = None  # centres are real points (FPS repeats points of small clouds)
            positions.append(level_pos)
            skips.append(features)
        y = self.global_mlp(torch.cat([positions[-1], features], dim=-1)).amax(1, keepdim=True)  # (B, 1, G)
        for step, mlp in enumerate(self.propagate):
            target = len(skips) - 1 - step  # the coarsest level first, the input points last
            source = positions[target + 1] if step else positions[-1][:, :1]  # the global point: any position
            y = interpolate(positions[target], source, y, 3, chunk_size=self.chunk_size)  # (B, N_t, C)
            skip = skips[target]
            if target == 0 and mask is not None:
                # Ragged input: drop the padding before the last MLPs so BatchNorm never sees it.
                y, skip = y[mask], skip[mask]  # (P, C)
            y = mlp(torch.cat([y, skip], dim=-1))
        return self.head(y)  # (B, N, num_parts) or (P, num_parts)
