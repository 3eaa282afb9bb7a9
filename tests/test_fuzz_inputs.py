"""Fuzzed inputs through the batch commands: every file ends as a valid prediction or an error row.

From small real-layout seeds (16-bit and float WAV and FLAC clips; an OFF mesh, ascii and binary PLY clouds, an
NPY and a TXT table; a PNG and a JPEG), a fixed random generator makes truncated copies, copies
with flipped bytes and copies with edited header fields (sample rate, channels, bit depth, sizes;
vertex and face counts; image dimensions). ``aug-attn tag`` / ``classify`` then runs over each
folder in a subprocess, and the test checks that

- every file has exactly one row, either with finite probabilities in [0, 1] or with an error
  naming the file (never a NaN row, never a traceback, never a lost file);
- the subprocess's peak memory stays under ``MAX_RSS_GB`` (a header may not decide how much is
  allocated) and its wall time under ``MAX_SECONDS`` (nor how long is spent).
"""

from __future__ import annotations

import csv
import io
import math
import os
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from tiny_checkpoints import IMAGES, POINTS, TAGGING, write_checkpoint

MAX_RSS_GB = 1.0
MAX_SECONDS = 60.0
TRUNCATIONS = 8
FLIPS = 10


def _mutations(seed: bytes, rng: np.random.Generator) -> list[bytes]:
    """Truncated copies (header and body cut) and copies with one to four bytes flipped."""
    cuts = sorted({0, 3, 12, 40, 44, len(seed) - 1, *rng.integers(1, len(seed), TRUNCATIONS - 6).tolist()})
    out = [seed[:cut] for cut in cuts]
    for _ in range(FLIPS):
        data = bytearray(seed)
        for position in rng.integers(0, len(seed), rng.integers(1, 5)):
            data[position] ^= int(rng.integers(1, 256))
        out.append(bytes(data))
    return out


def _patched(seed: bytes, offset: int, fmt: str, value: int) -> bytes:
    return seed[:offset] + struct.pack(fmt, value) + seed[offset + struct.calcsize(fmt) :]


def _audio_inputs(folder: Path, rng: np.random.Generator) -> None:
    t = np.arange(2400) / 8000
    wave = (0.5 * np.sin(2 * math.pi * 440 * t)).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, wave, 8000, format="WAV", subtype="PCM_16")
    wav = buffer.getvalue()
    buffer = io.BytesIO()
    sf.write(buffer, wave, 8000, format="FLAC")
    flac = buffer.getvalue()
    buffer = io.BytesIO()
    sf.write(buffer, wave, 8000, format="WAV", subtype="FLOAT")  # flipped bytes of floats: NaN, inf, 1e30
    float_wav = buffer.getvalue()
    # RIFF fields: channels (22, H), sample rate (24, I), byte rate (28, I), bits (34, H), data size (40, I)
    headers = [(22, "<H", v) for v in (0, 999, 65535)] + [(24, "<I", v) for v in (0, 1, 2**31 - 1, 2**32 - 1, 44101)]
    headers += [(28, "<I", 0), (34, "<H", 0), (34, "<H", 7), (34, "<H", 64), (40, "<I", 0), (40, "<I", 2**32 - 1)]
    variants = [("wav", v) for v in [wav, *_mutations(wav, rng), *(_patched(wav, *h) for h in headers)]]
    variants += [("flac", v) for v in _mutations(flac, rng)]
    data = bytearray(float_wav)
    data[-8:] = struct.pack("<2f", float("nan"), float("inf"))  # the last two samples
    variants += [("wav", bytes(data)), ("wav", float_wav[:-4] + struct.pack("<f", 1e30))]
    for i, (suffix, data) in enumerate(variants):
        (folder / f"fuzz{i:03d}.{suffix}").write_bytes(data)


def _point_inputs(folder: Path, rng: np.random.Generator) -> None:
    cloud = rng.normal(size=(80, 3))
    off = "OFF\n4 4 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 1 2\n3 0 1 3\n3 0 2 3\n3 1 2 3\n".encode()
    ply_ascii = ("ply\nformat ascii 1.0\nelement vertex 80\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
                 + "".join(f"{x} {y} {z}\n" for x, y, z in cloud)).encode()  # fmt: skip
    header = "ply\nformat binary_little_endian 1.0\nelement vertex 4\nproperty float x\nproperty float y\nproperty float z\n"
    header += "element face 4\nproperty list uchar int vertex_indices\nend_header\n"
    faces = b"".join(struct.pack("<B3i", 3, *f) for f in [(0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)])
    ply_binary = header.encode() + np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], "<f4").tobytes() + faces
    buffer = io.BytesIO()
    np.save(buffer, cloud)
    npy = buffer.getvalue()
    txt = "".join(f"{x},{y},{z}\n" for x, y, z in cloud).encode()
    counts = [
        ("off", off.replace(b"4 4 0", b"4 1000000000 0")),
        ("off", off.replace(b"4 4 0", b"1000000000 4 0")),
        ("ply", ply_binary.replace(b"element face 4", b"element face 1000000000")),
        ("ply", ply_binary.replace(b"element vertex 4", b"element vertex 1000000000")),
        ("ply", ply_ascii.replace(b"element vertex 80", b"element vertex 1000000000")),
    ]
    variants = [(suffix, v) for suffix, seed in [("off", off), ("ply", ply_ascii), ("ply", ply_binary), ("npy", npy), ("txt", txt)]
                for v in [seed, *_mutations(seed, rng)]] + counts  # fmt: skip
    for i, (suffix, data) in enumerate(variants):
        (folder / f"fuzz{i:03d}.{suffix}").write_bytes(data)


