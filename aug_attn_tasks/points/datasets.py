"""Point cloud datasets: ModelNet (3 layouts), ScanObjectNN, ShapeNet part, a user folder, synthetic shapes.

Every dataset returns samples ``{"pos": (N, 3) float32, "normal": (N, 3) float32 (or (N, 0) when the
data has no normals, see ``has_normals``), "label": () int64, "index": () int64}``; ShapeNet part adds
``"part": (N,) int64`` and ``"category": () int64``. ``N = num_points``: shapes are subsampled by
farthest point sampling (``"fps"``, :func:`aug_attn.geometry.farthest_point_sample`, deterministic),
a random subset (``"random"``, seeded per shape by ``(seed, index)``) or the first points (``"first"``),
then centred on their mean and scaled into the unit sphere.

File-backed datasets read every shape once at construction (an error names the first bad file, or
``skip_bad=True`` logs and lists each skipped file in ``dataset.skipped``) and, with ``cache_dir``,
store the result in a ``.npz`` with a ``.json`` manifest (files with sizes and mtimes, parameters,
cache version); a manifest that no longer matches rebuilds the cache. Nothing is dropped silently.

ModelNet meshes are read by our own OFF reader, not ``torch_geometric.datasets.ModelNet``: PyG's reader
rejects comments and blank lines and its ``SamplePoints`` draws from the global RNG; here sampling
is seeded per shape and cached with a verifiable manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from aug_attn.optional import import_extra
from aug_attn_tasks.cache import load_arrays, save_arrays
from aug_attn_tasks.points.io import POINT_SUFFIXES, load_point_cloud, read_txt
from aug_attn_tasks.points.prepare import MIN_POINTS, SAMPLINGS, RawCloud, normalize_unit_sphere, subsample_shape
from aug_attn_tasks.points.synthetic import SHAPES
from aug_attn_tasks.points.transforms import rotation_about_axis

__all__ = [
    "CACHE_VERSION",
    "MIN_POINTS",
    "ModelNetH5",
    "ModelNetMesh",
    "ModelNetResampled",
    "PointCloudDataset",
    "PointFolder",
    "SCANOBJECTNN_CLASSES",
    "SHAPENET_PARTS",
    "ScanObjectNN",
    "ShapeNetPart",
    "SyntheticShapes",
    "RawCloud",
    "normalize_unit_sphere",
    "subsample_shape",
]

logger = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: the manifest holds class names and labels
SCANOBJECTNN_CLASSES = (
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door",
    "shelf", "table", "bed", "pillow", "sink", "sofa", "toilet",
)  # fmt: skip
# The standard ShapeNet part benchmark: category -> its global part ids (50 in all); the category
# index is the position in this (alphabetical) order, as in the PointNet++ / DGCNN code.
SHAPENET_PARTS: dict[str, tuple[int, ...]] = {
    "Airplane": (0, 1, 2, 3), "Bag": (4, 5), "Cap": (6, 7), "Car": (8, 9, 10, 11),
    "Chair": (12, 13, 14, 15), "Earphone": (16, 17, 18), "Guitar": (19, 20, 21), "Knife": (22, 23),
    "Lamp": (24, 25, 26, 27), "Laptop": (28, 29), "Motorbike": (30, 31, 32, 33, 34, 35), "Mug": (36, 37),
    "Pistol": (38, 39, 40), "Rocket": (41, 42, 43), "Skateboard": (44, 45, 46), "Table": (47, 48, 49),
}  # fmt: skip
SCANOBJECTNN_VARIANTS = {  # variant -> (folder, file suffix)
    "obj_bg": ("main_split", ""),
    "obj_only": ("main_split_nobg", ""),
    "pb_t50_rs": ("main_split", "_augmentedrot_scale75"),
}


class Source(NamedTuple):
    """A shape to read: ``name`` (the file, named in errors), ``label``, ``read(rng) -> RawCloud``."""

    name: str
    label: int
    read: Callable[[np.random.Generator], RawCloud]


class PointCloudDataset(Dataset):
    """Base class: holds the options and turns arrays into sample dicts (see the module docstring).

    Args (keyword-only, shared by all datasets):
        num_points: points per shape ``N``.
        sampling: ``"fps"``, ``"random"`` or ``"first"``.
        seed: seeds the subsampling (and mesh sampling) of shape ``i`` as ``(seed, i)``.
        allow_fewer: shapes with fewer than ``N`` points repeat points (logged) instead of raising.
        min_points: shapes with fewer distinct points are refused, whatever ``allow_fewer``.
        skip_bad: skip unreadable or invalid shapes (logged, listed in ``skipped``) instead of raising.
        cache_dir: where to cache the prepared arrays (None: no cache).
        transform: applied to each sample dict (see ``transforms``).
    Attributes:
        class_names, has_normals, up_axis (``"y"`` or ``"z"``: the vertical axis of the data),
        skipped: ``[(file, reason), ...]``.
    """

    def __init__(
        self,
        *,
        num_points: int = 1024,
        sampling: str = "fps",
        seed: int = 0,
        allow_fewer: bool = False,
        min_points: int = MIN_POINTS,
        skip_bad: bool = False,
        cache_dir: str | Path | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        if num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        self.num_points, self.sampling, self.seed = num_points, sampling, seed
        self.allow_fewer, self.min_points, self.skip_bad, self.transform = allow_fewer, min_points, skip_bad, transform
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.class_names: list[str] = []
        self.up_axis = "y"
        self.has_normals = True
        self.skipped: list[tuple[str, str]] = []
        self.arrays: dict[str, np.ndarray] = {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.arrays["label"])

    def _arrays(self, index: int) -> dict[str, np.ndarray]:
        """The prepared arrays of shape ``index``: pos, normal, label (and part)."""
        return {key: value[index] for key, value in self.arrays.items() if key != "name"}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {type(self).__name__} of length {len(self)}")
        index = index % len(self)
        arrays = self._arrays(index)
        sample = {
            "pos": torch.tensor(arrays["pos"], dtype=torch.float32),  # (N, 3), a copy
            "normal": torch.tensor(arrays["normal"], dtype=torch.float32),  # (N, 3) or (N, 0)
            "label": torch.tensor(int(arrays["label"]), dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
        }
        if "part" in arrays:
            sample["part"] = torch.tensor(arrays["part"], dtype=torch.int64)  # (N,)
            sample["category"] = sample["label"]
        return self.transform(sample) if self.transform is not None else sample

    def _materialise(self, sources: list[Source], files: list[Path], cache_name: str, params: dict) -> None:
        """Read and prepare every source into ``self.arrays``, through the cache when there is one."""
        params = {
            **params,
            "num_points": self.num_points,
            "sampling": self.sampling,
            "seed": self.seed,
            "allow_fewer": self.allow_fewer,
            "min_points": self.min_points,
            "skip_bad": self.skip_bad,
        }
        manifest = {
            "version": CACHE_VERSION,
            "params": params,
            "files": [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files],
            # Class lists come from list files and folders: a changed list relabels the cached shapes.
            "class_names": list(self.class_names),
            "labels": [[source.name, int(source.label)] for source in sources],
        }
        digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
        cache = self.cache_dir / f"{cache_name}_{digest}" if self.cache_dir is not None else None
        if cache is None or not self._load_cache(cache, manifest):
            self.arrays, self.skipped = self._prepare_all(sources)
            if cache is not None:
                save_arrays(cache, self.arrays, manifest, skipped=self.skipped)
        self.has_normals = self.arrays["normal"].shape[-1] == 3

    def _prepare_all(self, sources: list[Source]) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
        prepared, names, labels, skipped = [], [], [], []
        for i, source in enumerate(sources):
            rng = np.random.default_rng([self.seed, i])
            try:
                cloud = subsample_shape(
                    source.read(rng), source.name, self.num_points, self.sampling, rng, self.allow_fewer, self.min_points
                )
            except (ValueError, OSError) as err:
                reason = str(err) if source.name in str(err) else f"{source.name}: {err}"
                if not self.skip_bad:
                    raise ValueError(reason) from err
                logger.warning("skipping %s", reason)
                skipped.append((source.name, reason))
                continue
            prepared.append(cloud)
            names.append(source.name)
            labels.append(source.label)
        if skipped:
            logger.warning("%s: skipped %d of %d shapes", type(self).__name__, len(skipped), len(sources))
        if not prepared:
            raise ValueError(f"{type(self).__name__}: no usable shapes ({len(skipped)} skipped)")
        with_normals = [cloud.normal is not None for cloud in prepared]
        if not all(with_normals) and any(with_normals):
            lacking = names[with_normals.index(False)]
            count = with_normals.count(False)
            logger.warning("%d files have no normals (e.g. %s): normals dropped for all", count, lacking)
        arrays = {
            "pos": np.stack([c.pos for c in prepared]).astype(np.float32),  # (S, N, 3)
            "normal": (
                np.stack([c.normal for c in prepared]).astype(np.float32)
                if all(with_normals)
                else np.zeros((len(prepared), self.num_points, 0), np.float32)
            ),  # (S, N, 3) or (S, N, 0)
            "label": np.asarray(labels, dtype=np.int64),  # (S,)
            "name": np.asarray(names),  # (S,)
        }
        if prepared[0].part is not None:
            arrays["part"] = np.stack([c.part for c in prepared]).astype(np.int64)  # (S, N)
        return arrays, skipped

    def _load_cache(self, cache: Path, manifest: dict) -> bool:
        """Use ``cache.npz`` when ``cache.json`` matches ``manifest`` (:func:`~aug_attn_tasks.cache.load_arrays`)."""
        loaded = load_arrays(cache, manifest, logger, type(self).__name__)
        if loaded is None:
            return False
        self.arrays, stored = loaded
        self.skipped = [tuple(item) for item in stored["skipped"]]
        for name, reason in self.skipped:
            logger.warning("skipped (cached decision) %s", reason)
        return True


def _file_source(path: Path, label: int, mesh_points: int, mesh: bool = False) -> Source:
    """A shape read from a point or mesh file by :func:`load_point_cloud` (``mesh``: must have faces)."""
    return Source(str(path), label, lambda rng: RawCloud(*load_point_cloud(path, mesh_points, rng, mesh)))


def _check_split(split: str, allowed: tuple[str, ...]) -> None:
    if split not in allowed:
        raise ValueError(f"split must be one of {allowed}, got {split!r}")


def _read_lines(path: Path) -> list[str]:
    """Non-blank stripped lines of a list file; the error names the file."""
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError as err:
        raise ValueError(f"{path}: cannot read list file ({err})") from err


class ModelNetMesh(PointCloudDataset):
    """ModelNet40/10 meshes, ``<root>/<class>/{train,test}/<class>_NNNN.off``, z up.

    Each mesh is sampled area-weighted with ``mesh_points`` points (default ``num_points``) and face
    normals, then subsampled to ``num_points``. Classes are the sorted folders of ``root``. Use a
    ``cache_dir``: sampling the 12,311 ModelNet40 meshes takes minutes.
    """

    def __init__(self, root: str | Path, split: str = "train", mesh_points: int | None = None, **options: Any):
        super().__init__(**options)
        _check_split(split, ("train", "test"))
        root = Path(root)
        self.up_axis = "z"
        folders = sorted(root.iterdir()) if root.is_dir() else []
        self.class_names = [d.name for d in folders if (d / "train").is_dir() or (d / "test").is_dir()]
        files = [
            (f, label) for label, c in enumerate(self.class_names) for f in sorted((root / c / split).glob("*.off"))
        ]
        if not files:
            raise ValueError(f"{root}: no <class>/{split}/*.off files")
        mesh_points = mesh_points or self.num_points
        sources = [_file_source(f, label, mesh_points, mesh=True) for f, label in files]
        params = {"root": str(root), "mesh_points": mesh_points}
        self._materialise(sources, [f for f, _ in files], f"modelnet_mesh_{split}", params)


class ModelNetResampled(PointCloudDataset):
    """``modelnet40_normal_resampled``: ``<root>/<class>/<class>_NNNN.txt`` (lines ``x,y,z,nx,ny,nz``),
    ``modelnet{40,10}_shape_names.txt`` and ``modelnet{40,10}_{train,test}.txt`` (ids ``airplane_0001``); y up.
    """

    def __init__(self, root: str | Path, split: str = "train", num_classes: int = 40, **options: Any):
        super().__init__(**options)
        _check_split(split, ("train", "test"))
        if num_classes not in (10, 40):
            raise ValueError(f"num_classes must be 10 or 40, got {num_classes}")
        root = Path(root)
        self.class_names = _read_lines(root / f"modelnet{num_classes}_shape_names.txt")
        list_file = root / f"modelnet{num_classes}_{split}.txt"
        label_of = {name: i for i, name in enumerate(self.class_names)}
        sources, files = [], []
        for shape_id in _read_lines(list_file):
            class_name = shape_id.rsplit("_", 1)[0]  # class names contain '_' (night_stand_0001)
            if class_name not in label_of:
                raise ValueError(f"{list_file}: {shape_id!r} is of no class in modelnet{num_classes}_shape_names.txt")
            path = root / class_name / f"{shape_id}.txt"
            files.append(path)
            sources.append(_file_source(path, label_of[class_name], 0))
        existing = [f for f in files if f.exists()]  # missing files fail (or are skipped) when read
        self._materialise(sources, existing, f"modelnet{num_classes}_resampled_{split}", {"root": str(root)})


def _read_h5(path: Path, normal_key: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``data (S, P, 3)``, ``label (S,)`` and ``normal (S, P, 3)`` (when ``normal_key`` is in the file)."""
    h5py = import_extra("h5py", "h5", "reading .h5 point clouds")
    try:
        with h5py.File(path, "r") as f:
            data, label = np.asarray(f["data"]), np.asarray(f["label"]).reshape(-1)
            normal = np.asarray(f[normal_key]) if normal_key is not None and normal_key in f else None
    except (OSError, KeyError) as err:
        raise ValueError(f"{path}: cannot read 'data'/'label' from HDF5 file ({err})") from err
    if data.ndim != 3 or data.shape[2] < 3 or len(label) != len(data):
        raise ValueError(f"{path}: expected data (S, P, 3) and label (S,), got {data.shape} and {label.shape}")
    if normal is not None and normal.shape[:2] != data.shape[:2]:
        raise ValueError(f"{path}: normal shape {normal.shape} does not match data {data.shape}")
    return data[..., :3], label.astype(np.int64), normal


