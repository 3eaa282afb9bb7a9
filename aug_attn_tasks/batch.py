"""Batch inference over files: the ``tag`` and ``classify`` commands of ``aug-attn``.

``aug-attn tag PATH [PATH ...] --checkpoint CKPT [--top K] [--hop SECONDS] [--out FILE.csv|.json|.jsonl]``
(tagging checkpoints) and ``aug-attn classify PATH [PATH ...] --checkpoint CKPT ...`` (point cloud and
image classifiers, chosen by the checkpoint's task). A PATH is a file, a folder (searched
recursively for the task's file types; files of other types are counted in a warning) or a glob.
The model is loaded once; files are read and run in batches of ``--batch-size``; every input gets
one row (its path, the top-k labels with their probabilities, or the error that kept it from being
read), in input order, **written as soon as its batch is done** (the file flushed), so a run that
is killed or times out keeps every row it finished. An argument that names nothing is an error row
of its own; ``--out`` is checked (suffix, folder) before the model is loaded. Exit status 1 when any
input failed, 0 otherwise.

A task's ``predict`` module (:mod:`aug_attn_tasks.registry`) provides
``predictor(module, config, **options)``, an object with ``suffixes``
(file types searched in folders), ``load(path)`` (read one file; raises an error naming it) and
``predict(items) -> (len(items), num_labels)`` probabilities, and ``labels`` (their names).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the CLI imports this module to build its parser: torch is imported on use
    from torch import Tensor

__all__ = ["Predictor", "Row", "RowWriter", "expand_inputs", "predict_files", "add_commands"]

PROGRESS_MIN_FILES = 32  # fewer inputs finish before a progress bar says anything useful
log = logging.getLogger(__name__)


class Predictor(Protocol):
    """What a task's ``predictor(module, config, **options)`` returns (see the module doc)."""

    suffixes: tuple[str, ...]
    labels: list[str]

    def load(self, path: Path) -> Any: ...

    def predict(self, items: list[Any]) -> Tensor: ...


@dataclass
class Row:
    """One input's result: ``top`` is ``[(label, probability)]``, most probable first, or ``error`` is set."""

    path: str
    top: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None


