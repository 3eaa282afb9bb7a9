"""The file reader and model runner of ``aug-attn tag`` (see :mod:`aug_attn_tasks.batch`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from aug_attn_tasks.audio.catalog import AUDIO_EXTENSIONS
from aug_attn_tasks.audio.io import DecodeLimits, chunk_windows, load_audio
from aug_attn_tasks.audio.recipe import TaggingModule

__all__ = ["AudioPredictor", "predictor"]


class AudioPredictor:
    """Batch tagging for :mod:`aug_attn_tasks.batch`: windows of ``data.chunk_samples`` starting every
    ``hop_seconds`` (default: one window, no overlap; the last one ends at the end of the file),
    probabilities averaged over a file's windows.

    ``load(path)`` gives ``(K, L)`` windows; ``predict`` runs the windows of all items together in
    the model's batches and returns ``(len(items), T)``.
    """

    suffixes = AUDIO_EXTENSIONS

    def __init__(self, module: TaggingModule, config: dict[str, Any], hop_seconds: float | None = None) -> None:
        data = config["data"]
        self.module, self.labels = module, module.tags
        self.rate, self.window = int(data.get("sample_rate", 16000)), int(data.get("chunk_samples", 59049))
        self.limits = DecodeLimits.from_config(data.get("decode"))
        if hop_seconds is not None and hop_seconds <= 0:
            raise ValueError(f"--hop must be > 0 seconds, got {hop_seconds}")
        self.hop = self.window if hop_seconds is None else max(1, int(hop_seconds * self.rate))

    def load(self, path: Path) -> torch.Tensor:
        return torch.from_numpy(chunk_windows(load_audio(path, self.rate, self.limits), self.window, hop=self.hop))  # (K, L)

    def predict(self, items: list[torch.Tensor]) -> torch.Tensor:
        counts = torch.tensor([len(w) for w in items])
        with torch.inference_mode():
            scores, _ = self.module.window_scores(torch.cat(items), counts)  # (sum K, L) -> (B, T)
        return scores


def predictor(module: TaggingModule, config: dict[str, Any], hop_seconds: float | None = None) -> AudioPredictor:
    """The batch predictor of ``aug-attn tag`` (``--hop``: ``hop_seconds``)."""
    return AudioPredictor(module, config, hop_seconds)
