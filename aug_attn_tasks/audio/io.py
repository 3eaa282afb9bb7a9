"""Audio decoding and windowing: any file soundfile reads -> mono float32 at the model's rate.

``torchaudio.load`` needs FFmpeg (TorchCodec) since torchaudio 2.9; soundfile (libsndfile) reads
wav, flac, ogg and mp3 without system packages, and ``torchaudio.functional.resample`` resamples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

__all__ = ["AudioDecodeError", "load_audio", "to_mono_resampled", "window_starts", "fit_length", "chunk_windows"]


class AudioDecodeError(ValueError):
    """A file could not be decoded; the message names the file."""


def to_mono_resampled(audio: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """``(L,)`` or ``(L, channels)`` samples (soundfile's layout) -> mono ``(L',)`` float32 at ``target_rate``.

    Channels are averaged (a plain downmix: no channel is favoured).
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if sample_rate != target_rate and audio.size:
        audio = AF.resample(torch.from_numpy(audio), sample_rate, target_rate).numpy()
    return np.ascontiguousarray(audio, dtype=np.float32)


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Decode ``path`` to mono float32 ``(L,)`` at ``sample_rate``; raise :class:`AudioDecodeError` naming it."""
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=False)
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
