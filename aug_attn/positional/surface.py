"""Rotation-invariant relative position encoder for tokens on a surface (points with normals).

The point-cloud analogue of Bello et al.'s relative logits (arXiv:1904.09925, Sec. 3.2): the
relative position of token ``j`` seen from token ``i`` is described by rotation-invariant point
pair features ``f_ij`` (:func:`~aug_attn.geometry.pair_features`: distance and three cosines
between the normals and the connecting edge), embedded by one layer ``phi(f) = ReLU(A f + a)``
shared by all heads:

.. math::
    e_h(i, j) = (W_h^\\top q_i + u_h) \\cdot \\phi(f_{ij}),

which is Bello's ``q_i . r(i, j)`` with the two-layer embedding ``r_h(i, j) = W_h phi(f_ij)``, plus
a learned per-head bias ``u_h . phi(f_ij)`` (the two forms the shared core supports). A second
layer inside ``phi`` would be redundant: ``W_h`` and ``u_h`` absorb it, and its bias only shifts
all logits of a query, which the softmax ignores. Since ``W_h`` is applied to the query, no
``(N, N, d)`` tensor of embeddings is built; ``phi`` is computed per query block, ``(c, N, hidden)``.
Invariance of the logits follows from the invariance of ``f_ij``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from aug_attn.geometry.surface import NUM_PAIR_FEATURES, pair_features
from aug_attn.positional.base import RelativePositionEncoder

__all__ = ["SurfacePositionEncoder"]


class SurfacePositionEncoder(RelativePositionEncoder):
    """Per-head logits from the pair geometry of ``N`` surface tokens.

    ``pos`` is the tuple ``(xyz, normal)``, both ``(B, N, 3)``, normals of unit length; ``xyz``
    may be in any frame and origin (e.g. offsets from a neighbourhood centre).

    Args:
        head_dim: key dimension per head ``d``.
        num_heads: ``h``.
        hidden: width of the pair embedding ``phi`` (``hidden`` floats per pair in memory).
    """

    def __init__(
        self,
        head_dim: int,
        num_heads: int,
        hidden: int = 16,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.head_dim, self.num_heads, self.hidden = head_dim, num_heads, hidden
        self.embed = nn.Linear(NUM_PAIR_FEATURES, hidden, **factory)
        self.query_proj = nn.Parameter(torch.empty(num_heads, head_dim, hidden, **factory))  # W_h
        self.bias = nn.Parameter(torch.empty(num_heads, hidden, **factory))  # u_h
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.embed.reset_parameters()
        # q arrives scaled by d**-0.5, so unit-variance W_h gives logits of the order of q . k.
        nn.init.normal_(self.query_proj, std=1.0)
        nn.init.normal_(self.bias, std=self.hidden**-0.5)

    def forward(self, q: Tensor, pos: tuple[Tensor, Tensor], start: int, end: int) -> Tensor:
        xyz, normal = pos
        if xyz.shape != normal.shape or xyz.dim() != 3 or xyz.shape[-1] != 3:
            raise ValueError(f"pos must be (xyz, normal) of shape (B, N, 3), got {tuple(xyz.shape)}, {tuple(normal.shape)}")
        pairs = pair_features(xyz[:, start:end], normal[:, start:end], xyz, normal)  # (B, c, N, 4)
        phi = torch.relu(self.embed(pairs.to(q.dtype)))  # (B, c, N, hidden)
        query = torch.einsum("bhcd,hdf->bhcf", q, self.query_proj) + self.bias[:, None]  # (B, h, c, hidden)
        return torch.einsum("bhcf,bcnf->bhcn", query, phi)  # (B, h, c, N)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, num_heads={self.num_heads}, hidden={self.hidden}"
