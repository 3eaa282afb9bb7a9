"""Audio decoding, the decode cache and the dataset layouts (MTAT, folder, CSV, synthetic)."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from aug_attn_tasks.audio import cache as cache_module
from aug_attn_tasks.audio.cache import MANIFEST, prepare_cache
from aug_attn_tasks.audio.data import AudioDataModule, build_catalog
from aug_attn_tasks.audio.io import AudioDecodeError, chunk_windows, fit_length, load_audio, window_starts
from aug_attn_tasks.audio.synthetic import SYNTHETIC_TAGS, synthetic_clip

RATE = 16000
NUM_MTAT_TAGS = 188


def _tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


# ---------------------------------------------------------------- decoding


def test_load_audio_resamples_and_mixes_stereo_to_mono(tmp_path):
    left, right = _tone(1.0, 44100, 440.0), _tone(1.0, 44100, 1000.0)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 44100)
    audio = load_audio(path, RATE)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.shape[0] - RATE) <= 1
    spectrum = np.abs(np.fft.rfft(audio))
    freqs = np.fft.rfftfreq(audio.shape[0], 1 / RATE)
    peaks = sorted(freqs[np.argsort(spectrum)[-2:]].round())
    assert peaks == [440.0, 1000.0]  # both channels are in the mix, at the right pitch after resampling
    assert np.isclose(spectrum[freqs == 440].item(), spectrum[freqs == 1000].item(), rtol=0.05)


def test_decoding_error_names_the_file(tmp_path):
    path = tmp_path / "broken.mp3"
    path.write_bytes(b"this is not audio" * 10)
    with pytest.raises(AudioDecodeError, match="broken.mp3"):
        load_audio(path, RATE)


def test_window_starts_and_padding():
    assert window_starts(100, 10, count=4) == [0, 30, 60, 90]  # first at 0, last ending at the end
    assert window_starts(100, 10, hop=40) == [0, 40, 80, 90]
    assert window_starts(5, 10, count=16) == [0] * 16  # short clip: one padded window position
    padded = fit_length(np.ones(5, dtype=np.float32), 8)
    assert padded.tolist() == [0, 1, 1, 1, 1, 1, 0, 0]  # centred
    windows = chunk_windows(np.arange(100, dtype=np.float32), 10, count=16)
    assert windows.shape == (16, 10)
    assert windows[0, 0] == 0 and windows[-1, -1] == 99
    assert np.all(np.diff(windows[:, 0]) >= 5)  # evenly spaced: 90 / 15 = 6 apart, rounded


# ---------------------------------------------------------------- MagnaTagATune fixture (official layout)


def _mtat_fixture(root: Path, broken: str | None = None) -> tuple[list[str], np.ndarray]:
    """Write annotations_final.csv (tab-separated, quoted, 188 tags) and real mp3 clips in 0-f folders."""
    rng = np.random.default_rng(0)
    tags = [f"tag{i:03d}" for i in range(NUM_MTAT_TAGS)]
    folders = "0123456789abcdef"
    paths = [f"{folders[i % 16]}/artist-album-{i:02d}-song-0-29.mp3" for i in range(32)]
    labels = (rng.random((len(paths), NUM_MTAT_TAGS)) < 0.05).astype(int)
    labels[:, 7] = 1  # tag007 is the most frequent
    labels[:, 3] = np.arange(len(paths)) % 2  # tag003 second
    with open(root / "annotations_final.csv", "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_ALL)
        writer.writerow(["clip_id", *tags, "mp3_path"])
        for i, (path, row) in enumerate(zip(paths, labels)):
            writer.writerow([str(2 + 3 * i), *map(str, row), path])
    for i, path in enumerate(paths):
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if path == broken:
            target.write_bytes(b"")  # MTAT ships a few empty mp3 files
            continue
        # Alternate mono 16 kHz (like MTAT) and stereo 22.05 kHz clips to exercise resampling.
        rate = 16000 if i % 2 else 22050
        wave = _tone(0.3, rate, 220.0 * (1 + i % 5))
        sf.write(target, wave if i % 2 else np.stack([wave, wave], axis=1), rate, format="MP3")
    return paths, labels


def _won_split(split_dir: Path, paths: list[str], labels: np.ndarray) -> None:
    """Won et al. 2020 split files: tags.npy, binary.npy (rows = CSV rows), lines 'ix\\tpath'."""
    split_dir.mkdir()
    chosen = [7, 3, 11, 20, 50]
    np.save(split_dir / "tags.npy", np.array([f"tag{i:03d}" for i in chosen]))
    np.save(split_dir / "binary.npy", labels[:, chosen].astype(np.int64))
    for name, rows in (("train", range(0, 20)), ("valid", range(20, 25)), ("test", range(25, 32))):
        np.save(split_dir / f"{name}.npy", np.array([f"{ix}\t{paths[ix]}" for ix in rows]))


@pytest.fixture(scope="module")
def mtat(tmp_path_factory):
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile cannot write mp3")
    root = tmp_path_factory.mktemp("mtat")
    paths, labels = _mtat_fixture(root)
    _won_split(root / "split", paths, labels)
    return root, paths, labels


def test_mtat_won_split_files(mtat):
    root, paths, labels = mtat
    catalog = build_catalog({"layout": "mtat", "root": str(root), "split_dir": str(root / "split")})
    assert catalog.tags == ["tag007", "tag003", "tag011", "tag020", "tag050"] and catalog.multi_label
    assert catalog.keys["valid"] == paths[20:25]
    np.testing.assert_array_equal(catalog.targets["test"], labels[25:32][:, [7, 3, 11, 20, 50]])
    relative = build_catalog({"layout": "mtat", "root": str(root), "split_dir": "{root}/split"})  # the shipped configs' default
    assert relative.keys == catalog.keys
    with pytest.raises(FileNotFoundError, match="split-files.*--data.split_dir null"):
        build_catalog({"layout": "mtat", "root": str(root), "split_dir": "{root}/split-files"})


def test_mtat_folder_split_and_top_tags(mtat):
    root, paths, labels = mtat
    catalog = build_catalog({"layout": "mtat", "root": str(root), "top_k": 5})
    assert catalog.tags[:2] == ["tag007", "tag003"]
    assert len(catalog.tags) == 5
    assert all(k[0] in "0123456789ab" for k in catalog.keys["train"])
    assert all(k[0] == "c" for k in catalog.keys["valid"])
    assert all(k[0] in "def" for k in catalog.keys["test"])
    assert sum(len(v) for v in catalog.keys.values()) == len(paths)


def test_mtat_csv_errors_name_the_file(tmp_path):
    (tmp_path / "annotations_final.csv").write_text("id,a,b\n1,0,x.mp3\n")
    with pytest.raises(ValueError, match="annotations_final.csv"):
        build_catalog({"layout": "mtat", "root": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_catalog({"layout": "mtat", "root": str(tmp_path / "nowhere")})


def test_cache_is_resumable_and_verifiable(mtat, tmp_path, monkeypatch):
    root, paths, _ = mtat
    arrays, skipped = prepare_cache(root, paths[:6], tmp_path / "cache", RATE, progress=False)
    assert not skipped and set(arrays) == set(paths[:6])
    manifest = json.loads((tmp_path / "cache" / MANIFEST).read_text())
    entry = manifest["entries"][paths[0]]
    assert entry["samples"] == np.load(arrays[paths[0]]).shape[0] and len(entry["sha256"]) == 64
    assert abs(entry["samples"] - int(0.3 * RATE)) < 0.1 * RATE  # 22.05 kHz stereo mp3 -> 16 kHz mono

    decoded = []
    real_load = cache_module.load_audio
    monkeypatch.setattr(cache_module, "load_audio", lambda p, r, limits=None: decoded.append(p) or real_load(p, r, limits))
    prepare_cache(root, paths[:8], tmp_path / "cache", RATE, progress=False)
    assert [Path(p).relative_to(root).as_posix() for p in decoded] == paths[6:8]  # resumed: only new files

    # Same size, different bytes: only a verifying run notices and re-decodes.
    target = arrays[paths[1]]
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    decoded.clear()
    prepare_cache(root, paths[:8], tmp_path / "cache", RATE, progress=False)
    assert decoded == []
    prepare_cache(root, paths[:8], tmp_path / "cache", RATE, verify=True, progress=False)
    assert [Path(p).relative_to(root).as_posix() for p in decoded] == [paths[1]]

    with pytest.raises(ValueError, match="22050"):
        prepare_cache(root, paths[:2], tmp_path / "cache", 22050, progress=False)


def test_cache_follows_its_sources_and_rewrites_the_manifest_only_on_change(tmp_path, monkeypatch):
    root, cache = tmp_path / "audio", tmp_path / "cache"
    root.mkdir()
    sf.write(root / "a.wav", np.full(800, 0.5, np.float32), RATE)
    sf.write(root / "b.wav", np.full(800, 0.25, np.float32), RATE)
    arrays, _ = prepare_cache(root, ["a.wav", "b.wav"], cache, RATE, progress=False)
    stamp = (cache / MANIFEST).stat()
    stamp = (stamp.st_ino, stamp.st_mtime_ns)  # a rewrite renames a new file over it: a new inode
    decoded = []
    real_load = cache_module.load_audio
    monkeypatch.setattr(cache_module, "load_audio", lambda p, r, limits=None: decoded.append(Path(p).name) or real_load(p, r, limits))
    prepare_cache(root, ["a.wav", "b.wav"], cache, RATE, progress=False)
    after = (cache / MANIFEST).stat()
    assert decoded == [] and (after.st_ino, after.st_mtime_ns) == stamp  # nothing to do: not rewritten

    sf.write(root / "a.wav", np.full(1000, -0.25, np.float32), RATE)  # the source changes
    arrays, _ = prepare_cache(root, ["a.wav", "b.wav"], cache, RATE, progress=False)
    assert decoded == ["a.wav"] and np.allclose(np.load(arrays["a.wav"]), -0.25, atol=1e-3)

    manifest = json.loads((cache / MANIFEST).read_text())  # a cache from before source stamps
    for entry in manifest["entries"].values():
        del entry["source"]
    (cache / MANIFEST).write_text(json.dumps(manifest))
    decoded.clear()
    prepare_cache(root, ["a.wav", "b.wav"], cache, RATE, progress=False)
    assert decoded == [] and all("source" in e for e in json.loads((cache / MANIFEST).read_text())["entries"].values())
    assert oct((cache / MANIFEST).stat().st_mode & 0o777) == oct((cache / "a.wav.npy").stat().st_mode & 0o777)

    (root / "b.wav").unlink()  # a source deleted after caching: its array stays usable
    decoded.clear()
    arrays, _ = prepare_cache(root, ["a.wav", "b.wav"], cache, RATE, progress=False)
    assert decoded == [] and np.allclose(np.load(arrays["b.wav"]), 0.25, atol=1e-3)

    (root / "c.wav").write_bytes(b"RIFF0000WAVEjunk")  # skipped once, retried only after it changes
    _, skipped = prepare_cache(root, ["a.wav", "c.wav"], cache, RATE, skip_errors=True, progress=False)
    assert list(skipped) == ["c.wav"]
    decoded.clear()
    _, skipped = prepare_cache(root, ["a.wav", "c.wav"], cache, RATE, skip_errors=True, progress=False)
    assert decoded == [] and list(skipped) == ["c.wav"]
    sf.write(root / "c.wav", np.zeros(800, np.float32), RATE)
    arrays, skipped = prepare_cache(root, ["a.wav", "c.wav"], cache, RATE, skip_errors=True, progress=False)
    assert decoded == ["c.wav"] and not skipped and "c.wav" in arrays
    assert not list(cache.glob("*.tmp"))


def test_broken_file_raises_or_is_skipped_and_counted(tmp_path, caplog):
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile cannot write mp3")
    paths, _ = _mtat_fixture(tmp_path, broken="c/artist-album-12-song-0-29.mp3")
    cfg = {"layout": "mtat", "root": str(tmp_path), "top_k": 5, "chunk_samples": 729, "cache_dir": str(tmp_path / "cache")}
    with pytest.raises(AudioDecodeError, match=r"artist-album-12-song-0-29.mp3: cannot decode audio \(empty file\)"):
        AudioDataModule(cfg).prepare_data()
    data = AudioDataModule({**cfg, "skip_errors": True})
    with caplog.at_level(logging.WARNING):
        data.prepare_data()
        data.setup()
    assert list(data.skipped) == ["c/artist-album-12-song-0-29.mp3"]
    assert "1 of 32 files skipped" in caplog.text and "valid split: 1 clips left out" in caplog.text
    assert len(data.datasets["valid"]) == 1  # folder c holds clips 12 and 28
    assert "c/artist-album-12-song-0-29.mp3" in json.loads((tmp_path / "cache" / MANIFEST).read_text())["skipped"]
    audio, target, _ = data.datasets["test"][0]
    assert audio.shape == (16, 729) and target.shape == (5,)


# ---------------------------------------------------------------- folder and CSV layouts


def test_folder_layout_single_label(tmp_path, caplog):
    for label, count in (("blues", 5), ("jazz", 5)):
        (tmp_path / label).mkdir()
        for i in range(count):
            sf.write(tmp_path / label / f"{label}.{i:05d}.wav", _tone(0.05, 22050), 22050)
    (tmp_path / "jazz" / "notes.txt").write_text("not audio")
    cfg = {"layout": "folder", "root": str(tmp_path), "valid_fraction": 0.2, "test_fraction": 0.2, "chunk_samples": 2000}
    data = AudioDataModule(cfg)
    assert data.catalog.tags == ["blues", "jazz"] and not data.catalog.multi_label
    assert {split: len(keys) for split, keys in data.catalog.keys.items()} == {"train": 6, "valid": 2, "test": 2}
    data.prepare_data()
    data.setup()
    audio, target = data.datasets["train"][0]
    assert audio.shape == (2000,) and target.dtype.is_floating_point is False  # 800 samples padded to 2000
    assert (tmp_path / "cache-16000hz" / MANIFEST).is_file()
    # The cache inside root is no label, and a folder without audio is logged and left out.
    (tmp_path / "scans").mkdir()
    with caplog.at_level(logging.WARNING):
        again = AudioDataModule(cfg)
    assert again.catalog.tags == ["blues", "jazz"] and again.catalog.keys == data.catalog.keys
    assert "scans: no audio files" in caplog.text and "cache-16000hz" not in caplog.text
    with pytest.raises(ValueError, match="split_dir is read by layouts mtat and gtzan only"):
        build_catalog({**cfg, "split_dir": str(tmp_path / "splits")})


def test_csv_layout_multi_label_with_split_column(tmp_path):
    (tmp_path / "audio").mkdir()
    rows = []
    for i in range(6):
        sf.write(tmp_path / "audio" / f"{i}.flac", _tone(0.1, 8000), 8000)
        rows.append({"path": f"audio/{i}.flac", "rock": i % 2, "piano": int(i < 3), "split": ["train", "valid", "test"][i % 3]})
    with open(tmp_path / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "rock", "piano", "split"])
        writer.writeheader()
        writer.writerows(rows)
    catalog = build_catalog({"layout": "csv", "csv": str(tmp_path / "labels.csv")})
    assert catalog.tags == ["rock", "piano"] and catalog.multi_label
    assert catalog.keys["test"] == ["audio/2.flac", "audio/5.flac"]
    np.testing.assert_array_equal(catalog.targets["test"], [[0, 1], [1, 0]])
    data = AudioDataModule({"layout": "csv", "csv": str(tmp_path / "labels.csv"), "chunk_samples": 500, "eval_chunks": 3})
    data.prepare_data()
    data.setup()
    audio, *_ = data.datasets["valid"][0]
    assert audio.shape == (3, 500)


def test_csv_layout_rejects_missing_path_column(tmp_path):
    (tmp_path / "labels.csv").write_text("file,rock\na.wav,1\n")
    with pytest.raises(ValueError, match="labels.csv.*'path'"):
        build_catalog({"layout": "csv", "csv": str(tmp_path / "labels.csv")})


@pytest.mark.parametrize(
    "body, message",
    [
        ("a.wav,1\nb.wav\n", "line 3: 2 fields expected"),
        ("a.wav,1\nb.wav,1,0\n", "line 3: 2 fields expected"),
        ("a.wav,5\n", "line 2: tag columns must hold 0 or 1, got rock='5'"),
        ("a.wav,-1\n", "line 2: tag columns must hold 0 or 1"),
        ("/data/a.wav,1\n", "line 2: path '/data/a.wav' must be relative"),
        ("../a.wav,1\n", "line 2: path '../a.wav' must be relative"),
        ("a.wav,1\n./a.wav,0\n", "line 3: a.wav is already listed on line 2"),
    ],
)
def test_csv_layout_bad_rows_name_the_file_and_line(tmp_path, body, message):
    (tmp_path / "labels.csv").write_text("path,rock\n" + body)
    with pytest.raises(ValueError, match=f"labels.csv, {message}"):
        build_catalog({"layout": "csv", "csv": str(tmp_path / "labels.csv")})


def test_mtat_folder_split_leaves_out_clips_without_a_top_tag(tmp_path):
    """Won et al.'s split script keeps only clips with at least one top-k tag; so does the fallback."""
    tags = [f"tag{i:03d}" for i in range(NUM_MTAT_TAGS)]
    paths = ["0/a.mp3", "0/b.mp3", "c/c.mp3", "c/d.mp3", "d/e.mp3", "f/g.mp3"]
    labels = np.zeros((len(paths), NUM_MTAT_TAGS), dtype=int)
    labels[[0, 2, 4, 5], 1] = 1  # top tag
    labels[[0, 4], 2] = 1  # second
    labels[1, 100] = 1  # clip b only has a rare tag; clip d has none
    with open(tmp_path / "annotations_final.csv", "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_ALL)
        writer.writerow(["clip_id", *tags, "mp3_path"])
        writer.writerows([str(i), *map(str, row), path] for i, (path, row) in enumerate(zip(paths, labels)))
    catalog = build_catalog({"layout": "mtat", "root": str(tmp_path), "top_k": 2})
    assert catalog.tags == ["tag001", "tag002"]
    assert catalog.keys == {"train": ["0/a.mp3"], "valid": ["c/c.mp3"], "test": ["d/e.mp3", "f/g.mp3"]}
    assert all(t.sum(axis=1).min() >= 1 for t in catalog.targets.values())


# ---------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_multi_label():
    a, tags_a = synthetic_clip(3, 17, seconds=0.5)
    b, tags_b = synthetic_clip(3, 17, seconds=0.5)
    c, _ = synthetic_clip(3, 18, seconds=0.5)
    assert np.array_equal(a, b) and np.array_equal(tags_a, tags_b) and not np.array_equal(a, c)
    assert a.shape == (8000,) and tags_a.shape == (len(SYNTHETIC_TAGS),) and tags_a.sum() >= 1
    assert np.abs(a).max() <= 0.9


def test_synthetic_splits_are_disjoint():
    catalog = build_catalog({"layout": "synthetic", "num_train": 5, "num_valid": 2, "num_test": 3})
    keys = [set(catalog.keys[s]) for s in ("train", "valid", "test")]
    assert sum(map(len, keys)) == 10 and not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])


