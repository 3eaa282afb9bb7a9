"""CIFAR-10 / CIFAR-100 from the python-version archives the user already has (never downloaded).

Accepted layouts for ``root`` (the archive or folder itself, or a directory holding one of them):

- CIFAR-10: ``cifar-10-python.tar.gz`` or ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``
- CIFAR-100: ``cifar-100-python.tar.gz`` or ``cifar-100-python/{train, test, meta}``

Each batch is a pickle of a dict with ``b'data'`` (``(N, 3072)`` uint8, channel-major 32x32) and
``b'labels'`` (CIFAR-10) or ``b'fine_labels'`` / ``b'coarse_labels'`` (CIFAR-100). Pickles are read
with an unpickler that only admits numpy array reconstruction, so a foreign file cannot run code.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["CIFAR_LAYOUTS", "CifarSplit", "load_cifar"]


@dataclass(frozen=True)
class _Layout:
    archive: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: bytes
    names_key: bytes
    num_classes: int


CIFAR_LAYOUTS = {
    "cifar10": _Layout(
        "cifar-10-python.tar.gz",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "batches.meta",
        b"labels",
        b"label_names",
        10,
    ),
    "cifar100": _Layout(
        "cifar-100-python.tar.gz", "cifar-100-python", ("train",), ("test",), "meta", b"fine_labels", b"fine_label_names", 100
    ),
}

_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays; refuses any other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


@dataclass
class CifarSplit:
    """One split: ``images`` ``(N, 3, 32, 32)`` uint8, ``labels`` ``(N,)`` int64, ``classes`` names."""

    images: Tensor
    labels: Tensor
    classes: list[str]


def _unpickle(raw: bytes, where: str) -> dict:
    try:
        obj = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as error:  # truncated or foreign pickles raise many types
        raise ValueError(f"{where}: corrupt CIFAR batch file ({type(error).__name__}: {error})") from error
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: corrupt CIFAR batch file (expected a dict, got {type(obj).__name__})")
    return obj


def _parse_batch(obj: dict, layout: _Layout, where: str) -> tuple[Tensor, Tensor]:
    if b"data" not in obj or layout.label_key not in obj:
        raise ValueError(
            f"{where}: not a CIFAR batch of this dataset (needs keys b'data' and {layout.label_key!r}, "
            f"has {list(obj)[:8]})"
        )
    data, labels = np.asarray(obj[b"data"]), np.asarray(obj[layout.label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise ValueError(
            f"{where}: corrupt CIFAR batch (data {data.dtype} {data.shape}, {len(labels)} labels; "
            "expected uint8 (N, 3072) and N labels)"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= layout.num_classes):
        raise ValueError(f"{where}: labels outside 0..{layout.num_classes - 1}")
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(labels.astype(np.int64))


class _Source:
    """Reads member files from an extracted folder or from the tar.gz archive."""

    def __init__(self, root: Path, layout: _Layout) -> None:
        candidates = [root, root / layout.folder, root / layout.archive]
        for path in candidates:
            if path.is_dir() and (path / layout.meta).is_file():
                self.folder, self.archive = path, None
                return
            if path.is_file():
                self.folder, self.archive = None, path
                return
        raise FileNotFoundError(
            f"no CIFAR data at {root}: expected {layout.archive} or {layout.folder}/ (with {layout.meta}) there; "
            "download it yourself from https://www.cs.toronto.edu/~kriz/cifar.html (the python version)"
        )

    def read(self, names: list[str]) -> list[tuple[bytes, str]]:
        """Bytes of each member in ``names`` with a description naming its file, for errors."""
        if self.folder is not None:
            out = []
            for name in names:
                path = self.folder / name
                if not path.is_file():
                    raise FileNotFoundError(f"{path}: missing CIFAR batch file")
                out.append((path.read_bytes(), str(path)))
            return out
        assert self.archive is not None
        try:
            # One sequential pass: reopening or seeking back in a .tar.gz decompresses it again.
            found: dict[str, tuple[bytes, str]] = {}
            seen: list[str] = []
            with tarfile.open(self.archive, "r:gz") as tar:
                for member in tar:
                    name = Path(member.name).name
                    seen.append(name)
                    if member.isfile() and name in names and name not in found:
                        handle = tar.extractfile(member)
                        assert handle is not None
                        found[name] = (handle.read(), f"{self.archive}:{member.name}")
            missing = [name for name in names if name not in found]
            if missing:
                raise ValueError(
                    f"{self.archive}: wrong archive, no member {missing[0]!r} (has {sorted(seen)[:8]}); "
                    "is it the python version of the right CIFAR dataset?"
                )
            return [found[name] for name in names]
        except (tarfile.TarError, OSError, EOFError) as error:
            raise ValueError(f"{self.archive}: not a readable .tar.gz CIFAR archive ({error})") from error


def load_cifar(root: str | Path, dataset: str = "cifar10", split: str = "train") -> CifarSplit:
    """Load a CIFAR split.

    Args:
        root: the archive, the extracted folder, or a directory containing either.
        dataset: ``"cifar10"`` or ``"cifar100"`` (fine labels).
        split: ``"train"`` (50,000 images) or ``"test"`` (10,000).

    Raises:
        FileNotFoundError: nothing CIFAR-like at ``root``.
        ValueError: a wrong archive or a corrupt batch; the message names the file.
    """
    if dataset not in CIFAR_LAYOUTS:
        raise ValueError(f"dataset={dataset!r}: expected one of {', '.join(CIFAR_LAYOUTS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}: expected 'train' or 'test'")
    layout = CIFAR_LAYOUTS[dataset]
    batches = layout.train if split == "train" else layout.test
    (raw, where), *files = _Source(Path(root), layout).read([layout.meta, *batches])
    meta = _unpickle(raw, where)
    if layout.names_key not in meta:
        raise ValueError(f"{where}: wrong meta file, no key {layout.names_key!r} (has {list(meta)[:8]})")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[layout.names_key]]
    images, labels = [], []
    for raw, where in files:
        x, y = _parse_batch(_unpickle(raw, where), layout, where)
        images.append(x)
        labels.append(y)
    return CifarSplit(torch.cat(images), torch.cat(labels), classes)
