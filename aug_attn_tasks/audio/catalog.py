"""What a dataset holds, before any audio is decoded: tags or classes, and per split the clips.

A layout reader (:mod:`~aug_attn_tasks.audio.layouts`) turns the ``data`` config section into a
:class:`Catalog`; the helpers here are the pieces the readers and the DataModule share.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

__all__ = [
    "Catalog",
    "SPLITS",
    "AUDIO_EXTENSIONS",
    "random_split",
    "labelled_catalog",
    "audio_files",
    "audio_root",
    "default_cache_dir",
    "is_cache_folder",
]

# The extensions of the container formats the decoder reads (soundfile.available_formats() of its
# libsndfile); header-less RAW and rare formats whose extensions other files use (.mat, .sf) are left
# out. .au is GTZAN's original release.
_FORMAT_EXTENSIONS = {
    "WAV": (".wav",), "FLAC": (".flac",), "OGG": (".ogg", ".oga", ".opus"), "MP3": (".mp3",),
    "AIFF": (".aiff", ".aif", ".aifc"), "AU": (".au", ".snd"), "CAF": (".caf",), "W64": (".w64",), "RF64": (".rf64",),
}  # fmt: skip
AUDIO_EXTENSIONS = tuple(sorted({ext for name, exts in _FORMAT_EXTENSIONS.items() if name in sf.available_formats() for ext in exts}))
SPLITS = ("train", "valid", "test")
log = logging.getLogger(__name__)


@dataclass
class Catalog:
    """Tags and per-split clips: ``keys[split]`` relative paths, ``targets[split]`` ``(N, T)`` float32
    multi-hot (multi-label) or ``(N,)`` int64 class indices (single-label). ``noise``: relative paths of
    background recordings that are no clips of any split (Speech Commands' ``_background_noise_``),
    a source for additive-noise augmentation."""

    tags: list[str]
    multi_label: bool
    keys: dict[str, list[str]] = field(default_factory=dict)
    targets: dict[str, np.ndarray] = field(default_factory=dict)
    noise: list[str] = field(default_factory=list)

    def drop(self, split: str, missing: set[str]) -> None:
        """Remove the clips named in ``missing`` from ``split``."""
        keep = [i for i, k in enumerate(self.keys[split]) if k not in missing]
        self.keys[split] = [self.keys[split][i] for i in keep]
        self.targets[split] = self.targets[split][keep]


def random_split(n: int, cfg: dict[str, Any], groups: np.ndarray | None = None) -> np.ndarray:
    """Split codes (0 train, 1 valid, 2 test) for ``n`` items, stratified by ``groups`` if given:
    ``data.valid_fraction`` (0.1) and ``data.test_fraction`` (0.1) of each group, seeded by
    ``data.split_seed`` (0)."""
    rng = np.random.default_rng(int(cfg.get("split_seed", 0)))
    valid, test = float(cfg.get("valid_fraction", 0.1)), float(cfg.get("test_fraction", 0.1))
    assignment = np.zeros(n, dtype=np.int64)
    for group in np.unique(groups) if groups is not None else [None]:
        members = np.flatnonzero(groups == group) if groups is not None else np.arange(n)
        members = rng.permutation(members)
        n_test, n_valid = int(round(test * len(members))), int(round(valid * len(members)))
        assignment[members[:n_test]] = 2
        assignment[members[n_test : n_test + n_valid]] = 1
    return assignment


def labelled_catalog(items: dict[str, list[tuple[str, str]]], classes: list[str] | None = None, where: str = "") -> Catalog:
    """A single-label catalog from ``items[split] = [(key, class name), ...]``.

    ``classes``: the class order (a dataset's official indices); default: the names sorted. A class
    that is not in ``classes`` is an error naming ``where``.
    """
    names = classes if classes is not None else sorted({label for split in items.values() for _, label in split})
    index = {name: i for i, name in enumerate(names)}
    catalog = Catalog(list(names), False)
    for split in SPLITS:
        pairs = items.get(split, [])
        unknown = sorted({label for _, label in pairs} - set(index))
        if unknown:
            raise ValueError(f"{where}: {split} clips of classes {unknown} that the training classes {list(names)} lack")
        catalog.keys[split] = [key for key, _ in pairs]
        catalog.targets[split] = np.array([index[label] for _, label in pairs], dtype=np.int64)
    return catalog


def audio_files(folder: Path) -> list[Path]:
    """The audio files directly in ``folder`` (by extension, :data:`AUDIO_EXTENSIONS`), sorted; the
    other files are counted in the log by extension (hidden files aside), never dropped unsaid."""
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    others = Counter(p.suffix.lower() or "(none)" for p in files if p.suffix.lower() not in AUDIO_EXTENSIONS)
    if others:
        log.warning("%s: %d files not read as audio (%s)", folder, sum(others.values()), ", ".join(f"{n} {ext}" for ext, n in others.most_common()))
    return sorted(p for p in files if p.suffix.lower() in AUDIO_EXTENSIONS)


def audio_root(cfg: dict[str, Any]) -> Path:
    """Folder the catalog's keys are relative to."""
    return Path(cfg["csv"]).parent if cfg.get("layout") == "csv" else Path(cfg["root"])


def default_cache_dir(cfg: dict[str, Any]) -> Path:
    """``<audio root>/cache-<sample rate>hz``, where the cache goes without ``data.cache_dir``
    (``data.sample_rate`` resolved to a number, :func:`~aug_attn_tasks.audio.data.resolve_rate`)."""
    return audio_root(cfg) / f"cache-{int(cfg.get('sample_rate', 16000))}hz"


def is_cache_folder(folder: Path, cfg: dict[str, Any]) -> bool:
    """Whether ``folder`` is an audio cache: ``data.cache_dir``, or a default one (``cache-<n>hz``) at any rate."""
    if cfg.get("cache_dir") and folder.resolve() == Path(cfg["cache_dir"]).resolve():
        return True
    return re.fullmatch(r"cache-\d+hz", folder.name) is not None
