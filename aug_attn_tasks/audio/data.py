"""The tagging DataModule: the ``data`` config section's catalog, its sample rate, and the loaders.

:func:`build_catalog` reads the catalog of ``data.layout`` (every layout:
:mod:`~aug_attn_tasks.audio.layouts`) without decoding audio; :func:`resolve_rate` turns
``sample_rate: native`` and ``chunk_seconds`` into numbers. :class:`AudioDataModule` decodes
file-based layouts once into a cache (:func:`~aug_attn_tasks.audio.cache.prepare_cache`) in
``prepare_data``, reads the cache in training, and serves the clips as
:class:`~aug_attn_tasks.audio.datasets.ClipDataset`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import lightning as L
import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from aug_attn_tasks.audio.cache import prepare_cache
from aug_attn_tasks.audio.catalog import SPLITS, Catalog, audio_root, default_cache_dir
from aug_attn_tasks.audio.datasets import ClipDataset, collate_windows, window_count
from aug_attn_tasks.audio.io import DecodeLimits
from aug_attn_tasks.audio.layouts import CATALOGS
from aug_attn_tasks.audio.synthetic import synthetic_clip
from aug_attn_tasks.audio.transforms import WaveAugment, perturb
from aug_attn_tasks.config import check_keys
from aug_attn_tasks.loaders import eval_loader, train_loader

__all__ = ["DATA_KEYS", "build_catalog", "resolve_rate", "AudioDataModule"]

log = logging.getLogger(__name__)


# Every key of the ``data`` section of the tagging recipe (AudioDataModule and the layouts); ``tags``
# and ``multi_label`` are filled in from the dataset and stored in checkpoints.
DATA_KEYS = (
    "layout", "root", "csv", "split_dir", "top_k", "test_fold", "valid_fold", "valid_fraction", "test_fraction", "split_seed",
    "sample_rate", "max_sample_rate", "chunk_samples", "chunk_seconds", "batch_size", "eval_batch_size", "num_workers",
    "eval_chunks", "val_chunks", "cache_dir", "skip_errors", "verify_cache", "augment", "perturb", "decode", "seed",
    "clip_seconds", "num_train", "num_valid", "num_test", "tags", "multi_label",
)  # fmt: skip


def build_catalog(cfg: dict[str, Any]) -> Catalog:
    """The catalog of the ``data`` config section (its layouts: :mod:`~aug_attn_tasks.audio.layouts`)."""
    check_keys("data", cfg, DATA_KEYS)
    layout = cfg.get("layout", "synthetic")
    if layout not in CATALOGS:
        raise ValueError(f"data.layout={layout!r}: expected one of {', '.join(CATALOGS)}")
    if cfg.get("split_dir") and layout not in ("mtat", "gtzan"):
        raise ValueError(f"data.split_dir is read by layouts mtat and gtzan only, not {layout!r} (the csv layout takes a split column)")
    return CATALOGS[layout](cfg)


def _file_rates(cfg: dict[str, Any], catalog: Catalog) -> dict[int, list[str]]:
    """``sample rate -> files`` of the catalog's clips, read from their headers (files soundfile
    cannot read are left to the cache, which names them)."""
    root, rates, limits = audio_root(cfg), {}, DecodeLimits.from_config(cfg.get("decode"))
    for key in (k for split in SPLITS for k in catalog.keys[split]):
        try:
            rate = int(sf.info(str(root / key)).samplerate)
        except Exception:  # noqa: BLE001 (undecodable: reported by prepare_cache with its reason)
            continue
        if limits.min_rate <= rate <= limits.max_rate:  # a corrupt header's rate is refused by the cache, not adopted
            rates.setdefault(rate, []).append(key)
    return rates


def resolve_rate(cfg: dict[str, Any], catalog: Catalog | None = None) -> dict[str, Any]:
    """``data`` with ``sample_rate`` and ``chunk_samples`` as numbers.

    ``sample_rate: native`` keeps the dataset's own rate: the highest rate among its files (none of
    them is then upsampled by more than the others need; a set at one rate is not resampled at all),
    capped at ``max_sample_rate`` when given (e.g. 16000: 8 kHz speech stays at 8 kHz, 44.1 kHz music
    comes down to 16 kHz). ``chunk_seconds`` gives the window in seconds instead of
    ``chunk_samples``. A synthetic set's native rate is its generator's, 16 kHz. The result is what
    checkpoints store, so inference decodes at the rate the model was trained at.
    """
    cfg = dict(cfg)
    rate = cfg.get("sample_rate", 16000)
    if rate == "native":
        if cfg.get("layout", "synthetic") == "synthetic":
            rate = 16000
        else:
            rates = _file_rates(cfg, catalog if catalog is not None else build_catalog(cfg))
            if not rates:
                raise ValueError(f"data.sample_rate=native: no readable audio file in {audio_root(cfg)}")
            rate = max(rates)
            cap = cfg.get("max_sample_rate")
            if cap is not None:
                rate = min(rate, int(cap))
            counts = ", ".join(f"{len(files)} at {r} Hz" for r, files in sorted(rates.items()))
            log.info("data.sample_rate=native: %d Hz (%s)", rate, counts)
    elif isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
        raise ValueError(f"data.sample_rate={rate!r}: expected a positive number of Hz or 'native'")
    cfg["sample_rate"] = int(rate)
    if cfg.get("chunk_seconds") is not None:
        if cfg.get("chunk_samples") is not None:
            raise ValueError("data.chunk_seconds and data.chunk_samples both given: set one")
        cfg["chunk_samples"] = int(round(float(cfg.pop("chunk_seconds")) * cfg["sample_rate"]))
    return cfg


def _test_perturbation(cfg: dict[str, Any] | None) -> Callable[[int, np.ndarray], np.ndarray] | None:
    """``data.perturb = {kind, strength, seed}`` as a clip transform; random draws (white noise) are a
    function of ``(seed, clip index)``, so every run and every process perturbs a clip alike."""
    if not cfg:
        return None
    kind, strength, seed = cfg["kind"], float(cfg["strength"]), int(cfg.get("seed", 0))
    perturb(torch.zeros(1024), kind, strength)  # an unknown kind fails here, before any clip is read

    def apply(index: int, audio: np.ndarray) -> np.ndarray:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
        return perturb(torch.from_numpy(np.array(audio, dtype=np.float32)), kind, strength, generator).numpy()

    return apply


class AudioDataModule(L.LightningDataModule):
    """Loaders for the ``data`` config section.

    Keys: ``layout`` and its options (:mod:`~aug_attn_tasks.audio.layouts`), ``sample_rate`` (16000, or ``native``
    with ``max_sample_rate``: :func:`resolve_rate`), ``chunk_samples`` (model input length) or
    ``chunk_seconds``, ``batch_size``, ``num_workers``, ``eval_chunks`` (test windows per clip: 16
    evenly spaced, or ``cover``: every ``chunk`` samples, as ``aug-attn tag`` reads a file;
    :class:`~aug_attn_tasks.audio.datasets.ClipDataset`), ``val_chunks`` (validation, default
    ``eval_chunks``), ``cache_dir`` (default
    ``<root>/cache-<rate>hz``), ``skip_errors`` (log and count undecodable files instead of failing),
    ``decode`` (what a file may claim and contain, :class:`~aug_attn_tasks.audio.io.DecodeLimits`),
    ``verify_cache``, ``augment`` (training transforms, :class:`~aug_attn_tasks.audio.transforms.WaveAugment`;
    off by default), ``perturb`` (``{kind, strength, seed}``: a robustness perturbation of every test
    clip, :func:`~aug_attn_tasks.audio.transforms.perturb`); synthetic: ``seed``, ``clip_seconds``, ``num_train``/``num_valid``/``num_test``.
    """

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.catalog = build_catalog(cfg)
        self.cfg = cfg = resolve_rate(cfg, self.catalog)
        self.sample_rate = int(cfg["sample_rate"])
        self.chunk = int(cfg.get("chunk_samples") or 59049)
        self.datasets: dict[str, ClipDataset] = {}
        self.skipped: dict[str, str] = {}

    def cache_files(self) -> tuple[dict[str, Path], dict[str, str]]:
        """Decode every clip of the catalog into the cache; ``(key -> .npy path, key -> skip reason)``."""
        root = audio_root(self.cfg)
        keys = [k for split in SPLITS for k in self.catalog.keys[split]] + self.catalog.noise
        cache_dir = self.cfg.get("cache_dir") or default_cache_dir(self.cfg)
        return prepare_cache(
            root, keys, cache_dir, self.sample_rate, bool(self.cfg.get("skip_errors", False)), bool(self.cfg.get("verify_cache", False)),
            limits=DecodeLimits.from_config(self.cfg.get("decode")),
        )  # fmt: skip

    def prepare_data(self) -> None:
        if self.cfg.get("layout", "synthetic") != "synthetic":
            self.cache_files()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if self.cfg.get("layout", "synthetic") == "synthetic":
            loaders = self._synthetic_loaders()
        else:
            loaders = self._cached_loaders()
        eval_chunks = window_count(self.cfg.get("eval_chunks", 16), "data.eval_chunks")
        chunks = {"train": None, "valid": window_count(self.cfg.get("val_chunks", eval_chunks), "data.val_chunks"), "test": eval_chunks}
        augment = WaveAugment(self.cfg.get("augment"), self.chunk, self.sample_rate, loaders.get("noise", []))
        for split in SPLITS:
            perturb = _test_perturbation(self.cfg.get("perturb")) if split == "test" else None
            self.datasets[split] = ClipDataset(loaders[split], self.catalog.targets[split], self.chunk, chunks[split], augment, perturb)

    def _synthetic_loaders(self) -> dict[str, Callable[[int], np.ndarray]]:
        seed, seconds = int(self.cfg.get("seed", 0)), float(self.cfg.get("clip_seconds", 2.0))
        loaders = {}
        for split in SPLITS:
            clips = [synthetic_clip(seed, int(k), seconds, self.sample_rate) for k in self.catalog.keys[split]]
            self.catalog.targets[split] = np.stack([tags for _, tags in clips])
            waves = [wave for wave, _ in clips]
            loaders[split] = waves.__getitem__
        return loaders

    def _cached_loaders(self) -> dict[str, Any]:
        """Per split: clip index -> waveform; ``"noise"``: loaders of the background recordings."""
        arrays, skipped = self.cache_files()
        self.skipped = skipped
        loaders = {}
        for split in SPLITS:
            missing = set(self.catalog.keys[split]) - set(arrays)
            if missing:
                log.warning("%s split: %d clips left out as undecodable (see the cache manifest)", split, len(missing))
                self.catalog.drop(split, missing)
            paths = [arrays[k] for k in self.catalog.keys[split]]
            # Memory-mapped: a crop reads only its own samples from disk.
            loaders[split] = lambda i, paths=paths: np.load(paths[i], mmap_mode="r")
        noise = [arrays[k] for k in self.catalog.noise if k in arrays]
        loaders["noise"] = [lambda path=path: np.load(path, mmap_mode="r") for path in noise]
        return loaders

    def train_dataloader(self) -> DataLoader:
        return train_loader(self.datasets["train"], int(self.cfg.get("batch_size", 16)), int(self.cfg.get("num_workers", 0)))

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("valid")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def _eval_loader(self, split: str) -> DataLoader:
        batch_size, workers = int(self.cfg.get("eval_batch_size", 4)), int(self.cfg.get("num_workers", 0))
        return eval_loader(self.datasets[split], batch_size, workers, collate_fn=collate_windows)
