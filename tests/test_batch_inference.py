"""`aug-attn tag` / `classify` over folders and globs: one row per input in order, error rows, one model load."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import aug_attn_tasks.recipes as recipes
from aug_attn_tasks.audio.synthetic import SYNTHETIC_TAGS, synthetic_clip
from aug_attn_tasks.batch import Row, expand_inputs, predict_files
from aug_attn_tasks.cli import main
from aug_attn_tasks.points.synthetic import SHAPES
from tiny_checkpoints import IMAGES, POINTS, TAGGING, write_checkpoint


@pytest.fixture
def count_loads(monkeypatch):
    calls = []
    original = recipes.load_checkpoint

    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(recipes, "load_checkpoint", counting)
    return calls


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def audio_folder(root: Path) -> list[Path]:
    """12 clips (various rates and lengths, in two subfolders) and a broken file, in sorted order."""
    files = []
    for i in range(12):
        wave, _ = synthetic_clip(3, i, seconds=0.05 + 0.02 * i, sample_rate=8000 if i % 2 else 11025)
        path = root / ("a" if i < 6 else "b") / f"clip{i:02d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, wave, 8000 if i % 2 else 11025)
        files.append(path)
    broken = root / "b" / "clip99.wav"
    broken.write_bytes(b"RIFF not really a wave file")
    (root / "notes.txt").write_text("not audio: not searched")
    return sorted(files + [broken])


def test_tag_a_folder_gives_one_row_per_file_with_the_broken_one_named(tmp_path, count_loads, capsys):
    checkpoint = write_checkpoint(TAGGING, tmp_path / "tagger.ckpt")
    files = audio_folder(tmp_path / "songs")
    out = tmp_path / "tags.csv"
    args = ["tag", str(tmp_path / "songs"), "--checkpoint", str(checkpoint), "--top", "3", "--out", str(out), "--batch-size", "5"]
    assert main(args) == 1
    assert count_loads == [str(checkpoint)]
    rows = read_csv(out)
    assert [r["path"] for r in rows] == [str(f) for f in files]
    failed = [r for r in rows if r["error"]]
    assert len(failed) == 1 and "clip99.wav" in failed[0]["error"] and failed[0]["label_1"] == ""
    for row in rows:
        if not row["error"]:
            probs = [float(row[f"probability_{i}"]) for i in (1, 2, 3)]
            assert probs == sorted(probs, reverse=True) and {row[f"label_{i}"] for i in (1, 2, 3)} <= set(SYNTHETIC_TAGS)
    printed = capsys.readouterr()
    assert f"wrote 13 rows to {out} (1 failed)" in printed.out and "clip99.wav" in printed.err

    # batching changes nothing: a file alone gives its row of the folder run
    assert main(["tag", str(files[0]), "--checkpoint", str(checkpoint), "--top", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split("\t")[:3] == ["path", "label_1", "probability_1"] and len(lines) == 2
    alone = lines[1].split("\t")
    assert alone[:7] == [rows[0]["path"], *(rows[0][f"{k}_{i}"] for i in (1, 2, 3) for k in ("label", "probability"))]


def test_classify_point_files_and_a_glob_as_json(tmp_path, count_loads):
    checkpoint = write_checkpoint(POINTS, tmp_path / "points.ckpt")
    rng = np.random.default_rng(0)
    folder = tmp_path / "clouds"
    folder.mkdir()
    names = list(SHAPES)
    for i in range(12):
        pos, normal = SHAPES[names[i % len(names)]](rng, 200)
        data = np.hstack([pos, normal]) if i % 3 else pos  # some without normals: estimated
        np.save(folder / f"shape{i:02d}.npy", data) if i % 2 else np.savetxt(folder / f"shape{i:02d}.txt", data)
    (folder / "shape12.txt").write_text("1 2 3\nnot numbers\n")
    out = tmp_path / "classes.json"
    assert main(["classify", str(folder / "shape*"), "--checkpoint", str(checkpoint), "--out", str(out), "--top", "2"]) == 1
    assert len(count_loads) == 1
    rows = json.loads(out.read_text())
    assert [Path(r["path"]).name for r in rows] == [f"shape{i:02d}.{'npy' if i % 2 else 'txt'}" for i in range(12)] + ["shape12.txt"]
    assert [bool(r["error"]) for r in rows] == [False] * 12 + [True]
    assert "shape12.txt" in rows[-1]["error"] and rows[-1]["predictions"] == []
    for r in rows[:12]:
        assert len(r["predictions"]) == 2 and {p["label"] for p in r["predictions"]} <= set(SHAPES)
        assert r["predictions"][0]["probability"] >= r["predictions"][1]["probability"]


def image_folder(root: Path, per_class: int = 4, size: int = 20) -> None:
    """PNG and JPEG images of three classes (circle, square, stripes) in ``root/<class>/``."""
    yy, xx = np.mgrid[:size, :size]
    rng = np.random.default_rng(0)
    masks = {
        "circle": lambda: (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2,
        "square": lambda: (abs(yy - size / 2) < size / 4) & (abs(xx - size / 2 - 1) < size / 4),
        "stripes": lambda: (xx // 3) % 2 == 0,
    }
    for name, mask in masks.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = (rng.uniform(0, 60, (size, size + 4 * i, 3))).astype(np.uint8)  # non-square: cropped
            pixels[:, : size][mask()] = rng.integers(150, 255, 3)
            Image.fromarray(pixels).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")


def test_classify_images_by_the_checkpoints_task(tmp_path, count_loads):
    checkpoint = write_checkpoint(IMAGES, tmp_path / "images.ckpt")
    image_folder(tmp_path / "pictures")
    (tmp_path / "pictures" / "square" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "images.csv"
    assert main(["classify", str(tmp_path / "pictures"), "--checkpoint", str(checkpoint), "--out", str(out)]) == 1
    rows = read_csv(out)
    assert len(rows) == 13 and len(count_loads) == 1
    bad = [r for r in rows if r["error"]]
    assert len(bad) == 1 and "bad.png" in bad[0]["error"] and "cannot decode image" in bad[0]["error"]
    assert all(r["label_3"] in IMAGES["data"]["class_names"] for r in rows if not r["error"])


def test_inference_commands_refuse_checkpoints_of_other_tasks(tmp_path, capsys):
    points = write_checkpoint(POINTS, tmp_path / "points.ckpt")
    tagger = write_checkpoint(TAGGING, tmp_path / "tagger.ckpt")
    (tmp_path / "x.wav").write_bytes(b"")
    assert main(["tag", str(tmp_path / "x.wav"), "--checkpoint", str(points)]) == 2
    err = capsys.readouterr().err
    assert "task 'points'" in err and "expected task 'tagging'" in err and "aug-attn classify" in err
    assert main(["classify", str(tmp_path / "x.wav"), "--checkpoint", str(tagger)]) == 2
    assert "task 'tagging'" in capsys.readouterr().err
    assert main(["tag", str(tmp_path / "missing.wav"), "--checkpoint", str(tagger)]) == 1  # an error row, not the run's end
    assert "missing.wav: no such file or folder" in capsys.readouterr().err


def test_a_batch_that_fails_is_retried_file_by_file(tmp_path):
    class Fussy:
        suffixes, labels = (".x",), ["no", "yes"]

        def load(self, path: Path) -> float:
            if path.name == "unreadable.x":
                raise ValueError(f"{path}: unreadable")
            return float(path.stem[-1]) if path.stem[-1].isdigit() else -1.0

        def predict(self, items: list[float]) -> torch.Tensor:
            if -1.0 in items:
                raise RuntimeError("model failed")
            return torch.tensor([[1 - v / 10, v / 10] for v in items])

    for name in ("f1", "bad", "unreadable", "f3"):
        (tmp_path / f"{name}.x").touch()
    files = expand_inputs([str(tmp_path / "f1.x"), str(tmp_path)], Fussy.suffixes)
    assert [f.name for f in files] == ["f1.x", "bad.x", "f3.x", "unreadable.x"]  # the file named first stays first
    rows = [row for batch in predict_files(Fussy(), files, top=1, batch_size=4) for row in batch]
    assert [(Path(r.path).name, r.top, r.error) for r in rows] == [
        ("f1.x", [("no", pytest.approx(0.9))], None),
        ("bad.x", [], f"{tmp_path / 'bad.x'}: model failed"),
        ("f3.x", [("no", pytest.approx(0.7))], None),
        ("unreadable.x", [], f"{tmp_path / 'unreadable.x'}: unreadable"),
    ]
    assert isinstance(rows[0], Row)


def test_rows_are_written_as_their_batch_finishes_and_bad_arguments_are_rows(tmp_path, caplog):
    """A run stopped mid-way keeps the rows of the batches it finished; an argument naming nothing
    is an error row in its place; --out into a missing folder is refused before any work."""
    import json

    from aug_attn_tasks.batch import RowWriter, _output_format

    class Stops:
        suffixes, labels = (".x",), ["no", "yes"]

        def load(self, path: Path) -> float:
            return 0.5

        def predict(self, items: list[float]) -> torch.Tensor:
            return torch.tensor([[0.5, 0.5]] * len(items))

    for name in ("a", "b", "c", "d"):
        (tmp_path / f"{name}.x").touch()
    (tmp_path / "notes.txt").touch()
    with caplog.at_level("WARNING"):
        files = expand_inputs([str(tmp_path), str(tmp_path / "gone.x")], Stops.suffixes, missing="row")
    assert "1 files of other types left out (1 .txt)" in caplog.text
    assert files[-1] == f"{tmp_path / 'gone.x'}: no such file or folder"
    for out in ("rows.csv", "rows.jsonl", "rows.json"):
        writer = RowWriter(str(tmp_path / out), top=1)
        batches = predict_files(Stops(), files, top=1, batch_size=2)
        writer.write(next(batches))  # the first batch only: the run "is killed" here
        text = (tmp_path / out).read_text()
        assert str(tmp_path / "a.x") in text and str(tmp_path / "b.x") in text and "c.x" not in text
        writer.write([row for batch in batches for row in batch])
        writer.close()
    records = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert json.loads((tmp_path / "rows.json").read_text()) == records
    assert records[-1] == {"path": str(tmp_path / "gone.x"), "predictions": [], "error": f"{tmp_path / 'gone.x'}: no such file or folder"}
    with pytest.raises(ValueError, match="the folder .*nowhere does not exist"):
        _output_format(str(tmp_path / "nowhere" / "rows.csv"))
