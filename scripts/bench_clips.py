"""Train the clip recipes on one dataset with several seeds and tabulate accuracy and time.

Each run is ``python -m aug_attn_tasks.cli train CONFIG --data.layout LAYOUT --data.root ROOT --seed S``
in its own process with ``OMP_NUM_THREADS=--threads``; ``--jobs`` runs go at once. Recorded per run:
validation accuracy of the tested checkpoint (the best by validation), test accuracy, CPU time
(user + system of the run's process) and wall time. Appends one TSV row per run to ``--out``.

Usage (the development benchmark of the README)::

    python scripts/make_spoken_digits.py --out /work/data/espeak_digits
    python scripts/bench_clips.py --root /work/data/espeak_digits --seeds 0 1 --jobs 3 \
        --configs muslcat_clips samplecnn_clips plaincnn_clips --out bench_clips.tsv

Extra arguments after ``--`` go to every run (e.g. ``-- --trainer.max_epochs 5``). At the end it
prints each config's mean and spread over the seeds, with CPU time as a ratio to ``--baseline``
(``--summarize TSV`` prints that table for the rows of an earlier run). A failed run is reported
and counted (exit 1) without losing the rows of the others.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

FIELDS = ("config", "seed", "val_accuracy", "test_accuracy", "test_macro_accuracy", "cpu_s", "wall_s", "run_dir", "extra")


def _run(config: str, seed: int, args: argparse.Namespace, extra: list[str]) -> dict[str, object]:
    out_dir = Path(args.runs).resolve() / f"seed{seed}"
    command = [
        sys.executable, "-m", "aug_attn_tasks.cli", "train", config, "--data.layout", args.layout, "--data.root", args.root,
        "--seed", str(seed), "--output.dir", str(out_dir), "--trainer.enable_progress_bar", "false", *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    log = out_dir / f"{config}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(log, "w") as handle:
        # /usr/bin/time -f: the run's own user + system seconds (children included), not the machine's.
        done = subprocess.run(["/usr/bin/time", "-f", "CPU %U %S", *command], stdout=handle, stderr=subprocess.STDOUT, env=env)
    wall = time.time() - start
    text = log.read_text()
    if done.returncode != 0:
        raise RuntimeError(f"{config} seed {seed} failed (exit {done.returncode}); see {log}")
    user, system = (float(v) for v in text.rsplit("CPU ", 1)[1].split()[:2])
    tested = next(line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("tested checkpoint"))
    run_dir = Path(tested).parent.parent
    test = json.loads((run_dir / "test_metrics.json").read_text())
    val = _best_validation(run_dir / "metrics.csv")
    return {
        "config": config, "seed": seed, "val_accuracy": f"{val:.4f}", "test_accuracy": f"{test['test/accuracy']:.4f}",
        "test_macro_accuracy": f"{test['test/macro_accuracy']:.4f}", "cpu_s": f"{user + system:.0f}", "wall_s": f"{wall:.0f}",
        "run_dir": str(run_dir), "extra": " ".join(extra),
    }  # fmt: skip


def _best_validation(metrics_csv: Path) -> float:
    """The best ``val/accuracy`` of the run: the score of the checkpoint that was tested."""
    with open(metrics_csv, newline="") as handle:
        values = [float(row["val/accuracy"]) for row in csv.DictReader(handle) if row.get("val/accuracy")]
    return max(values)


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", help="the dataset (required unless --summarize)")
    parser.add_argument("--layout", default="speech_commands")
    parser.add_argument("--configs", nargs="+", default=["muslcat_clips", "samplecnn_clips", "plaincnn_clips"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", default="runs/bench_clips")
    parser.add_argument("--out", default="bench_clips.tsv")
    parser.add_argument("--baseline", default="plaincnn_clips", help="the config CPU time is compared against")
    parser.add_argument("--summarize", metavar="TSV", help="only print the summary of the rows of an earlier --out")
    args = parser.parse_args(argv)
    if args.summarize:
        with open(args.summarize, newline="") as handle:
            print(summary(list(csv.DictReader(handle, delimiter="\t")), baseline=args.baseline))
        return
    if not args.root:
        parser.error("--root is required")
    jobs = [(config, seed) for seed in args.seeds for config in args.configs]
    new = not Path(args.out).is_file()
    rows, failed = [], []
    with ThreadPoolExecutor(args.jobs) as pool, open(args.out, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS, delimiter="\t")
        if new:
            writer.writeheader()
        futures = [(job, pool.submit(_run, *job, args, extra)) for job in jobs]
        for (config, seed), future in futures:  # a failed run is reported and the others still land
            try:
                row = future.result()
            except Exception as error:  # noqa: BLE001 (any failure of one run: named, counted, not fatal)
                failed.append(f"{config} seed {seed}: {error}")
                print(f"FAILED {config} seed {seed}: {error}", file=sys.stderr, flush=True)
                continue
            rows.append(row)
            writer.writerow(row)
            handle.flush()
            print("\t".join(str(row[f]) for f in FIELDS[:7]), flush=True)
    print(summary(rows, baseline=args.baseline))
    if failed:
        raise SystemExit(f"{len(failed)} of {len(jobs)} runs failed:\n" + "\n".join(failed))


def summary(rows: list[dict[str, object]], baseline: str) -> str:
    """Mean and spread over seeds per config, with CPU time as a ratio to ``baseline``'s."""
    by_config: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        by_config.setdefault(str(row["config"]), []).append(row)
    base = by_config.get(baseline)
    base_cpu = statistics.mean(float(r["cpu_s"]) for r in base) if base else None
    lines = ["config\tseeds\tval_accuracy\ttest_accuracy (mean +- sd)\tcpu_s\tcpu / " + baseline]
    for config, group in by_config.items():
        test = [float(r["test_accuracy"]) for r in group]
        val = statistics.mean(float(r["val_accuracy"]) for r in group)
        cpu = statistics.mean(float(r["cpu_s"]) for r in group)
        spread = statistics.stdev(test) if len(test) > 1 else 0.0
        ratio = f"{cpu / base_cpu:.2f}" if base_cpu else "-"
        seeds = ",".join(str(r["seed"]) for r in group)
        lines.append(f"{config}\t{seeds}\t{val:.4f}\t{statistics.mean(test):.4f} +- {spread:.4f}\t{cpu:.0f}\t{ratio}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