def _h5_sources(path: Path, normal_key: str | None) -> tuple[list[Source], bool]:
    """One source per row of an HDF5 file, named ``file.h5[row]``; also whether it has normals."""
    data, label, normal = _read_h5(path, normal_key)

    def reader(i: int) -> Callable[[np.random.Generator], RawCloud]:
        return lambda rng: RawCloud(data[i], normal[i] if normal is not None else None)

    return [Source(f"{path}[{i}]", int(label[i]), reader(i)) for i in range(len(data))], normal is not None


class ModelNetH5(PointCloudDataset):
    """``modelnet40_ply_hdf5_2048``: ``ply_data_{train,test}N.h5`` with ``data (S, 2048, 3)``,
    ``label (S, 1)`` and ``normal`` when present; file order from ``{split}_files.txt`` when present
    (only the base names are used), class names from ``shape_names.txt`` (else "0", "1", ...); y up.
    Needs h5py (``pip install aug-attn[h5]``).
    """

    def __init__(self, root: str | Path, split: str = "train", **options: Any):
        super().__init__(**options)
        _check_split(split, ("train", "test"))
        root = Path(root)
        list_file = root / f"{split}_files.txt"
        if list_file.exists():
            files = [root / Path(line).name for line in _read_lines(list_file)]
        else:
            files = sorted(root.glob(f"ply_data_{split}*.h5"))
        if not files:
            raise ValueError(f"{root}: no ply_data_{split}*.h5 files")
        sources, normals = [], []
        for path in files:
            rows, has_normal = _h5_sources(path, "normal")
            sources += rows
            normals.append(has_normal)
        names = root / "shape_names.txt"
        labels = [s.label for s in sources]
        self.class_names = _read_lines(names) if names.exists() else [str(i) for i in range(max(labels) + 1)]
        if max(labels) >= len(self.class_names) or min(labels) < 0:
            raise ValueError(
                f"{root}: labels span [{min(labels)}, {max(labels)}] but there are {len(self.class_names)} classes"
            )
        self._materialise(sources, files, f"modelnet_h5_{split}", {"root": str(root)})


