"""``aug-attn explain INPUT --checkpoint CKPT --out FILE.png [--top K] [--query Y X ...]``: a picture
of what a trained model attends to in one input file, by the checkpoint's task:

- tagging: waveform and spectrogram with the back end's attention over time (:mod:`aug_attn_tasks.audio.explain`);
- images: heat maps of the attention of query pixels (:mod:`aug_attn_tasks.images.explain`);
- points: the cloud from three viewpoints coloured by gradient saliency (:mod:`aug_attn_tasks.points.explain`).

Each picture is titled with the top classes or tags; the task's ``explain`` module draws it
(:mod:`aug_attn_tasks.registry`). Needs the ``[viz]`` extra (matplotlib).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aug_attn_tasks.registry import TASKS, task_module

__all__ = ["explain_file", "add_commands"]


def explain_file(
    path: str | Path, checkpoint: str | Path, out: str | Path, top: int = 3, queries: list[tuple[int, int]] | None = None
) -> Path:
    """Write the picture of ``path`` under ``checkpoint``'s model to ``out``; ``queries``: image pixels
    ``(y, x)`` (image checkpoints only). Returns ``out``."""
    from aug_attn_tasks.recipes import load_checkpoint
    from aug_attn_tasks.viz import pyplot

    pyplot()  # a missing matplotlib is said before the model is loaded
    if top < 1:
        raise ValueError(f"--top must be >= 1, got {top}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
    module, config = load_checkpoint(checkpoint, tasks=tuple(TASKS))
    explainer = task_module(config["task"], "explain")
    if queries and config["task"] != "images":
        raise ValueError(f"--query chooses image pixels; {checkpoint} is a {config['task']!r} checkpoint")
    options = {"queries": queries} if queries else {}
    return explainer.explain(module, config, Path(path), Path(out), top=top, **options)


def _explain(args: argparse.Namespace) -> int:
    queries = [tuple(q) for q in args.query] if args.query else None
    print(f"wrote {explain_file(args.input, args.checkpoint, args.out, args.top, queries)}")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``explain`` to the ``aug-attn`` parser."""
    explain = subparsers.add_parser("explain", help="draw what a trained model attends to in one input file (PNG)")
    explain.add_argument("input", help="an audio, image or point cloud file, as the checkpoint's task reads")
    explain.add_argument("--checkpoint", required=True, help="checkpoint written by `aug-attn train`")
    explain.add_argument("--out", required=True, help="the picture to write (.png)")
    explain.add_argument("--top", type=int, default=3, help="classes or tags named in the title (default 3)")
    explain.add_argument(
        "--query", type=int, nargs=2, action="append", metavar=("Y", "X"),
        help="image checkpoints: a query pixel (row, column) of the model's input image; repeatable (default: four)",
    )  # fmt: skip
    explain.set_defaults(handler=_explain)
