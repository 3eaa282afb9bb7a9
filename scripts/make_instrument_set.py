"""Build a multi-label instrument development set from General MIDI soundfonts, in the csv layout.

Not our data: the sounds are Debian's General MIDI soundfonts played by fluidsynth::

    apt-get install fluidsynth fluid-soundfont-gm timgm6mb-soundfont

Every clip is 1.5 s, mono, 16-bit: 1 to 3 instruments of distinct families (40 % one, 35 % two,
25 % three), each a note or a short chord of a random General MIDI program of its family, at a
random pitch in that program's range, a random velocity, onset (first 0.3 s) and length (0.4-1.2 s).
The target is the set of families (tags) sounding. Each instrument is rendered alone and the clip
is their sum: every part is brought to one RMS level and given a random gain of 0 to -6 dB, so no
tag is buried under another instrument; velocity still picks the soundfont's velocity layers and
filters. A part whose render is silent drops its clip (counted, never written as a silent positive).

Split design. Debian's soundfonts hold two independent sets of recordings: Fluid R3
(``FluidR3_GM.sf2``; ``MuseScore_General.sf3`` and ``FluidR3Mono_GM.sf3`` are built from many of the
same recordings) and TimGM6mb (``TimGM6mb.sf2``; csound's ``sf_GMbank.sf2`` shares most of its
recordings); ``OPL-3_FM_128M.sf2`` is FM synthesis, not recorded instruments. So training plays
``FluidR3_GM.sf2`` with all programs, and validation and test both play ``TimGM6mb.sf2`` with
disjoint halves of each family's programs (``Program.half``), halves that play no TimGM6mb recording
in common: test clips come from a soundfont never used in training and from instruments never heard
in model selection. ``--soundfonts TRAIN VALID TEST`` overrides the choice; with VALID != TEST every
split plays all programs.

Output (``--out``)::

    <out>/audio/<split>/<soundfont>_<index>.wav   split: train, valid, test
    <out>/instruments.csv   path (relative to the CSV's folder), split, one 0/1 column per tag
    <out>/README.txt        soundfonts, seed, counts

Train on it with ``--data.layout csv --data.csv <out>/instruments.csv``. Usage:
``python scripts/make_instrument_set.py --out /work/data/instruments``. Everything is a function of
``--seed``.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import soundfile as sf
from tqdm import tqdm

APT_INSTALL = "apt-get install fluidsynth fluid-soundfont-gm timgm6mb-soundfont"
SPLITS = ("train", "valid", "test")
DEFAULT_SOUNDFONTS = (
    Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),
    Path("/usr/share/sounds/sf2/TimGM6mb.sf2"),
    Path("/usr/share/sounds/sf2/TimGM6mb.sf2"),
)

CLIP_SECONDS = 1.5
MAX_ONSET_SECONDS = 0.3
NOTE_SECONDS = (0.4, 1.2)
VELOCITIES = (40, 120)
MIXTURE_SIZES = (1, 2, 3)
MIXTURE_WEIGHTS = (0.40, 0.35, 0.25)
CHORD_PROBABILITY = 0.4
CHORD_SHAPES = ((0, 4, 7), (0, 3, 7), (0, 7), (0, 4), (0, 3))  # semitones above the root
PART_GAIN_DB = (-6.0, 0.0)
PEAK = 10 ** (-1 / 20)
# fluidsynth's float output at SYNTH_GAIN: the notes drawn here peak at 2e-3 (velocity 40, a high
# vibraphone) to about 0.3; a part below -80 dBFS is a missing preset or a key outside its zones.
SYNTH_GAIN = 0.5
SILENT_PEAK = 1e-4
# fluidsynth's interpolation does not band-limit: played at 16 kHz, the recordings' 8-20 kHz content
# folds into the band (a glockenspiel's 7-8 kHz band rendered 28 dB above a 96 kHz render's). So
# render at >= 40 kHz and low-pass before decimating (within 1 dB of the 96 kHz render per band).
MIN_RENDER_RATE = 40_000
# Parts play in consecutive slots of one MIDI file per batch: one fluidsynth start (loading the
# soundfont takes 0.1-0.5 s) for BATCH_CLIPS clips. The gap keeps slots apart by more than
# fluidsynth's 64-sample event granularity.
BATCH_CLIPS = 40
GAP_SECONDS = 0.25
SLOT_SECONDS = CLIP_SECONDS + GAP_SECONDS
CLIP_CHANNELS = (0, 1, 2)  # one per instrument of a clip; channel 9 is General MIDI percussion
TICKS_PER_SECOND = 1000  # 1000 ticks per quarter note at 60 bpm: a tick is 1 ms


@dataclass(frozen=True)
class Program:
    """A General MIDI program (0-based), its sounding range in MIDI notes, and its held-out half."""

    number: int
    name: str
    low: int
    high: int
    half: str  # "valid" or "test": where it plays when validation and test share one soundfont


@dataclass(frozen=True)
class Family:
    """One tag: the programs that may play it, and whether it plays chords."""

    tag: str
    chords: bool
    programs: tuple[Program, ...]


# Halves: programs that share recordings in TimGM6mb.sf2 stay in one half (pianos 0-3, organs 17-18,
# guitars 29-30, violin and viola, the string ensembles 44/48/49, piccolo and recorder).
FAMILIES = (
    Family("piano", True, (
        Program(0, "acoustic grand piano", 33, 96, "test"),
        Program(1, "bright acoustic piano", 33, 96, "test"),
        Program(2, "electric grand piano", 33, 96, "test"),
        Program(3, "honky-tonk piano", 33, 96, "test"),
        Program(4, "electric piano 1", 33, 91, "valid"),
        Program(5, "electric piano 2", 33, 91, "valid"),
    )),
    Family("mallets", True, (
        Program(8, "celesta", 60, 96, "valid"),
        Program(9, "glockenspiel", 72, 100, "test"),
        Program(10, "music box", 60, 96, "test"),
        Program(11, "vibraphone", 53, 89, "valid"),
        Program(12, "marimba", 45, 96, "test"),
        Program(13, "xylophone", 65, 100, "valid"),
        Program(14, "tubular bells", 60, 77, "valid"),
    )),
    Family("organ", True, (
        Program(16, "drawbar organ", 36, 96, "valid"),
        Program(17, "percussive organ", 36, 96, "valid"),
        Program(18, "rock organ", 36, 96, "valid"),
        Program(19, "church organ", 36, 96, "test"),
        Program(20, "reed organ", 41, 89, "test"),
    )),
    Family("guitar", True, (
        Program(24, "nylon guitar", 40, 76, "valid"),
        Program(25, "steel guitar", 40, 76, "test"),
        Program(26, "jazz guitar", 40, 79, "valid"),
        Program(27, "clean electric guitar", 40, 79, "test"),
        Program(28, "muted electric guitar", 40, 72, "test"),
        Program(29, "overdriven guitar", 40, 79, "valid"),
        Program(30, "distortion guitar", 40, 79, "valid"),
    )),
    Family("bass", False, (
        Program(32, "acoustic bass", 28, 55, "valid"),
        Program(33, "fingered electric bass", 28, 60, "test"),
        Program(34, "picked electric bass", 28, 60, "valid"),
        Program(35, "fretless bass", 28, 60, "test"),
        Program(36, "slap bass 1", 28, 60, "valid"),
        Program(37, "slap bass 2", 28, 60, "test"),
    )),
    Family("strings", True, (
        Program(40, "violin", 55, 96, "valid"),
        Program(41, "viola", 48, 84, "valid"),
        Program(42, "cello", 36, 72, "test"),
        Program(44, "tremolo strings", 40, 84, "test"),
        Program(45, "pizzicato strings", 40, 84, "valid"),
        Program(48, "string ensemble 1", 40, 84, "test"),
        Program(49, "string ensemble 2", 40, 84, "test"),
    )),
    Family("brass", False, (
        Program(56, "trumpet", 55, 82, "valid"),
        Program(57, "trombone", 40, 72, "test"),
        Program(58, "tuba", 28, 58, "valid"),
        Program(59, "muted trumpet", 55, 82, "test"),
        Program(60, "french horn", 41, 77, "valid"),
        Program(61, "brass section", 48, 79, "test"),
    )),
    Family("reed", False, (
        Program(64, "soprano sax", 56, 87, "valid"),
        Program(65, "alto sax", 49, 80, "test"),
        Program(66, "tenor sax", 44, 75, "valid"),
        Program(67, "baritone sax", 36, 68, "test"),
        Program(68, "oboe", 58, 91, "valid"),
        Program(69, "english horn", 52, 81, "test"),
        Program(70, "bassoon", 34, 72, "valid"),
        Program(71, "clarinet", 50, 91, "test"),
    )),
    Family("pipe", False, (
        Program(72, "piccolo", 74, 102, "valid"),
        Program(73, "flute", 60, 96, "test"),
        Program(74, "recorder", 60, 91, "valid"),
        Program(75, "pan flute", 60, 91, "test"),
        Program(79, "ocarina", 60, 84, "test"),
    )),
)  # fmt: skip
TAGS = tuple(family.tag for family in FAMILIES)


@dataclass(frozen=True)
class Part:
    """One instrument of a clip: what its MIDI plays (times in seconds from the clip start, whole
    milliseconds) and its level in the mixture."""

    program: int
    channel: int
    pitches: tuple[int, ...]
    velocity: int
    onset: float
    duration: float
    gain_db: float


@dataclass(frozen=True)
class Clip:
    """The parts of one clip and its target, the tags they play."""

    tags: tuple[str, ...]
    parts: tuple[Part, ...]


@dataclass(frozen=True)
class Row:
    """One line of instruments.csv."""

    path: str
    split: str
    tags: tuple[str, ...]


Renderer = Callable[[Sequence[Part]], list[np.ndarray]]
"""Renders each part alone: one float32 waveform per part, CLIP_SECONDS long at the output rate."""


# --- Drawing clips ---


def programs_of(family: Family, half: str | None) -> tuple[Program, ...]:
    """The programs ``family`` plays in a split: its half's, or all of them when ``half`` is None."""
    return tuple(p for p in family.programs if half is None or p.half == half)


