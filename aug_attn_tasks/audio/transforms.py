"""Waveform transforms: training augmentation and per-window loudness normalisation.

Pure functions on ``(L,)`` tensors (``torchaudio.functional`` resamples and runs the phase vocoder)
and two thin holders of their settings:

- :class:`WaveAugment`, the training pipeline of one clip, configured by ``data.augment``: speed and
  pitch perturbation of the whole clip, the crop (or, for a clip shorter than the window, its random
  placement inside it), a random equaliser (:func:`equalize`: the colour of another microphone or
  room), random gain, random polarity, additive noise at a sampled SNR (background recordings when
  the dataset has them, white noise otherwise). Everything is off by default; then it
  is exactly the plain random crop (one draw).
- :func:`perturb`, the robustness tests of Won et al. 2020 (``data.perturb`` at test time).
- :class:`LoudnessNormalize`, ``model.normalize``: each model input scaled to unit peak or to a
  fixed RMS, in training, evaluation, ``aug-attn tag`` and exported models alike.

Every random number comes from torch's global generator, as the crop always did: in the main process
it is seeded by ``seed_everything`` and saved and restored with checkpoints (exact resume), in loader
workers Lightning seeds it per worker from the loader's own generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torchaudio.functional as AF
from torch import Tensor, nn

__all__ = [
    "WaveAugment",
    "LoudnessNormalize",
    "normalize_loudness",
    "mix_at_snr",
    "change_speed",
    "time_stretch",
    "pitch_shift",
    "equalize",
    "random_equalize",
    "as_waveform",
    "place_or_crop",
    "uniform",
    "compress_dynamic_range",
    "white_noise_mix",
    "perturb",
    "PERTURBATIONS",
]

EPS = 1e-8


def uniform(low: float, high: float) -> float:
    """One draw from ``U(low, high)`` with torch's global generator."""
    return low + (high - low) * float(torch.rand(()))


def as_waveform(audio: Tensor | np.ndarray) -> Tensor:
    """``(L,)`` float32 tensor; an array (e.g. a read-only memory map of the cache) is copied."""
    return audio if isinstance(audio, Tensor) else torch.from_numpy(np.array(audio, dtype=np.float32))


def place_or_crop(audio: Tensor | np.ndarray, window: int, random_place: bool = False) -> Tensor:
    """A random ``window``-sample crop of ``(L,)``; a shorter clip is zero-padded, at the end or
    (``random_place``) at a random offset. One draw either way. Returns ``(window,)``. An array is
    cut before it is copied, so a crop of a memory-mapped clip reads only its own samples."""
    length = audio.shape[0]
    if length < window and random_place:
        start = int(torch.randint(0, window - length + 1, ()))
        return torch.nn.functional.pad(as_waveform(audio), (start, window - length - start))
    start = int(torch.randint(0, max(length, window) - window + 1, ()))
    piece = as_waveform(audio[start : start + window])
    return torch.nn.functional.pad(piece, (0, window - piece.shape[0]))


def change_speed(audio: Tensor, factor: float) -> Tensor:
    """Play ``(L,)`` ``factor`` times faster (tempo and pitch together, Ko et al. 2015): resample
    from ``factor * rate`` to ``rate``; ``factor`` is rounded to 1/100, so the filter stays short.
    Returns ``(~L / factor,)``."""
    percent = int(round(factor * 100))
    return audio if percent == 100 else AF.resample(audio, percent, 100)


def time_stretch(audio: Tensor, rate: float, n_fft: int = 512) -> Tensor:
    """``(L,)`` played ``rate`` times faster at the same pitch: a phase vocoder
    (``torchaudio.functional.phase_vocoder``) over a Hann STFT of ``n_fft`` points, hop ``n_fft / 4``.
    Returns ``(round(L / rate),)``."""
    if rate == 1.0:
        return audio
    hop = n_fft // 4
    window = torch.hann_window(n_fft, device=audio.device)
    spec = torch.stft(audio, n_fft, hop, window=window, return_complex=True)  # (F, frames)
    advance = torch.linspace(0, math.pi * hop, spec.shape[0], device=audio.device)[:, None]  # (F, 1)
    stretched = AF.phase_vocoder(spec, rate, advance)  # (F, ~frames / rate)
    return torch.istft(stretched, n_fft, hop, window=window, length=int(round(audio.shape[0] / rate)))