class ScanObjectNN(PointCloudDataset):
    """ScanObjectNN h5 files (``data (S, 2048, 3)``, ``label``; ``mask`` ignored), 15 classes, y up.

    ``variant``: ``"obj_bg"`` (``main_split/{training,test}_objectdataset.h5``), ``"obj_only"``
    (``main_split_nobg/...``) or ``"pb_t50_rs"``, the hardest
    (``main_split/{training,test}_objectdataset_augmentedrot_scale75.h5``). ``root`` is the folder
    holding ``main_split`` (``h5_files``) or the split folder itself. There are no normals:
    ``has_normals`` is False and ``normal`` is ``(N, 0)``; models estimate normals from the points.
    """

    def __init__(self, root: str | Path, split: str = "train", variant: str = "pb_t50_rs", **options: Any):
        super().__init__(**options)
        _check_split(split, ("train", "test"))
        if variant not in SCANOBJECTNN_VARIANTS:
            raise ValueError(f"variant must be one of {sorted(SCANOBJECTNN_VARIANTS)}, got {variant!r}")
        folder, suffix = SCANOBJECTNN_VARIANTS[variant]
        name = f"{'training' if split == 'train' else 'test'}_objectdataset{suffix}.h5"
        root = Path(root)
        path = root / folder / name if (root / folder).is_dir() else root / name
        if not path.exists():
            raise ValueError(f"{path}: ScanObjectNN file not found (variant {variant!r})")
        sources, _ = _h5_sources(path, None)
        self.class_names = list(SCANOBJECTNN_CLASSES)
        self._materialise(sources, [path], f"scanobjectnn_{variant}_{split}", {"root": str(root)})


