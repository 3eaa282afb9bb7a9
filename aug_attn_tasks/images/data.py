"""Image data for the ``images`` recipe: splits, batched augmentation and normalization in pure torch.

Datasets (``data.dataset``): ``synthetic``, ``cifar10`` / ``cifar100`` (:mod:`~aug_attn_tasks.images.cifar`),
``imagefolder`` (PNG/JPEG files, :mod:`~aug_attn_tasks.images.folder`).

Validation split (unless an image folder has a ``valid/`` split): ``data.val_size`` images (an int, or a fraction of the training set) are carved
from the **training** set by a permutation seeded with ``data.split_seed``, so checkpoint
selection never sees the test set; the test split is only used by ``trainer.test``.
``data.val_size: 0`` trains on the whole training set without validation, the papers' protocol:
the model tested is then the last epoch's (see :attr:`ImageDataModule.has_validation`).
Normalization uses the per-channel mean/std of the remaining training images.
Augmentation (training batches only): random crop with ``data.crop_padding`` zero pixels of padding
and a horizontal flip with probability 0.5, the standard CIFAR recipe.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from aug_attn_tasks.config import check_keys
from aug_attn_tasks.images.cifar import CIFAR_LAYOUTS, load_cifar
from aug_attn_tasks.images.folder import imagefolder_classes, load_imagefolder
from aug_attn_tasks.images.synthetic import SYNTHETIC_CLASSES, synthetic_images
from aug_attn_tasks.loaders import eval_loader, train_loader

__all__ = ["ImageDataModule", "random_crop_flip", "channel_stats", "normalize_images", "num_classes_of", "class_names_of"]


def normalize_images(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``(B, 3, H, W)`` uint8 -> float32 in [0, 1], standardized per channel by ``mean``, ``std`` ``(3,)``:
    what training feeds the model and what inference must feed it too."""
    x = images.float() / 255
    return (x - mean[:, None, None]) / std[:, None, None]


