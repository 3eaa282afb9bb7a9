"""Audio subcommand of ``aug-attn`` (``aug-attn tag`` is in :mod:`aug_attn_tasks.batch`).

``aug-attn prepare-audio CONFIG [--section.key VALUE ...]``: decode a config's dataset into its
cache ahead of training (resumable; ``--data.verify_cache true`` re-hashes the cached arrays).
"""

from __future__ import annotations

import argparse

__all__ = ["add_commands"]


def _prepare(args: argparse.Namespace) -> int:
    from aug_attn_tasks.audio.data import AudioDataModule
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
    """Add ``prepare-audio`` to the ``aug-attn`` parser."""
    prepare = subparsers.add_parser("prepare-audio", help="decode a tagging config's audio files into its cache")
    prepare.add_argument("config", help="shipped config name or YAML path")
    prepare.add_argument("overrides", nargs=argparse.REMAINDER, help="--section.key VALUE overrides")
    prepare.set_defaults(handler=_prepare)