def draw_part(family: Family, half: str | None, channel: int, rng: np.random.Generator) -> Part:
    """A random note or chord of one of the family's programs."""
    programs = programs_of(family, half)
    program = programs[int(rng.integers(len(programs)))]
    chord = family.chords and rng.random() < CHORD_PROBABILITY
    shape = CHORD_SHAPES[int(rng.integers(len(CHORD_SHAPES)))] if chord else (0,)
    root = int(rng.integers(program.low, program.high - shape[-1] + 1))
    onset = int(rng.integers(0, round(MAX_ONSET_SECONDS * 1000) + 1)) / 1000
    duration = int(rng.integers(round(NOTE_SECONDS[0] * 1000), round(NOTE_SECONDS[1] * 1000) + 1)) / 1000
    return Part(
        program=program.number,
        channel=channel,
        pitches=tuple(root + step for step in shape),
        velocity=int(rng.integers(VELOCITIES[0], VELOCITIES[1] + 1)),
        onset=onset,
        duration=duration,
        gain_db=float(rng.uniform(*PART_GAIN_DB)),
    )


def draw_clip(rng: np.random.Generator, half: str | None) -> Clip:
    """1 to 3 instruments of distinct families, one MIDI channel each."""
    size = int(rng.choice(MIXTURE_SIZES, p=MIXTURE_WEIGHTS))
    families = [FAMILIES[i] for i in rng.choice(len(FAMILIES), size=size, replace=False)]
    parts = tuple(draw_part(f, half, channel, rng) for f, channel in zip(families, CLIP_CHANNELS))
    return Clip(tuple(f.tag for f in families), parts)