def random_crop_flip(images: Tensor, padding: int, generator: torch.Generator | None = None) -> Tensor:
    """Random ``H x W`` crop of the zero-padded images and a random horizontal flip, per sample.

    Args:
        images: ``(B, C, H, W)`` float or uint8.
        padding: pixels of zero padding on each side (crop offsets in ``0..2 * padding``).
        generator: random source (default: torch's global one, seeded by ``seed_everything``).

    Returns:
        ``(B, C, H, W)``, same dtype.
    """
    batch, _, height, width = images.shape
    device = images.device
    flip = torch.rand(batch, generator=generator, device=device) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    if padding <= 0:
        return images
    padded = torch.nn.functional.pad(images, (padding,) * 4)  # (B, C, H + 2p, W + 2p)
    dy = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=device)
    dx = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=device)
    rows = (dy[:, None] + torch.arange(height, device=device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(width, device=device))[:, None, None, :]  # (B, 1, 1, W)
    index = torch.arange(batch, device=device)[:, None, None, None]
    channels = torch.arange(images.shape[1], device=device)[None, :, None, None]
    return padded[index, channels, rows, cols]  # (B, C, H, W)


def channel_stats(images: Tensor, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std ``(C,)`` of uint8 images ``(N, C, H, W)`` in [0, 1] units (chunked, float64)."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].to(torch.float64) / 255
        total += x.sum(dim=(0, 2, 3))
        squares += (x**2).sum(dim=(0, 2, 3))
    count = images.numel() / images.shape[1]
    mean = total / count
    return mean.float(), (squares / count - mean**2).clamp_min(1e-12).sqrt().float()


def num_classes_of(data_cfg: dict[str, Any]) -> int:
    """Number of classes of the configured dataset."""
    return len(class_names_of(data_cfg))


def class_names_of(data_cfg: dict[str, Any]) -> list[str]:
    """Class names: ``data.class_names`` when set (checkpoints of image folders carry them), else the
    dataset's (the synthetic set's, an image folder's class folders; CIFAR: the label indices)."""
    if "class_names" in data_cfg:
        return list(data_cfg["class_names"])
    dataset = data_cfg.get("dataset", "synthetic")
    if dataset == "synthetic":
        return list(SYNTHETIC_CLASSES)
    if dataset == "imagefolder":
        return imagefolder_classes(data_cfg)
    if dataset in CIFAR_LAYOUTS:
        return [str(i) for i in range(CIFAR_LAYOUTS[dataset].num_classes)]
    raise ValueError(f"data.dataset={dataset!r}: expected synthetic, imagefolder, {', '.join(CIFAR_LAYOUTS)}")


# Every key of the images data section.
DATA_KEYS = (
    "dataset", "root", "image_size", "resize", "test_size", "num_train", "num_test", "synthetic_seed", "val_size",
    "split_seed", "batch_size", "eval_batch_size", "num_workers", "augment", "crop_padding", "class_names",
)  # fmt: skip


class ImageDataModule(L.LightningDataModule):
    """Train/val/test loaders of uint8 images; batches become normalized float after transfer.

    ``data`` config keys: ``dataset`` (synthetic | cifar10 | cifar100 | imagefolder), ``root`` (CIFAR location, see
    :func:`~aug_attn_tasks.images.cifar.load_cifar`, or the image folder), ``image_size``, ``resize``,
    ``test_size`` (image folders), ``num_train`` / ``num_test`` / ``image_size``
    ``synthetic_seed`` (synthetic), ``val_size``, ``split_seed``, ``batch_size``, ``eval_batch_size``, ``num_workers``,
    ``augment``, ``crop_padding``.

    Batches: ``(images (B, 3, H, W) float32 normalized, labels (B,) int64)``.
    """

    def __init__(self, cfg: dict[str, Any], seed: int = 0) -> None:
        super().__init__()
        check_keys("data", cfg, DATA_KEYS)
        self.cfg, self.seed = cfg, seed
        self.num_classes = num_classes_of(cfg)
        self.splits: dict[str, TensorDataset] = {}
        val_size = cfg.get("val_size", 0.1)
        if isinstance(val_size, bool) or not isinstance(val_size, (int, float)) or val_size < 0:
            raise ValueError(f"data.val_size={val_size!r}: expected a count (int), a fraction (float) or 0 for no validation")
        #: False with ``val_size: 0``; :func:`aug_attn_tasks.train.fit` then skips validation and
        #: tests the last checkpoint.
        self.has_validation = val_size != 0

    def _load(self) -> dict[str, tuple[Tensor, Tensor]]:
        """``split -> (images (N, 3, H, W) uint8, labels (N,))`` for train and test (and val, when given)."""
        cfg = self.cfg
        dataset = cfg.get("dataset", "synthetic")
        if dataset == "synthetic":
            size, base = int(cfg.get("image_size", 32)), 2 * int(cfg.get("synthetic_seed", 0))
            # Different seeds per split so that test images are new draws, not copies of training ones.
            train = synthetic_images(int(cfg.get("num_train", 5000)), base + 1, size)
            test = synthetic_images(int(cfg.get("num_test", 2000)), base + 2, size)
            return {"train": train, "test": test}
        if dataset == "imagefolder":
            return load_imagefolder(cfg)
        if "root" not in cfg:
            raise ValueError(f"data.root is required for data.dataset={dataset} (the archive or its folder)")
        train, test = load_cifar(cfg["root"], dataset, "train"), load_cifar(cfg["root"], dataset, "test")
        return {"train": (train.images, train.labels), "test": (test.images, test.labels)}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        loaded = self._load()
        train_x, train_y = loaded["train"]
        if "val" in loaded:  # the dataset's own validation split
            val_x, val_y = loaded["val"]
        else:
            val_size = self.cfg.get("val_size", 0.1)
            n_val = int(round(val_size * len(train_x))) if isinstance(val_size, float) else int(val_size)
            if self.has_validation and not 0 < n_val < len(train_x):
                raise ValueError(f"data.val_size={val_size} must leave images for both train and validation (or be 0: no validation)")
            order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(int(self.cfg.get("split_seed", 0))))
            val_idx, train_idx = order[:n_val], order[n_val:]
            val_x, val_y, train_x, train_y = train_x[val_idx], train_y[val_idx], train_x[train_idx], train_y[train_idx]
        self.mean, self.std = channel_stats(train_x)
        self.splits = {
            "train": TensorDataset(train_x, train_y),
            "val": TensorDataset(val_x, val_y),
            "test": TensorDataset(*loaded["test"]),
        }

    def train_dataloader(self) -> DataLoader:
        workers = int(self.cfg.get("num_workers", 0))
        return train_loader(self.splits["train"], int(self.cfg.get("batch_size", 128)), workers, seed=self.seed)

    def val_dataloader(self) -> DataLoader | list:
        if not self.has_validation:
            return []  # fit() also sets limit_val_batches=0
        return eval_loader(self.splits["val"], int(self.cfg.get("eval_batch_size", 256)), int(self.cfg.get("num_workers", 0)))

    def test_dataloader(self) -> DataLoader:
        return eval_loader(self.splits["test"], int(self.cfg.get("eval_batch_size", 256)), int(self.cfg.get("num_workers", 0)))

    def on_after_batch_transfer(self, batch: list[Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        images, labels = batch
        if self.trainer is not None and self.trainer.training and self.cfg.get("augment", True):
            images = random_crop_flip(images, int(self.cfg.get("crop_padding", 4)))
        return normalize_images(images, self.mean.to(images.device), self.std.to(images.device)), labels
