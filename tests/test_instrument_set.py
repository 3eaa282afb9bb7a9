"""scripts/make_instrument_set.py without fluidsynth or soundfonts: the MIDI writer read back byte by
byte, the clip draws, the anti-alias filter, and a whole set built with a fake renderer and read by
the toolkit's csv layout."""

from __future__ import annotations

import csv
import importlib.util
import struct
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import soundfile as sf

from aug_attn_tasks.audio.data import build_catalog

_SCRIPT = Path(__file__).parents[1] / "scripts" / "make_instrument_set.py"
_SPEC = importlib.util.spec_from_file_location("make_instrument_set", _SCRIPT)
mis = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = mis  # dataclasses look their module up by name
_SPEC.loader.exec_module(mis)

RATE = 16000
CLIP = round(mis.CLIP_SECONDS * RATE)
SILENT_PROGRAM = 0  # the fake soundfont has no acoustic grand piano


def fake_render(parts: Sequence[mis.Part]) -> list[np.ndarray]:
    """Sines at the parts' pitches while their notes sound; silence for SILENT_PROGRAM."""
    t = np.arange(CLIP) / RATE
    waves = []
    for part in parts:
        sounding = (t >= part.onset) & (t < part.onset + part.duration) & (part.program != SILENT_PROGRAM)
        tone = sum(np.sin(2 * np.pi * 440 * 2 ** ((p - 69) / 12) * t) for p in part.pitches)
        waves.append((0.1 * part.velocity / 127 * tone * sounding).astype(np.float32))
    return waves


def read_varlen(data: bytes, at: int) -> tuple[int, int]:
    value = 0
    while True:
        byte = data[at]
        at += 1
        value = value << 7 | byte & 0x7F
        if byte < 0x80:
            return value, at


def read_midi(data: bytes) -> tuple[tuple[int, int, int], list[tuple[int, bytes]]]:
    """(format, tracks, division) and the one track's (absolute tick, event bytes)."""
    assert data[:4] == b"MThd" and struct.unpack(">I", data[4:8])[0] == 6
    header = struct.unpack(">HHH", data[8:14])
    assert data[14:18] == b"MTrk"
    length = struct.unpack(">I", data[18:22])[0]
    assert 22 + length == len(data)  # the track's length field covers exactly the rest of the file
    events, at, tick = [], 22, 0
    while at < len(data):
        delta, at = read_varlen(data, at)
        tick += delta
        if data[at] == 0xFF:  # meta: type, length, payload
            size, end = read_varlen(data, at + 2)
            event, at = data[at : end + size], end + size
        else:  # every channel message here has a status byte (no running status)
            size = 2 if data[at] >> 4 == 0xC else 3
            event, at = data[at : at + size], at + size
        events.append((tick, event))
    return header, events


@pytest.mark.parametrize(
    "value, encoded",
    [
        (0, b"\x00"),
        (0x7F, b"\x7f"),
        (0x80, b"\x81\x00"),
        (1750, b"\x8d\x56"),
        (0x3FFF, b"\xff\x7f"),
        (0x4000, b"\x81\x80\x00"),
        (0x0FFFFFFF, b"\xff\xff\xff\x7f"),
    ],  # fmt: skip
)
def test_variable_length_quantities(value, encoded):
    assert mis.variable_length(value) == encoded
    assert read_varlen(encoded, 0) == (value, len(encoded))


def test_slots_midi_reads_back_in_playing_order():
    chord = mis.Part(program=48, channel=1, pitches=(60, 64, 67), velocity=90, onset=0.0, duration=0.5, gain_db=0.0)
    late = mis.Part(program=73, channel=0, pitches=(72,), velocity=41, onset=0.3, duration=1.2, gain_db=-3.0)
    (fmt, tracks, division), events = read_midi(mis.slots_midi([chord, late]))
    assert (fmt, tracks, division) == (0, 1, 1000)
    slot = 1750  # ms: 1.5 s clip + 0.25 s gap
    assert events == [
        (0, b"\xff\x51\x03\x0f\x42\x40"),  # tempo 1,000,000 us per quarter note: 1 tick = 1 ms
        (0, b"\xc1\x30"),  # program change before the notes at the same tick
        (0, b"\x91\x3c\x5a"), (0, b"\x91\x40\x5a"), (0, b"\x91\x43\x5a"),
        (500, b"\x81\x3c\x00"), (500, b"\x81\x40\x00"), (500, b"\x81\x43\x00"),
        (1500, b"\xb1\x78\x00"),  # All Sound Off at the clip's end
        (slot, b"\xc0\x49"),
        (slot + 300, b"\x90\x48\x29"),
        (slot + 1500, b"\x80\x48\x00"), (slot + 1500, b"\xb0\x78\x00"),  # note off before All Sound Off
        (slot + 1500, b"\xff\x2f\x00"),
    ]  # fmt: skip


