"""Benchmark the point branch on CPU: RISurConv classifier training steps and the pure-torch geometry.

Every case runs in a fresh subprocess (1 torch thread, so that timings on a shared machine are
not dominated by thread contention) and reports its peak memory as the growth of the process's
peak RSS over the state just before the measured work:

* ``classifier``: forward + backward of :class:`~aug_attn.models.RISurConvClassifier` on clouds
  of 1024 points with normals, batch 16 and 32, in the paper's configuration (9.95M parameters;
  one step, it is slow on CPU) and a reduced-width one (two steps after a warm-up). ``geometry``
  is the parameter-free stage (FPS, kNN, cyclic order, surface features of all stages, inside
  that step), timed separately; ``learned`` is the rest.
* ``knn``: 16 neighbours of every point of one cloud: ours (``cdist`` + ``topk`` in blocks of
  1024 queries), ours in one block, and a naive baseline (one query at a time, distances to all
  points, full ``argsort``), which is linear in the queries: it is timed on the first 1024
  queries and its time scaled by ``N / 1024`` (marked ``*``). ``same result`` compares the
  neighbour indices of those 1024 queries.
* ``fps``: 512 samples of one cloud: ours (iterative, ``O(M N)``) vs the brute-force definition
  (each step recomputes the distance of every point to the whole selected set, ``O(M^2 N)``).

Run: ``python scripts/bench_points.py`` (about 4 minutes on one busy core).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

CLASSIFIER_CONFIGS = {
    "paper": {},
    "narrow": {"channels": (16, 32, 64, 128), "global_channels": 128, "transformer_layers": 1, "transformer_heads": 4},
    "cpu-demo": {
        "samples": (256, 128, 64),
        "neighbors": (8, 16, 16),
        "channels": (32, 64, 128),
        "global_channels": 128,
        "transformer_layers": 1,
        "transformer_heads": 4,
    },
}
CLASSIFIER_CASES = [("paper", 16, 1), ("paper", 32, 1), ("narrow", 16, 1), ("cpu-demo", 16, 2), ("cpu-demo", 32, 2)]
GEOMETRY_SIZES = (1024, 4096, 16384)
KNN_K, FPS_SAMPLES, NAIVE_QUERIES = 16, 512, 1024


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def naive_knn(query: torch.Tensor, pos: torch.Tensor, k: int) -> torch.Tensor:
    """One query at a time: all distances, full sort."""
    return torch.stack([((pos - q) ** 2).sum(-1).argsort()[:k] for q in query])


def naive_fps(pos: torch.Tensor, num: int) -> torch.Tensor:
    """Each step: distance of every point to the whole selected set, then the farthest."""
    chosen = [int(((pos - pos.mean(0)) ** 2).sum(-1).argmax())]
    for _ in range(num - 1):
        chosen.append(int(torch.cdist(pos[chosen], pos).amin(0).argmax()))
    return torch.tensor(chosen)


def run_classifier(config: str, batch: int, steps: int) -> dict:
    from aug_attn.models.risurconv import RISurConvClassifier

    model = RISurConvClassifier(40, **CLASSIFIER_CONFIGS[config])
    pos = torch.randn(batch, 1024, 3)
    normal = torch.nn.functional.normalize(torch.randn(batch, 1024, 3), dim=-1)
    labels = torch.randint(0, 40, (batch,))
    base = peak_rss_mb()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(pos, normal), labels).backward()

    if steps > 1:
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / steps
    with torch.no_grad():
        start = time.perf_counter()
        model.encoder.neighborhoods(pos, normal)
        geometry = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    return {"seconds": seconds, "geometry": geometry, "peak_mb": peak_rss_mb() - base, "params": params}


def run_geometry(kind: str, impl: str, size: int) -> dict:
    from aug_attn.geometry import farthest_point_sample, knn

    pos = torch.randn(1, size, 3)
    base = peak_rss_mb()
    scale = 1.0
    start = time.perf_counter()
    if kind == "knn":
        if impl == "naive":
            result, scale = naive_knn(pos[0, :NAIVE_QUERIES], pos[0], KNN_K), size / NAIVE_QUERIES
        else:
            result = knn(pos, pos, KNN_K, chunk_size=size if impl == "ours_one_block" else 1024)[0][0, :NAIVE_QUERIES]
    else:
        result = {"ours": lambda: farthest_point_sample(pos, FPS_SAMPLES)[0], "naive": lambda: naive_fps(pos[0], FPS_SAMPLES)}[impl]()
    seconds = (time.perf_counter() - start) * scale
    return {"seconds": seconds, "scaled": scale != 1.0, "peak_mb": peak_rss_mb() - base, "checksum": int(result.sum())}


def child(args: list[str]) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    if args[0] == "classifier":
        return run_classifier(args[1], int(args[2]), int(args[3]))
    return run_geometry(args[0], args[1], int(args[2]))


def spawn(*args) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *map(str, args)], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"child {args} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--skip-classifier", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return

    print(f"torch {torch.__version__}, 1 thread per case, CPU")
    if not args.skip_classifier:
        print("\nRISurConv classifier, 1024 points/cloud, forward+backward (cross-entropy), 40 classes")
        print(f"{'config':<9}{'params':>9}{'batch':>7}{'s/step':>9}{'clouds/s':>10}{'geometry s':>12}{'geometry %':>12}{'peak MB':>9}")
        for config, batch, steps in CLASSIFIER_CASES:
            r = spawn("classifier", config, batch, steps)
            print(
                f"{config:<9}{r['params'] / 1e6:>8.2f}M{batch:>7}{r['seconds']:>9.2f}{batch / r['seconds']:>10.2f}"
                f"{r['geometry']:>12.2f}{100 * r['geometry'] / r['seconds']:>11.1f}%{r['peak_mb']:>9.0f}"
            )
    print(f"\nneighbour search on one cloud: kNN (k={KNN_K}, all points as queries), FPS ({FPS_SAMPLES} samples)")
    print(f"{'op':<5}{'points':>7}{'impl':>16}{'seconds':>10}{'peak MB':>9}{'naive/ours':>12}{'same result':>13}")
    for kind, impls in (("knn", ("ours", "ours_one_block", "naive")), ("fps", ("ours", "naive"))):
        for size in GEOMETRY_SIZES:
            results = {impl: spawn(kind, impl, size) for impl in impls}
            ours = results["ours"]
            for impl, r in results.items():
                ratio = f"{r['seconds'] / ours['seconds']:.1f}x" if impl == "naive" else ""
                same = "yes" if r["checksum"] == ours["checksum"] else "NO"
                seconds = f"{r['seconds']:.3f}{'*' if r['scaled'] else ''}"
                print(f"{kind:<5}{size:>7}{impl:>16}{seconds:>10}{r['peak_mb']:>9.0f}{ratio:>12}{same:>13}")


if __name__ == "__main__":
    main()
