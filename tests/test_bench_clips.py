"""scripts/bench_clips.py: which checkpoint a run tested (read from its output), the validation score
reported for it, and the speaker folds with the test speaker hidden."""

from __future__ import annotations

import csv
import importlib.util
import math
import sys
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).parents[1] / "scripts" / "bench_clips.py"
_SPEC = importlib.util.spec_from_file_location("bench_clips", _SCRIPT)
bench = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = bench
_SPEC.loader.exec_module(bench)


@pytest.mark.parametrize(
    ("line", "path", "last"),
    [
        ("tested checkpoint (best by val/accuracy): /r/version_0/checkpoints/best.ckpt", "/r/version_0/checkpoints/best.ckpt", False),
        # checkpoint.select: last: the reason itself holds ": " (an earlier parser split there and failed)
        ("tested checkpoint (last epoch, checkpoint.select: last): /r/v 1/checkpoints/last.ckpt", "/r/v 1/checkpoints/last.ckpt", True),
        ("tested checkpoint (last epoch, no validation set): /r/checkpoints/last.ckpt", "/r/checkpoints/last.ckpt", True),
    ],
)
def test_the_tested_checkpoint_is_read_from_the_run_output(line, path, last):
    text = f"[muslcat_clips] test accuracy: 0.8000\n{line}\n[muslcat_clips] trained and tested in 5 min 2 s (wall clock)\nCPU 300.1 9.2\n"
    assert bench.tested_checkpoint(text) == (Path(path), last)
    with pytest.raises(RuntimeError, match="no 'tested checkpoint"):
        bench.tested_checkpoint("[muslcat_clips] test accuracy: 0.8000\n")


def test_the_validation_score_of_the_tested_checkpoint(tmp_path):
    metrics = tmp_path / "metrics.csv"
    metrics.write_text("epoch,val/accuracy,train/loss\n0,0.5,\n0,,1.0\n1,0.9,\n2,0.7,\n")
    assert bench._tested_validation(metrics, "val/accuracy", last=False) == 0.9
    assert bench._tested_validation(metrics, "val/accuracy", last=True) == 0.7
    assert math.isnan(bench._tested_validation(metrics, "val/roc_auc", last=True))


def test_hidden_folds_never_list_the_test_speaker(tmp_path):
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    speakers = ["ann", "bob", "cat", "dan"]
    for speaker in speakers:
        for label in "01":
            (recordings / f"{label}_{speaker}_0.wav").write_bytes(b"")
    for fold, (test, valid) in enumerate(zip(speakers, speakers[1:] + speakers[:1])):
        with open(bench.write_fold(tmp_path, fold, hide_test=False), newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert {r["speaker"] for r in rows if r["split"] == "test"} == {test}
        assert {r["speaker"] for r in rows if r["split"] == "valid"} == {valid}
        with open(bench.write_fold(tmp_path, fold, hide_test=True), newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert test not in {r["speaker"] for r in rows}
        # the "test" split is the validation speaker again, under other names
        assert {(r["path"].split("/")[0], r["speaker"]) for r in rows if r["split"] == "test"} == {("valcopy", valid)}


def test_parallel_runs_of_one_fold_share_the_split_written_once(tmp_path, monkeypatch):
    """Runs go to threads of one process; a split CSV written by each run raced the others' on one
    temporary name (a run failed on fsdd5 with two jobs). The CSVs are written once, before the runs."""
    import threading

    recordings = tmp_path / "speakers" / "recordings"
    recordings.mkdir(parents=True)
    for speaker in ("ann", "bob", "cat"):
        for label in "01":
            (recordings / f"{label}_{speaker}_0.wav").write_bytes(b"")
    writers, read = [], []
    write_fold = bench.write_fold

    def counted_write_fold(*args, **kwargs):
        writers.append(threading.current_thread() is threading.main_thread())
        return write_fold(*args, **kwargs)

    def fake_timed(command, log, threads):
        csv_path = Path(command[command.index("--csv") + 1])
        read.append(csv_path.is_file())
        return '{"test_accuracy": 0.5, "val_accuracy": 0.6}\nCPU 1.0 0.0\n', 1.0, 1.0

    monkeypatch.setattr(bench, "write_fold", counted_write_fold)
    monkeypatch.setattr(bench, "_timed", fake_timed)
    out = tmp_path / "bench.tsv"
    bench.main([
        "--speakers", str(tmp_path / "speakers"), "--folds", "0", "1", "--configs", "textbook",
        "--seeds", "0", "1", "2", "--jobs", "3", "--runs", str(tmp_path / "runs"), "--out", str(out),
    ])  # fmt: skip
    assert writers == [True, True]  # once per fold, from the main thread
    assert read == [True] * 6
    with open(out, newline="") as handle:
        assert len(list(csv.DictReader(handle, delimiter="\t"))) == 6