def expand_inputs(paths: Sequence[str], suffixes: Sequence[str], missing: str = "raise") -> list[Path | str]:
    """Files named by ``paths``, in order, without repeats: a file as given, a folder's files with
    one of ``suffixes`` (recursive, sorted, hidden files left out; other files counted in a
    warning), a glob's matches (sorted; folders among them expanded). An argument that names nothing
    raises FileNotFoundError, or (``missing="row"``) stands in the list as its error message."""
    files: dict[Path | str, None] = {}

    def folder_files(folder: Path) -> list[Path]:
        visible = [p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
        others = Counter(p.suffix.lower() or "(none)" for p in visible if p.suffix.lower() not in suffixes)
        if others:  # counted, never dropped unsaid
            log.warning("%s: %d files of other types left out (%s)", folder, sum(others.values()), ", ".join(f"{n} {e}" for e, n in others.most_common()))
        return sorted(p for p in visible if p.suffix.lower() in suffixes)

    for arg in paths:
        path = Path(arg)
        try:
            if path.is_file():
                matches: list[Path | str] = [path]
            elif path.is_dir():
                matches = list(folder_files(path))
                if not matches:
                    raise FileNotFoundError(f"{arg}: a folder without files of type {', '.join(suffixes)}")
            elif glob.has_magic(arg):
                found = [Path(p) for p in sorted(glob.glob(arg, recursive=True))]
                matches = [f for p in found for f in (folder_files(p) if p.is_dir() else [p])]
                if not matches:
                    raise FileNotFoundError(f"{arg}: no file matches this glob")
            else:
                raise FileNotFoundError(f"{arg}: no such file or folder")
        except FileNotFoundError as error:
            if missing != "row":
                raise
            matches = [str(error)]
        files.update(dict.fromkeys(matches))
    return list(files)


def _named(path: str, error: Exception) -> str:
    """The error's message, prefixed with ``path`` unless it already names it."""
    message = str(error) or type(error).__name__
    return message if path in message else f"{path}: {message}"


def _ranked(labels: list[str], probs: Tensor, top: int) -> list[tuple[str, float]]:
    values, index = probs.float().topk(min(top, len(labels)))
    return [(labels[i], float(v)) for v, i in zip(values.tolist(), index.tolist())]


def predict_files(predictor: Predictor, files: Sequence[Path | str], top: int = 5, batch_size: int = 16) -> Iterator[list[Row]]:
    """The rows of each batch of ``files``, in order, as soon as the batch is done. A file that
    cannot be read (or whose prediction fails on its own) gets its error; a batch whose prediction
    fails is retried file by file, saying so once, so one bad input never costs the others theirs.
    An entry that is a string is an input that named nothing: its row carries that message. A
    progress bar (stderr) shows on long runs."""
    from tqdm import tqdm

    progress = tqdm(total=len(files), unit="file", disable=len(files) < PROGRESS_MIN_FILES, file=sys.stderr)
    for start in range(0, len(files), batch_size):
        batch = files[start : start + batch_size]
        rows = [Row(str(path)) if isinstance(path, Path) else Row(path.split(": ", 1)[0], error=path) for path in batch]
        loaded: list[tuple[Row, Any]] = []
        for row, path in zip(rows, batch):
            if row.error:
                continue
            try:
                loaded.append((row, predictor.load(path)))
            except Exception as error:  # any reader's failure is this file's row, not the run's end
                row.error = _named(row.path, error)
        try:
            results = [(loaded, predictor.predict([item for _, item in loaded]))] if loaded else []
        except Exception as batch_error:  # one input breaks the batch: find it by running them one at a time
            log.warning("a batch of %d files failed (%s); running them one at a time", len(loaded), batch_error)
            results = []
            for row, item in loaded:
                try:
                    results.append(([(row, item)], predictor.predict([item])))
                except Exception as error:
                    row.error = _named(row.path, error)
        for group, probs in results:
            for (row, _), row_probs in zip(group, probs):
                row.top = _ranked(predictor.labels, row_probs, top)
        progress.update(len(batch))
        yield rows
    progress.close()


def _output_format(out: str | None) -> str | None:
    """``"csv"``, ``"json"``, ``"jsonl"`` or None (stdout) for ``--out``; another suffix, or a
    folder that does not exist, is a ValueError (said before any work)."""
    if out is None:
        return None
    suffix = Path(out).suffix.lower()
    if suffix not in (".csv", ".json", ".jsonl"):
        raise ValueError(f"--out {out}: expected a .csv, .json or .jsonl file")
    if not Path(out).resolve().parent.is_dir():
        raise ValueError(f"--out {out}: the folder {Path(out).resolve().parent} does not exist")
    return suffix[1:]


class RowWriter:
    """Writes rows as they come (``.csv``: columns ``path, label_1, probability_1, ..., error``;
    ``.jsonl``: one ``{path, predictions: [{label, probability}], error}`` per line; ``.json``: a
    list of those, closed at the end), flushed after every call, or to stdout as tab-separated
    lines with the CSV's columns when ``out`` is None."""

    def __init__(self, out: str | None, top: int) -> None:
        self.fmt, self.top, self.count = _output_format(out), top, 0
        self.handle = sys.stdout if out is None else open(out, "w", newline="", encoding="utf-8")
        if self.fmt in (None, "csv"):
            header = ["path"] + [f"{name}_{i}" for i in range(1, top + 1) for name in ("label", "probability")] + ["error"]
            self._line(header)
        elif self.fmt == "json":
            self.handle.write("[")

    def _line(self, cells: list[str]) -> None:
        if self.fmt == "csv":
            csv.writer(self.handle).writerow(cells)
        else:
            self.handle.write("\t".join(cells) + "\n")

    def write(self, rows: Sequence[Row]) -> None:
        for r in rows:
            if self.fmt in ("json", "jsonl"):
                record = {"path": r.path, "predictions": [{"label": lab, "probability": p} for lab, p in r.top], "error": r.error}
                prefix = "" if self.fmt == "jsonl" else ("\n  " if self.count == 0 else ",\n  ")
                self.handle.write(prefix + json.dumps(record) + ("\n" if self.fmt == "jsonl" else ""))
            else:
                cells = [c for lab, p in r.top for c in (lab, f"{p:.4f}")]
                self._line([r.path, *cells, *[""] * (2 * self.top - len(cells)), r.error or ""])
            self.count += 1
        self.handle.flush()

    def close(self) -> None:
        if self.fmt == "json":
            self.handle.write("\n]\n")
        if self.handle is not sys.stdout:
            self.handle.close()


def _run(args: argparse.Namespace, tasks: tuple[str, ...], **options: Any) -> int:
    from aug_attn_tasks.recipes import load_checkpoint
    from aug_attn_tasks.registry import task_module

    if args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    _output_format(args.out)  # a wrong --out is said before the model is loaded
    module, config = load_checkpoint(args.checkpoint, tasks=tasks)
    predictor = task_module(config["task"], "predict").predictor(module, config, **options)
    files = expand_inputs(args.paths, predictor.suffixes, missing="row")
    writer, failed = RowWriter(args.out, args.top), []
    try:
        for rows in predict_files(predictor, files, args.top, args.batch_size):
            writer.write(rows)
            failed += [r for r in rows if r.error]
    finally:
        writer.close()
    for r in failed:
        print(f"aug-attn: {r.error}", file=sys.stderr)
    if args.out is not None:
        print(f"wrote {writer.count} rows to {args.out} ({len(failed)} failed)")
    return 1 if failed else 0


def _add_batch_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help=f"{what} files, folders (searched recursively) or globs")
    parser.add_argument("--checkpoint", required=True, help="checkpoint written by `aug-attn train`")
    parser.add_argument("--top", type=int, default=5, help="labels per input (default 5)")
    parser.add_argument("--out", help="write the rows to FILE.csv, FILE.json or FILE.jsonl (JSON Lines) as they come, instead of printing them")
    parser.add_argument("--batch-size", type=int, default=16, help="files read and run together (default 16)")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tag`` and ``classify`` to the ``aug-attn`` parser."""
    tag = subparsers.add_parser("tag", help="top tags of audio files with a trained tagger (task: tagging)")
    _add_batch_arguments(tag, "audio (wav, flac, ogg, mp3: resampled, mixed to mono)")
    tag.add_argument("--hop", type=float, default=None, help="seconds between window starts (default: the window length)")
    tag.set_defaults(handler=lambda args: _run(args, ("tagging",), hop_seconds=args.hop))
    classify = subparsers.add_parser("classify", help="top classes of point cloud or image files with a trained classifier")
    _add_batch_arguments(classify, "point cloud (.off/.ply/.txt/.npy) or image (.png/.jpg)")
    classify.set_defaults(handler=lambda args: _run(args, ("points", "images")))