# --- Standard MIDI files ---


def variable_length(value: int) -> bytes:
    """A MIDI variable-length quantity: 7 bits a byte, most significant first, bit 7 set on all but the last."""
    groups = [value & 0x7F]
    value >>= 7
    while value:
        groups.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(groups))


def midi_file(events: Sequence[tuple[int, bytes]]) -> bytes:
    """A format-0 standard MIDI file of ``(tick, channel message)`` events, 1 ms ticks; events at one
    tick play in their given order (the sort is stable)."""
    tempo = 1_000_000  # microseconds per quarter note; with TICKS_PER_SECOND ticks per quarter, 1 tick = 1 ms
    track = bytearray(b"\x00\xff\x51\x03" + tempo.to_bytes(3, "big"))
    now = 0
    for tick, message in sorted(events, key=lambda event: event[0]):
        track += variable_length(tick - now) + message
        now = tick
    track += b"\x00\xff\x2f\x00"  # end of track
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS_PER_SECOND)
    return header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


def ticks(seconds: float) -> int:
    """Seconds as MIDI ticks (milliseconds)."""
    return round(seconds * TICKS_PER_SECOND)


def part_events(part: Part, start: int) -> list[tuple[int, bytes]]:
    """A part's events in a slot that begins at tick ``start``, in playing order."""
    on, off = start + ticks(part.onset), start + ticks(part.onset + part.duration)
    channel = part.channel
    return [
        (start, bytes([0xC0 | channel, part.program])),
        *((on, bytes([0x90 | channel, pitch, part.velocity])) for pitch in part.pitches),
        *((off, bytes([0x80 | channel, pitch, 0])) for pitch in part.pitches),
        # All Sound Off where the clip ends: no release tail rings into the next slot.
        (start + ticks(CLIP_SECONDS), bytes([0xB0 | channel, 120, 0])),
    ]