def test_prepare_audio_command_fills_the_cache(tmp_path, capsys):
    from aug_attn_tasks.cli import main

    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        sf.write(tmp_path / label / "one.ogg", _tone(0.05, 16000), 16000)
    (tmp_path / "b" / "bad.wav").write_bytes(b"RIFF0000WAVEjunk")
    config = tmp_path / "folder.yaml"
    config.write_text(f"task: tagging\ndata:\n  layout: folder\n  root: {tmp_path}\n")
    assert main(["prepare-audio", str(config), "--data.skip_errors", "true"]) == 0
    assert "cached 2 files; 1 skipped" in capsys.readouterr().out
    assert main(["prepare-audio", str(config)]) == 2  # strict mode retries the bad file and names it
    assert "bad.wav" in capsys.readouterr().err


def test_decoding_refuses_what_no_audio_file_holds(tmp_path):
    """Headers are bounded before anything is read; samples must be finite and of audio size; each
    refusal names the file and the config key of the bound."""
    from aug_attn_tasks.audio.io import DecodeLimits

    good = tmp_path / "good.wav"
    sf.write(good, np.full(800, 0.1, np.float32), 8000)
    assert load_audio(good, 16000).shape == (1600,)
    raw = bytearray(good.read_bytes())
    for rate, match in [(2**31 - 1, r"2147483647 Hz, outside \[1000, 768000\] \(data.decode.min_rate / max_rate\)"), (1, "1 Hz")]:
        corrupt = tmp_path / f"rate{rate}.wav"
        corrupt.write_bytes(raw[:24] + rate.to_bytes(4, "little") + raw[28:])  # the RIFF header's sample-rate field
        with pytest.raises(AudioDecodeError, match=match):
            load_audio(corrupt, 16000)
    channels = tmp_path / "channels.wav"
    channels.write_bytes(raw[:22] + (999).to_bytes(2, "little") + raw[24:])
    with pytest.raises(AudioDecodeError, match=r"channels.wav: header says 999 channels, outside \[1, 64\]"):
        load_audio(channels, 16000)
    for name, values in [("nan", [0.1, np.nan, 0.2]), ("inf", [0.1, 0.2, np.inf])]:
        path = tmp_path / f"{name}.wav"
        sf.write(path, np.array(values * 100, np.float32), 8000, subtype="FLOAT")
        with pytest.raises(AudioDecodeError, match=rf"{name}.wav: NaN or infinite samples \(the first at sample [12]\)"):
            load_audio(path, 16000)
    huge = tmp_path / "huge.wav"
    sf.write(huge, np.full(300, 1e30, np.float32), 8000, subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match=r"samples up to 1e\+30, beyond data.decode.max_abs=1000"):
        load_audio(huge, 16000)
    short = tmp_path / "short.wav"
    sf.write(short, np.full(1, 0.1, np.float32), 8000)
    with pytest.raises(AudioDecodeError, match=r"short.wav: 1 samples \(0.0001 s at 8000 Hz\), shorter than data.decode.min_seconds=0.01"):
        load_audio(short, 16000)
    assert load_audio(short, 8000, DecodeLimits(min_seconds=0)).shape == (1,)
    with pytest.raises(ValueError, match=r"data.decode: unknown keys \['max_rates'\]"):
        DecodeLimits.from_config({"max_rates": 1})


