"""The single-label layouts as released (Speech Commands, ESC-50, UrbanSound8K, GTZAN filtered lists,
folder with split folders, CSV with a label column), on tiny fixtures written in exactly those layouts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from aug_attn_tasks.audio.data import AudioDataModule, build_catalog

RATE = 16000


def _wav(path: Path, seconds: float = 0.05, rate: int = RATE, value: float = 0.1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.full(int(seconds * rate), value, np.float32), rate)


def _speech_commands(root: Path) -> None:
    """``<word>/<speaker>_nohash_<n>.wav``, the two lists, and ``_background_noise_``."""
    for word in ("yes", "no", "up"):
        for speaker in ("0a1b2c3d", "1f2e3d4c", "9a8b7c6d"):
            _wav(root / word / f"{speaker}_nohash_0.wav")
    (root / "validation_list.txt").write_text("yes/1f2e3d4c_nohash_0.wav\nno/1f2e3d4c_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("yes/9a8b7c6d_nohash_0.wav\nno/9a8b7c6d_nohash_0.wav\nup/9a8b7c6d_nohash_0.wav\n\n")
    _wav(root / "_background_noise_" / "white_noise.wav", seconds=0.5)
    _wav(root / "_background_noise_" / "running_tap.wav", seconds=0.5)
    (root / "_background_noise_" / "README.md").write_text("noise files")
    (root / "LICENSE").write_text("CC BY 4.0")


def test_speech_commands_lists_and_background_noise(tmp_path):
    _speech_commands(tmp_path)
    catalog = build_catalog({"layout": "speech_commands", "root": str(tmp_path)})
    assert catalog.tags == ["no", "up", "yes"] and not catalog.multi_label  # _background_noise_ is no word
    assert sorted(catalog.keys["train"]) == sorted(
        [f"{w}/0a1b2c3d_nohash_0.wav" for w in ("yes", "no", "up")] + ["up/1f2e3d4c_nohash_0.wav"]
    )
    assert catalog.keys["valid"] == ["yes/1f2e3d4c_nohash_0.wav", "no/1f2e3d4c_nohash_0.wav"]
    assert catalog.targets["test"].tolist() == [2, 0, 1]
    assert catalog.noise == ["_background_noise_/running_tap.wav", "_background_noise_/white_noise.wav"]
    data = AudioDataModule({"layout": "speech_commands", "root": str(tmp_path), "chunk_samples": 1600, "augment": {"snr_db": [0, 0]}})
    data.prepare_data()
    data.setup()
    assert (tmp_path / "cache-16000hz" / "_background_noise_" / "white_noise.wav.npy").is_file()  # cached with the clips
    audio, target = data.datasets["train"][0]
    assert audio.shape == (1600,) and target.ndim == 0
    # Noise at 0 dB SNR from a background recording (constant 0.1): the 800-sample clip of 0.1 gains it.
    assert float(audio.abs().max()) > 0.1
    again = build_catalog({"layout": "speech_commands", "root": str(tmp_path)})
    assert again.tags == catalog.tags  # the cache folder inside root is no word


def test_speech_commands_list_errors_name_the_list_and_line(tmp_path):
    _speech_commands(tmp_path)
    (tmp_path / "testing_list.txt").write_text("yes/9a8b7c6d_nohash_0.wav\nmaybe/00000000_nohash_0.wav\n")
    with pytest.raises(ValueError, match=r"testing_list.txt, line 2: maybe/00000000_nohash_0.wav is not an audio file"):
        build_catalog({"layout": "speech_commands", "root": str(tmp_path)})
    (tmp_path / "testing_list.txt").write_text("yes/1f2e3d4c_nohash_0.wav\n")
    with pytest.raises(ValueError, match="in both validation_list.txt and testing_list.txt"):
        build_catalog({"layout": "speech_commands", "root": str(tmp_path)})
    (tmp_path / "validation_list.txt").unlink()
    with pytest.raises(FileNotFoundError, match="validation_list.txt"):
        build_catalog({"layout": "speech_commands", "root": str(tmp_path)})


def _esc50(root: Path) -> None:
    """``audio/<fold>-<clip>-<take>-<target>.wav`` and ``meta/esc50.csv``, two classes per fold."""
    (root / "meta").mkdir(parents=True)
    rows = []
    for fold in range(1, 6):
        for target, category in ((0, "dog"), (1, "rooster")):
            name = f"{fold}-{100 + target}-A-{target}.wav"
            _wav(root / "audio" / name)
            rows.append([name, fold, target, category, "True", str(100 + target), "A"])
    with open(root / "meta" / "esc50.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        writer.writerows(rows)


def test_esc50_folds(tmp_path):
    _esc50(tmp_path)
    catalog = build_catalog({"layout": "esc50", "root": str(tmp_path), "test_fold": 5})
    assert catalog.tags == ["dog", "rooster"]
    assert catalog.keys["test"] == ["audio/5-100-A-0.wav", "audio/5-101-A-1.wav"]
    assert catalog.keys["valid"] == ["audio/1-100-A-0.wav", "audio/1-101-A-1.wav"]  # the next fold, cyclically
    assert len(catalog.keys["train"]) == 6 and catalog.targets["test"].tolist() == [0, 1]
    chosen = build_catalog({"layout": "esc50", "root": str(tmp_path), "test_fold": 2, "valid_fold": 4})
    assert all(k.startswith("audio/4-") for k in chosen.keys["valid"])
    with pytest.raises(ValueError, match="two different folds of 1..5"):
        build_catalog({"layout": "esc50", "root": str(tmp_path), "test_fold": 6})
    (tmp_path / "audio" / "3-100-A-0.wav").unlink()
    with pytest.raises(ValueError, match=r"esc50.csv, line 6: .*3-100-A-0.wav not found"):
        build_catalog({"layout": "esc50", "root": str(tmp_path)})


def test_urbansound8k_folds_and_class_ids(tmp_path):
    (tmp_path / "metadata").mkdir()
    header = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]
    rows = []
    for fold in range(1, 11):
        for class_id, name in ((3, "dog_bark"), (0, "air_conditioner")):
            file = f"{100 + fold}-{class_id}-0-0.wav"
            _wav(tmp_path / "audio" / f"fold{fold}" / file)
            rows.append([file, 100 + fold, 0.0, 0.05, 1, fold, class_id, name])
    with open(tmp_path / "metadata" / "UrbanSound8K.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    catalog = build_catalog({"layout": "urbansound8k", "root": str(tmp_path), "test_fold": 10})
    assert catalog.tags == ["air_conditioner", "dog_bark"]  # classID order
    assert catalog.keys["test"] == ["audio/fold10/110-3-0-0.wav", "audio/fold10/110-0-0-0.wav"]
    assert catalog.targets["test"].tolist() == [1, 0]
    assert all(k.startswith("audio/fold1/") for k in catalog.keys["valid"]) and len(catalog.keys["train"]) == 16
    rows[4][5] = "11"
    with open(tmp_path / "metadata" / "UrbanSound8K.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    with pytest.raises(ValueError, match=r"UrbanSound8K.csv, line 6: fold 11 is not one of 1..10"):
        build_catalog({"layout": "urbansound8k", "root": str(tmp_path)})


def test_gtzan_filtered_lists(tmp_path, caplog):
    genres = tmp_path / "genres"
    for genre in ("blues", "jazz"):
        for i in range(4):
            _wav(genres / genre / f"{genre}.{i:05d}.wav")
    split = tmp_path / "split"
    split.mkdir()
    # Kereliuk et al.'s lists name the original .au files; the .wav release is found by stem.
    (split / "train_filtered.txt").write_text("blues/blues.00000.au\nblues/blues.00001.au\njazz/jazz.00000.au\njazz/jazz.00001.au\n")
    (split / "valid_filtered.txt").write_text("blues/blues.00002.wav\njazz.00002.wav\n")
    (split / "test_filtered.txt").write_text("jazz/jazz.00003.wav\n")
    catalog = build_catalog({"layout": "gtzan", "root": str(genres), "split_dir": str(split)})
    assert catalog.tags == ["blues", "jazz"]
    assert catalog.keys["train"][0] == "blues/blues.00000.wav" and catalog.keys["valid"] == ["blues/blues.00002.wav", "jazz/jazz.00002.wav"]
    assert catalog.keys["test"] == ["jazz/jazz.00003.wav"] and catalog.targets["test"].tolist() == [1]
    assert "blues/blues.00003.wav" not in sum(catalog.keys.values(), [])  # in no list: left out, and counted
    assert "1 of 8 clips are in no split list and are left out" in caplog.text
    (split / "test_filtered.txt").write_text("jazz/jazz.00003.wav\nblues/blues.00001.wav\n")  # a training clip tested
    with pytest.raises(ValueError, match=r"test_filtered.txt, line 2: blues/blues.00001.wav is already listed \(train_filtered.txt, line 2\)"):
        build_catalog({"layout": "gtzan", "root": str(genres), "split_dir": str(split)})
    (split / "test_filtered.txt").write_text("jazz/jazz.00003.wav\njazz/jazz.00003.au\n")  # twice
    with pytest.raises(ValueError, match=r"line 2: jazz/jazz.00003.wav is already listed \(test_filtered.txt, line 1\)"):
        build_catalog({"layout": "gtzan", "root": str(genres), "split_dir": str(split)})
    (split / "test_filtered.txt").write_text("jazz/jazz.00003.wav\nrock/rock.00001.au\n")
    with pytest.raises(ValueError, match=r"test_filtered.txt, line 2: rock/rock.00001.au not found"):
        build_catalog({"layout": "gtzan", "root": str(genres), "split_dir": str(split)})


def test_folder_with_split_folders(tmp_path):
    for split, count in (("train", 3), ("val", 1), ("test", 2)):
        for label in ("cat", "dog"):
            for i in range(count):
                _wav(tmp_path / split / label / f"{i}.wav")
    catalog = build_catalog({"layout": "folder", "root": str(tmp_path)})
    assert catalog.tags == ["cat", "dog"]
    assert {s: len(k) for s, k in catalog.keys.items()} == {"train": 6, "valid": 2, "test": 4}
    assert catalog.keys["valid"] == ["val/cat/0.wav", "val/dog/0.wav"] and catalog.targets["valid"].tolist() == [0, 1]
    _wav(tmp_path / "test" / "bird" / "0.wav")
    with pytest.raises(ValueError, match=r"test clips of classes \['bird'\]"):
        build_catalog({"layout": "folder", "root": str(tmp_path)})


def test_folder_without_split_folders_splits_each_class_in_proportion(tmp_path):
    """Unequal classes (40 / 20 / 10 clips): each class gives its own 10% to validation and test,
    so a rare class is never left out of evaluation; seeded by data.split_seed."""
    sizes = {"bird": 10, "cat": 40, "dog": 20}
    for label, count in sizes.items():
        for i in range(count):
            _wav(tmp_path / label / f"{i}.wav", seconds=0.01)
    cfg = {"layout": "folder", "root": str(tmp_path), "valid_fraction": 0.1, "test_fraction": 0.1}
    catalog = build_catalog(cfg)
    for split, share in (("valid", 0.1), ("test", 0.1)):
        counts = np.bincount(catalog.targets[split], minlength=3).tolist()
        assert counts == [round(share * sizes[t]) for t in catalog.tags], (split, counts)
    assert np.bincount(catalog.targets["train"]).tolist() == [8, 32, 16]
    keys = {s: set(k) for s, k in catalog.keys.items()}
    assert not (keys["train"] & keys["valid"] or keys["train"] & keys["test"] or keys["valid"] & keys["test"])
    assert build_catalog(cfg).keys == catalog.keys
    assert build_catalog({**cfg, "split_seed": 1}).keys["test"] != catalog.keys["test"]


def test_csv_with_a_label_column_is_single_label(tmp_path):
    rows = [("a/0.wav", "yes", "train", "s1"), ("a/1.wav", "no", "train", "s1"), ("a/2.wav", "yes", "valid", "s2"), ("a/3.wav", "no", "test", "s3")]
    for path, *_ in rows:
        _wav(tmp_path / path)
    with open(tmp_path / "clips.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split", "speaker"])  # speaker: metadata, not a tag
        writer.writerows(rows)
    catalog = build_catalog({"layout": "csv", "csv": str(tmp_path / "clips.csv")})
    assert catalog.tags == ["no", "yes"] and not catalog.multi_label
    assert catalog.keys == {"train": ["a/0.wav", "a/1.wav"], "valid": ["a/2.wav"], "test": ["a/3.wav"]}
    assert catalog.targets["train"].tolist() == [1, 0]
    (tmp_path / "bad.csv").write_text("path,label\na/0.wav,yes\na/1.wav,\n")
    with pytest.raises(ValueError, match=r"bad.csv, line 3: empty label"):
        build_catalog({"layout": "csv", "csv": str(tmp_path / "bad.csv")})


@pytest.mark.parametrize("recipe", ["muslcat_clips", "samplecnn_clips"])
def test_clip_recipes_train_on_a_speech_commands_folder(recipe, tmp_path):
    """The command of the README on a folder in the release's layout: it trains, tests the chosen
    checkpoint and prints the test accuracy (one epoch on the tiny fixture)."""
    import os
    import subprocess
    import sys

    root = tmp_path / "speech_commands"
    _speech_commands(root)
    command = [
        sys.executable, "-m", "aug_attn_tasks.cli", "train", recipe, "--data.layout", "speech_commands",
        "--data.root", str(root), "--trainer.max_epochs", "1", "--optim.warmup_epochs", "0",
        "--output.dir", str(tmp_path / "runs"), "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if recipe == "muslcat_clips":  # 4 training clips, batches of 32 with the last partial one dropped: a clear error
        refused = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert "the training split has 4 samples, fewer than one batch of 32: lower data.batch_size" in refused.stderr
        assert "Traceback" not in refused.stderr
    done = subprocess.run([*command, "--data.batch_size", "2"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"[{recipe}] test accuracy:" in done.stdout, done.stdout[-2000:]
    run_dir = sorted((tmp_path / "runs" / recipe).glob("version_*"))[-1]  # the refused run left no folder
    assert (run_dir / "confusion_matrix.tsv").is_file() and (run_dir / "test_metrics.json").is_file()
    # Per-clip predictions: every test clip once, in the list's order; they give the reported accuracy.
    with open(run_dir / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["path"] for r in rows] == ["yes/9a8b7c6d_nohash_0.wav", "no/9a8b7c6d_nohash_0.wav", "up/9a8b7c6d_nohash_0.wav"]
    assert [r["true"] for r in rows] == ["yes", "no", "up"]
    for row in rows:
        scores = {tag: float(row[tag]) for tag in ("no", "up", "yes")}
        assert abs(sum(scores.values()) - 1) < 1e-4 and row["predicted"] == max(scores, key=scores.get)
    accuracy = json.loads((run_dir / "test_metrics.json").read_text())["test/accuracy"]
    assert accuracy == pytest.approx(sum(r["true"] == r["predicted"] for r in rows) / len(rows))


def _folder_at(root: Path, rates: dict[str, int]) -> None:
    """A ``folder`` layout: two labels, files of each label at the given rate."""
    for label, rate in rates.items():
        for n in range(4):
            _wav(root / label / f"{n}.wav", seconds=0.25, rate=rate)


def test_native_sample_rate_keeps_the_files_rate_up_to_the_cap(tmp_path):
    from aug_attn_tasks.audio.data import resolve_rate

    _folder_at(tmp_path / "speech", {"zero": 8000, "one": 8000})
    cfg = {"layout": "folder", "root": str(tmp_path / "speech"), "sample_rate": "native", "chunk_seconds": 0.5}
    resolved = resolve_rate(cfg)
    assert resolved["sample_rate"] == 8000 and resolved["chunk_samples"] == 4000 and "chunk_seconds" not in resolved
    assert resolve_rate({**cfg, "max_sample_rate": 16000})["sample_rate"] == 8000  # a cap above: unchanged
    assert resolve_rate({**cfg, "max_sample_rate": 4000})["sample_rate"] == 4000
    _folder_at(tmp_path / "mixed", {"zero": 8000, "one": 22050})  # the highest rate: nothing is downsampled
    assert resolve_rate({**cfg, "root": str(tmp_path / "mixed")})["sample_rate"] == 22050
    data = AudioDataModule(cfg)
    data.prepare_data()
    data.setup()
    assert (tmp_path / "speech" / "cache-8000hz").is_dir() and data.datasets["train"][0][0].shape == (4000,)
    assert build_catalog(cfg).tags == ["one", "zero"]  # the cache folder is no label
    with pytest.raises(ValueError, match="chunk_seconds and data.chunk_samples both given"):
        resolve_rate({**cfg, "chunk_samples": 100})
    with pytest.raises(ValueError, match=r"data.sample_rate='fast': expected a positive number of Hz or 'native'"):
        resolve_rate({**cfg, "sample_rate": "fast"})
    assert resolve_rate({"layout": "synthetic", "sample_rate": "native"})["sample_rate"] == 16000


def test_native_rate_training_stores_the_rate_and_tests_the_last_epoch(tmp_path, capsys):
    """``--data.sample_rate native`` through the CLI: the checkpoint's config holds the number, so
    inference decodes at it; ``checkpoint.select: last`` tests last.ckpt although validation exists."""
    import json

    import torch

    from aug_attn_tasks.cli import main

    _folder_at(tmp_path / "speech", {"zero": 8000, "one": 8000})
    args = [
        "train", "plaincnn_clips", "--data.layout", "folder", "--data.root", str(tmp_path / "speech"), "--data.sample_rate", "native",
        "--data.chunk_samples", "null", "--data.chunk_seconds", "0.6", "--data.batch_size", "2", "--data.valid_fraction", "0.25",
        "--data.test_fraction", "0.25", "--model.channels", "[4, 4, 4]", "--trainer.max_epochs", "2", "--optim.warmup_epochs", "0",
        "--checkpoint.select", "last", "--output.dir", str(tmp_path / "runs"), "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    assert main(args) == 0
    run = next((tmp_path / "runs").rglob("test_metrics.json")).parent
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    data = state["hyper_parameters"]["config"]["data"]
    assert data["sample_rate"] == 8000 and data["chunk_samples"] == 4800
    assert json.loads((run / "test_metrics.json").read_text())
    assert "tested checkpoint (last epoch, checkpoint.select: last)" in capsys.readouterr().out
    assert main([*args[:-6], "--checkpoint.select", "first", *args[-4:]]) == 2
    assert "checkpoint.select='first': expected best or last" in capsys.readouterr().err


def test_monitor_auto_is_the_metric_of_the_kind_of_set(tmp_path):
    from aug_attn_tasks.audio.recipe import resolve_config

    _folder_at(tmp_path / "speech", {"zero": 8000, "one": 8000})
    single = {"task": "tagging", "data": {"layout": "folder", "root": str(tmp_path / "speech")}, "checkpoint": {"monitor": "auto"}}
    assert resolve_config(single)["checkpoint"] == {"monitor": "val/accuracy", "mode": "max"}
    multi = {"task": "tagging", "data": {"layout": "synthetic"}, "checkpoint": {"monitor": "auto", "mode": "min"}}
    assert resolve_config(multi)["checkpoint"] == {"monitor": "val/roc_auc", "mode": "max"}
    assert resolve_config({**multi, "checkpoint": {"monitor": "val/loss"}})["checkpoint"] == {"monitor": "val/loss"}
