"""A stand-in for PyG's ``torch_cluster`` with its calling conventions, for the backend tests in CI.

``torch_cluster`` is an sdist that takes 15 minutes to build, so CI does not have it, and the code
that maps its flat, ragged results back to dense ``(B, M, k)`` indices would go untested there. This
module answers ``knn`` and ``fps`` by brute force, in the layout the real one uses:

- ``knn(x, y, k, batch_x, batch_y, batch_size=None)`` -> ``(2, E)``: row 0 the index of a point of
  ``y`` (the queries), row 1 the index in ``x`` of one of its ``k`` nearest points of the same
  cloud; fewer than ``k`` where the cloud is smaller. Results come query by query, each query's
  neighbours in **descending** distance here (the real KD-tree gives no promised order), so the
  caller's re-ranking is exercised.
- ``fps(src, batch, ratio, random_start, batch_size=None)`` -> indices into ``src``:
  ``ceil(ratio * n)`` points per cloud, starting at the cloud's first point (``random_start=False``),
  each next the point farthest from those taken (the first such index on ties).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__version__ = "fake"


def knn(x: Tensor, y: Tensor, k: int, batch_x: Tensor | None = None, batch_y: Tensor | None = None, batch_size: int | None = None, **_) -> Tensor:
    batch_x = torch.zeros(len(x), dtype=torch.long) if batch_x is None else batch_x
    batch_y = torch.zeros(len(y), dtype=torch.long) if batch_y is None else batch_y
    rows, cols = [], []
    for query in range(len(y)):
        candidates = (batch_x == batch_y[query]).nonzero().flatten()
        distance = (x[candidates] - y[query]).pow(2).sum(-1)
        nearest = candidates[distance.argsort(stable=True)[:k]].flip(0)  # nearest last: an order to undo
        rows.append(torch.full_like(nearest, query))
        cols.append(nearest)
    return torch.stack([torch.cat(rows), torch.cat(cols)])


def fps(src: Tensor, batch: Tensor | None = None, ratio: float | Tensor = 0.5, random_start: bool = True, batch_size: int | None = None, **_) -> Tensor:
    if random_start:
        raise NotImplementedError("the stand-in starts at each cloud's first point only")
    batch = torch.zeros(len(src), dtype=torch.long) if batch is None else batch
    out = []
    for cloud in range(int(batch.max()) + 1):
        members = (batch == cloud).nonzero().flatten()
        share = float(ratio[cloud] if isinstance(ratio, Tensor) and ratio.dim() else ratio)
        count = math.ceil(share * len(members))  # past the cloud's size the start point repeats (all distances 0)
        points = src[members]
        taken, distance = [0], (points - points[0]).pow(2).sum(-1)
        for _ in range(count - 1):
            taken.append(int(distance.argmax()))  # the first index among equal maxima
            distance = torch.minimum(distance, (points - points[taken[-1]]).pow(2).sum(-1))
        out.append(members[torch.tensor(taken)])
    return torch.cat(out)
