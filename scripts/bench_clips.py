"""Train the clip recipes on one dataset (or on speaker folds) with several seeds; tabulate accuracy and time.

Each run is ``python -m aug_attn_tasks.cli train CONFIG --data.layout LAYOUT --data.root ROOT --seed S``
in its own process with ``OMP_NUM_THREADS=--threads``; ``--jobs`` runs go at once. Recorded per run:
the validation score of the tested checkpoint, the test score (accuracy on single-label sets, macro
ROC-AUC on multi-label ones, e.g. ``scripts/make_instrument_set.py``'s), CPU time (user + system of
the run's process) and wall time. Appends one TSV row per run to ``--out``.

**Speaker folds** (``--speakers DIR``, real people: leave-one-speaker-out). ``DIR/recordings/`` holds
``{label}_{speaker}_{take}.wav`` (the Free Spoken Digit Dataset's layout, e.g.
``../shared/data/fsdd5.tar.gz``). Fold ``k`` tests on the ``k``-th speaker (sorted by name),
validates on the next one and trains on the others; its split is written as ``DIR/fold{k}.csv``
(the toolkit's ``csv`` layout) and every run of the fold reads it. ``--folds`` picks folds.
**``--hide-test``** is for tuning: the test speaker is left out of the fold's CSV altogether (never
decoded, never scored) and the runs' "test" split is a copy of the validation speaker
(``DIR/valcopy/``, symbolic links), so no test number exists to be seen; the table says ``hidden``.
With ``--csv`` it does the same to the CSV's test rows (``<name>-hidden.csv`` beside it).

The config ``textbook`` runs ``scripts/textbook_baseline.py`` on the same CSV (a plain torch loop
outside the toolkit, the calibration every recipe is read against); it takes no overrides.

Usage (the development benchmarks of docs/audio.md)::

    python scripts/bench_clips.py --speakers /work/data/fsdd5 --folds 0 1 2 --seeds 0 1 --jobs 2 \
        --configs textbook plaincnn_clips samplecnn_clips muslcat_clips --out bench_speakers.tsv
    python scripts/make_instrument_set.py --out /work/data/instruments
    python scripts/bench_clips.py --csv /work/data/instruments/instruments.csv --seeds 0 1 2 --jobs 2 \
        --configs muslcat_clips samplecnn_clips plaincnn_clips --out bench_instruments.tsv
    python scripts/make_spoken_digits.py --out /work/data/espeak_digits
    python scripts/bench_clips.py --root /work/data/espeak_digits --seeds 0 1 --jobs 3 \
        --configs muslcat_clips samplecnn_clips plaincnn_clips --out bench_clips.tsv

Extra arguments after ``--`` go to every toolkit run (e.g. ``-- --trainer.max_epochs 5``);
``--tag`` names such a variant in the table (``config[tag]``). At the end it prints each config's
mean and spread over folds and seeds, with CPU time as a ratio to ``--baseline`` (``--summarize
TSV`` prints that table for the rows of an earlier run). A failed run is reported and counted
(exit 1) without losing the rows of the others.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

FIELDS = ("config", "fold", "seed", "metric", "val", "test", "test_second", "cpu_s", "wall_s", "run_dir", "extra")
# per kind of set: (the metric, the second number of the row); single-label sets report accuracy
# (micro; second: macro over classes), multi-label ones ROC-AUC (macro over tags; second: PR-AUC)
METRICS = {"accuracy": "macro_accuracy", "roc_auc": "pr_auc"}
HIDDEN = "hidden"


def _speakers(root: Path) -> dict[str, list[Path]]:
    """Recordings per speaker of ``root/recordings/{label}_{speaker}_{take}.wav``."""
    folder = root / "recordings"
    files = sorted(folder.glob("*.wav")) if folder.is_dir() else []
    if not files:
        raise SystemExit(f"--speakers {root}: no recordings/{{label}}_{{speaker}}_{{take}}.wav files")
    speakers: dict[str, list[Path]] = {}
    for path in files:
        parts = path.stem.split("_")
        if len(parts) != 3:
            raise SystemExit(f"{path}: not named {{label}}_{{speaker}}_{{take}}.wav")
        speakers.setdefault(parts[1], []).append(path)
    if len(speakers) < 3:
        raise SystemExit(f"--speakers {root}: {len(speakers)} speakers; folds need at least 3 (train, valid, test)")
    return speakers


def write_fold(root: Path, fold: int, hide_test: bool) -> Path:
    """The csv-layout split of speaker fold ``fold`` (module docstring); returns the CSV's path."""
    speakers = _speakers(root)
    names = sorted(speakers)
    test, valid = names[fold % len(names)], names[(fold + 1) % len(names)]
    rows = []
    for speaker in names:
        split = "test" if speaker == test else "valid" if speaker == valid else "train"
        if split == "test" and hide_test:
            continue
        rows += [(f"recordings/{p.name}", p.stem.split("_")[0], split, speaker) for p in speakers[speaker]]
    if hide_test:  # the validation speaker again, under other names, as the "test" split
        copies = root / "valcopy"
        copies.mkdir(exist_ok=True)
        for path in speakers[valid]:
            link = copies / path.name
            if not link.exists():
                with contextlib.suppress(FileExistsError):  # another run of this fold made it just now
                    link.symlink_to(Path("..") / "recordings" / path.name)
            rows.append((f"valcopy/{path.name}", path.stem.split("_")[0], "test", valid))
    csv_path = root / f"fold{fold}{'-hidden' if hide_test else ''}.csv"
    partial = csv_path.with_name(f".{csv_path.name}.{os.getpid()}")
    with open(partial, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split", "speaker"])
        writer.writerows(rows)
    os.replace(partial, csv_path)  # atomic: a run of this fold reading it meanwhile sees a whole file
    return csv_path


def hidden_csv(csv_path: Path) -> Path:
    """``--hide-test`` for a csv-layout dataset: a copy of its CSV without the test rows, whose
    "test" split is the validation clips again under other names (``valcopy/``, symbolic links)."""
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames or [], [row for row in reader if row.get("split") != "test"]
    if "split" not in fields:
        raise SystemExit(f"--hide-test: {csv_path} has no split column")
    copies = []
    for row in (r for r in rows if r["split"] in ("valid", "val", "validation")):
        link = csv_path.parent / "valcopy" / row["path"]
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            with contextlib.suppress(FileExistsError):
                link.symlink_to(Path(os.path.relpath(csv_path.parent / row["path"], link.parent)))
        copies.append({**row, "path": f"valcopy/{row['path']}", "split": "test"})
    hidden = csv_path.with_name(f"{csv_path.stem}-hidden.csv")
    partial = hidden.with_name(f".{hidden.name}.{os.getpid()}")
    with open(partial, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows + copies)
    os.replace(partial, hidden)
    return hidden


def _timed(command: list[str], log: Path, threads: int) -> tuple[str, float, float]:
    """Run ``command`` under ``/usr/bin/time``: (its output, its own user + system seconds, wall seconds)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(log, "w") as handle:
        # /usr/bin/time -f: the run's own user + system seconds (children included), not the machine's.
        done = subprocess.run(["/usr/bin/time", "-f", "CPU %U %S", *command], stdout=handle, stderr=subprocess.STDOUT, env=env)
    wall = time.time() - start
    text = log.read_text()
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}; see {log}")
    user, system = (float(v) for v in text.rsplit("CPU ", 1)[1].split()[:2])
    return text, user + system, wall


def _run(config: str, fold: int | None, seed: int, split_csv: Path | None, args: argparse.Namespace, extra: list[str]) -> dict[str, object]:
    """One training run; ``split_csv``: the csv-layout split it reads (written before the runs start),
    or None for ``--root`` in ``--layout``."""
    out_dir = Path(args.runs).resolve() / (f"fold{fold}" if fold is not None else "") / f"seed{seed}"
    log = out_dir / f"{config}{'-' + args.tag if args.tag else ''}.log"
    hidden = args.hide_test
    label = f"{config}[{args.tag}]" if args.tag else config
    row: dict[str, object] = {"config": label, "fold": "" if fold is None else fold, "seed": seed, "extra": " ".join(extra)}
    if config == "textbook":
        script = Path(__file__).with_name("textbook_baseline.py")
        text, cpu, wall = _timed([sys.executable, str(script), "--csv", str(split_csv), "--seed", str(seed)], log, args.threads)
        result = json.loads(text.strip().splitlines()[-2])  # the JSON line, before /usr/bin/time's
        metric, test, second, val = "accuracy", result["test_accuracy"], None, result["val_accuracy"]
        row.update(run_dir=str(log), extra="")
    else:
        if split_csv is not None:
            data = ["--data.layout", "csv", "--data.csv", str(split_csv)]
        else:
            data = ["--data.layout", args.layout, "--data.root", args.root]
        command = [
            sys.executable, "-m", "aug_attn_tasks.cli", "train", config, *data,
            "--seed", str(seed), "--output.dir", str(out_dir), "--trainer.enable_progress_bar", "false", *extra,
        ]  # fmt: skip
        text, cpu, wall = _timed(command, log, args.threads)
        checkpoint, last = tested_checkpoint(text)
        run_dir = checkpoint.parent.parent
        metrics = json.loads((run_dir / "test_metrics.json").read_text())
        metric = "accuracy" if "test/accuracy" in metrics else "roc_auc"
        test, second = metrics[f"test/{metric}"], metrics[f"test/{METRICS[metric]}"]
        val = _tested_validation(run_dir / "metrics.csv", f"val/{metric}", last)
        row["run_dir"] = str(run_dir)
    row.update(
        metric=metric,
        val=f"{val:.4f}",
        test=HIDDEN if hidden else f"{test:.4f}",
        test_second=HIDDEN if hidden or second is None else f"{second:.4f}",
        cpu_s=f"{cpu:.0f}",
        wall_s=f"{wall:.0f}",
    )
    return row


_TESTED = re.compile(r"^tested checkpoint \((?P<how>[^)]*)\): (?P<path>.+)$", re.MULTILINE)


def tested_checkpoint(text: str) -> tuple[Path, bool]:
    """From a training run's output, the checkpoint it tested and whether it was the last epoch's
    (the line ``tested checkpoint (best by val/accuracy): PATH`` or ``(last epoch, checkpoint.select:
    last): PATH``)."""
    match = _TESTED.search(text)
    if match is None:
        raise RuntimeError("the run printed no 'tested checkpoint (...): PATH' line")
    return Path(match["path"].strip()), match["how"].startswith("last epoch")


def _tested_validation(metrics_csv: Path, key: str, last: bool) -> float:
    """The validation score of the tested checkpoint: the best ``key`` of the run, or the last
    epoch's where the run tested its last epoch (``checkpoint.select: last``)."""
    with open(metrics_csv, newline="") as handle:
        values = [float(row[key]) for row in csv.DictReader(handle) if row.get(key)]
    if not values:  # a run without a validation split
        return float("nan")
    return values[-1] if last else max(values)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", help="the dataset in --layout (one of --root, --csv, --speakers unless --summarize)")
    parser.add_argument("--csv", help="a dataset in the csv layout (e.g. scripts/make_instrument_set.py's instruments.csv)")
    parser.add_argument("--speakers", help="a {label}_{speaker}_{take}.wav recordings folder's parent: leave-one-speaker-out folds")
    parser.add_argument("--folds", nargs="+", type=int, help="with --speakers: the folds to run (default all)")
    parser.add_argument("--hide-test", action="store_true", help="with --speakers or --csv: tuning runs, the test split left out (module docstring)")
    parser.add_argument("--tag", default="", help="a name for this variant (e.g. the overrides after --), shown as config[tag]")
    parser.add_argument("--layout", default="speech_commands")
    parser.add_argument("--configs", nargs="+", default=["muslcat_clips", "samplecnn_clips", "plaincnn_clips"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", default="runs/bench_clips")
    parser.add_argument("--out", default="bench_clips.tsv")
    parser.add_argument("--baseline", default="plaincnn_clips", help="the config CPU time is compared against (textbook with --speakers)")
    parser.add_argument("--summarize", metavar="TSV", help="only print the summary of the rows of an earlier --out")
    args = parser.parse_args(argv)
    if args.summarize:
        with open(args.summarize, newline="") as handle:
            print(summary(list(csv.DictReader(handle, delimiter="\t")), baseline=args.baseline))
        return
    if sum(map(bool, (args.root, args.csv, args.speakers))) != 1:
        parser.error("give one of --root, --csv and --speakers")
    if args.hide_test and not (args.speakers or args.csv):
        parser.error("--hide-test needs --speakers or --csv")
    if "textbook" in args.configs and not args.speakers:
        parser.error("the textbook baseline runs on --speakers folds")
    folds: list[int | None] = [None]
    if args.speakers:
        count = len(_speakers(Path(args.speakers)))
        folds = args.folds if args.folds is not None else list(range(count))
        if any(not 0 <= f < count for f in folds):
            parser.error(f"--folds: {count} speakers give folds 0-{count - 1}")
        if args.baseline == "plaincnn_clips" and "textbook" in args.configs:
            args.baseline = "textbook"
    # every split CSV is written here, once, before the parallel runs read them (threads of one
    # process: a run writing its own copy would race the others' on the same file)
    if args.speakers:
        split_csvs = {fold: write_fold(Path(args.speakers), fold, args.hide_test) for fold in folds}
    else:
        split_csvs = {None: (hidden_csv(Path(args.csv)) if args.hide_test else Path(args.csv)) if args.csv else None}
    jobs = [(config, fold, seed) for fold in folds for seed in args.seeds for config in args.configs]
    new = not Path(args.out).is_file()
    rows, failed = [], []
    with ThreadPoolExecutor(args.jobs) as pool, open(args.out, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS, delimiter="\t")
        if new:
            writer.writeheader()
        futures = [(job, pool.submit(_run, *job, split_csvs[job[1]], args, extra)) for job in jobs]
        for (config, fold, seed), future in futures:  # a failed run is reported and the others still land
            try:
                row = future.result()
            except Exception as error:  # noqa: BLE001 (any failure of one run: named, counted, not fatal)
                failed.append(f"{config} fold {fold} seed {seed}: {error}")
                print(f"FAILED {config} fold {fold} seed {seed}: {error}", file=sys.stderr, flush=True)
                continue
            rows.append(row)
            writer.writerow(row)
            handle.flush()
            print("\t".join(str(row[f]) for f in FIELDS[:8]), flush=True)
    print(summary(rows, baseline=args.baseline))
    if failed:
        raise SystemExit(f"{len(failed)} of {len(jobs)} runs failed:\n" + "\n".join(failed))


def _mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} +- {statistics.stdev(values) if len(values) > 1 else 0.0:.4f}"


def summary(rows: list[dict[str, object]], baseline: str) -> str:
    """Mean and spread over folds and seeds per config, with CPU time as a ratio to ``baseline``'s."""
    by_config: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        if "val" not in row:  # a TSV of the earlier single-label columns
            row = {**row, "val": row["val_accuracy"], "test": row["test_accuracy"], "metric": "accuracy"}
        by_config.setdefault(str(row["config"]), []).append(row)
    base = by_config.get(baseline)
    base_cpu = statistics.mean(float(r["cpu_s"]) for r in base) if base else None
    lines = [f"config\tmetric\truns (fold/seed)\tval (mean +- sd)\ttest (mean +- sd)\tcpu_s\tcpu / {baseline}"]
    for config, group in by_config.items():
        tests = [str(r["test"]) for r in group]
        test = HIDDEN if HIDDEN in tests else _mean_sd([float(t) for t in tests])
        val = _mean_sd([float(r["val"]) for r in group])
        cpu = statistics.mean(float(r["cpu_s"]) for r in group)
        ratio = f"{cpu / base_cpu:.2f}" if base_cpu else "-"
        runs = ",".join(f"{r.get('fold', '')}/{r['seed']}" if r.get("fold", "") != "" else str(r["seed"]) for r in group)
        lines.append(f"{config}\t{group[0].get('metric', 'accuracy')}\t{runs}\t{val}\t{test}\t{cpu:.0f}\t{ratio}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
