"""The interface between the shared attention core and a modality's notion of position."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

__all__ = ["RelativePositionEncoder"]


class RelativePositionEncoder(nn.Module):
    """Turns "where is key ``j`` relative to query ``i``" into additive attention logits.

    The attention core computes ``softmax_j(q_i . k_j + e(q, i, j))``; an encoder supplies
    ``e`` for a block of consecutive queries, so the core can process long inputs in chunks
    without ever materialising an ``(N, N, d)`` tensor of relative embeddings.

    ``pos`` is whatever the modality needs to describe token positions: the length ``L``
    (1D), ``(H, W)`` (2D), a tensor of pairwise rotation-invariant features (surfaces).

    Subclasses implement :meth:`forward` and, when chunks must align with a structure
    (whole image rows in 2D), :meth:`block_size`. An encoder whose logits are a dot product of
    per-query and per-key vectors, ``e(q, i, j) = a_i . b_j`` (2D grids: ``a_i`` gathers
    ``q_i . r^H`` and ``q_i . r^W``, ``b_j`` is one-hot in ``y_j`` and ``x_j``), also implements
    :meth:`factorized_dim` and :meth:`factorized`: the core then runs plain fused attention on
    ``[q_i, a_i] . [k_j, b_j]`` and never builds logits. An encoder whose logits stop changing
    beyond a band, ``e(q, i, j) = e(q, i, i + D)`` for ``j >= i + D`` and ``e(q, i, i - D)`` for
    ``j <= i - D`` (1D offsets clipped at ``D``), implements :meth:`band` and :meth:`band_logits`:
    the core then materializes logits only inside the band and runs the keys beyond it through a
    fused kernel (see :mod:`aug_attn.attention.banded`).
    """

    def block_size(self, pos: Any) -> int:
        """Query chunks handed to :meth:`forward` are multiples of this many tokens."""
        return 1

    def forward(self, q: Tensor, pos: Any, start: int, end: int) -> Tensor:
        """Relative logits of the queries ``[start, end)``.

        Args:
            q: ``(B, h, end - start, d)`` queries of those tokens, already scaled by ``d**-0.5``.
            pos: the modality's position description for all ``N`` tokens.
            start, end: the query block.

        Returns:
            ``(B, h, end - start, N)`` logits added before the softmax.
        """
        raise NotImplementedError

    def factorized_dim(self, pos: Any) -> int | None:
        """Width ``a`` of the factorized form for these positions, or None where there is none."""
        return None

    def factorized(self, q: Tensor, pos: Any) -> tuple[Tensor, Tensor]:
        """The query and key augmentations whose dot products are the logits of :meth:`forward`.

        Args:
            q: ``(B, h, N, d)`` queries of all tokens, already scaled by ``d**-0.5``.
            pos: the modality's position description.

        Returns:
            ``a (B, h, N, factorized_dim)`` and ``b (N, factorized_dim)`` with
            ``forward(q, pos, 0, N)[..., i, j] = a[..., i, :] . b[j]``.
        """
        raise NotImplementedError(f"{type(self).__name__} has no factorized form")

    def factorized_grid(self, pos: Any) -> tuple[int, int] | None:
        """``(H, W)`` where the key factors of :meth:`factorized` are the grid indicators
        :func:`~aug_attn.functional.grid_one_hot` of an ``H x W`` raster grid, so that the logits are
        ``a[i, y_j] + a[i, H + x_j]``: the core then runs the native CPU kernel, which adds those two
        numbers per query-key pair instead of multiplying ``H + W`` one-hot columns
        (:mod:`aug_attn.attention.native`). None otherwise."""
        return None

    def factorized_tiles(self, pos: Any, side: int) -> list[tuple[Tensor, Tensor]] | None:
        """Tiles of keys over which the key factors of :meth:`factorized` are sparse, or None.

        Returns:
            Per tile, ``(keys, columns)``: int64 indices of its keys (every key in exactly one tile)
            and of the factor columns in which any of its keys' factors may be non-zero (at most
            about ``2 * side`` for a 2D grid's tiles of ``side x side``). The core then runs
            :mod:`aug_attn.attention.tiled`: one fused call of depth ``d + len(columns)`` per tile.
        """
        return None

    def band(self, pos: Any) -> int | None:
        """Half-width ``D`` of the band beyond which the logits are constant per query and side, or None."""
        return None

    def band_logits(self, q: Tensor, pos: Any, start: int, end: int, key_start: int, key_end: int) -> Tensor:
        """Logits of the queries ``[start, end)`` for the keys ``[key_start, key_end)``.

        The key range may reach beyond ``[0, N)``: such keys stand for their offsets from the
        queries (the core reads the constant logits beyond the band there).

        Returns:
            ``(B, h, end - start, key_end - key_start)``.
        """
        raise NotImplementedError(f"{type(self).__name__} has no band form")
