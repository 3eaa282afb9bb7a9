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
    (whole image rows in 2D), :meth:`block_size`.
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
