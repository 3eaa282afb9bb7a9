"""Build a spoken-digit development set with Debian's espeak-ng, in the Speech Commands layout.

Not our data: the sounds are espeak-ng's formant synthesis (``apt-get install espeak-ng``), with its
English voices (accents) and voice variants (about 100: timbre, breathiness, pitch range). A
*speaker* is one (voice, variant) pair; each speaks every digit ``--reps`` times at random rates and
pitches. Whole voices are held out: ``--test-voices`` for the test list, ``--valid-voices`` for the
validation list, so validation and test hear accents that training never heard (a harder split than
unseen speakers of a seen accent).

Every recording is a 1 s, 16 kHz mono wav with the word at a random offset, a random recording level
and a faint noise floor, as Speech Commands' crowd-sourced clips are. Output (``--out``)::

    <out>/<digit>/<speaker>_nohash_<rep>.wav     zero .. nine
    <out>/validation_list.txt, testing_list.txt  lines "<digit>/<file>.wav"
    <out>/_background_noise_/*.wav               babble (espeak sentences, the training voices mixed) and pink noise

Usage: ``python scripts/make_spoken_digits.py --out /work/data/espeak_digits`` (about a minute).
Everything is a function of ``--seed``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import re
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

RATE = 16000
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# espeak-ng's own English voices (the mbrola ones need extra packages). Not "en-gb": it ignores
# "+variant" (every en-gb+X is plain en-gb), while "en" is the same voice and takes variants; not
# "en-us-nyc": in espeak-ng 1.51 it says 7 of the 10 digits exactly as "en-us" does.
VOICES = ("en", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029")
BABBLE = (
    "The quick brown fox jumps over the lazy dog while the radio plays in the kitchen. "
    "Please call Stella and ask her to bring these things with her from the store. "
    "We also need a small plastic snake and a big toy frog for the kids."
)


def espeak(text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
    """espeak-ng's rendering of ``text`` as float32 mono at 16 kHz."""
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout", text], check=True, capture_output=True
    ).stdout
    audio, rate_in = sf.read(io.BytesIO(wav), dtype="float32")
    return AF.resample(torch.from_numpy(audio), rate_in, RATE).numpy()


def pink_noise(samples: int, rng: np.random.Generator) -> np.ndarray:
    """1/f noise by shaping white noise in the frequency domain, peak 0.5."""
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    spectrum /= np.sqrt(np.maximum(np.arange(spectrum.shape[0]), 1.0))
    noise = np.fft.irfft(spectrum, samples)
    return (0.5 * noise / np.abs(noise).max()).astype(np.float32)


def recording(word: np.ndarray, rng: np.random.Generator, level_db: float) -> np.ndarray:
    """``word`` at a random offset in 1 s, scaled to ``level_db`` peak, plus a noise floor 30-50 dB below."""
    word = word[:RATE]
    clip = np.zeros(RATE, dtype=np.float32)
    start = int(rng.integers(0, RATE - word.shape[0] + 1))
    clip[start : start + word.shape[0]] = word / max(np.abs(word).max(), 1e-6) * 10 ** (level_db / 20)
    floor = pink_noise(RATE, rng) * 10 ** ((level_db - rng.uniform(30, 50)) / 20)
    return np.clip(clip + floor, -1, 1)


def variants() -> list[str]:
    """espeak-ng's voice variant names (``espeak-ng --voices=variant``), by their file names, which may
    hold a space ("!v/Mr serious"): such a name cannot follow "+" and is left out."""
    listing = subprocess.run(["espeak-ng", "--voices=variant"], check=True, capture_output=True, text=True).stdout
    names = (re.search(r"!v/(\S+(?: \S+)*)", line) for line in listing.splitlines()[1:])
    return sorted(m.group(1) for m in names if m and " " not in m.group(1))


def check_held_out(held_out: set[str], training: list[str]) -> None:
    """Refuse a held-out voice that says some digit exactly as a training voice does (same rate and
    pitch): its clips would not be unseen."""
    for digit in DIGITS:
        heard = {espeak(digit, voice, 150, 50).tobytes(): voice for voice in training}
        for voice in sorted(held_out):
            same = heard.get(espeak(digit, voice, 150, 50).tobytes())
            if same:
                raise SystemExit(f"held-out voice {voice} says {digit!r} exactly as the training voice {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--variants", type=int, default=40, help="voice variants (speakers) per voice")
    parser.add_argument("--reps", type=int, default=2, help="recordings of each digit per training speaker")
    parser.add_argument("--test-voices", default="en-029,en-gb-scotland")
    parser.add_argument("--valid-voices", default="en-gb-x-gbcwmd")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    test_voices, valid_voices = set(args.test_voices.split(",")), set(args.valid_voices.split(","))
    unknown = (test_voices | valid_voices) - set(VOICES)
    if unknown:
        raise SystemExit(f"unknown voices {sorted(unknown)}; choose from {', '.join(VOICES)}")
    check_held_out(test_voices | valid_voices, [v for v in VOICES if v not in test_voices | valid_voices])
    names = variants()
    lists: dict[str, list[str]] = {"valid": [], "test": []}
    counts = {"train": 0, "valid": 0, "test": 0}
    for voice in VOICES:
        split = "test" if voice in test_voices else "valid" if voice in valid_voices else "train"
        for variant in rng.choice(names, size=min(args.variants, len(names)), replace=False):
            speaker = hashlib.sha1(f"{voice}+{variant}".encode()).hexdigest()[:8]
            level = rng.uniform(-20, -1)  # one microphone level per speaker
            for digit in DIGITS:
                for rep in range(args.reps if split == "train" else 1):
                    word = espeak(digit, f"{voice}+{variant}", int(rng.integers(120, 260)), int(rng.integers(20, 80)))
                    key = f"{digit}/{speaker}_nohash_{rep}.wav"
                    (args.out / digit).mkdir(parents=True, exist_ok=True)
                    sf.write(args.out / key, recording(word, rng, level + rng.uniform(-3, 3)), RATE, subtype="PCM_16")
                    counts[split] += 1
                    if split != "train":
                        lists[split].append(key)
    (args.out / "validation_list.txt").write_text("".join(k + "\n" for k in lists["valid"]))
    (args.out / "testing_list.txt").write_text("".join(k + "\n" for k in lists["test"]))
    noise_dir = args.out / "_background_noise_"
    noise_dir.mkdir(exist_ok=True)
    babble = sum(
        np.pad(b, (0, 40 * RATE - b.shape[0])) if b.shape[0] < 40 * RATE else b[: 40 * RATE]
        for b in (espeak(BABBLE, f"{v}+{rng.choice(names)}", 170, 50) for v in VOICES if v not in test_voices | valid_voices)
    )
    sf.write(noise_dir / "babble.wav", 0.5 * babble / np.abs(babble).max(), RATE, subtype="PCM_16")
    sf.write(noise_dir / "pink_noise.wav", pink_noise(30 * RATE, rng), RATE, subtype="PCM_16")
    print(f"{args.out}: {counts} clips (train/valid/test), {len(DIGITS)} digits")


if __name__ == "__main__":
    main()
