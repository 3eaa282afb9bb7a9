"""Point cloud subcommand of ``aug-attn``.

``aug-attn classify FILE --checkpoint CKPT [--top K]``: print the most probable classes of a
``.off``/``.ply``/``.txt``/``.npy`` point cloud or mesh with a classifier trained by ``aug-attn train``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["add_commands", "classify_file", "prepare_cloud"]

logger = logging.getLogger(__name__)


def prepare_cloud(path: str | Path, data: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Read a file as the datasets of the ``data`` config section prepare their shapes: meshes sampled
    by area with ``mesh_points`` points (default ``num_points``), ``num_points`` kept by the config's
    ``sampling`` (fps or random, seeded by ``sampling_seed``; ``first``, which relies on files stored
    in random order as the benchmark's are, becomes random: a user's file may be ordered), fewer points
    repeated (logged), centred and scaled into the unit sphere.

    Returns ``pos (num_points, 3)`` and unit ``normal (num_points, 3)`` or None, float32.
    """
    from aug_attn_tasks.points.datasets import MIN_POINTS, RawCloud, subsample_shape
    from aug_attn_tasks.points.io import load_point_cloud

    num_points = int(data.get("num_points", 1024))
    rng = np.random.default_rng([int(data.get("sampling_seed", 0)), 0])
    pos, normal = load_point_cloud(path, int(data.get("mesh_points") or num_points), rng)
    sampling = data.get("sampling", "fps")
    sampling = "random" if sampling == "first" else sampling
    min_points = int(data.get("min_points", MIN_POINTS))
    cloud = subsample_shape(RawCloud(pos, normal), str(path), num_points, sampling, rng, True, min_points)
    points = torch.from_numpy(cloud.pos).float()
    if cloud.normal is None:
        return points, None
    return points, torch.nn.functional.normalize(torch.from_numpy(cloud.normal).float(), dim=-1)


def classify_file(path: str | Path, checkpoint: str | Path) -> list[tuple[str, float]]:
    """``(class, probability)`` for every class of the checkpoint's classifier on ``path``, most probable first.

    Files without normals get normals estimated by RISurConv; a model trained to read normals as
    features (``pointnet2`` with ``use_normals``) needs a file with them.
    """
    from aug_attn_tasks.recipes import load_checkpoint

    module, config = load_checkpoint(checkpoint)
    if config.get("task") != "points" or getattr(module, "segmentation", True):
        raise ValueError(f"{checkpoint}: not a point cloud classifier checkpoint (task {config.get('task')!r})")
    pos, normal = prepare_cloud(path, config["data"])
    if normal is None and module.use_normals:
        logger.warning(
            "%s has no normals: they are estimated; a model trained on data with normals (data.use_normals) "
            "may predict worse on estimated ones (for such files, train with --data.use_normals false)",
            path,
        )
    with torch.inference_mode():
        logits = module(pos[None], None if normal is None else normal[None])  # (1, classes)
    probs = torch.softmax(logits[0].float(), dim=-1)
    return sorted(zip(module.class_names, probs.tolist()), key=lambda pair: -pair[1])


def _classify(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    for name, prob in classify_file(args.file, args.checkpoint)[: args.top]:
        print(f"{name}\t{prob:.3f}")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``classify`` to the ``aug-attn`` parser."""
    classify = subparsers.add_parser("classify", help="print the top classes of a point cloud file")
    classify.add_argument("file", help="a .off/.ply mesh or point cloud, or a .txt/.npy table of x y z [nx ny nz]")
    classify.add_argument("--checkpoint", required=True, help="checkpoint written by `aug-attn train` (points task)")
    classify.add_argument("--top", type=int, default=5, help="how many classes to print (default 5)")
    classify.set_defaults(handler=_classify)
