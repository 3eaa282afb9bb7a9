"""Decode audio files once into a resumable, verifiable cache of float32 ``.npy`` arrays.

Layout: ``<cache_dir>/<relative path>.npy`` per file plus ``manifest.json``::

    {"sample_rate": 16000,
     "entries": {"c/clip.mp3": {"file": "c/clip.mp3.npy", "samples": 465984, "bytes": 1864064, "sha256": "...",
                                "source": {"bytes": 470000, "mtime_ns": 1700000000000000000}}},
     "skipped": {"c/broken.mp3": {"error": "c/broken.mp3: cannot decode audio (...)", "source": {...}}}}

An entry is used while its source file keeps the size and modification time it had when decoded
(or no longer exists) and its array keeps its size (``verify=True``: its sha256 too); otherwise the
file is decoded again.
A skipped file is retried once its size or modification time changes (or in strict mode). Entries
of caches written before sources were stamped are adopted with the current stamp.
Arrays are written to a temporary name and renamed, and the manifest is saved (atomically, under a
name of its own per process: :mod:`aug_attn_tasks.cache`) every ``save_every`` decoded files and at
the end when anything changed, so an interrupted run resumes where it stopped and processes sharing
a cache (DDP) do not collide.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from aug_attn_tasks.audio.io import AudioDecodeError, DecodeLimits, load_audio
from aug_attn_tasks.cache import file_stamp, write_atomically, write_json

__all__ = ["prepare_cache", "load_manifest", "MANIFEST"]

MANIFEST = "manifest.json"
log = logging.getLogger(__name__)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(cache_dir: str | Path) -> dict[str, Any]:
    """The cache's manifest, or an empty one if there is none yet."""
    path = Path(cache_dir) / MANIFEST
    if not path.is_file():
        return {"sample_rate": None, "entries": {}, "skipped": {}}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: corrupt cache manifest ({error}); delete it to rebuild the cache") from error


def _is_valid(cache_dir: Path, entry: dict[str, Any], source: dict[str, int] | None, verify: bool) -> bool:
    path = cache_dir / entry["file"]
    # A source that is gone (deleted after caching) cannot have changed: its array stays usable.
    if (source is not None and entry.get("source") != source) or not path.is_file() or path.stat().st_size != entry["bytes"]:
        return False
    return not verify or _sha256(path) == entry["sha256"]


def _cache_name(key: str) -> str:
    """The array's path inside the cache: ``<key>.npy``; keys must be relative and stay inside."""
    parts = Path(key).parts
    if Path(key).is_absolute() or ".." in parts or not parts:
        raise ValueError(f"{key}: audio paths must be relative to the dataset folder and stay inside it")
    return key + ".npy"


def prepare_cache(
    root: str | Path,
    keys: list[str],
    cache_dir: str | Path,
    sample_rate: int,
    skip_errors: bool = False,
    verify: bool = False,
    save_every: int = 100,
    progress: bool = True,
    limits: DecodeLimits | None = None,
) -> tuple[dict[str, Path], dict[str, str]]:
    """Decode ``root/<key>`` for every key into the cache (mono, ``sample_rate``).

    Args:
        root: folder the keys are relative to.
        keys: relative paths of the audio files.
        cache_dir: where arrays and the manifest go.
        sample_rate: target rate; a cache built at another rate raises.
        skip_errors: log and record undecodable files instead of raising :class:`AudioDecodeError`.
        verify: re-hash cached arrays (slow) instead of trusting their sizes.
        limits: what a file may claim and contain (:class:`~aug_attn_tasks.audio.io.DecodeLimits`).

    Returns:
        ``(arrays, skipped)``: key -> cached ``.npy`` path for every usable key, and key -> error for
        every file skipped (in this run or an earlier one).
    """
    root, cache_dir = Path(root), Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(cache_dir)
    if manifest["sample_rate"] not in (None, sample_rate):
        raise ValueError(f"{cache_dir}: cache holds audio at {manifest['sample_rate']} Hz, {sample_rate} Hz requested")
    changed = manifest["sample_rate"] != sample_rate
    manifest["sample_rate"] = sample_rate
    entries, skipped = manifest["entries"], manifest["skipped"]
    sources = {k: file_stamp(root / k) for k in keys}
    for key in keys:  # entries of caches written before sources were stamped: adopt, not re-decode
        if key in entries and "source" not in entries[key]:
            entries[key]["source"], changed = sources[key], True
    todo = [k for k in keys if not (k in entries and _is_valid(cache_dir, entries[k], sources[k], verify))]
    if skip_errors:  # files given up on stay skipped until they change
        todo = [k for k in todo if not (isinstance(skipped.get(k), dict) and skipped[k].get("source") == sources[k])]
    for done, key in enumerate(tqdm(todo, desc=f"decoding audio -> {cache_dir}", unit="file", disable=not progress or not todo)):
        name = _cache_name(key)
        changed = True
        skipped.pop(key, None)
        try:
            audio = load_audio(root / key, sample_rate, limits)
        except AudioDecodeError as error:
            entries.pop(key, None)
            if not skip_errors:
                write_json(cache_dir / MANIFEST, manifest)
                raise
            log.warning("skipping %s", error)
            skipped[key] = {"error": str(error), "source": sources[key]}
            continue
        target = cache_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, lambda handle: np.save(handle, audio))
        entries[key] = {
            "file": name,
            "samples": int(audio.shape[0]),
            "bytes": target.stat().st_size,
            "sha256": _sha256(target),
            "source": sources[key],
        }
        if (done + 1) % save_every == 0:
            write_json(cache_dir / MANIFEST, manifest)
    if changed:
        write_json(cache_dir / MANIFEST, manifest)
    missing = [k for k in keys if k in skipped]
    if missing:
        log.warning("%d of %d files skipped as undecodable (listed in %s)", len(missing), len(keys), cache_dir / MANIFEST)
    arrays = {k: cache_dir / entries[k]["file"] for k in keys if k in entries}
    return arrays, {k: skipped[k]["error"] for k in missing}
