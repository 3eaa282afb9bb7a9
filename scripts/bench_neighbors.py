"""kNN and FPS of the two neighbour backends side by side: pure torch and PyG's ``torch_cluster``.

Prints, per case, the median time of each backend and their ratio, and checks that both return the
same indices. ``torch_cluster`` is the ``cluster`` extra (the README's table of extras); without it the script says
so and times the torch path alone.

Usage::

    python scripts/bench_neighbors.py [--batch 16] [--points 1024] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from aug_attn.geometry.neighbors import farthest_point_sample, knn, neighbor_backend, resolved_neighbor_backend
from aug_attn.optional import MissingExtraError


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--points", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    try:
        with neighbor_backend("torch_cluster"):
            resolved_neighbor_backend()
        backends = ["torch", "torch_cluster"]
    except MissingExtraError as error:
        print(f"torch_cluster unavailable ({error}); timing the torch path only")
        backends = ["torch"]
    gen = torch.Generator().manual_seed(0)
    pos = torch.randn(args.batch, args.points, 3, generator=gen)
    n = args.points
    cases = {
        f"fps {n} -> {n // 2}": lambda: farthest_point_sample(pos, n // 2),
        f"fps {n} -> {n // 8}": lambda: farthest_point_sample(pos, n // 8),
        f"knn {n // 2} queries, k=16": lambda: knn(pos[:, : n // 2], pos, 16),
        f"knn {n} queries, k=32": lambda: knn(pos, pos, 32),
        f"knn {n // 8} queries, k=64": lambda: knn(pos[:, : n // 8], pos, 64),
    }
    print(f"{torch.get_num_threads()} threads, batch {args.batch}, {n} points, float32, median of {args.repeats}")
    header = f"{'case':<28}" + "".join(f"{b + ' (ms)':>20}" for b in backends)
    print(header + (f"{'torch / torch_cluster':>24}{'same indices':>14}" if len(backends) == 2 else ""))
    for name, fn in cases.items():
        results = {}
        for backend in backends:
            with neighbor_backend(backend):
                results[backend] = timed(fn, args.repeats)
        line = f"{name:<28}" + "".join(f"{results[b][0] * 1e3:>20.1f}" for b in backends)
        if len(backends) == 2:
            a, b = results["torch"][1], results["torch_cluster"][1]
            same = torch.equal(a[0], b[0]) if isinstance(a, tuple) else torch.equal(a, b)
            line += f"{results['torch'][0] / results['torch_cluster'][0]:>24.2f}{str(same):>14}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
