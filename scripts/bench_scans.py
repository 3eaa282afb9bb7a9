"""A scan-like development benchmark: RISurConv against a PointNet trained with SO(3) augmentation.

The procedural shapes of :mod:`aug_attn_tasks.points.synthetic` are turned into what a depth
sensor gives, then written as ``<out>/data/{train,test}/<class>/<i>.npy`` (x y z, no normals), the
layout of ``aug-attn train risurconv_folder``, so the benchmark also runs the user's recipe:

1. dense sampling (``--dense`` points), normalised into the unit sphere;
2. **one viewpoint**: a random direction (any azimuth, elevation in [-15, 60] degrees about z);
   only points within ``--depth-tol`` of the nearest surface along the view ray, in cells of
   ``--pixel``, are seen (a z-buffer: self-occlusion, the back is missing);
3. **voxelised**: points snapped to the centres of ``--voxel`` cubes, duplicates merged (staircases);
4. **uneven density**: each point kept with a probability rising linearly from 0.15 to 1 along a
   random direction;
5. **jitter**: Gaussian noise of ``--jitter`` per coordinate;
6. **outliers**: ``--outliers`` (a fraction of the points) uniform in ``[-1, 1]^3``.

Runs (each a subprocess of ``python -m aug_attn_tasks.cli train``, 1 torch thread, timed): RISurConv
with and without global context, and without it but with distance-weighted normals over 24
neighbours, under ``z/SO3`` (test rotations z and SO3, so one run gives z/z and z/SO3; compare the
variants by their best validation accuracy, never test), the two variants under ``SO3/SO3``, and a
plain PointNet (shared MLP on x y z + max pool + MLP head: PointNet++'s classifier with no set
abstraction level) under ``z/SO3`` and ``SO3/SO3`` on the same data, split, epochs and optimiser,
and under ``SO3/SO3`` with 5x the epochs (augmentation over all rotations needs them).

Run: ``python scripts/bench_scans.py --out bench_scans`` (writes ``bench_scans/results.json`` and
prints a table; ``--epochs``, ``--per-class`` size it).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from aug_attn_tasks.points.datasets import normalize_unit_sphere
from aug_attn_tasks.points.synthetic import SHAPES

POINTNET = {
    "name": "pointnet2",
    "use_normals": False,
    "samples": [],
    "neighbors": [],
    "radii": [],
    "channels": [],
    "global_channels": [64, 128, 256],
    "head_channels": [128],
    "dropout": 0.3,
}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def visible(pos: np.ndarray, view: np.ndarray, pixel: float, depth_tol: float) -> np.ndarray:
    """Mask of the points ``pos (N, 3)`` an orthographic camera looking along ``-view`` sees: per
    pixel of size ``pixel`` on the image plane, those within ``depth_tol`` of the nearest one."""
    helper = np.array([0.0, 0.0, 1.0]) if abs(view[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = _unit(np.cross(view, helper))
    w = np.cross(view, u)
    cells = np.floor(np.stack([pos @ u, pos @ w], 1) / pixel).astype(np.int64)  # (N, 2)
    _, cell = np.unique(cells, axis=0, return_inverse=True)
    cell = cell.reshape(-1)
    depth = pos @ view  # larger = nearer the camera
    nearest = np.full(cell.max() + 1, -np.inf)
    np.maximum.at(nearest, cell, depth)
    return depth >= nearest[cell] - depth_tol


def scan(name: str, rng: np.random.Generator, args: argparse.Namespace) -> np.ndarray:
    """One scan-like cloud ``(M, 3)`` float32 of a shape of class ``name`` (module docstring)."""
    pos = normalize_unit_sphere(SHAPES[name](rng, args.dense)[0])
    azimuth, elevation = rng.uniform(0, 2 * np.pi), np.radians(rng.uniform(-15, 60))
    view = np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
    pos = pos[visible(pos, view, args.pixel, args.depth_tol)]
    pos = (np.unique(np.floor(pos / args.voxel), axis=0) + 0.5) * args.voxel
    ramp = pos @ _unit(rng.normal(size=3))
    keep = rng.random(len(pos)) < 0.15 + 0.85 * (ramp - ramp.min()) / max(np.ptp(ramp), 1e-12)
    pos = pos[keep] + rng.normal(0, args.jitter, (int(keep.sum()), 3))
    outliers = rng.uniform(-1, 1, (int(round(args.outliers * len(pos))), 3))
    return np.concatenate([pos, outliers]).astype(np.float32)


def write_dataset(root: Path, args: argparse.Namespace) -> dict[str, int]:
    """``root/{train,test}/<class>/<i>.npy``; returns the number of files per split."""
    counts = {}
    for split, per_class, seed in (("train", args.per_class, args.seed), ("test", args.test_per_class, args.seed + 1)):
        sizes = []
        for label, name in enumerate(SHAPES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                cloud = scan(name, np.random.default_rng([seed, label, i]), args)
                np.save(folder / f"{i:04d}.npy", cloud)
                sizes.append(len(cloud))
        counts[split] = len(sizes)
        median = int(np.median(sizes))
        print(f"{split}: {len(sizes)} scans, points per scan min {min(sizes)} / median {median} / max {max(sizes)}")
    return counts


def train(tag: str, out: Path, root: Path, args: argparse.Namespace, overrides: list[str]) -> dict:
    """One ``aug-attn train risurconv_folder`` run in a subprocess; its test metrics, best val OA, wall time."""
    run_dir = out / "runs" / tag
    command = [
        sys.executable, "-m", "aug_attn_tasks.cli", "train", "risurconv_folder", f"--data.root={root}",
        f"--output.dir={run_dir}", f"--trainer.max_epochs={args.epochs}", f"--seed={args.train_seed}",
        "--trainer.enable_progress_bar=false", f"--data.num_points={args.num_points}", *overrides,
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    start = time.perf_counter()
    with open(out / f"{tag}.log", "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"run {tag} failed (exit {done.returncode}); see {out / f'{tag}.log'}")
    report = json.loads(next(run_dir.rglob("report.json")).read_text())
    with open(next(run_dir.rglob("metrics.csv"))) as handle:
        val = [float(row["val/oa"]) for row in csv.DictReader(handle) if row.get("val/oa")]
    result = {"protocols": report["protocols"], "best_val_oa": max(val, default=float("nan")), "wall_s": round(wall, 1)}
    print(f"{tag}: {json.dumps(result)}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench_scans", help="folder for the data, runs, logs and results.json")
    parser.add_argument("--per-class", type=int, default=70, help="training scans per class (10%% become validation)")
    parser.add_argument("--test-per-class", type=int, default=20)
    parser.add_argument("--dense", type=int, default=8192, help="points sampled on each shape before scanning")
    parser.add_argument("--pixel", type=float, default=0.04, help="image-plane cell of the visibility test")
    parser.add_argument("--depth-tol", type=float, default=0.05, help="depth within which points of a cell are seen")
    parser.add_argument("--voxel", type=float, default=0.05, help="voxel edge (the shapes fit the unit sphere)")
    parser.add_argument("--jitter", type=float, default=0.01)
    parser.add_argument("--outliers", type=float, default=0.02, help="fraction of outlier points")
    parser.add_argument("--num-points", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="data seed (test scans use seed + 1)")
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated run tags (default: all)")
    args = parser.parse_args()
    out = Path(args.out)
    root = out / "data"
    if not (root / "train").is_dir():
        write_dataset(root, args)
    pointnet = f"--model={json.dumps(POINTNET)}"
    runs = {
        "risurconv_local_z": ["--model.global_context=false", "--data.protocol=z/SO3", "--data.test_rotations=[z, so3]"],
        "risurconv_global_z": ["--model.global_context=true", "--data.protocol=z/SO3", "--data.test_rotations=[z, so3]"],
        "risurconv_local_weighted_z": [
            "--model.global_context=false", "--model.normal_weighted=true", "--model.normal_k=24",
            "--data.protocol=z/SO3", "--data.test_rotations=[z, so3]",
        ],  # fmt: skip
        "pointnet_z": [pointnet, "--data.protocol=z/SO3", "--data.test_rotations=[z, so3]"],
        "pointnet_so3": [pointnet, "--data.protocol=SO3/SO3", "--data.test_rotations=[so3]"],
        # SO(3) augmentation needs longer training: the same baseline with 5x the epochs
        "pointnet_so3_5x": [pointnet, "--data.protocol=SO3/SO3", "--data.test_rotations=[so3]",
                            f"--trainer.max_epochs={5 * args.epochs}"],  # fmt: skip
    }
    for variant in ("local", "global"):  # the two RISurConv variants also trained under SO3/SO3
        so3 = [runs[f"risurconv_{variant}_z"][0], "--data.protocol=SO3/SO3", "--data.test_rotations=[so3]"]
        runs[f"risurconv_{variant}_so3"] = so3
    chosen = [tag for tag in args.only.split(",") if tag] or list(runs)
    unknown = sorted(set(chosen) - set(runs))
    if unknown:
        raise SystemExit(f"unknown run tags {unknown}; known: {', '.join(runs)}")
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for tag in chosen:
        overrides = runs[tag]
        results[tag] = train(tag, out, root, args, overrides)
        results_file.write_text(json.dumps(results, indent=1))
    print(f"\n{'run':<27} {'protocol':<9} {'OA':>6} {'mAcc':>6} {'best val OA':>11} {'wall s':>7}")
    for tag, result in results.items():
        for protocol, values in result["protocols"].items():
            print(
                f"{tag:<27} {protocol:<9} {100 * values['oa']:6.2f} {100 * values['macc']:6.2f} "
                f"{100 * result['best_val_oa']:11.2f} {result['wall_s']:7.1f}"
            )


if __name__ == "__main__":
    main()