class ShapeNetPart(PointCloudDataset):
    """ShapeNet part (``shapenetcore_partanno_segmentation_benchmark_v0_normal``), y up.

    Layout: ``synsetoffset2category.txt`` (``Airplane\\t02691156``), ``<synset>/<id>.txt`` (lines
    ``x y z nx ny nz part``, global part ids 0-49, see ``SHAPENET_PARTS``) and
    ``train_test_split/shuffled_{train,val,test}_file_list.json`` (entries ``shape_data/<synset>/<id>``).
    ``split`` is ``"train"``, ``"val"``, ``"test"`` or ``"trainval"``; ``categories`` restricts to some
    category names (labels stay the global category index). Shapes have 2,000-3,000 points and some
    fewer than 2,048: the usual protocol repeats points, i.e. pass ``allow_fewer=True``.
    """

    def __init__(
        self, root: str | Path, split: str = "train", categories: list[str] | None = None, **options: Any
    ) -> None:
        options.setdefault("num_points", 2048)
        super().__init__(**options)
        _check_split(split, ("train", "val", "test", "trainval"))
        root = Path(root)
        category_file = root / "synsetoffset2category.txt"
        synsets: dict[str, str] = {}
        for line in _read_lines(category_file):
            name, synset = line.split()
            if name not in SHAPENET_PARTS:
                raise ValueError(f"{category_file}: unknown category {name!r}")
            synsets[synset] = name
        unknown = set(categories or ()) - set(synsets.values())
        if unknown:
            raise ValueError(f"{category_file}: categories {sorted(unknown)} not listed")
        self.class_names = list(SHAPENET_PARTS)
        entries = []
        for part in ("train", "val") if split == "trainval" else (split,):
            list_file = root / "train_test_split" / f"shuffled_{part}_file_list.json"
            try:
                entries += json.loads(list_file.read_text())
            except (OSError, ValueError) as err:
                raise ValueError(f"{list_file}: cannot read split list ({err})") from err
        sources, files = [], []
        for entry in entries:
            synset, shape_id = entry.split("/")[-2:]
            name = synsets.get(synset)
            if name is None:
                raise ValueError(f"{entry}: synset {synset} is not in {category_file}")
            if categories and name not in categories:
                continue
            path = root / synset / f"{shape_id}.txt"
            files.append(path)
            sources.append(Source(str(path), self.class_names.index(name), self._reader(path, name)))
        params = {"root": str(root), "categories": sorted(categories or [])}
        self._materialise(sources, [f for f in files if f.exists()], f"shapenet_part_{split}", params)

    @staticmethod
    def _reader(path: Path, category: str) -> Callable[[np.random.Generator], RawCloud]:
        def read(rng: np.random.Generator) -> RawCloud:
            table = read_txt(path)
            if table.shape[1] != 7:
                raise ValueError(f"{path}: expected 7 columns (x y z nx ny nz part), got {table.shape[1]}")
            part = table[:, 6].astype(np.int64)
            allowed = SHAPENET_PARTS[category]
            if part.min() < allowed[0] or part.max() > allowed[-1]:
                raise ValueError(f"{path}: part ids outside {category}'s range {allowed[0]}-{allowed[-1]}")
            return RawCloud(table[:, :3], table[:, 3:6], part)

        return read


