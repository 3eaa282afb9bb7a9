"""Learned relative position encoders for regular grids: 1D sequences and 2D images.

Bello et al. 2019 (arXiv:1904.09925), Sec. 3.2: the logit of query ``i`` and key ``j`` gains
``q_i . r_{j-i}``, with a learned embedding per offset; in 2D the offset embedding is the sum of a
height and a width embedding, ``r^H_{dy} + r^W_{dx}``. Unlike the paper, which sizes the tables by
the feature map, the tables here hold offsets up to ``max_distance`` and clip larger offsets, so one
module accepts any input size (the same choice as Shaw et al. 2018).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from aug_attn.functional import (
    grid_one_hot,
    relative_logits_2d_factors,
    relative_logits_2d_rows,
    relative_offsets,
    relative_table,
    skewed_logits,
)
from aug_attn.positional.base import RelativePositionEncoder

__all__ = ["RelativePositionEncoder1d", "RelativePositionEncoder2d"]


def _table(num_heads: int, rows: int, head_dim: int, shared_heads: bool, **factory) -> nn.Parameter:
    shape = (rows, head_dim) if shared_heads else (num_heads, rows, head_dim)
    return nn.Parameter(torch.empty(shape, **factory))


class RelativePositionEncoder1d(RelativePositionEncoder):
    """``e(i, j) = q_i . r[clip(j - i, -D, D)]`` for a 1D sequence; ``pos`` is its length ``L``.

    Args:
        head_dim: key dimension per head ``d``.
        num_heads: number of heads ``h``.
        max_distance: ``D``; the table has ``2D + 1`` rows, larger offsets share the edge rows.
        shared_heads: one table for all heads (the paper's choice) or one per head.
    """

    def __init__(
        self,
        head_dim: int,
        num_heads: int,
        max_distance: int = 1024,
        shared_heads: bool = True,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if max_distance < 1:
            raise ValueError(f"max_distance must be >= 1, got {max_distance}")
        self.head_dim, self.num_heads, self.max_distance = head_dim, num_heads, max_distance
        self.rel = _table(num_heads, 2 * max_distance + 1, head_dim, shared_heads, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.rel, std=self.head_dim**-0.5)

    def forward(self, q: Tensor, pos: int, start: int, end: int) -> Tensor:
        return self.band_logits(q, pos, start, end, 0, pos)  # (B, h, c, L)

    def band(self, pos: int) -> int:
        return self.max_distance

    def band_logits(self, q: Tensor, pos: int, start: int, end: int, key_start: int, key_end: int) -> Tensor:
        rows = relative_offsets(start, end, key_end, self.max_distance, q.device, key_start)
        return skewed_logits(q, relative_table(self.rel, rows), key_end - key_start)  # (B, h, c, key_end - key_start)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, num_heads={self.num_heads}, max_distance={self.max_distance}, shared_heads={self.rel.dim() == 2}"


class RelativePositionEncoder2d(RelativePositionEncoder):
    """``e(i, j) = q_i . r^H[clip(y_j - y_i)] + q_i . r^W[clip(x_j - x_i)]``; ``pos`` is ``(H, W)``.

    Tokens are pixels in row-major ``(y, x)`` order; query chunks are whole image rows.

    Args:
        head_dim, num_heads, max_distance, shared_heads: as in :class:`RelativePositionEncoder1d`,
            ``max_distance`` applying to each axis.
    """

    def __init__(
        self,
        head_dim: int,
        num_heads: int,
        max_distance: int = 64,
        shared_heads: bool = True,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if max_distance < 1:
            raise ValueError(f"max_distance must be >= 1, got {max_distance}")
        self.head_dim, self.num_heads, self.max_distance = head_dim, num_heads, max_distance
        rows = 2 * max_distance + 1
        self.rel_h = _table(num_heads, rows, head_dim, shared_heads, device=device, dtype=dtype)
        self.rel_w = _table(num_heads, rows, head_dim, shared_heads, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.rel_h, std=self.head_dim**-0.5)
        nn.init.normal_(self.rel_w, std=self.head_dim**-0.5)

    def block_size(self, pos: tuple[int, int]) -> int:
        return pos[1]

    def forward(self, q: Tensor, pos: tuple[int, int], start: int, end: int) -> Tensor:
        height, width = pos
        return relative_logits_2d_rows(q, self.rel_h, self.rel_w, height, width, start // width, self.max_distance)

    def factorized_dim(self, pos: tuple[int, int]) -> int:
        return pos[0] + pos[1]

    def factorized(self, q: Tensor, pos: tuple[int, int]) -> tuple[Tensor, Tensor]:
        height, width = pos
        logits_h, logits_w = relative_logits_2d_factors(q, self.rel_h, self.rel_w, height, width, 0, self.max_distance)
        return torch.cat([logits_h, logits_w], dim=-1), grid_one_hot(height, width, q.dtype, q.device)  # (B, h, N, H+W), (N, H+W)

    def factorized_grid(self, pos: tuple[int, int]) -> tuple[int, int]:
        return int(pos[0]), int(pos[1])

    def factorized_tiles(self, pos: tuple[int, int], side: int) -> list[tuple[Tensor, Tensor]]:
        """Blocks of ``side x side`` grid cells (smaller at the far edges): a block's keys use the
        one-hot columns of its rows and of its columns only."""
        return list(_grid_tiles(pos[0], pos[1], side))

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, num_heads={self.num_heads}, max_distance={self.max_distance}, shared_heads={self.rel_h.dim() == 2}"


@functools.lru_cache(maxsize=64)
def _grid_tiles(height: int, width: int, side: int) -> tuple[tuple[Tensor, Tensor], ...]:
    """``(keys, columns)`` of the ``side x side`` blocks of a raster-ordered ``height x width`` grid,
    for the factors ``onehot(y) || onehot(x)`` of :func:`~aug_attn.functional.grid_one_hot`."""
    if side < 1:
        raise ValueError(f"tile side must be >= 1, got {side}")
    tiles = []
    for top in range(0, height, side):
        rows = torch.arange(top, min(height, top + side))
        for left in range(0, width, side):
            cols = torch.arange(left, min(width, left + side))
            tiles.append(((rows[:, None] * width + cols[None, :]).flatten(), torch.cat([rows, height + cols])))
    return tuple(tiles)