def test_clip_draws_follow_the_recipe():
    rng = np.random.default_rng(0)
    clips = [mis.draw_clip(rng, "test") for _ in range(2000)]
    sizes = np.bincount([len(c.parts) for c in clips], minlength=4)[1:] / len(clips)
    np.testing.assert_allclose(sizes, mis.MIXTURE_WEIGHTS, atol=0.04)
    families = {f.tag: f for f in mis.FAMILIES}
    for clip in clips:
        assert len(set(clip.tags)) == len(clip.tags) == len(clip.parts)
        assert [p.channel for p in clip.parts] == list(range(len(clip.parts)))
        for tag, part in zip(clip.tags, clip.parts):
            program = next(p for p in families[tag].programs if p.number == part.program)
            assert program.half == "test"
            assert program.low <= min(part.pitches) and max(part.pitches) <= program.high
            assert len(part.pitches) == 1 or families[tag].chords
            assert 0 <= part.onset <= 0.3 and 0.4 <= part.duration <= 1.2 and 40 <= part.velocity <= 120
    held_out = {p.number for f in mis.FAMILIES for p in mis.programs_of(f, "test")}
    assert {p.program for c in clips for p in c.parts} == held_out


def test_halves_keep_every_family_playable():
    for family in mis.FAMILIES:
        valid, test = mis.programs_of(family, "valid"), mis.programs_of(family, "test")
        assert len(valid) >= 2 and len(test) >= 2 and len(valid) + len(test) == len(family.programs)
        assert mis.programs_of(family, None) == family.programs


def test_decimate_passes_the_band_and_stops_aliases():
    t = np.arange(48000) / 48000
    kept = mis.decimate(np.sin(2 * np.pi * 1000 * t), 3)
    folded = mis.decimate(np.sin(2 * np.pi * 20000 * t), 3)  # would alias to 4 kHz at 16 kHz
    assert kept.shape == (16000,)
    inner = slice(200, -200)  # away from the zero-padded ends
    np.testing.assert_allclose(np.abs(kept[inner]).max(), 1.0, atol=0.01)
    assert np.abs(folded[inner]).max() < 1e-3


def test_mix_drops_a_silent_part_and_normalises_the_peak():
    parts = [mis.Part(40, 0, (69,), 100, 0.0, 1.0, 0.0), mis.Part(SILENT_PROGRAM, 1, (60,), 100, 0.0, 1.0, 0.0)]
    audible, silent = fake_render(parts)
    assert mis.mix([audible, silent], parts) is None
    mixed = mis.mix([audible, audible * 0.01], parts)
    np.testing.assert_allclose(np.abs(mixed).max(), mis.PEAK, rtol=1e-6)


def build(out: Path, count: int, seed: int = 0) -> tuple[list, int]:
    return mis.build_split("valid", count, "valid", fake_render, out, "fake_gm", RATE, np.random.default_rng(seed))


def test_build_split_replaces_silent_clips_and_reads_as_the_csv_layout(tmp_path, monkeypatch):
    monkeypatch.setattr(mis, "programs_of", lambda family, half: family.programs)  # let the silent piano be drawn
    rows, dropped = build(tmp_path, 30)
    assert len(rows) == 30 and dropped > 0
    assert [r.path for r in rows] == [f"audio/valid/fake_gm_{i:05d}.wav" for i in range(30)]
    audio, rate = sf.read(tmp_path / rows[0].path, dtype="int16")
    assert rate == RATE and audio.shape == (CLIP,) and sf.info(tmp_path / rows[0].path).subtype == "PCM_16"
    mis.write_csv(rows, tmp_path / "instruments.csv")
    with open(tmp_path / "instruments.csv", newline="") as handle:
        assert next(csv.reader(handle)) == ["path", "split", *mis.TAGS]
    catalog = build_catalog({"layout": "csv", "csv": str(tmp_path / "instruments.csv")})
    assert catalog.multi_label and catalog.tags == list(mis.TAGS)
    assert catalog.keys["valid"] == [r.path for r in rows] and not catalog.keys["train"]
    expected = [[float(tag in r.tags) for tag in mis.TAGS] for r in rows]
    assert catalog.targets["valid"].tolist() == expected


def test_build_split_is_a_function_of_the_seed_not_the_batch_size(tmp_path, monkeypatch):
    first, _ = build(tmp_path / "a", 12, seed=3)
    monkeypatch.setattr(mis, "BATCH_CLIPS", 5)
    again, _ = build(tmp_path / "b", 12, seed=3)
    other, _ = build(tmp_path / "c", 12, seed=4)
    assert first == again and first != other
    assert (tmp_path / "a" / first[7].path).read_bytes() == (tmp_path / "b" / again[7].path).read_bytes()


def test_missing_fluidsynth_or_soundfont_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setattr(mis.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="fluidsynth not found.*apt-get install fluidsynth"):
        mis.main(["--out", str(tmp_path)])
    monkeypatch.setattr(mis.shutil, "which", lambda name: "/usr/bin/fluidsynth")
    with pytest.raises(SystemExit, match=r"soundfont not found: .*missing.sf2 \(apt-get install"):
        mis.main(["--out", str(tmp_path), "--soundfonts", str(tmp_path / "missing.sf2"), "b.sf2", "c.sf2"])
    same = tmp_path / "a.sf2"
    same.write_bytes(b"")
    with pytest.raises(SystemExit, match="must not validate or test"):
        mis.main(["--out", str(tmp_path), "--soundfonts", str(same), str(same), str(same)])