def pitch_shift(audio: Tensor, steps: float, n_fft: int = 512) -> Tensor:
    """``(L,)`` shifted by ``steps`` semitones at the same length: stretched by ``2^(steps/12)`` with
    :func:`time_stretch`, then sped up by that factor with :func:`change_speed` (rounded to 1/100).

    Why not ``torchaudio.functional.pitch_shift``: it resamples between ``rate / 2^(steps/12)`` and
    ``rate``, rates without a common divisor, which builds a filter of thousands of taps per call."""
    factor = 2 ** (steps / 12)
    shifted = change_speed(time_stretch(audio, 1 / factor, n_fft), factor)
    return torch.nn.functional.pad(shifted, (0, max(0, audio.shape[0] - shifted.shape[0])))[: audio.shape[0]]


EQ_MAX_DB = 12.0  # |gain| of each of equalize's three filters; the headroom below leaves room for all three boosting
_EQ_HEADROOM = 64.0  # 36 dB: torchaudio's biquads clamp their output to [-1, 1]


def equalize(
    audio: Tensor,
    sample_rate: int,
    low_shelf: tuple[float, float],
    high_shelf: tuple[float, float],
    peak: tuple[float, float, float],
) -> Tensor:
    """``(L,)`` through three biquads (``torchaudio.functional``): a low shelf ``(freq Hz, gain dB)``,
    a high shelf ``(freq, gain)`` and a peaking filter ``(freq, gain, Q)``. Gains up to
    :data:`EQ_MAX_DB` each. torchaudio's biquads clamp to ``[-1, 1]``, so the clip is filtered at
    36 dB below its peak and scaled back: the filters stay linear and louder outputs are kept.
    Returns ``(L,)``."""
    scale = float(audio.abs().max()) * _EQ_HEADROOM
    if scale == 0.0:
        return audio
    x = audio / scale
    x = AF.bass_biquad(x, sample_rate, low_shelf[1], low_shelf[0])
    x = AF.treble_biquad(x, sample_rate, high_shelf[1], high_shelf[0])
    x = AF.equalizer_biquad(x, sample_rate, peak[0], peak[1], peak[2])
    return x * scale


def _log_uniform(low: float, high: float) -> float:
    return math.exp(uniform(math.log(low), math.log(high)))


def random_equalize(audio: Tensor, sample_rate: int, gain_db: tuple[float, float]) -> Tensor:
    """:func:`equalize` with random settings, each gain drawn uniformly from ``gain_db``: a low shelf
    at 80-400 Hz, a high shelf at 1-4 kHz and a peak (Q 1) at 150 Hz-4 kHz (log-uniform frequencies,
    capped at 0.45 of ``sample_rate``), roughly the spread of microphones, rooms and voices.
    Seven draws from torch's global generator. ``(L,) -> (L,)``."""
    top = 0.45 * sample_rate
    low = (_log_uniform(min(80.0, top / 4), min(400.0, top / 2)), uniform(*gain_db))
    high = (_log_uniform(min(1000.0, top / 2), min(4000.0, top)), uniform(*gain_db))
    peak = (_log_uniform(min(150.0, top / 4), min(4000.0, top)), uniform(*gain_db), 1.0)
    return equalize(audio, sample_rate, low, high, peak)


def mix_at_snr(audio: Tensor, noise: Tensor, snr_db: float) -> Tensor:
    """``audio + g * noise`` with ``g`` such that ``10 log10(P_audio / P_{g noise}) = snr_db``
    (mean powers over the window); ``audio, noise: (L,)``. Silent audio stays silent."""
    signal, power = audio.pow(2).mean(), noise.pow(2).mean().clamp_min(EPS)
    return audio + noise * torch.sqrt(signal / power / 10 ** (snr_db / 10))


def normalize_loudness(x: Tensor, mode: str, target_rms: float = 0.1) -> Tensor:
    """``(..., L)`` windows scaled one by one: ``peak`` to max |x| = 1, ``rms`` to an RMS of
    ``target_rms``; silent windows stay silent."""
    if mode == "peak":
        return x / x.abs().amax(dim=-1, keepdim=True).clamp_min(EPS)
    if mode == "rms":
        return x * (target_rms / x.pow(2).mean(dim=-1, keepdim=True).sqrt().clamp_min(EPS))
    raise ValueError(f"model.normalize={mode!r}: expected peak, rms or null")


