"""The file reader and model runner of ``aug-attn classify`` for images (see :mod:`aug_attn_tasks.batch`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from aug_attn_tasks.images.folder import IMAGE_SUFFIXES, load_image
from aug_attn_tasks.images.recipe import ImageClassifier

__all__ = ["ImagePredictor", "predictor"]


class ImagePredictor:
    """``load(path)``: the image decoded and resized as the checkpoint's ``data`` section says,
    ``(3, S, S)`` uint8; ``predict``: softmax probabilities ``(len(items), classes)``."""

    suffixes = IMAGE_SUFFIXES

    def __init__(self, module: ImageClassifier, config: dict[str, Any]) -> None:
        data = config.get("data", {})
        self.module, self.labels = module, module.class_names
        self.size, self.resize = int(data.get("image_size", 32)), str(data.get("resize", "crop"))

    def load(self, path: Path) -> Tensor:
        return load_image(path, self.size, self.resize)

    def predict(self, items: list[Tensor]) -> Tensor:
        with torch.inference_mode():
            logits = self.module(self.module.normalize(torch.stack(items)))  # (B, classes)
        return torch.softmax(logits.float(), dim=-1)


def predictor(module: ImageClassifier, config: dict[str, Any]) -> ImagePredictor:
    """The batch predictor of ``aug-attn classify`` for image files."""
    return ImagePredictor(module, config)
