"""The tagging dataset: clips as model inputs, a random crop in training and evenly spaced windows
in evaluation (:class:`ClipDataset`); the clips come from :class:`~aug_attn_tasks.audio.data.AudioDataModule`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from aug_attn_tasks.audio.io import chunk_windows
from aug_attn_tasks.audio.transforms import place_or_crop

__all__ = ["ClipDataset"]


class ClipDataset(Dataset):
    """Clips as model inputs.

    Training (``num_chunks=None``): ``augment`` of each clip (default: one random crop of ``chunk``
    samples, zero-padded when shorter), ``(chunk,)``; items ``(audio, target)``. Evaluation:
    ``num_chunks`` evenly spaced crops, ``(num_chunks, chunk)``, never augmented; items
    ``(windows, target, index)``, the clip's index in the split, so that per-clip predictions gathered
    from several processes are put back in the split's order.

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
        num_chunks: int | None = None,
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
        windows = torch.from_numpy(chunk_windows(audio, self.chunk, count=self.num_chunks))
        return windows, torch.as_tensor(self.targets[index]), torch.tensor(index)
