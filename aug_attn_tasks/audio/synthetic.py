"""Procedural tagged music: deterministic multi-label clips for offline training and tests.

Each clip draws a tempo (100-160 BPM), a key and major/minor scale, then switches each of ten
sources on with probability ``p`` (at least one): seven pitched or percussive instruments and a
noise floor. Its tags are the sources that sound. Clip ``i`` of a generator depends only on
``(seed, i)``, so splits made from disjoint index ranges are disjoint and reproducible.

Sources (the tag is the name): ``bass`` (sawtooth, MIDI 33-45, on beats), ``pluck`` (decaying
harmonics, MIDI 60-84, eighth notes), ``organ`` (sustained drawbar chords), ``lead`` (square wave
with vibrato, MIDI 67-84), ``pad`` (slow-attack detuned chords), ``voice`` (harmonics shaped by vowel
formants, with vibrato), ``kick`` (pitch-swept sine), ``snare`` (noise burst and tone), ``hihat``
(high-passed noise ticks), ``noise`` (steady broadband noise). Tempo, key, register, levels and
patterns vary per clip, so the tags are the only stable cues.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SYNTHETIC_TAGS", "synthetic_clip"]

SYNTHETIC_TAGS = ("bass", "pluck", "organ", "lead", "pad", "voice", "kick", "snare", "hihat", "noise")
_MAJOR, _MINOR = (0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10)
# (F1, F2, F3) in Hz of the vowels a, e, i, o, u.
_TABLE = 4096  # wavetable length (a power of 2): 170 samples per cycle of the top harmonic
_MAX_HARMONIC = 24  # enough to tell the timbres apart
_HARMONICS = np.sin(2 * np.pi * np.arange(1, _MAX_HARMONIC + 1)[:, None] * np.arange(_TABLE)[None, :] / _TABLE)
_VOWELS = ((800, 1150, 2900), (400, 1600, 2700), (300, 2300, 3000), (450, 800, 2830), (325, 700, 2530))


def _hz(midi: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69) / 12)


def _tone(f0: float, seconds: float, sr: int, amps, vibrato: float = 0.0, rng=None) -> np.ndarray:
    """Sum of harmonics ``k f0`` with amplitudes ``amps(k)`` (below Nyquist), optional 5.5 Hz vibrato.

    Synthesised from a one-period wavetable (the harmonics are summed once, not per sample).
    """
    t = np.arange(int(seconds * sr)) / sr
    cycles = f0 * t
    if vibrato:
        cycles += vibrato / (2 * np.pi) * np.sin(2 * np.pi * 5.5 * t + (rng.uniform(0, 6.3) if rng is not None else 0.0))
    ks = np.arange(1, min(_MAX_HARMONIC, max(2, int(0.45 * sr / f0))) + 1)
    table = np.asarray([amps(k) for k in ks]) @ _HARMONICS[: ks.shape[0]]  # (_TABLE,)
    return table[(cycles * _TABLE).astype(np.int64) & (_TABLE - 1)]


def _envelope(n: int, sr: int, attack: float, decay: float | None) -> np.ndarray:
    """Linear attack, then exponential decay (time constant ``decay`` s) or sustain with a 10 ms release."""
    t = np.arange(n) / sr
    env = np.minimum(1.0, t / max(attack, 1e-3))
    if decay is not None:
        return env * np.exp(-t / decay)
    release = np.minimum(1.0, (n - np.arange(n)) / (0.01 * sr))
    return env * release


def _place(out: np.ndarray, signal: np.ndarray, start: int) -> None:
    """Add ``signal`` into ``out`` at ``start`` (may be negative: a note begun before the clip)."""
    skip = max(0, -start)
    start, end = start + skip, min(out.shape[0], start + signal.shape[0])
    if start < end:
        out[start:end] += signal[skip : skip + end - start]


def _normalise(x: np.ndarray) -> np.ndarray:
    rms = np.sqrt(np.mean(x**2))
    return x / rms if rms > 0 else x


def synthetic_clip(seed: int, index: int, seconds: float = 2.0, sample_rate: int = 16000, prob: float = 0.3):
    """Clip ``index`` of generator ``seed``: ``(waveform (L,) float32, tags (10,) float32 multi-hot)``."""
    rng = np.random.default_rng([seed, index])
    sr, n = sample_rate, int(seconds * sample_rate)
    present = rng.random(len(SYNTHETIC_TAGS)) < prob
    if not present.any():
        present[rng.integers(len(SYNTHETIC_TAGS))] = True
    beat = 60.0 / rng.uniform(100, 160)
    tonic = int(rng.integers(0, 12))
    scale = np.array(_MAJOR if rng.random() < 0.5 else _MINOR)
    offset = rng.uniform(0, beat)  # the grid does not start with the clip

    def pitch(lo: int, hi: int) -> float:
        notes = [m for m in range(lo, hi + 1) if (m - tonic) % 12 in scale]
        return float(rng.choice(notes))

    def grid(step: float) -> np.ndarray:
        return np.arange(offset - step, seconds, step)

    def note_track(step: float, lo: int, hi: int, attack: float, decay: float | None, amps, vibrato=0.0, voices=1):
        out = np.zeros(n)
        for start in grid(step):
            length = step * (1.0 if decay is None else 3.0)
            f0 = pitch(lo, hi)
            tone = sum(_tone(f0 * (1 + 0.004 * v), length, sr, amps, vibrato, rng) for v in range(voices))
            if voices > 1:  # chords: stack a third and a fifth above the root
                tone = tone + _tone(f0 * 2 ** (4 / 12), length, sr, amps) + _tone(f0 * 2 ** (7 / 12), length, sr, amps)
            _place(out, tone * _envelope(tone.shape[0], sr, attack, decay), int(round(start * sr)))
        return out

    def drum(step: float, keep: float, make) -> np.ndarray:
        out = np.zeros(n)
        pattern = rng.random(8) < keep
        pattern[0] = True
        for i, start in enumerate(grid(step)):
            if pattern[i % 8]:
                _place(out, make(), int(round(start * sr)))
        return out

    def kick() -> np.ndarray:
        t = np.arange(int(0.25 * sr)) / sr
        freq = 50 + 100 * np.exp(-t / 0.03)
        return np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.exp(-t / 0.08)

    def snare() -> np.ndarray:
        t = np.arange(int(0.2 * sr)) / sr
        return (0.8 * rng.standard_normal(t.shape) + 0.5 * np.sin(2 * np.pi * 190 * t)) * np.exp(-t / 0.05)

    def hihat() -> np.ndarray:
        t = np.arange(int(0.06 * sr)) / sr
        return np.diff(rng.standard_normal(t.shape[0] + 1)) * np.exp(-t / 0.015)

    vowel = _VOWELS[rng.integers(len(_VOWELS))]

    def formants(k: int, f0: float) -> float:
        f = k * f0
        return sum(np.exp(-(((f - fc) / (0.08 * fc + 60)) ** 2)) for fc in vowel) / k**0.3

    voice_f0 = pitch(55, 72)
    makers = {
        "bass": lambda: note_track(beat, 33, 45, 0.01, None, lambda k: 1.0 / k),
        "pluck": lambda: note_track(beat / 2, 60, 84, 0.002, 0.12, lambda k: 1.0 / k**1.5),
        "organ": lambda: note_track(2 * beat, 48, 64, 0.02, None, lambda k: {1: 1.0, 2: 0.8, 3: 0.6, 4: 0.5, 6: 0.3, 8: 0.3}.get(k, 0.0)),
        "lead": lambda: note_track(beat, 67, 84, 0.01, None, lambda k: (k % 2) / k, vibrato=0.8),
        "pad": lambda: note_track(4 * beat, 48, 67, 0.3, None, lambda k: (1.0, 0.3, 0.1)[k - 1] if k <= 3 else 0.0, voices=3),
        "voice": lambda: note_track(beat, int(voice_f0) - 3, int(voice_f0) + 4, 0.05, None, lambda k: formants(k, _hz(voice_f0)), vibrato=1.5),
        "kick": lambda: drum(beat, 0.5, kick),
        "snare": lambda: drum(beat / 2, 0.35, snare),
        "hihat": lambda: drum(beat / 4, 0.7, hihat),
        "noise": lambda: rng.standard_normal(n),
    }
    mix = 0.003 * rng.standard_normal(n)  # a faint floor, so no clip is digital silence
    for name, on in zip(SYNTHETIC_TAGS, present):
        if on:
            mix += rng.uniform(0.3, 1.0) * _normalise(makers[name]())
    mix *= rng.uniform(0.3, 0.9) / max(1e-6, float(np.abs(mix).max()))
    return mix.astype(np.float32), present.astype(np.float32)
