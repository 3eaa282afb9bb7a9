"""Rotation-invariant surface attention-augmented convolution on point clouds (RISurConv-style).

Zhang, Yang & Xiang, "RISurConv: Rotation Invariant Surface Attention-Augmented Convolutions
for 3D Point Cloud Classification and Segmentation", ECCV 2024 (arXiv:2408.06110), with the
attention branch of Bello et al. 2019 (``AAConv(X) = Concat[Conv(X), MHA(X)]``). For each of ``M``
centres sampled by FPS and its ``K`` nearest neighbours (:func:`~aug_attn.geometry.build_neighborhoods`):

.. math::
    t_{i} &= [\\mathrm{MLP}_f(f_i),\\; x_{j(i)}] \\quad (i = 1..K,\\ f_i \\text{: 14 invariant surface features}) \\\\
    y &= \\mathrm{ReLU}\\,\\mathrm{BN}\\big[\\max_i \\mathrm{MLP}_c(t_i),\\;
         \\max_i \\mathrm{MHA}_{\\text{surface}}(t)_i\\big]

where ``MHA_surface`` is the shared :class:`~aug_attn.attention.RelativeMultiheadAttention` over
the ``K`` neighbour tokens with :class:`~aug_attn.positional.SurfacePositionEncoder` logits. Every
input of the learned part is rotation and translation invariant, so the output is too.

Differences from the paper's code: the attention output is a separate branch concatenated with
the conv branch (as in AAConv) instead of being fed into it; attention normalises over the
neighbours (the public code normalises one step over the centres axis); the relative logits come
from pair geometry; missing normals are estimated with a rotation-equivariant sign.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from aug_attn.attention import DEFAULT_MAX_LOGITS_ELEMENTS, RelativeMultiheadAttention, check_head_split
from aug_attn.geometry import NUM_SURFACE_FEATURES, Neighborhoods, build_neighborhoods, estimate_normals, gather, to_dense
from aug_attn.geometry.neighbors import DEFAULT_CHUNK_SIZE
from aug_attn.layers.aaconv import resolve_depth
from aug_attn.positional.surface import SurfacePositionEncoder

__all__ = ["RISurConv", "SharedMLP", "dense_points"]


class _LastDimBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the channels of ``(..., C)`` (statistics over all leading dims)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)


class SharedMLP(nn.Sequential):
    """``[Linear -> BatchNorm -> ReLU (-> Dropout)]`` per layer, applied to the last dim of ``(..., C)``
    (PointNet's shared MLP / 1x1 convolution).

    Args:
        channels: ``(C_in, C_1, ..., C_out)``.
        dropout: dropout after each activation.
    """

    def __init__(
        self,
        channels: Sequence[int],
        dropout: float = 0.0,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [nn.Linear(c_in, c_out, bias=False, device=device, dtype=dtype)]
            layers += [_LastDimBatchNorm(c_out, device=device, dtype=dtype), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


def dense_points(
    pos: Tensor,
    normal: Tensor | None = None,
    batch: Tensor | None = None,
    x: Tensor | None = None,
    normal_k: int = 16,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    normal_weighted: bool = False,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """Bring dense ``(B, N, ...)`` or PyG ragged ``(P, ...)`` + ``batch (P,)`` inputs to dense form.

    Normals are taken as given (renormalised) or estimated by :func:`~aug_attn.geometry.estimate_normals`
    (``normal_k`` neighbours, distance-weighted with ``normal_weighted``).

    Returns:
        ``pos (B, N, 3)``, unit ``normal (B, N, 3)``, ``x (B, N, C)`` or None, ``mask (B, N)``
        (True = real point) or None for dense input.
    """
    mask = None
    if batch is not None:
        (pos, normal, x), mask = to_dense(batch, pos, normal, x)
    if pos.dim() != 3 or pos.shape[-1] != 3:
        raise ValueError(f"pos must be (B, N, 3), or (P, 3) with batch, got {tuple(pos.shape)}")
    if normal is None:
        normal = estimate_normals(pos, normal_k, mask, chunk_size, normal_weighted)
    elif normal.shape != pos.shape:
        raise ValueError(f"normal {tuple(normal.shape)} must match pos {tuple(pos.shape)}")
    else:
        normal = nn.functional.normalize(normal, dim=-1)
    if x is not None and x.shape[:2] != pos.shape[:2]:
        raise ValueError(f"x {tuple(x.shape)} must have the points of pos {tuple(pos.shape)}")
    return pos, normal, x, mask


class RISurConv(nn.Module):
    """Rotation-invariant surface AA convolution: FPS centres, kNN surfaces, ``Concat[conv, attention]``.

    Args:
        in_channels: features ``C_in`` of the input points (0: geometry only, as in the first layer).
        out_channels: ``C_out``; the attention branch gives ``dv`` of them.
        num_samples: centres ``M`` per cloud (fewer points: FPS repeats points).
        num_neighbors: ``K`` (fewer points: neighbours repeat).
        feature_channels: widths of ``MLP_f`` over the 14 surface features (paper: 32, 64).
        dk, dv: key and value depth of the attention branch, ints or fractions of ``out_channels``.
        num_heads: attention heads.
        pair_hidden: width of the surface encoder's pair embedding.
        normal_k: neighbours for normal estimation when no normals are given.
        chunk_size: query block of the neighbour searches.
        max_logits_elements: query-block budget of the attention core.
        normal_weighted: distance-weighted normal estimation (noisy or unevenly sampled surfaces).

    Shapes (:meth:`forward`):
        dense: ``x (B, N, C_in)`` or None, ``pos (B, N, 3)``, ``normal (B, N, 3)`` or None ->
        ``(x (B, M, C_out), pos (B, M, 3), normal (B, M, 3), None)``;
        PyG ragged: ``x (P, C_in)``, ``pos (P, 3)``, ``normal (P, 3)``, ``batch (P,)`` ->
        ``(x (B*M, C_out), pos (B*M, 3), normal (B*M, 3), batch (B*M,))``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_samples: int,
        num_neighbors: int,
        feature_channels: Sequence[int] = (32, 64),
        dk: int | float = 0.5,
        dv: int | float = 0.25,
        num_heads: int = 4,
        pair_hidden: int = 16,
        normal_k: int = 16,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_logits_elements: int = DEFAULT_MAX_LOGITS_ELEMENTS,
        normal_weighted: bool = False,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        if in_channels < 0 or out_channels < 1 or num_samples < 1 or num_neighbors < 1:
            raise ValueError(
                f"need in_channels >= 0 and out_channels, num_samples, num_neighbors >= 1, got "
                f"{in_channels}, {out_channels}, {num_samples}, {num_neighbors}"
            )
        self.dk = resolve_depth(dk, out_channels, num_heads, "dk")
        self.dv = resolve_depth(dv, out_channels, num_heads, "dv")
        check_head_split(self.dk, self.dv, num_heads)
        if self.dv >= out_channels:
            raise ValueError(f"dv={self.dv} must leave conv channels in out_channels={out_channels}")
        self.in_channels, self.out_channels, self.num_heads = in_channels, out_channels, num_heads
        self.num_samples, self.num_neighbors = num_samples, num_neighbors
        self.normal_k, self.chunk_size, self.normal_weighted = normal_k, chunk_size, normal_weighted
        self.feature_mlp = SharedMLP((NUM_SURFACE_FEATURES, *feature_channels), **factory)
        token_channels = feature_channels[-1] + in_channels
        self.conv = SharedMLP((token_channels, out_channels - self.dv), **factory)
        encoder = SurfacePositionEncoder(self.dk // num_heads, num_heads, pair_hidden, **factory)
        self.attn = RelativeMultiheadAttention(
            token_channels, self.dk, self.dv, num_heads, encoder, max_logits_elements=max_logits_elements, **factory
        )
        self.norm = _LastDimBatchNorm(out_channels, **factory)

    def neighborhoods(self, pos: Tensor, normal: Tensor, mask: Tensor | None = None) -> Neighborhoods:
        """The parameter-free geometry stage for dense ``pos, normal (B, N, 3)``."""
        return build_neighborhoods(pos, normal, self.num_samples, self.num_neighbors, mask, self.chunk_size)

    def aggregate(self, x: Tensor | None, hood: Neighborhoods) -> Tensor:
        """The learned stage: ``x (B, N, C_in)`` or None and the neighbourhoods -> ``(B, M, C_out)``."""
        if (x is None) != (self.in_channels == 0) or (x is not None and x.shape[-1] != self.in_channels):
            raise ValueError(f"expected x with {self.in_channels} channels, got {None if x is None else tuple(x.shape)}")
        batch, centres, k = hood.idx.shape
        tokens = self.feature_mlp(hood.features.to(self.norm.weight.dtype))  # (B, M, K, C_f)
        if x is not None:
            tokens = torch.cat([tokens, gather(x, hood.idx)], dim=-1)  # (B, M, K, C_f + C_in)
        conv = self.conv(tokens).amax(2)  # (B, M, C_out - dv)
        geometry = (hood.rel.reshape(batch * centres, k, 3), hood.neighbor_normal.reshape(batch * centres, k, 3))
        attn = self.attn(tokens.reshape(batch * centres, k, -1), geometry)  # (B*M, K, dv)
        attn = attn.reshape(batch, centres, k, self.dv).amax(2)  # (B, M, dv)
        return torch.relu(self.norm(torch.cat([conv, attn], dim=-1)))  # (B, M, C_out)

    def forward(
        self, x: Tensor | None, pos: Tensor, normal: Tensor | None = None, batch: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        pos, normal, x, mask = dense_points(pos, normal, batch, x, self.normal_k, self.chunk_size, self.normal_weighted)
        hood = self.neighborhoods(pos, normal, mask)
        out = self.aggregate(x, hood)  # (B, M, C_out)
        if batch is None:
            return out, hood.pos, hood.normal, None
        clouds, centres = hood.centre_idx.shape
        batch_out = torch.arange(clouds, device=pos.device).repeat_interleave(centres)  # (B*M,)
        return out.flatten(0, 1), hood.pos.flatten(0, 1), hood.normal.flatten(0, 1), batch_out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, num_samples={self.num_samples}, "
            f"num_neighbors={self.num_neighbors}, dk={self.dk}, dv={self.dv}, num_heads={self.num_heads}"
        )