def _image_inputs(folder: Path, rng: np.random.Generator) -> None:
    pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    seeds = []
    for fmt in ("PNG", "JPEG"):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=fmt)
        seeds.append((fmt.lower().replace("jpeg", "jpg"), buffer.getvalue()))
    png = seeds[0][1]
    dims = [("png", _patched(png, 16, ">I", v)) for v in (0, 2**31 - 1)] + [("png", _patched(png, 20, ">I", 10**6))]
    variants = [(suffix, v) for suffix, seed in seeds for v in [seed, *_mutations(seed, rng)]] + dims
    for i, (suffix, data) in enumerate(variants):
        (folder / f"fuzz{i:03d}.{suffix}").write_bytes(data)


# Runs the CLI in this interpreter and, at exit, writes the process's own high-water RSS (VmHWM,
# per address space, so it starts afresh at exec) to the file named by the first argument.
_PEAK_PROBE = """
import atexit, runpy, sys
peak_file = sys.argv.pop(1)
def _write_peak():
    with open("/proc/self/status") as status, open(peak_file, "w") as out:
        out.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))  # KiB
atexit.register(_write_peak)
sys.argv[0] = "aug-attn"
runpy.run_module("aug_attn_tasks.cli", run_name="__main__", alter_sys=True)
"""


def _run_measured(args: list[str], env: dict[str, str], folder: Path) -> tuple[int, str, float, float]:
    """Run ``aug-attn ARGS``; return its exit code, stderr, wall seconds and its own peak RSS in GB.

    The peak is the child's VmHWM, read by the child as it exits. ``getrusage`` cannot give it:
    a forked child's ``ru_maxrss`` starts at the parent's resident size (the pytest process, which
    has trained models by then), and ``RUSAGE_CHILDREN`` holds the largest child ever waited for.
    """
    peak_file = folder / "peak_kib.txt"
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_PROBE, str(peak_file), *args],
        capture_output=True, text=True, timeout=2 * MAX_SECONDS, env=env,
    )  # fmt: skip
    seconds = time.monotonic() - start
    peak_gb = int(peak_file.read_text()) / 2**20 if peak_file.exists() else math.inf
    return done.returncode, done.stderr, seconds, peak_gb


CASES: dict[str, tuple[str, dict, Callable[[Path, np.random.Generator], None]]] = {
    "audio": ("tag", TAGGING, _audio_inputs),
    "points": ("classify", POINTS, _point_inputs),
    "images": ("classify", IMAGES, _image_inputs),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_fuzzed_files_end_as_predictions_or_error_rows(kind: str, tmp_path: Path) -> None:
    command, config, make = CASES[kind]
    folder = tmp_path / "inputs"
    folder.mkdir()
    make(folder, np.random.default_rng(0))
    files = sorted(p.name for p in folder.iterdir())
    checkpoint = write_checkpoint(config, tmp_path / "model.ckpt")
    out = tmp_path / "rows.csv"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [command, str(folder), "--checkpoint", str(checkpoint), "--out", str(out), "--top", "2"]
    returncode, stderr, seconds, peak_gb = _run_measured(args, env, tmp_path)
    assert returncode in (0, 1), stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(Path(r["path"]).name for r in rows) == files  # every file once, none lost
    for row in rows:
        if row["error"]:
            assert Path(row["path"]).name in row["error"], row
        else:
            probabilities = [float(row[f"probability_{i}"]) for i in (1, 2)]
            assert all(0.0 <= p <= 1.0 for p in probabilities), row  # NaN fails this too
    predicted = sum(not r["error"] for r in rows)
    print(f"{kind}: {len(rows)} inputs, {predicted} predicted, {len(rows) - predicted} error rows, {seconds:.1f} s, peak {peak_gb:.2f} GB")
    assert predicted >= 1  # the seeds themselves are valid inputs
    assert seconds < MAX_SECONDS and peak_gb < MAX_RSS_GB
