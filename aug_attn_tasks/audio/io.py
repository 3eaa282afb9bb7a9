"""Audio decoding and windowing: any file soundfile reads -> mono float32 at the model's rate.

``torchaudio.load`` needs FFmpeg (TorchCodec) since torchaudio 2.9; soundfile (libsndfile) reads
wav, flac, ogg, mp3, aiff and more without system packages, and ``torchaudio.functional.resample``
resamples.

Nothing in a file is trusted before it is checked (:class:`DecodeLimits`): the header's sample rate,
channel count and duration are bounded before any sample is read or any resampling filter built
(a 7 KB file claiming 2^31 - 1 Hz would otherwise ask for tens of GB), and the decoded samples must
be finite and of audio magnitude. Each refusal is an :class:`AudioDecodeError` naming the file, the
value and the config key that sets the bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import Tensor

__all__ = [
    "AudioDecodeError", "DecodeLimits", "load_audio", "to_mono_resampled", "window_starts", "fit_length", "chunk_windows",
    "MAX_RESAMPLE_TERMS",
]  # fmt: skip

# torchaudio's resampler builds a filter bank of about (new / g) x (orig / g) taps, g = gcd of the
# rates: 44,100 -> 16,000 is 160 x 441; 44,101 -> 16,000 would be 16,000 x 44,101 (gigabytes).
# Past this many terms the ratio is approximated by a nearby one with small terms (see below).
MAX_RESAMPLE_TERMS = 1000


class AudioDecodeError(ValueError):
    """A file could not be decoded or failed a :class:`DecodeLimits` check; the message names the file."""


@dataclass(frozen=True)
class DecodeLimits:
    """What a decodable audio file may claim and contain: ``data.decode`` in a config.

    Header (checked before anything is read): ``min_rate``/``max_rate`` (Hz), ``max_channels``,
    ``min_seconds``/``max_seconds`` (duration). Samples: finite, and ``|x| <= max_abs`` (float files
    hold samples of order 1; 1e30 is a corrupt or unscaled file, and its square overflows float32).
    """

    min_rate: int = 1000
    max_rate: int = 768_000
    max_channels: int = 64
    min_seconds: float = 0.01
    max_seconds: float = 3600.0
    max_abs: float = 1000.0

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> DecodeLimits:
        """The limits of ``data.decode`` (missing keys: the defaults); an unknown key is an error naming it."""
        cfg = dict(cfg or {})
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(cfg) - set(names))
        if unknown:
            raise ValueError(f"data.decode: unknown keys {unknown}; expected some of {', '.join(names)}")
        return cls(**cfg)


def _resample(audio: Tensor, rate: int, target: int) -> Tensor:
    """``torchaudio.functional.resample`` with a bounded filter: where the exact ratio needs more than
    :data:`MAX_RESAMPLE_TERMS` terms, the nearest ratio with smaller terms is used (at 44,101 ->
    16,000 Hz a pitch error of 0.002%, far below hearing)."""
    divisor = math.gcd(rate, target)
    if max(rate, target) // divisor > MAX_RESAMPLE_TERMS:
        ratio = Fraction(target, rate).limit_denominator(MAX_RESAMPLE_TERMS)
        while max(ratio.numerator, ratio.denominator) > MAX_RESAMPLE_TERMS and ratio.denominator > 1:  # a large factor itself
            ratio = ratio.limit_denominator(ratio.denominator // 2)
        target, rate = ratio.numerator, ratio.denominator
    return AF.resample(audio, rate, target)


def to_mono_resampled(audio: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """``(L,)`` or ``(L, channels)`` samples (soundfile's layout) -> mono ``(L',)`` float32 at ``target_rate``.

    Channels are averaged (a plain downmix: no channel is favoured).
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if sample_rate != target_rate and audio.size:
        audio = _resample(torch.from_numpy(audio), sample_rate, target_rate).numpy()
    return np.ascontiguousarray(audio, dtype=np.float32)