def slots_midi(parts: Sequence[Part]) -> bytes:
    """One MIDI file playing ``parts`` one after another, part i in the slot at i * SLOT_SECONDS."""
    return midi_file([event for i, part in enumerate(parts) for event in part_events(part, i * ticks(SLOT_SECONDS))])


# --- Rendering ---


def lowpass_taps(factor: int) -> np.ndarray:
    """A Kaiser-windowed sinc FIR for decimating by ``factor``, in fractions of the decimated rate:
    flat to 0.42, -6 dB at 0.45, below -80 dB from its Nyquist frequency (0.5) on."""
    half = 32 * factor
    n = np.arange(-half, half + 1)
    taps = np.sinc(0.9 / factor * n) * np.kaiser(n.shape[0], 8.0)
    return taps / taps.sum()


def decimate(audio: np.ndarray, factor: int) -> np.ndarray:
    """``audio`` low-passed (zero phase) and kept every ``factor``-th sample."""
    if factor == 1:
        return audio
    taps = lowpass_taps(factor)
    size = 1 << (audio.shape[0] + taps.shape[0] - 2).bit_length()
    full = np.fft.irfft(np.fft.rfft(audio, size) * np.fft.rfft(taps, size), size)
    delay = (taps.shape[0] - 1) // 2
    return full[delay : delay + audio.shape[0] : factor].astype(np.float32)


def fit(audio: np.ndarray, samples: int) -> np.ndarray:
    """``audio`` cut or zero-padded to ``samples``."""
    return np.pad(audio[:samples], (0, max(0, samples - audio.shape[0])))