def compress_dynamic_range(audio: Tensor, ratio: float, threshold_db: float = -30.0, frame: int = 400) -> Tensor:
    """A static compressor: where the RMS envelope (frames of ``frame`` samples, linearly
    interpolated) exceeds ``threshold_db`` below the clip's peak, the level above it is divided by
    ``ratio``; the result is scaled back to the input's peak (make-up gain). ``(L,) -> (L,)``."""
    if ratio == 1.0 or audio.abs().max() == 0:
        return audio
    peak = audio.abs().max()
    frames = torch.nn.functional.pad(audio, (0, -audio.shape[0] % frame)).view(-1, frame)  # (F, frame)
    rms = frames.pow(2).mean(dim=1).sqrt().clamp_min(EPS)  # (F,)
    envelope = torch.nn.functional.interpolate(rms[None, None], size=audio.shape[0], mode="linear", align_corners=False)[0, 0]
    over_db = (20 * torch.log10(envelope / peak) - threshold_db).clamp_min(0)  # (L,) dB above the threshold
    compressed = audio * 10 ** (-over_db * (1 - 1 / ratio) / 20)
    return compressed * (peak / compressed.abs().max().clamp_min(EPS))


def white_noise_mix(audio: Tensor, amount: float, generator: torch.Generator | None = None) -> Tensor:
    """Won et al. 2020's noise test: ``(1 - amount) x + amount * n * max(x)``, ``n`` white noise of unit peak."""
    noise = torch.randn(audio.shape[0], generator=generator)
    return (1 - amount) * audio + amount * noise / noise.abs().max() * audio.max()


# Robustness tests (``aug-attn test CKPT --perturb KIND``) and their default strength grids: the
# ranges Won et al. 2020 evaluate (time stretch 2^[-1/2, 1/2], pitch shift [-1, 1] semitones,
# white noise [0.1, 0.4]); compression: ratios of a -30 dB threshold compressor.
PERTURBATIONS: dict[str, tuple[float, ...]] = {
    "time_stretch": (2**-0.5, 2**-0.25, 1.0, 2**0.25, 2**0.5),
    "pitch_shift": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "compression": (1.0, 2.0, 4.0, 8.0, 16.0),
    "white_noise": (0.0, 0.1, 0.2, 0.3, 0.4),
}


def perturb(audio: Tensor, kind: str, strength: float, generator: torch.Generator | None = None) -> Tensor:
    """One robustness perturbation of a whole clip ``(L,)``: ``time_stretch`` (rate; the length
    changes), ``pitch_shift`` (semitones), ``compression`` (ratio), ``white_noise`` (amount)."""
    if kind == "time_stretch":
        return time_stretch(audio, strength)
    if kind == "pitch_shift":
        return pitch_shift(audio, strength) if strength else audio
    if kind == "compression":
        return compress_dynamic_range(audio, strength)
    if kind == "white_noise":
        return white_noise_mix(audio, strength, generator)
    raise ValueError(f"perturbation {kind!r}: expected one of {', '.join(PERTURBATIONS)}")


class LoudnessNormalize(nn.Module):
    """:func:`normalize_loudness` as a module (no parameters); ``mode=None`` is the identity.

    Shapes: ``(B, L) -> (B, L)``.
    """

    def __init__(self, mode: str | None = None, target_rms: float = 0.1) -> None:
        super().__init__()
        if mode is not None:
            normalize_loudness(torch.zeros(1), mode)  # fail at construction, naming the bad mode
        self.mode, self.target_rms = mode, target_rms

    def forward(self, x: Tensor) -> Tensor:
        return x if self.mode is None else normalize_loudness(x, self.mode, self.target_rms)

    def extra_repr(self) -> str:
        return f"mode={self.mode}" + (f", target_rms={self.target_rms}" if self.mode == "rms" else "")


def _range(cfg: dict[str, Any], key: str) -> tuple[float, float] | None:
    value = cfg.get(key)
    if value is None:
        return None
    if not isinstance(value, Sequence) or len(value) != 2 or float(value[0]) > float(value[1]):
        raise ValueError(f"data.augment.{key}={value!r}: expected [low, high] with low <= high")
    return float(value[0]), float(value[1])


