"""The point cloud DataModule: a dataset chosen by config, a seeded validation split, rotation protocols.

Config keys (section ``data``):

- ``dataset``: ``synthetic`` | ``modelnet_resampled`` | ``modelnet_mesh`` | ``modelnet_h5`` |
  ``scanobjectnn`` | ``folder`` | ``shapenet_part``; ``root`` for all but ``synthetic``.
- ``num_points``, ``sampling`` (fps | random | first), ``sampling_seed``, ``cache_dir``,
  ``allow_fewer``, ``min_points`` (filled in from the model by the recipe), ``skip_bad``: see :class:`~aug_attn_tasks.points.datasets.PointCloudDataset`.
  Per dataset: ``num_classes`` (10 | 40, modelnet_resampled), ``mesh_points`` (modelnet_mesh,
  folder), ``variant`` (scanobjectnn), ``categories`` (shapenet_part), ``test_fraction`` and
  ``up_axis`` (folder); synthetic: ``num_train``, ``num_test``, ``synthetic_seed`` (train shapes
  are drawn from ``(synthetic_seed, i)``, test shapes from ``(synthetic_seed + 1, i)``),
  ``noise``, ``classes``.
- ``protocol``: ``"train/test"`` rotations, e.g. ``z/SO3`` (see
  :func:`~aug_attn_tasks.points.transforms.rotation_protocol`); ``test_rotations``: the test
  rotations to evaluate, one test dataloader each (default: the protocol's), e.g. ``[z, so3]``
  reports ``z/z`` and ``z/SO3`` from one run; ``rotation_seed``: seeds the fixed rotation of each
  validation and test shape (by its index), so rotated sets are identical across runs and workers.
- ``val_fraction`` and ``split_seed``: the validation split, carved from train per class
  (ShapeNet part uses its official ``val`` list instead). Validation shapes get a fixed rotation
  of the *training* kind: checkpoint selection never sees test data or the test rotation.
- ``augment``: training-only ``scale: [low, high]`` (isotropic) and ``jitter: sigma`` (clipped at 5 sigma).
- ``batch_size``, ``eval_batch_size``, ``num_workers``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset

from aug_attn_tasks.points.datasets import (
    MIN_POINTS,
    ModelNetH5,
    ModelNetMesh,
    ModelNetResampled,
    PointCloudDataset,
    PointFolder,
    ScanObjectNN,
    ShapeNetPart,
    SyntheticShapes,
)
from aug_attn_tasks.config import check_keys
from aug_attn_tasks.loaders import eval_loader, train_loader
from aug_attn_tasks.points.transforms import Compose, Jitter, RandomRotation, RandomScale, rotation_protocol

__all__ = [
    "DATASETS",
    "PointDataModule",
    "TransformedSubset",
    "load_dataset",
    "protocol_name",
    "stratified_split",
    "evaluation_protocols",
]

DATASETS = (
    "synthetic",
    "modelnet_resampled",
    "modelnet_mesh",
    "modelnet_h5",
    "scanobjectnn",
    "folder",
    "shapenet_part",
)
# Every key of the points data section (the loaders', the datasets', the recipe's).
DATA_KEYS = (
    "dataset", "root", "variant", "categories", "test_fraction", "up_axis", "num_train", "num_test", "synthetic_seed",
    "num_points", "noise", "sampling", "sampling_seed", "mesh_points", "min_points", "allow_fewer", "skip_bad", "cache_dir",
    "classes", "num_classes", "protocol", "test_rotations", "rotation_seed", "val_fraction", "split_seed", "augment",
    "batch_size", "eval_batch_size", "num_workers", "use_normals", "class_names",
)  # fmt: skip
# Keys of the data section that do not change which shapes are read.
_LOADER_KEYS = {
    "protocol", "test_rotations", "rotation_seed", "val_fraction", "split_seed", "augment",
    "batch_size", "eval_batch_size", "num_workers", "use_normals", "class_names",
}  # fmt: skip


def protocol_name(train: str, test: str) -> str:
    """``("z", "so3")`` -> ``"z/SO3"``, as papers write it."""
    return "/".join("SO3" if kind == "so3" else kind for kind in (train, test))


def evaluation_protocols(data_cfg: dict[str, Any]) -> list[tuple[str, str]]:
    """``(train, test)`` rotation kinds of every test dataloader, from ``protocol`` and ``test_rotations``."""
    train, test = rotation_protocol(str(data_cfg.get("protocol", "z/SO3")))
    tests = data_cfg.get("test_rotations") or [test]
    return [rotation_protocol(f"{train}/{kind}") for kind in tests]


def _options(cfg: dict[str, Any]) -> dict[str, Any]:
    """The options shared by the file-backed datasets."""
    return {
        "num_points": int(cfg.get("num_points", 1024)),
        "sampling": cfg.get("sampling", "fps"),
        "seed": int(cfg.get("sampling_seed", 0)),
        "allow_fewer": bool(cfg.get("allow_fewer", False)),
        "min_points": int(cfg.get("min_points", MIN_POINTS)),
        "skip_bad": bool(cfg.get("skip_bad", False)),
        "cache_dir": cfg.get("cache_dir"),
    }


def _root(cfg: dict[str, Any]) -> str:
    if not cfg.get("root"):
        raise ValueError(f"data.root is required for data.dataset={cfg.get('dataset')!r}")
    return str(cfg["root"])


@functools.lru_cache(maxsize=2)
def _load(key: str, split: str) -> PointCloudDataset:
    cfg = json.loads(key)
    name = cfg.get("dataset", "synthetic")
    if name == "synthetic":
        train = split == "train"
        return SyntheticShapes(
            num_samples=int(cfg.get("num_train" if train else "num_test", 1400 if train else 700)),
            num_points=int(cfg.get("num_points", 1024)),
            seed=int(cfg.get("synthetic_seed", 0)) + (0 if train else 1),
            classes=cfg.get("classes"),
            noise=float(cfg.get("noise", 0.0)),
        )
    options = _options(cfg)
    if name == "modelnet_resampled":
        return ModelNetResampled(_root(cfg), split, num_classes=int(cfg.get("num_classes", 40)), **options)
    if name == "modelnet_mesh":
        return ModelNetMesh(_root(cfg), split, mesh_points=cfg.get("mesh_points"), **options)
    if name == "modelnet_h5":
        return ModelNetH5(_root(cfg), split, **options)
    if name == "scanobjectnn":
        return ScanObjectNN(_root(cfg), split, variant=cfg.get("variant", "pb_t50_rs"), **options)
    if name == "folder":
        folder = {"test_fraction": float(cfg.get("test_fraction", 0.2)), "up_axis": cfg.get("up_axis", "z")}
        return PointFolder(_root(cfg), split, mesh_points=cfg.get("mesh_points"), **folder, **options)
    if name == "shapenet_part":
        options["num_points"] = int(cfg.get("num_points", 2048))
        return ShapeNetPart(_root(cfg), split, categories=cfg.get("categories"), **options)
    raise ValueError(f"data.dataset={name!r}: expected one of {', '.join(DATASETS)}")


def load_dataset(data_cfg: dict[str, Any], split: str) -> PointCloudDataset:
    """The untransformed dataset of ``data_cfg`` for ``split`` (``train``, ``test``, or ``val`` for
    ShapeNet part); the last two loads are memoised, so building the module and the data of one
    run reads the files once."""
    key = {k: v for k, v in data_cfg.items() if k not in _LOADER_KEYS}
    return _load(json.dumps(key, sort_keys=True), split)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)``: a seeded ``round(fraction * count)`` of each class goes to val."""
    if not 0 < fraction < 1:
        raise ValueError(f"data.val_fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    val = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        val.append(rng.permutation(members)[: round(fraction * len(members))])
    val_idx = np.sort(np.concatenate(val))
    return np.setdiff1d(np.arange(len(labels)), val_idx), val_idx


def _labels(dataset: PointCloudDataset) -> np.ndarray:
    if isinstance(dataset, SyntheticShapes):  # generated on access: labels follow the index
        return np.arange(len(dataset)) % dataset.num_classes
    return dataset.arrays["label"]


class TransformedSubset(Dataset):
    """``dataset[indices[i]]`` passed through ``transform`` (all of ``dataset`` when ``indices`` is None).

    Samples keep their ``index`` in ``dataset``, which seeds per-shape rotations.
    """

    def __init__(
        self,
        dataset: Dataset,
        indices: Sequence[int] | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.dataset, self.transform = dataset, transform
        self.indices = list(range(len(dataset))) if indices is None else [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = self.dataset[self.indices[i]]
        return self.transform(sample) if self.transform is not None else sample


class PointDataModule(L.LightningDataModule):
    """Train / validation / one test dataloader per test rotation, from the ``data`` config section.

    Attributes: ``class_names``, ``up_axis``, ``protocols`` (``(train, test)`` kinds of the test loaders).
    """

    def __init__(self, data_cfg: dict[str, Any]) -> None:
        super().__init__()
        self.cfg = dict(data_cfg)
        check_keys("data", self.cfg, DATA_KEYS)
        if self.cfg.get("dataset", "synthetic") not in DATASETS:
            raise ValueError(f"data.dataset={self.cfg.get('dataset')!r}: expected one of {', '.join(DATASETS)}")
        self.protocols = evaluation_protocols(self.cfg)
        self.train_rotation = self.protocols[0][0]
        self.rotation_seed = int(self.cfg.get("rotation_seed", 0))
        self._train = load_dataset(self.cfg, "train")
        self.class_names, self.up_axis = self._train.class_names, self._train.up_axis
        self.train_set: Dataset | None = None

    def _augment(self) -> Compose:
        steps: list[Callable[[dict[str, Any]], dict[str, Any]]] = [RandomRotation(self.train_rotation, self.up_axis)]
        augment = self.cfg.get("augment") or {}
        if "scale" in augment:
            low, high = augment["scale"]
            steps.append(RandomScale(float(low), float(high)))
        if augment.get("jitter"):
            sigma = float(augment["jitter"])
            steps.append(Jitter(sigma, 5 * sigma))
        return Compose(steps)

    def _fixed(self, kind: str) -> RandomRotation:
        return RandomRotation(kind, self.up_axis, seed=self.rotation_seed)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if self.cfg.get("dataset") == "shapenet_part":
            train_idx, val_base, val_idx = None, load_dataset(self.cfg, "val"), None
        else:
            seed = int(self.cfg.get("split_seed", 0))
            train_idx, val_idx = stratified_split(_labels(self._train), float(self.cfg.get("val_fraction", 0.1)), seed)
            val_base = self._train
        self.train_set = TransformedSubset(self._train, train_idx, self._augment())
        self.val_set = TransformedSubset(val_base, val_idx, self._fixed(self.train_rotation))
        test = load_dataset(self.cfg, "test")
        self.test_sets = [TransformedSubset(test, None, self._fixed(kind)) for _, kind in self.protocols]

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        return eval_loader(dataset, int(self.cfg.get("eval_batch_size", 64)), int(self.cfg.get("num_workers", 0)))

    def train_dataloader(self) -> DataLoader:
        return train_loader(self.train_set, int(self.cfg.get("batch_size", 32)), int(self.cfg.get("num_workers", 0)))

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> list[DataLoader]:
        return [self._eval_loader(dataset) for dataset in self.test_sets]
