"""Image files: decoding with Pillow, and the ``imagefolder`` layout of the ``images`` recipe.

Layouts (``data.root``):

- ``<root>/<class>/*.png|jpg|jpeg``: split per class, seeded by ``data.split_seed``, with
  ``data.test_size`` (a fraction, default 0.2) of each class for test;
- ``<root>/train/<class>/...`` and ``<root>/test/<class>/...``, with an optional ``<root>/valid/``
  (``val`` also accepted) that then replaces the validation split carved from train.

Classes are the sorted names of the class folders that hold images (hidden folders are not classes).
Every image is decoded as PNG or JPEG (Pillow's other formats refused), turned upright by its EXIF
orientation, brought to 8-bit RGB (16-bit grey scaled from its full range) and resized as ``data.resize`` says: ``crop`` (default) scales the
shorter side to ``data.image_size`` and takes the centre square, ``stretch`` resizes to a square.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

__all__ = ["IMAGE_SUFFIXES", "ImageDecodeError", "load_image", "imagefolder_classes", "load_imagefolder"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_FORMATS = ("PNG", "JPEG")  # what Pillow may read them as: a TIFF or a PSD named .png is refused
RESIZE_MODES = ("crop", "stretch")
_SPLIT_FOLDERS = {"train": ("train",), "val": ("valid", "val"), "test": ("test",)}


class ImageDecodeError(ValueError):
    """An image file could not be decoded; the message names the file."""


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB. Pillow's ``convert("RGB")`` clips 16-bit and 32-bit grey (modes ``I;16``, ``I``)
    at 255, so a 16-bit PNG would come out solid white: those are scaled from their full range
    (65535, or the image's maximum for 32-bit integers beyond it) down to 8 bits first."""
    if image.mode.startswith("I"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max(initial=0) <= 65535 else float(values.max())
        image = Image.fromarray(np.clip(np.round(values / top * 255), 0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


def load_image(path: str | Path, size: int, resize: str = "crop") -> Tensor:
    """Decode ``path`` (PNG or JPEG, whatever its name says; EXIF orientation applied; 16-bit grey
    scaled, not clipped) to RGB and resize it to ``(3, size, size)`` uint8 (see the module doc for
    ``resize``)."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"data.resize={resize!r}: expected one of {', '.join(RESIZE_MODES)}")
    try:
        with Image.open(path, formats=IMAGE_FORMATS) as image:
            image = _to_rgb(ImageOps.exif_transpose(image))
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as error:
        raise ImageDecodeError(f"{path}: cannot decode image ({error})") from error
    width, height = image.size
    if resize == "stretch":
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    else:
        scale = size / min(width, height)
        new = (max(size, round(width * scale)), max(size, round(height * scale)))
        image = image.resize(new, Image.Resampling.BILINEAR)
        left, top = (new[0] - size) // 2, (new[1] - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)  # (3, size, size)


def _split_roots(root: Path) -> dict[str, Path]:
    """The split folders of ``root`` (train and test both needed), else ``{}`` (one folder of classes)."""
    found = {}
    for split, names in _SPLIT_FOLDERS.items():
        for name in names:
            if (root / name).is_dir():
                found[split] = root / name
                break
    return found if {"train", "test"} <= set(found) else {}


def _class_folders(root: Path) -> dict[str, list[Path]]:
    """``class name -> sorted image files`` of the class folders under ``root`` that hold images."""
    classes = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            classes[folder.name] = files
        else:
            logger.warning("%s: no image files (%s), not a class", folder, ", ".join(IMAGE_SUFFIXES))
    return classes


def _scan(cfg: dict[str, Any]) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """Class names and ``split -> [(file, label)]`` of the configured image folder."""
    if "root" not in cfg:
        raise ValueError("data.root is required for data.dataset=imagefolder (a folder of <class>/ image folders)")
    root = Path(cfg["root"])
    if not root.is_dir():
        raise FileNotFoundError(f"data.root={root}: no such folder")
    splits = _split_roots(root)
    if splits:
        per_split = {split: _class_folders(folder) for split, folder in splits.items()}
        names = sorted(per_split["train"])
        for split, classes in per_split.items():
            unknown = sorted(set(classes) - set(names))
            if unknown:
                raise ValueError(f"{splits[split]}: classes {unknown} are not in {splits['train']}")
        index = {name: i for i, name in enumerate(names)}
        return names, {s: [(f, index[c]) for c, files in cl.items() for f in files] for s, cl in per_split.items()}
    classes = _class_folders(root)
    names = sorted(classes)
    test_size = float(cfg.get("test_size", 0.2))
    if not 0 < test_size < 1:
        raise ValueError(f"data.test_size={test_size}: expected a fraction in (0, 1)")
    rng = np.random.default_rng(int(cfg.get("split_seed", 0)))
    out: dict[str, list[tuple[Path, int]]] = {"train": [], "test": []}
    for label, name in enumerate(names):
        files = classes[name]
        order = rng.permutation(len(files))
        n_test = max(1, int(round(test_size * len(files)))) if len(files) > 1 else 0
        out["test"] += [(files[i], label) for i in sorted(order[:n_test])]
        out["train"] += [(files[i], label) for i in sorted(order[n_test:])]
    return names, out


def imagefolder_classes(cfg: dict[str, Any]) -> list[str]:
    """The class names of the ``data`` section's image folder."""
    names, _ = _scan(cfg)
    if not names:
        raise ValueError(f"{cfg['root']}: no class folders with images ({', '.join(IMAGE_SUFFIXES)})")
    return names


def load_imagefolder(cfg: dict[str, Any]) -> dict[str, tuple[Tensor, Tensor]]:
    """``split -> (images (N, 3, S, S) uint8, labels (N,) int64)`` for train, test and, with a
    ``valid/`` folder, val. An undecodable file raises :class:`ImageDecodeError` naming it."""
    names, splits = _scan(cfg)
    expected = cfg.get("class_names")
    if expected is not None and list(expected) != names:
        raise ValueError(f"{cfg['root']}: classes {names} differ from the checkpoint's {list(expected)}")
    size, resize = int(cfg.get("image_size", 32)), str(cfg.get("resize", "crop"))
    out = {}
    for split, items in splits.items():
        if not items:
            raise ValueError(f"{cfg['root']}: no images for the {split} split")
        images = torch.stack([load_image(path, size, resize) for path, _ in items])
        out[split] = (images, torch.tensor([label for _, label in items], dtype=torch.long))
    return out