class PointFolder(PointCloudDataset):
    """The user's own shapes: ``<root>/<label>/*.{txt,npy,ply,off,obj,stl}``.

    If ``<root>/train`` and ``<root>/test`` both exist, they are the splits (``<root>/{train,test}/<label>/...``).
    Otherwise each class's files (sorted) are shuffled with ``seed`` and the first
    ``round(test_fraction * count)`` are the test split; ``split="all"`` takes everything. Tables hold
    ``x y z`` or ``x y z nx ny nz``; meshes are sampled with ``mesh_points`` (default ``num_points``).
    If some files lack normals, normals are dropped for all (logged). Files with other suffixes are
    listed in a warning and ignored; hidden folders (``.name``) and folders without point files are
    not classes (the latter logged, unless it is the cache).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        test_fraction: float = 0.2,
        mesh_points: int | None = None,
        up_axis: str = "z",
        **options: Any,
    ) -> None:
        super().__init__(**options)
        _check_split(split, ("train", "test", "all"))
        if not 0 <= test_fraction <= 1:
            raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
        root = Path(root)
        self.up_axis = up_axis
        presplit = (root / "train").is_dir() and (root / "test").is_dir()
        splits = ["train", "test"] if split == "all" else [split]
        class_roots = [root / s for s in ("train", "test")] if presplit else [root]
        folders = sorted({d.name for r in class_roots for d in r.iterdir() if d.is_dir() and not d.name.startswith(".")})
        has_points = {
            name: any(f.suffix.lower() in POINT_SUFFIXES for r in class_roots if (r / name).is_dir() for f in (r / name).iterdir())
            for name in folders
        }
        for name in folders:
            if not has_points[name] and (self.cache_dir is None or (root / name).resolve() != self.cache_dir.resolve()):
                logger.warning("%s: no point files (%s), not a class", root / name, ", ".join(POINT_SUFFIXES))
        self.class_names = [name for name in folders if has_points[name]]
        if not self.class_names:
            raise ValueError(f"{root}: no class folders with point files")
        files: list[tuple[Path, int]] = []
        ignored: list[Path] = []
        for label, class_name in enumerate(self.class_names):
            for part in splits if presplit else [None]:
                folder = root / part / class_name if part else root / class_name
                found = sorted(folder.iterdir()) if folder.is_dir() else []
                ignored += [f for f in found if f.is_file() and f.suffix.lower() not in POINT_SUFFIXES]
                found = [f for f in found if f.is_file() and f.suffix.lower() in POINT_SUFFIXES]
                if not presplit and split != "all":
                    order = np.random.default_rng([self.seed, label]).permutation(len(found))
                    num_test = round(test_fraction * len(found))
                    chosen = order[:num_test] if split == "test" else order[num_test:]
                    found = [found[i] for i in sorted(chosen)]
                files += [(f, label) for f in found]
        if ignored:
            logger.warning("%s: ignored %d files with unsupported suffixes, e.g. %s", root, len(ignored), ignored[0])
        if not files:
            raise ValueError(f"{root}: no {'/'.join(POINT_SUFFIXES)} files for split {split!r}")
        mesh_points = mesh_points or self.num_points
        sources = [_file_source(f, label, mesh_points) for f, label in files]
        params = {"root": str(root), "split": split, "test_fraction": test_fraction, "mesh_points": mesh_points}
        self._materialise(sources, [f for f, _ in files], "point_folder", params)


class SyntheticShapes(PointCloudDataset):
    """Procedural shapes of ``synthetic.SHAPES`` (14 classes), generated per index, no files, z up.

    Shape ``i`` has class ``classes[i % len(classes)]`` and is drawn from ``(seed, i)``: the same seed
    gives the same data, different seeds independent data (use one seed per split). Shapes are
    canonical and upright; ``rotate_z`` turns each by a random angle about z (other rotations are
    the transforms' job); ``noise`` adds Gaussian noise of that std to positions (normals stay exact).
    """

    def __init__(
        self,
        num_samples: int = 1400,
        num_points: int = 1024,
        seed: int = 0,
        classes: list[str] | None = None,
        noise: float = 0.0,
        rotate_z: bool = False,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(num_points=num_points, seed=seed, transform=transform)
        self.class_names = list(classes) if classes is not None else list(SHAPES)
        unknown = [c for c in self.class_names if c not in SHAPES]
        if unknown:
            raise ValueError(f"unknown synthetic classes {unknown}; available: {list(SHAPES)}")
        self.num_samples, self.noise, self.rotate_z = num_samples, noise, rotate_z
        self.up_axis = "z"

    def __len__(self) -> int:
        return self.num_samples

    def _arrays(self, index: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, index])
        label = index % len(self.class_names)
        pos, normal = SHAPES[self.class_names[label]](rng, self.num_points)
        if self.rotate_z:
            rotation = rotation_about_axis(torch.tensor(rng.uniform(0, 2 * np.pi), dtype=torch.float64)).numpy()
            pos, normal = pos @ rotation.T, normal @ rotation.T
        if self.noise > 0:
            pos = pos + rng.normal(0, self.noise, pos.shape)
        return {"pos": normalize_unit_sphere(pos), "normal": normal, "label": np.int64(label)}
