"""Every ``data.layout`` of the tagging recipe, each read into a :class:`~.catalog.Catalog` without
decoding audio (:data:`CATALOGS`; :func:`~aug_attn_tasks.audio.data.build_catalog` picks one).

- ``mtat``: ``<root>/annotations_final.csv`` (tab-separated: ``clip_id``, 188 tag columns,
  ``mp3_path``) and clips under ``<root>/<0-f>/``. With ``data.split_dir`` (``{root}`` in it stands
  for ``data.root``, e.g. ``"{root}/split"``) holding Won et al.'s
  ``tags.npy``, ``binary.npy``, ``train.npy``, ``valid.npy``, ``test.npy`` (lines ``"ix\\t<folder>/<file>.mp3"``,
  ix = CSV row) those define tags and splits; otherwise the ``top_k`` (50) most frequent tags over
  the whole CSV, folders 0-b train, c valid, d-f test, and, as Won et al.'s split script does,
  only clips with at least one of those tags (the others are logged and left out).
- ``folder``: ``<root>/<label>/*.<audio>`` split per class with ``data.split_seed``, or
  ``<root>/{train,valid,test}/<label>/*.<audio>`` (``val``/``validation`` accepted) when those
  folders exist: the split is then the folders'. Folders without audio files are not labels (logged,
  except cache folders).
- ``speech_commands`` (Warden 2018): ``<root>/<word>/*.wav``, ``validation_list.txt`` and
  ``testing_list.txt`` (lines ``<word>/<file>.wav``), training = every other clip. Folders starting
  with ``_`` are no words; ``_background_noise_/*.wav`` become the catalog's noise sources.
- ``esc50`` (Piczak 2015): ``<root>/audio/*.wav`` and ``<root>/meta/esc50.csv`` (``filename, fold,
  target, category, ...``); five folds, ``data.test_fold`` (1) is the test set, ``data.valid_fold``
  (default: the next fold, cyclically) the validation set, the other three train. Classes in
  ``target`` order.
- ``urbansound8k`` (Salamon et al. 2014): ``<root>/audio/fold1..10/*.wav`` and
  ``<root>/metadata/UrbanSound8K.csv`` (``slice_file_name, fsID, start, end, salience, fold,
  classID, class``); ten folds, the same ``test_fold`` / ``valid_fold`` keys. Classes in ``classID`` order.
- ``gtzan``: ``<root>/<genre>/<file>`` with the fault-filtered split lists of Kereliuk et al. 2015
  (``train_filtered.txt``, ``valid_filtered.txt``, ``test_filtered.txt``, as Won et al. 2020 use) in
  ``data.split_dir`` (default ``{root}``); lines ``<genre>/<file>`` or ``<genre>.<n>.<ext>``. A listed
  ``.au`` found as ``.wav`` (or any other audio extension with the same stem) is taken; clips in no
  list are left out, as the lists intend.
- ``csv``: ``data.csv`` with a ``path`` column (relative to the CSV's folder, staying inside it),
  optionally a ``split`` column (train/valid/test), and either a ``label`` column (single-label;
  other columns are metadata and ignored) or one 0/1 column per tag (multi-label). A file listed
  twice is an error.
- ``synthetic``: :mod:`~aug_attn_tasks.audio.synthetic` clips, generated in memory; the catalog holds
  their generator indices (the targets come with the clips).

``folder`` and ``csv`` without split information are split per class (folder, single-label csv) or
at random (multi-label csv) with ``data.split_seed`` into ``1 - valid_fraction - test_fraction`` /
``valid_fraction`` / ``test_fraction``. Every file a list or CSV names must exist: a missing one is
an error naming the list and its line. The fold protocols report one fold per run; cross-validation
runs every ``test_fold``.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from aug_attn_tasks.audio.catalog import AUDIO_EXTENSIONS, SPLITS, Catalog, audio_files, is_cache_folder, labelled_catalog, random_split
from aug_attn_tasks.audio.synthetic import SYNTHETIC_TAGS

__all__ = [
    "CATALOGS", "mtat_catalog", "folder_catalog", "speech_commands_catalog", "esc50_catalog", "urbansound8k_catalog",
    "gtzan_catalog", "csv_catalog", "synthetic_catalog",
]  # fmt: skip

MTAT_CSV = "annotations_final.csv"
log = logging.getLogger(__name__)
SPLIT_FOLDERS = {"train": ("train",), "valid": ("valid", "val", "validation"), "test": ("test",)}


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


def mtat_catalog(cfg: dict[str, Any]) -> Catalog:
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


def _root(cfg: dict[str, Any]) -> Path:
    root = Path(cfg["root"])
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    return root


def _labelled_folders(root: Path, cfg: dict[str, Any], skip_underscore: bool = False) -> dict[str, list[Path]]:
    """``label -> audio files`` of the subfolders of ``root`` that hold audio; others logged (not cache folders)."""
    files_of = {}
    for folder in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        if (skip_underscore and folder.name.startswith("_")) or is_cache_folder(folder, cfg):
            continue
        files = audio_files(folder)
        if files:
            files_of[folder.name] = files
        else:
            log.warning("%s: no audio files (%s), not a label", folder, ", ".join(AUDIO_EXTENSIONS))
    return files_of


def folder_catalog(cfg: dict[str, Any]) -> Catalog:
    root = _root(cfg)
    split_dirs = {s: next((root / n for n in names if (root / n).is_dir()), None) for s, names in SPLIT_FOLDERS.items()}
    if split_dirs["train"] is not None and split_dirs["test"] is not None:
        items = {}
        for split, folder in split_dirs.items():
            found = _labelled_folders(folder, cfg) if folder is not None else {}
            items[split] = [(f"{folder.name}/{label}/{p.name}", label) for label, files in found.items() for p in files]
        if not items["train"]:
            raise ValueError(f"{split_dirs['train']}: no audio files in <label>/ folders")
        return labelled_catalog(items, sorted({label for _, label in items["train"]}), str(root))
    files_of = _labelled_folders(root, cfg)
    pairs = [(f"{label}/{p.name}", label) for label, files in files_of.items() for p in files]
    if not pairs:
        raise ValueError(f"{root}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in <root>/<label>/ folders")
    labels = sorted(files_of)
    assignment = random_split(len(pairs), cfg, np.array([labels.index(label) for _, label in pairs]))
    return labelled_catalog({s: [p for p, a in zip(pairs, assignment) if a == code] for code, s in enumerate(SPLITS)}, labels, str(root))


def _read_list(path: Path, known: set[str]) -> list[str]:
    """Non-blank lines of a split list; each must be one of ``known`` (error naming file and line)."""
    if not path.is_file():
        raise FileNotFoundError(f"split list not found: {path}")
    keys = []
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        key = text.strip()
        if not key:
            continue
        if key not in known:
            raise ValueError(f"{path}, line {line}: {key} is not an audio file of the dataset")
        keys.append(key)
    return keys


def speech_commands_catalog(cfg: dict[str, Any]) -> Catalog:
    root = _root(cfg)
    words = _labelled_folders(root, cfg, skip_underscore=True)
    files = {f"{word}/{p.name}": word for word, paths in words.items() for p in paths}
    if not files:
        raise ValueError(f"{root}: no <word>/*.wav folders (Speech Commands layout)")
    valid = _read_list(root / "validation_list.txt", set(files))
    test = _read_list(root / "testing_list.txt", set(files))
    both = sorted(set(valid) & set(test))
    if both:
        raise ValueError(f"{root}: {both[0]} is in both validation_list.txt and testing_list.txt")
    held_out = set(valid) | set(test)
    items = {
        "train": [(k, w) for k, w in files.items() if k not in held_out],
        "valid": [(k, files[k]) for k in valid],
        "test": [(k, files[k]) for k in test],
    }
    catalog = labelled_catalog(items, sorted(words), str(root))
    noise = root / "_background_noise_"
    catalog.noise = [f"{noise.name}/{p.name}" for p in audio_files(noise)] if noise.is_dir() else []
    return catalog


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """``(line, row)`` pairs of a metadata CSV that must have ``columns``."""
    if not path.is_file():
        raise FileNotFoundError(f"metadata CSV not found: {path}")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{path}: needs the columns {list(columns)}, {missing} missing")
    return list(enumerate(rows, start=2))  # line 1 is the header


def _fold_catalog(cfg: dict[str, Any], path: Path, rows: list[tuple[int, dict[str, str]]], num_folds: int, file_of, class_columns: tuple[str, str]) -> Catalog:
    """A fold-protocol catalog: ``file_of(row) -> key``; ``class_columns = (index column, name column)``."""
    test_fold = int(cfg.get("test_fold", 1))
    valid_fold = int(cfg.get("valid_fold") or test_fold % num_folds + 1)
    if not (1 <= test_fold <= num_folds and 1 <= valid_fold <= num_folds) or test_fold == valid_fold:
        raise ValueError(f"data.test_fold={test_fold}, data.valid_fold={valid_fold}: two different folds of 1..{num_folds}")
    root = Path(cfg["root"])
    names: dict[int, str] = {}
    items: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    for line, row in rows:
        try:
            fold, index = int(row["fold"]), int(row[class_columns[0]])
        except (TypeError, ValueError):
            raise ValueError(f"{path}, line {line}: fold and {class_columns[0]} must be integers") from None
        if not 1 <= fold <= num_folds:
            raise ValueError(f"{path}, line {line}: fold {fold} is not one of 1..{num_folds}")
        key = file_of(row)
        if not (root / key).is_file():
            raise ValueError(f"{path}, line {line}: {root / key} not found")
        names.setdefault(index, row[class_columns[1]])
        split = "test" if fold == test_fold else "valid" if fold == valid_fold else "train"
        items[split].append((key, row[class_columns[1]]))
    return labelled_catalog(items, [names[i] for i in sorted(names)], str(path))


def esc50_catalog(cfg: dict[str, Any]) -> Catalog:
    path = _root(cfg) / "meta" / "esc50.csv"
    rows = _read_csv(path, ("filename", "fold", "target", "category"))
    return _fold_catalog(cfg, path, rows, 5, lambda row: f"audio/{row['filename']}", ("target", "category"))


def urbansound8k_catalog(cfg: dict[str, Any]) -> Catalog:
    path = _root(cfg) / "metadata" / "UrbanSound8K.csv"
    rows = _read_csv(path, ("slice_file_name", "fold", "classID", "class"))
    return _fold_catalog(cfg, path, rows, 10, lambda row: f"audio/fold{row['fold']}/{row['slice_file_name']}", ("classID", "class"))


def _gtzan_key(root: Path, text: str) -> str | None:
    """The existing file a GTZAN list line names (``genre/file`` or ``genre.n.ext``), any audio extension."""
    entry = Path(text if "/" in text else f"{text.split('.')[0]}/{text}")
    for candidate in (entry, *(entry.with_suffix(ext) for ext in AUDIO_EXTENSIONS)):
        if (root / candidate).is_file():
            return candidate.as_posix()
    return None


def gtzan_catalog(cfg: dict[str, Any]) -> Catalog:
    root = _root(cfg)
    split_dir = Path(str(cfg.get("split_dir") or "{root}").replace("{root}", str(root)))
    items: dict[str, list[tuple[str, str]]] = {}
    listed: dict[str, str] = {}  # key -> "list, line N" where it was first listed
    for split in SPLITS:
        path = split_dir / f"{split}_filtered.txt"
        if not path.is_file():
            raise FileNotFoundError(f"GTZAN split list not found: {path} (data.split_dir)")
        items[split] = []
        for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not text.strip():
                continue
            key = _gtzan_key(root, text.strip())
            if key is None:
                raise ValueError(f"{path}, line {line}: {text.strip()} not found under {root} (with any of {', '.join(AUDIO_EXTENSIONS)})")
            if key in listed:  # twice in a list, or in two splits: a leak between them
                raise ValueError(f"{path}, line {line}: {key} is already listed ({listed[key]})")
            listed[key] = f"{path.name}, line {line}"
            items[split].append((key, key.split("/")[0]))
    on_disk = {f"{genre}/{p.name}" for genre in {key.split("/")[0] for key in listed} if (root / genre).is_dir() for p in audio_files(root / genre)}
    unlisted = len(on_disk - set(listed))
    if unlisted:  # the filtered lists leave out faulty clips on purpose: counted, not silent
        log.warning("%s: %d of %d clips are in no split list and are left out (the lists' choice)", root, unlisted, len(on_disk))
    return labelled_catalog(items, sorted({label for _, label in items["train"]}), str(split_dir))


def csv_catalog(cfg: dict[str, Any]) -> Catalog:
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


def synthetic_catalog(cfg: dict[str, Any]) -> Catalog:
    catalog = Catalog(list(SYNTHETIC_TAGS), True)
    start = 0
    for split in SPLITS:
        count = int(cfg.get(f"num_{split}", {"train": 1000, "valid": 150, "test": 250}[split]))
        # Keys are generator indices: disjoint ranges, hence disjoint clips across splits.
        catalog.keys[split] = [str(i) for i in range(start, start + count)]
        start += count
    return catalog


CATALOGS: dict[str, Callable[[dict[str, Any]], Catalog]] = {
    "mtat": mtat_catalog,
    "folder": folder_catalog,
    "speech_commands": speech_commands_catalog,
    "esc50": esc50_catalog,
    "urbansound8k": urbansound8k_catalog,
    "gtzan": gtzan_catalog,
    "csv": csv_catalog,
    "synthetic": synthetic_catalog,
}