def test_every_format_the_decoder_reads_is_audio_and_other_files_are_counted(tmp_path, caplog):
    from aug_attn_tasks.audio.catalog import AUDIO_EXTENSIONS, audio_files

    for name, fmt in [("a.wav", "WAV"), ("b.aiff", "AIFF"), ("c.aifc", "AIFF"), ("d.flac", "FLAC"), ("e.caf", "CAF"), ("f.w64", "W64")]:
        sf.write(tmp_path / name, np.full(800, 0.1, np.float32), 8000, format=fmt)
    (tmp_path / "notes.txt").write_text("not audio")
    (tmp_path / ".hidden.wav").write_text("hidden")
    with caplog.at_level("WARNING"):
        found = audio_files(tmp_path)
    assert [p.name for p in found] == ["a.wav", "b.aiff", "c.aifc", "d.flac", "e.caf", "f.w64"]
    assert "1 files not read as audio (1 .txt)" in caplog.text
    assert all(load_audio(p, 8000).shape == (800,) for p in found)
    assert {".aiff", ".aif", ".aifc", ".caf", ".w64"} <= set(AUDIO_EXTENSIONS)


def test_resampling_odd_rates_stays_small():
    """44,101 -> 16,000 Hz has no small common divisor: the ratio is approximated (0.002%), so the
    filter bank stays small instead of 16,000 x 44,101 taps."""
    import torch

    from aug_attn_tasks.audio.io import _resample

    out = _resample(torch.ones(44101), 44101, 16000)
    assert abs(out.shape[0] - 16000) <= 1
