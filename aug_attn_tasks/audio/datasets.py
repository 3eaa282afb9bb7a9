"""Tagging and classification datasets: MagnaTagATune, the single-label layouts, CSV, synthetic; one DataModule.

A *catalog* lists a dataset's tags and, per split (``train``, ``valid``, ``test``), the clips as
relative file paths with their targets; :func:`build_catalog` reads it from the ``data`` config
section without decoding audio. File-based layouts are decoded once into a cache
(:func:`~aug_attn_tasks.audio.cache.prepare_cache`) in ``prepare_data``; training reads the cache.

Layouts (``data.layout``):

- ``mtat``: ``<root>/annotations_final.csv`` (tab-separated: ``clip_id``, 188 tag columns,
  ``mp3_path``) and clips under ``<root>/<0-f>/``. With ``data.split_dir`` (``{root}`` in it stands
  for ``data.root``, e.g. ``"{root}/split"``) holding Won et al.'s
  ``tags.npy``, ``binary.npy``, ``train.npy``, ``valid.npy``, ``test.npy`` (lines ``"ix\\t<folder>/<file>.mp3"``,
  ix = CSV row) those define tags and splits; otherwise the ``top_k`` (50) most frequent tags over
  the whole CSV, folders 0-b train, c valid, d-f test, and, as Won et al.'s split script does,
  only clips with at least one of those tags (the others are logged and left out).
- ``folder``, ``speech_commands``, ``esc50``, ``urbansound8k``, ``gtzan``: single-label layouts
  as released, see :mod:`~aug_attn_tasks.audio.layouts`.
- ``csv``: ``data.csv`` with a ``path`` column (relative to the CSV's folder, staying inside it),
  optionally a ``split`` column (train/valid/test), and either a ``label`` column (single-label;
  other columns are metadata and ignored) or one 0/1 column per tag (multi-label). A file listed
  twice is an error.
- ``synthetic``: :mod:`~aug_attn_tasks.audio.synthetic` clips, generated in memory.

``folder`` and ``csv`` without split information are split per class (folder, single-label csv) or
at random (multi-label csv) with ``data.split_seed`` into ``1 - valid_fraction - test_fraction`` / ``valid_fraction`` /
``test_fraction``.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any, Callable

import lightning as L
import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset

from aug_attn_tasks.audio.cache import prepare_cache
from aug_attn_tasks.audio.catalog import AUDIO_EXTENSIONS, SPLITS, Catalog, audio_root, default_cache_dir, labelled_catalog, random_split
from aug_attn_tasks.audio.layouts import esc50_catalog, folder_catalog, gtzan_catalog, speech_commands_catalog, urbansound8k_catalog
from aug_attn_tasks.audio.io import DecodeLimits, chunk_windows
from aug_attn_tasks.audio.transforms import WaveAugment, perturb, place_or_crop
from aug_attn_tasks.audio.synthetic import SYNTHETIC_TAGS, synthetic_clip
from aug_attn_tasks.config import check_keys
from aug_attn_tasks.loaders import eval_loader, train_loader

__all__ = ["Catalog", "build_catalog", "resolve_rate", "ClipDataset", "AudioDataModule", "AUDIO_EXTENSIONS", "SPLITS"]

MTAT_CSV = "annotations_final.csv"
log = logging.getLogger(__name__)


def _read_mtat_csv(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """``annotations_final.csv`` -> (188 tag names, mp3 paths, (N, 188) 0/1 matrix)."""
    if not path.is_file():
        raise FileNotFoundError(f"MagnaTagATune annotations not found: {path}")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    header = rows[0]
    if len(header) < 3 or header[0] != "clip_id" or header[-1] != "mp3_path":
        raise ValueError(f"{path}: expected a tab-separated header 'clip_id, <tags>, mp3_path', got {header[:3]}...")
    body = [r for r in rows[1:] if r]
    bad = next((i for i, r in enumerate(body) if len(r) != len(header)), None)
    if bad is not None:
        raise ValueError(f"{path}: row {bad + 1} has {len(body[bad])} fields, the header {len(header)}")
    labels = np.array([[int(v) for v in r[1:-1]] for r in body], dtype=np.float32)
    return header[1:-1], [r[-1] for r in body], labels


def _load_split_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as error:
        raise ValueError(f"{path}: expected a numpy string/number array (saved without pickle): {error}") from error


def _mtat_catalog(cfg: dict[str, Any]) -> Catalog:
    root = Path(cfg["root"])
    tags188, paths, labels = _read_mtat_csv(root / MTAT_CSV)
    if cfg.get("split_dir"):
        split_dir = Path(str(cfg["split_dir"]).replace("{root}", str(root)))
        if not split_dir.is_dir():
            raise FileNotFoundError(
                f"split folder not found: {split_dir} (data.split_dir; --data.split_dir null uses the folder split)"
            )
        tags = [str(t) for t in _load_split_array(split_dir / "tags.npy")]
        binary = _load_split_array(split_dir / "binary.npy").astype(np.float32)
        if binary.shape != (len(paths), len(tags)):
            raise ValueError(f"{split_dir / 'binary.npy'}: shape {binary.shape}, expected ({len(paths)}, {len(tags)})")
        catalog = Catalog(tags, True)
        for split in SPLITS:
            lines = [str(line).split("\t") for line in _load_split_array(split_dir / f"{split}.npy")]
            if any(len(parts) != 2 for parts in lines):
                raise ValueError(f"{split_dir / f'{split}.npy'}: lines must look like 'ix\\t<folder>/<file>.mp3'")
            rows = [int(ix) for ix, _ in lines]
            catalog.keys[split] = [name for _, name in lines]
            catalog.targets[split] = binary[rows]
        return catalog
    top_k = int(cfg.get("top_k", 50))
    counts = labels.sum(axis=0)
    order = sorted(range(len(tags188)), key=lambda i: (-counts[i], i))[:top_k]
    folder_split = {**dict.fromkeys("0123456789ab", "train"), "c": "valid", **dict.fromkeys("def", "test")}
    tagged = labels[:, order].sum(axis=1) > 0
    if not tagged.all():
        log.info("MagnaTagATune: %d of %d clips have none of the top-%d tags and are left out", (~tagged).sum(), len(paths), top_k)
    catalog = Catalog([tags188[i] for i in order], True)
    for split in SPLITS:
        rows = [i for i, p in enumerate(paths) if folder_split.get(p.split("/")[0]) == split and tagged[i]]
        catalog.keys[split] = [paths[i] for i in rows]
        catalog.targets[split] = labels[rows][:, order]
    return catalog


def _csv_catalog(cfg: dict[str, Any]) -> Catalog:
    path = Path(cfg["csv"])
    if not path.is_file():
        raise FileNotFoundError(f"label CSV not found: {path}")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        fields = reader.fieldnames or []
    if "path" not in fields:
        raise ValueError(f"{path}: needs a 'path' column, found {fields}")
    single_label = "label" in fields  # then other columns (speaker, notes, ...) are metadata, not tags
    tags = [] if single_label else [f for f in fields if f not in ("path", "split")]
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        if None in row or any(value is None for value in row.values()):
            raise ValueError(f"{path}, line {line}: {len(fields)} fields expected (the header's), got another count")
        bad = [t for t in tags if row[t].strip() not in ("0", "1", "0.0", "1.0")]
        if bad:
            raise ValueError(f"{path}, line {line}: tag columns must hold 0 or 1, got {bad[0]}={row[bad[0]]!r}")
        if single_label and not row["label"].strip():
            raise ValueError(f"{path}, line {line}: empty label")
        key = Path(row["path"]).as_posix()
        if not row["path"] or Path(row["path"]).is_absolute() or ".." in Path(row["path"]).parts:
            raise ValueError(f"{path}, line {line}: path {row['path']!r} must be relative to the CSV's folder and stay inside it")
        if key in seen:
            raise ValueError(f"{path}, line {line}: {key} is already listed on line {seen[key]}")
        seen[key] = line
        row["path"] = key
    classes = sorted({r["label"].strip() for r in rows}) if single_label else []
    if "split" in fields:
        names = {"train": 0, "valid": 1, "val": 1, "validation": 1, "test": 2}
        unknown = {r["split"] for r in rows} - set(names)
        if unknown:
            raise ValueError(f"{path}: unknown split values {sorted(unknown)}; use train, valid, test")
        assignment = np.array([names[r["split"]] for r in rows])
    else:
        groups = np.array([classes.index(r["label"].strip()) for r in rows]) if single_label else None
        assignment = random_split(len(rows), cfg, groups)
    if single_label:
        items = {s: [(r["path"], r["label"].strip()) for r, a in zip(rows, assignment) if a == code] for code, s in enumerate(SPLITS)}
        return labelled_catalog(items, classes, str(path))
    targets = np.array([[float(r[t]) for t in tags] for r in rows], dtype=np.float32)
    catalog = Catalog(tags, True)
    for code, split in enumerate(SPLITS):
        idx = np.flatnonzero(assignment == code)
        catalog.keys[split] = [rows[i]["path"] for i in idx]
        catalog.targets[split] = targets[idx]
    return catalog


def _synthetic_catalog(cfg: dict[str, Any]) -> Catalog:
    catalog = Catalog(list(SYNTHETIC_TAGS), True)
    start = 0
    for split in SPLITS:
        count = int(cfg.get(f"num_{split}", {"train": 1000, "valid": 150, "test": 250}[split]))
        # Keys are generator indices: disjoint ranges, hence disjoint clips across splits.
        catalog.keys[split] = [str(i) for i in range(start, start + count)]
        start += count
    return catalog


_CATALOGS: dict[str, Callable[[dict[str, Any]], Catalog]] = {
    "mtat": _mtat_catalog,
    "folder": folder_catalog,
    "speech_commands": speech_commands_catalog,
    "esc50": esc50_catalog,
    "urbansound8k": urbansound8k_catalog,
    "gtzan": gtzan_catalog,
    "csv": _csv_catalog,
    "synthetic": _synthetic_catalog,
}


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


# Every key of the ``data`` section of the tagging recipe (AudioDataModule and the layouts); ``tags``
# and ``multi_label`` are filled in from the dataset and stored in checkpoints.
DATA_KEYS = (
    "layout", "root", "csv", "split_dir", "top_k", "test_fold", "valid_fold", "valid_fraction", "test_fraction", "split_seed",
    "sample_rate", "max_sample_rate", "chunk_samples", "chunk_seconds", "batch_size", "eval_batch_size", "num_workers",
    "eval_chunks", "val_chunks", "cache_dir", "skip_errors", "verify_cache", "augment", "perturb", "decode", "seed",
    "clip_seconds", "num_train", "num_valid", "num_test", "tags", "multi_label",
)  # fmt: skip


def build_catalog(cfg: dict[str, Any]) -> Catalog:
    """The catalog of the ``data`` config section (see the module docstring)."""
    check_keys("data", cfg, DATA_KEYS)
    layout = cfg.get("layout", "synthetic")
    if layout not in _CATALOGS:
        raise ValueError(f"data.layout={layout!r}: expected one of {', '.join(_CATALOGS)}")
    if cfg.get("split_dir") and layout not in ("mtat", "gtzan"):
        raise ValueError(f"data.split_dir is read by layouts mtat and gtzan only, not {layout!r} (the csv layout takes a split column)")
    return _CATALOGS[layout](cfg)


class ClipDataset(Dataset):
    """Clips as model inputs.

    Training (``num_chunks=None``): ``augment`` of each clip (default: one random crop of ``chunk``
    samples, zero-padded when shorter), ``(chunk,)``; items ``(audio, target)``. Evaluation:
    ``num_chunks`` evenly spaced crops, ``(num_chunks, chunk)``, never augmented; items
    ``(windows, target, index)``, the clip's index in the split, so that per-clip predictions gathered
    from several processes are put back in the split's order.

    Args:
        load: clip index -> mono waveform ``(L,)`` float32.
        targets: ``(N, T)`` or ``(N,)``.
        augment: the training transform, ``(L,) -> (chunk,)``
            (:class:`~aug_attn_tasks.audio.transforms.WaveAugment`).
        perturb: evaluation only, ``(clip index, (L,)) -> (L',)`` applied to the whole clip before
            it is cut into chunks (robustness tests).
    """

    def __init__(
        self,
        load: Callable[[int], np.ndarray],
        targets: np.ndarray,
        chunk: int,
        num_chunks: int | None = None,
        augment: Callable[[np.ndarray], torch.Tensor] | None = None,
        perturb: Callable[[int, np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.load, self.targets, self.chunk, self.num_chunks = load, targets, chunk, num_chunks
        self.augment, self.perturb = augment, perturb

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        audio = self.load(index)
        if self.num_chunks is None:
            crop = self.augment(audio) if self.augment else place_or_crop(audio, self.chunk)
            return crop, torch.as_tensor(self.targets[index])
        if self.perturb is not None:
            audio = self.perturb(index, audio)
        windows = torch.from_numpy(chunk_windows(audio, self.chunk, count=self.num_chunks))
        return windows, torch.as_tensor(self.targets[index]), torch.tensor(index)


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

    Keys: ``layout`` and its options (module docstring), ``sample_rate`` (16000, or ``native``
    with ``max_sample_rate``: :func:`resolve_rate`), ``chunk_samples`` (model input length) or
    ``chunk_seconds``, ``batch_size``, ``num_workers``, ``eval_chunks`` (16, test),
    ``val_chunks`` (validation, default ``eval_chunks``), ``cache_dir`` (default
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
        eval_chunks = int(self.cfg.get("eval_chunks", 16))
        chunks = {"train": None, "valid": int(self.cfg.get("val_chunks", eval_chunks)), "test": eval_chunks}
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
        return eval_loader(self.datasets["valid"], int(self.cfg.get("eval_batch_size", 4)), int(self.cfg.get("num_workers", 0)))

    def test_dataloader(self) -> DataLoader:
        return eval_loader(self.datasets["test"], int(self.cfg.get("eval_batch_size", 4)), int(self.cfg.get("num_workers", 0)))
