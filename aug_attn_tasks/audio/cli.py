"""Audio subcommands of ``aug-attn``.

``aug-attn tag AUDIO_FILE --checkpoint CKPT [--top K] [--hop SECONDS]``: tag a file with a trained
model: sliding windows of the model's input length, probabilities averaged over windows.
``aug-attn prepare-audio CONFIG [--section.key VALUE ...]``: decode a config's dataset into its
cache ahead of training (resumable; ``--data.verify_cache true`` re-hashes the cached arrays).
"""

from __future__ import annotations

import argparse

import torch

__all__ = ["add_commands", "tag_file"]


def tag_file(path: str, checkpoint: str, hop_seconds: float | None = None) -> list[tuple[str, float]]:
    """``(tag, probability)`` for every tag of the checkpoint's model on ``path``, most probable first.

    Windows of ``data.chunk_samples`` start every ``hop_seconds`` (default: one window, no overlap),
    the last one ending at the end of the file.
    """
    from aug_attn_tasks.audio.io import chunk_windows, load_audio
    from aug_attn_tasks.recipes import load_checkpoint

    module, config = load_checkpoint(checkpoint)
    data = config["data"]
    rate, window = int(data.get("sample_rate", 16000)), int(data.get("chunk_samples", 59049))
    hop = window if hop_seconds is None else max(1, int(hop_seconds * rate))
    windows = torch.from_numpy(chunk_windows(load_audio(path, rate), window, hop=hop))  # (K, L)
    with torch.inference_mode():
        probs, _ = module.clip_scores(windows.unsqueeze(0))  # (1, T)
    return sorted(zip(module.tags, probs[0].tolist()), key=lambda pair: -pair[1])


def _tag(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    ranked = tag_file(args.audio_file, args.checkpoint, args.hop)
    for tag, prob in ranked[: args.top]:
        print(f"{tag}\t{prob:.3f}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from aug_attn_tasks.audio.datasets import AudioDataModule
    from aug_attn_tasks.config import load_config

    config = load_config(args.config, args.overrides)
    data = AudioDataModule(config.get("data", {}))
    if config.get("data", {}).get("layout", "synthetic") == "synthetic":
        print("synthetic data is generated in memory: nothing to prepare")
        return 0
    arrays, skipped = data.cache_files()
    print(f"cached {len(arrays)} files; {len(skipped)} skipped as undecodable")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tag`` and ``prepare-audio`` to the ``aug-attn`` parser."""
    tag = subparsers.add_parser("tag", help="print the top tags of an audio file with a trained tagger")
    tag.add_argument("audio_file", help="any file soundfile decodes (wav, flac, ogg, mp3); resampled and mixed to mono")
    tag.add_argument("--checkpoint", required=True, help="checkpoint written by `aug-attn train` (a tagging config)")
    tag.add_argument("--top", type=int, default=5, help="how many tags to print (default 5)")
    tag.add_argument("--hop", type=float, default=None, help="seconds between window starts (default: the window length)")
    tag.set_defaults(handler=_tag)
    prepare = subparsers.add_parser("prepare-audio", help="decode a tagging config's audio files into its cache")
    prepare.add_argument("config", help="shipped config name or YAML path")
    prepare.add_argument("overrides", nargs=argparse.REMAINDER, help="--section.key VALUE overrides")
    prepare.set_defaults(handler=_prepare)