def _check_header(path: str | Path, info: Any, limits: DecodeLimits) -> None:
    """Refuse a header outside ``limits`` (module docstring), naming the value and its config key."""
    rate, channels, frames = int(info.samplerate), int(info.channels), int(info.frames)
    if not limits.min_rate <= rate <= limits.max_rate:
        raise AudioDecodeError(
            f"{path}: header says {rate} Hz, outside [{limits.min_rate}, {limits.max_rate}] (data.decode.min_rate / max_rate)"
        )
    if not 1 <= channels <= limits.max_channels:
        raise AudioDecodeError(f"{path}: header says {channels} channels, outside [1, {limits.max_channels}] (data.decode.max_channels)")
    seconds = frames / rate
    if seconds > limits.max_seconds:
        raise AudioDecodeError(f"{path}: header says {seconds:.0f} s, above data.decode.max_seconds={limits.max_seconds:g}")
    if seconds < limits.min_seconds:
        raise AudioDecodeError(
            f"{path}: {frames} samples ({seconds:.4f} s at {rate} Hz), shorter than data.decode.min_seconds={limits.min_seconds:g}"
        )


def _check_samples(path: str | Path, audio: np.ndarray, limits: DecodeLimits) -> None:
    """Refuse non-finite samples and samples beyond ``limits.max_abs``."""
    finite = np.isfinite(audio)
    if not finite.all():
        first = int(np.flatnonzero(~finite.reshape(-1))[0]) // (audio.shape[1] if audio.ndim == 2 else 1)
        raise AudioDecodeError(f"{path}: NaN or infinite samples (the first at sample {first})")
    peak = float(np.abs(audio).max())
    if peak > limits.max_abs:
        raise AudioDecodeError(f"{path}: samples up to {peak:.3g}, beyond data.decode.max_abs={limits.max_abs:g}: not scaled audio")


def load_audio(path: str | Path, sample_rate: int, limits: DecodeLimits | None = None) -> np.ndarray:
    """Decode ``path`` to mono float32 ``(L,)`` at ``sample_rate`` after the checks of ``limits``
    (default :class:`DecodeLimits`); raise :class:`AudioDecodeError` naming the file."""
    limits = limits or DecodeLimits()
    try:
        info = sf.info(str(path))
        _check_header(path, info, limits)
        audio, rate = sf.read(str(path), dtype="float32", always_2d=False)
    except AudioDecodeError:
        raise
    except Exception as error:  # libsndfile raises LibsndfileError, RuntimeError, or OSError by format
        # libsndfile reports empty and missing files alike as "does not exist": say which it is.
        if not Path(path).is_file():
            reason = "file not found"
        elif Path(path).stat().st_size == 0:
            reason = "empty file"
        else:
            reason = str(error)
        raise AudioDecodeError(f"{path}: cannot decode audio ({reason})") from error
    if audio.size == 0:
        raise AudioDecodeError(f"{path}: decoded to zero samples")
    _check_samples(path, audio, limits)
    return to_mono_resampled(audio, rate, sample_rate)


def window_starts(length: int, window: int, count: int | None = None, hop: int | None = None) -> list[int]:
    """Start offsets of windows over ``length`` samples: ``count`` evenly spaced ones (first at 0,
    last ending at the end), or every ``hop`` samples plus one ending at the end. A signal shorter
    than ``window`` gives ``[0]`` (it is padded)."""
    if (count is None) == (hop is None):
        raise ValueError("give exactly one of count and hop")
    last = max(0, length - window)
    if count is not None:
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        return [int(round(i * last / (count - 1))) for i in range(count)] if count > 1 else [last // 2]
    if hop < 1:
        raise ValueError(f"hop must be >= 1, got {hop}")
    starts = list(range(0, last + 1, hop))
    return starts if starts[-1] == last else starts + [last]


def fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    """Zero-pad ``(L,)`` to at least ``length`` samples, the clip centred: a short sound sits in the
    middle of its window, where training's random placement (``data.augment.place: random``) puts
    it on average, not against one edge."""
    missing = length - audio.shape[0]
    return audio if missing <= 0 else np.pad(audio, (missing // 2, missing - missing // 2))


def chunk_windows(audio: np.ndarray, window: int, count: int | None = None, hop: int | None = None) -> np.ndarray:
    """``(L,)`` -> ``(K, window)`` float32 windows at :func:`window_starts`."""
    audio = fit_length(audio, window)
    starts = window_starts(audio.shape[0], window, count, hop)
    return np.stack([audio[s : s + window] for s in starts]).astype(np.float32, copy=False)