def fluidsynth_renderer(soundfont: Path, sample_rate: int, fluidsynth: str = "fluidsynth") -> Renderer:
    """A :data:`Renderer` playing ``soundfont`` with the fluidsynth CLI, reverb and chorus off."""
    factor = math.ceil(MIN_RENDER_RATE / sample_rate)
    slot, clip = round(SLOT_SECONDS * sample_rate), round(CLIP_SECONDS * sample_rate)

    def render(parts: Sequence[Part]) -> list[np.ndarray]:
        with tempfile.TemporaryDirectory(prefix="instrument-set-") as tmp:
            midi, wav = Path(tmp) / "parts.mid", Path(tmp) / "parts.wav"
            midi.write_bytes(slots_midi(parts))
            command = [
                fluidsynth, "-n", "-i", "-q", "-R", "0", "-C", "0", "-g", str(SYNTH_GAIN),
                "-r", str(sample_rate * factor), "-O", "float", "-T", "wav", "-F", str(wav), str(soundfont), str(midi),
            ]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0 or not wav.is_file():
                raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
            stereo, _ = sf.read(wav, dtype="float32", always_2d=True)
        audio = decimate(stereo.mean(axis=1), factor)
        return [fit(audio[i * slot : i * slot + clip], clip) for i in range(len(parts))]

    return render


# --- Clips, splits, files ---


def mix(waves: Sequence[np.ndarray], parts: Sequence[Part]) -> np.ndarray | None:
    """The clip: each part at one RMS level times its gain, summed and peak-normalised; None when a
    part is silent, since its tag would be a label the audio does not carry."""
    if any(np.abs(wave).max() < SILENT_PEAK for wave in waves):
        return None
    clip = sum(
        wave / np.sqrt(np.mean(np.square(wave))) * 10 ** (part.gain_db / 20) for wave, part in zip(waves, parts, strict=True)
    )
    return (clip * (PEAK / np.abs(clip).max())).astype(np.float32)


def build_split(
    split: str,
    count: int,
    half: str | None,
    render: Renderer,
    out: Path,
    prefix: str,
    sample_rate: int,
    rng: np.random.Generator,
) -> tuple[list[Row], int]:
    """Writes ``count`` clips to ``out/audio/<split>/<prefix>_<index>.wav``; returns their rows and the
    number of clips dropped as silent. The kept clips are the first ``count`` audible ones that
    ``rng`` draws, whatever the batch size."""
    (out / "audio" / split).mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    dropped = 0
    with tqdm(total=count, desc=f"{split} ({prefix})", unit="clip") as bar:
        while len(rows) < count:
            if dropped > max(count, 10):
                raise RuntimeError(
                    f"{split}: {dropped} clips rendered silent, {len(rows)} not: is {prefix} a General MIDI soundfont?"
                )
            clips = [draw_clip(rng, half) for _ in range(min(BATCH_CLIPS, count - len(rows)))]
            waves = iter(render([part for clip in clips for part in clip.parts]))
            for clip in clips:
                audio = mix([next(waves) for _ in clip.parts], clip.parts)
                if audio is None:
                    dropped += 1
                    continue
                path = f"audio/{split}/{prefix}_{len(rows):05d}.wav"
                sf.write(out / path, audio, sample_rate, subtype="PCM_16")
                rows.append(Row(path, split, clip.tags))
                bar.update()
            bar.set_postfix(silent_dropped=dropped)
    return rows, dropped


def write_csv(rows: Sequence[Row], path: Path) -> None:
    """``instruments.csv``: path, split and one 0/1 column per tag (the csv layout, multi-label)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "split", *TAGS])
        writer.writerows([row.path, row.split, *(int(tag in row.tags) for tag in TAGS)] for row in rows)


def tag_counts(rows: Sequence[Row], split: str) -> dict[str, int]:
    return {tag: sum(tag in row.tags for row in rows if row.split == split) for tag in TAGS}


def readme(
    rows: Sequence[Row],
    soundfonts: dict[str, Path],
    halves: dict[str, str | None],
    dropped: dict[str, int],
    seed: int,
    seconds: float,
) -> str:
    """README.txt: where every split's sounds come from, the seed and the counts."""
    lines = [
        "Instrument families rendered from General MIDI soundfonts by fluidsynth (scripts/make_instrument_set.py).",
        f"Seed {seed}; built in {seconds:.0f} s. {CLIP_SECONDS} s clips, 1-3 instruments of distinct families each.",
        "",
    ]
    for split in SPLITS:
        programs = "all programs" if halves[split] is None else f"the {halves[split]!r} half of each family's programs"
        kept = sum(row.split == split for row in rows)
        lines.append(f"{split}: {soundfonts[split]}, {programs}; {kept} clips, {dropped[split]} dropped as silent")
        lines.append("  positives: " + ", ".join(f"{tag} {n}" for tag, n in tag_counts(rows, split).items()))
    lines += ["", "Tags and their General MIDI programs (0-based; half in brackets):"]
    for family in FAMILIES:
        lines.append(f"  {family.tag}: " + ", ".join(f"{p.number} {p.name} [{p.half}]" for p in family.programs))
    return "\n".join(lines) + "\n"


