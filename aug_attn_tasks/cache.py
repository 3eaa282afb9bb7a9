"""Caches of prepared arrays that a JSON manifest vouches for.

Every file is written to a temporary name of its own per process and renamed into place, so that a
reader never sees half a file and processes sharing a cache (DDP ranks) do not collide; the
arrays go first and the manifest last, so a crash never leaves a manifest vouching for arrays
that are not whole. Sources are stamped with their size and modification time (:func:`file_stamp`):
a changed stamp means the cached arrays are stale.

Two caches use it: the audio cache, one ``.npy`` per decoded file under one resumable manifest
(:mod:`aug_attn_tasks.audio.cache`), and the point cloud datasets, one ``.npz`` per prepared
dataset beside its ``.json`` manifest (:func:`load_arrays`, :func:`save_arrays`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["file_stamp", "write_atomically", "write_json", "load_arrays", "save_arrays"]


def file_stamp(path: Path) -> dict[str, int] | None:
    """Size and modification time of a source file (None if it does not exist)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def write_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """``write(handle)`` into a temporary file of this process, then rename it to ``path``."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        write(handle)
    os.replace(tmp, path)


def write_json(path: Path, value: Any) -> None:
    """``value`` as indented JSON (keys sorted), written atomically to ``path``."""
    write_atomically(path, lambda handle: handle.write(json.dumps(value, indent=1, sort_keys=True).encode()))


def load_arrays(stem: Path, manifest: dict[str, Any], log: logging.Logger, owner: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The arrays of ``stem.npz`` and the record of ``stem.json`` when that record's ``manifest`` is
    ``manifest``; None otherwise, having logged why on ``log`` (as ``owner``): no cache, a stale
    one (files or parameters changed) or unreadable arrays."""
    try:
        stored = json.loads(stem.with_suffix(".json").read_text())
    except (OSError, ValueError):
        log.info("%s: no cache at %s, building it", owner, stem)
        return None
    if stored.get("manifest") != manifest:
        log.info("%s: cache %s is stale (files or parameters changed), rebuilding", owner, stem)
        return None
    try:
        with np.load(stem.with_suffix(".npz"), allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        log.warning("%s: unreadable (%s), rebuilding", stem.with_suffix(".npz"), err)
        return None
    return arrays, stored


def save_arrays(stem: Path, arrays: dict[str, np.ndarray], manifest: dict[str, Any], **record: Any) -> None:
    """Write ``stem.npz``, then ``stem.json`` holding ``{"manifest": manifest, **record}``."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").unlink(missing_ok=True)  # the old manifest must not vouch for new arrays
    write_atomically(stem.with_suffix(".npz"), lambda handle: np.savez(handle, **arrays))
    write_json(stem.with_suffix(".json"), {"manifest": manifest, **record})
