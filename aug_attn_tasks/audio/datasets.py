"""The tagging dataset: clips as model inputs, a random crop in training and evenly spaced windows
in evaluation (:class:`ClipDataset`, batched by :func:`collate_windows`); the clips come from
:class:`~aug_attn_tasks.audio.data.AudioDataModule`.
"""

from __future__ import annotations

from typing import Callable, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from aug_attn_tasks.audio.io import chunk_windows
from aug_attn_tasks.audio.transforms import place_or_crop

__all__ = ["COVER", "ClipDataset", "WindowCount", "collate_windows", "window_count"]

COVER = "cover"
WindowCount = int | Literal["cover"]


def window_count(value: object, key: str) -> WindowCount:
    """An evaluation window count of the config (``data.eval_chunks`` / ``data.val_chunks``): an int
    >= 1, or ``"cover"`` (every ``chunk`` samples, the last window ending at the clip's end, as
    ``aug-attn tag`` reads a file); anything else is a ``ValueError`` naming ``key``."""
    if value == COVER:
        return COVER
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key}={value!r}: expected a number of windows >= 1 or {COVER!r}")
    return value


class ClipDataset(Dataset):
    """Clips as model inputs.

    Training (``num_chunks=None``): ``augment`` of each clip (default: one random crop of ``chunk``
    samples, zero-padded when shorter), ``(chunk,)``; items ``(audio, target)``. Evaluation:
    ``num_chunks`` evenly spaced crops, ``(num_chunks, chunk)``, or with ``num_chunks="cover"`` one
    window every ``chunk`` samples, the last ending at the clip's end, ``(ceil(L / chunk), chunk)``
    (every sample is seen; a clip of at most ``chunk`` samples gives one centred window); never
    augmented; items ``(windows, target, index)``, the clip's index in the split, so that per-clip
    predictions gathered from several processes are put back in the split's order. Batch them with
    :func:`collate_windows`.

    Args:
        load: clip index -> mono waveform ``(L,)`` float32.
        targets: ``(N, T)`` or ``(N,)``.
        augment: the training transform, ``(L,) -> (chunk,)``
            (:class:`~aug_attn_tasks.audio.transforms.WaveAugment`).
        perturb: evaluation only, ``(clip index, (L,)) -> (L',)`` applied to the whole clip before
            it is cut into chunks (robustness tests).
    """

    def __init__(
        self,
        load: Callable[[int], np.ndarray],
        targets: np.ndarray,
        chunk: int,
        num_chunks: WindowCount | None = None,
        augment: Callable[[np.ndarray], torch.Tensor] | None = None,
        perturb: Callable[[int, np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.load, self.targets, self.chunk, self.num_chunks = load, targets, chunk, num_chunks
        self.augment, self.perturb = augment, perturb

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        audio = self.load(index)
        if self.num_chunks is None:
            crop = self.augment(audio) if self.augment else place_or_crop(audio, self.chunk)
            return crop, torch.as_tensor(self.targets[index])
        if self.perturb is not None:
            audio = self.perturb(index, audio)
        if self.num_chunks == COVER:
            windows = chunk_windows(audio, self.chunk, hop=self.chunk)
        else:
            windows = chunk_windows(audio, self.chunk, count=self.num_chunks)
        return torch.from_numpy(windows), torch.as_tensor(self.targets[index]), torch.tensor(index)


def collate_windows(items: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
    """Evaluation items ``(windows (K_i, L), target, index)`` -> ``(windows (sum K_i, L), targets,
    indices (B,), counts (B,))``: the windows of all clips one after the other, clip by clip, and how
    many belong to each (:meth:`~aug_attn_tasks.audio.recipe.TaggingModule.window_scores`). Nothing
    is padded, so one long clip in a batch costs its own windows only."""
    counts = torch.tensor([len(windows) for windows, _, _ in items])
    windows = torch.cat([windows for windows, _, _ in items])  # (sum K_i, L)
    targets = torch.stack([target for _, target, _ in items])
    return windows, targets, torch.stack([index for _, _, index in items]), counts