def short_name(soundfont: Path) -> str:
    """``FluidR3_GM.sf2`` -> ``fluidr3_gm``: the file name prefix of its clips."""
    return re.sub(r"[^a-z0-9]+", "_", soundfont.stem.lower()).strip("_")


def check_inputs(soundfonts: Sequence[Path]) -> str:
    """The fluidsynth executable; exits naming what is missing and how to install it."""
    fluidsynth = shutil.which("fluidsynth")
    if fluidsynth is None:
        sys.exit(f"fluidsynth not found on PATH: {APT_INSTALL}")
    for soundfont in soundfonts:
        if not soundfont.is_file():
            sys.exit(f"soundfont not found: {soundfont} ({APT_INSTALL}, or name others with --soundfonts TRAIN VALID TEST)")
    train, valid, test = (s.resolve() for s in soundfonts)
    if train in (valid, test):
        sys.exit(f"the training soundfont {soundfonts[0]} must not validate or test: held-out splits would not be unseen")
    return fluidsynth


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--train", type=int, default=1200, help="training clips")
    parser.add_argument("--valid", type=int, default=300, help="validation clips")
    parser.add_argument("--test", type=int, default=400, help="test clips")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--soundfonts",
        type=Path,
        nargs=3,
        metavar=("TRAIN", "VALID", "TEST"),
        default=DEFAULT_SOUNDFONTS,
        help="soundfonts (.sf2/.sf3) of the three splits; VALID = TEST splits the programs in halves",
    )
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier set in --out")
    args = parser.parse_args(argv)
    if not 8000 <= args.sample_rate <= 96000:
        parser.error("--sample-rate must be 8000..96000 (fluidsynth's range)")
    fluidsynth = check_inputs(args.soundfonts)
    if (args.out / "audio").exists() or (args.out / "instruments.csv").exists():
        if not args.overwrite:
            sys.exit(f"{args.out} already holds a set: choose another --out or pass --overwrite")
        shutil.rmtree(args.out / "audio", ignore_errors=True)
    soundfonts = dict(zip(SPLITS, args.soundfonts))
    shared = soundfonts["valid"].resolve() == soundfonts["test"].resolve()
    halves = {"train": None, "valid": "valid" if shared else None, "test": "test" if shared else None}
    counts = {"train": args.train, "valid": args.valid, "test": args.test}
    started = time.monotonic()
    rows: list[Row] = []
    dropped: dict[str, int] = {}
    for code, split in enumerate(SPLITS):
        render = fluidsynth_renderer(soundfonts[split], args.sample_rate, fluidsynth)
        rng = np.random.default_rng([args.seed, code])  # one stream per split: its clips do not depend on the others' counts
        prefix = short_name(soundfonts[split])
        kept, dropped[split] = build_split(split, counts[split], halves[split], render, args.out, prefix, args.sample_rate, rng)
        rows += kept
        print(f"{split}: {len(kept)} clips, {dropped[split]} renders dropped as silent", file=sys.stderr)
    write_csv(rows, args.out / "instruments.csv")
    (args.out / "README.txt").write_text(readme(rows, soundfonts, halves, dropped, args.seed, time.monotonic() - started))
    print(f"{args.out}: {len(rows)} clips in {time.monotonic() - started:.0f} s; see {args.out / 'README.txt'}")


if __name__ == "__main__":
    main()
