"""Checkpoints of tiny untrained models in the format `aug-attn train` writes, built in well under a second."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from aug_attn_tasks.audio.synthetic import SYNTHETIC_TAGS
from aug_attn_tasks.points.synthetic import SHAPES
from aug_attn_tasks.recipes import get_recipe

TAGGING = {
    "task": "tagging",
    "name": "tiny_tagger",
    "data": {"layout": "synthetic", "sample_rate": 8000, "chunk_samples": 729, "tags": list(SYNTHETIC_TAGS), "multi_label": True},
    "model": {
        "name": "muslcat", "channels": [8, 8, 8, 16, 16], "d_model": 16, "front_heads": 2, "dk": 8, "dv": 8,
        "num_layers": 1, "num_heads": 2, "ff_mult": 2, "head_dropout": 0.0,
    },
}  # fmt: skip
POINTS = {
    "task": "points",
    "name": "tiny_points",
    "data": {"dataset": "synthetic", "num_points": 64, "class_names": list(SHAPES), "protocol": "z/SO3"},
    "model": {
        "name": "risurconv", "samples": [16, 4], "neighbors": [8, 4], "channels": [16, 32], "feature_channels": [16, 16],
        "global_channels": 32, "transformer_layers": 1, "transformer_heads": 2, "head_channels": [32], "dropout": 0.0,
    },
}  # fmt: skip
IMAGES = {
    "task": "images",
    "name": "tiny_images",
    "data": {"dataset": "imagefolder", "image_size": 16, "class_names": ["circle", "square", "stripes"]},
    "model": {"arch": "aa_resnet_small", "attention_stages": [2, 3]},
}


def write_checkpoint(config: dict[str, Any], path: Path) -> Path:
    """Build ``config``'s module (seeded) and save it as `aug-attn train` would; returns ``path``."""
    torch.manual_seed(0)
    module = get_recipe(config["task"]).build_module(config)
    torch.save({"hyper_parameters": {"config": module.config}, "state_dict": module.state_dict()}, path)
    return path