class WaveAugment:
    """The training transform of one clip, ``(L,) float32 -> (window,)``; see the module docstring.

    Keys of ``cfg`` (``data.augment``; any missing one is off):

    - ``speed: [low, high]``, ``speed_prob`` (1.0): speed factor drawn uniformly;
    - ``pitch_steps: [low, high]``, ``pitch_prob`` (1.0): semitones, a whole number drawn uniformly
      (:func:`pitch_shift`; slower than speed);
    - ``place: random``: a clip shorter than the window lands at a random offset (default: at the start);
    - ``eq_db: [low, high]``, ``eq_prob`` (1.0): :func:`random_equalize` of the window, each of its
      three gains drawn uniformly (within +-12 dB);
    - ``gain_db: [low, high]``: gain drawn uniformly in dB;
    - ``polarity: true``: the sign flipped with probability 1/2;
    - ``snr_db: [low, high]``, ``noise_prob`` (1.0): additive noise at an SNR drawn uniformly, from a
      random stretch of a random background recording, white noise without any.

    Args:
        noise: loaders of background recordings at the model's rate, ``() -> (N,)``.
    """

    KEYS = (
        "speed", "speed_prob", "pitch_steps", "pitch_prob", "place", "eq_db", "eq_prob", "gain_db", "polarity", "snr_db",
        "noise_prob",
    )  # fmt: skip

    def __init__(self, cfg: dict[str, Any] | None, window: int, sample_rate: int, noise: Sequence[Callable[[], np.ndarray]] = ()) -> None:
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - set(self.KEYS))
        if unknown:
            raise ValueError(f"data.augment: unknown keys {unknown}; expected some of {', '.join(self.KEYS)}")
        if cfg.get("place", "start") not in ("start", "random"):
            raise ValueError(f"data.augment.place={cfg['place']!r}: expected start or random")
        self.window, self.sample_rate, self.noise = window, sample_rate, list(noise)
        self.speed, self.pitch = _range(cfg, "speed"), _range(cfg, "pitch_steps")
        self.gain, self.snr = _range(cfg, "gain_db"), _range(cfg, "snr_db")
        self.eq = _range(cfg, "eq_db")
        if self.eq is not None and max(abs(g) for g in self.eq) > EQ_MAX_DB:
            raise ValueError(f"data.augment.eq_db={cfg['eq_db']!r}: each gain must lie within +-{EQ_MAX_DB:g} dB")
        for key in ("speed_prob", "pitch_prob", "eq_prob", "noise_prob"):
            value = cfg.get(key, 1.0)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"data.augment.{key}={value!r}: expected a probability in [0, 1]")
        self.speed_prob, self.pitch_prob = float(cfg.get("speed_prob", 1.0)), float(cfg.get("pitch_prob", 1.0))
        self.eq_prob, self.noise_prob = float(cfg.get("eq_prob", 1.0)), float(cfg.get("noise_prob", 1.0))
        self.random_place, self.polarity = cfg.get("place") == "random", bool(cfg.get("polarity", False))

    @staticmethod
    def _happens(probability: float) -> bool:
        return probability >= 1.0 or float(torch.rand(())) < probability

    def _noise(self) -> Tensor:
        """``(window,)``: a random stretch of a random background recording, or white noise."""
        if not self.noise:
            return torch.randn(self.window)
        return place_or_crop(self.noise[int(torch.randint(0, len(self.noise), ()))](), self.window)

    def __call__(self, audio: np.ndarray) -> Tensor:
        x = audio  # copied only where a change needs the whole clip; else only the crop (place_or_crop)
        if self.speed is not None and self._happens(self.speed_prob):
            x = change_speed(as_waveform(x), uniform(*self.speed))
        if self.pitch is not None and self._happens(self.pitch_prob):
            steps = int(torch.randint(int(math.ceil(self.pitch[0])), int(math.floor(self.pitch[1])) + 1, ()))
            if steps:
                x = pitch_shift(as_waveform(x), steps)
        x = place_or_crop(x, self.window, self.random_place)  # (window,)
        if self.eq is not None and self._happens(self.eq_prob):
            x = random_equalize(x, self.sample_rate, self.eq)
        if self.gain is not None:
            x = x * 10 ** (uniform(*self.gain) / 20)
        if self.polarity and float(torch.rand(())) < 0.5:
            x = -x
        if self.snr is not None and self._happens(self.noise_prob):
            x = mix_at_snr(x, self._noise(), uniform(*self.snr))
        return x
