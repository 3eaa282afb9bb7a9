"""Point data layer: readers, datasets on fixtures in the real layouts, synthetic shapes, rotations."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from aug_attn_tasks.points import datasets as ds
from aug_attn_tasks.points.io import load_point_cloud, read_off, read_ply, sample_surface
from aug_attn_tasks.points.synthetic import SHAPES
from aug_attn_tasks.points.transforms import (
    Compose,
    Jitter,
    RandomRotation,
    RandomScale,
    random_rotation,
    rotate,
    rotation_protocol,
    rotation_transforms,
)

h5py = pytest.importorskip("h5py")

CUBE_V = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=float)  # index 4x+2y+z
CUBE_QUADS = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]  # outward


def cube_off(scale: float = 1.0, quads: bool = False) -> str:
    """A unit cube in ModelNet's quirky OFF: header fused with the counts, comments, blank lines."""
    faces = CUBE_QUADS if quads else [t for q in CUBE_QUADS for t in ([q[0], q[1], q[2]], [q[0], q[2], q[3]])]
    lines = [f"OFF8 {len(faces)} 0", "# a comment line", ""]
    lines += [" ".join(f"{c * scale:g}" for c in v) + "  # vertex" for v in CUBE_V]
    lines += [""] + [f"{len(f)} " + " ".join(map(str, f)) for f in faces] + [""]
    return "\n".join(lines)


def write_ply(path: Path, pos: np.ndarray, normal: np.ndarray | None, faces: list | None, fmt: str) -> None:
    props = ["x", "y", "z"] + (["nx", "ny", "nz"] if normal is not None else [])
    header = ["ply", f"format {fmt} 1.0", "comment fixture", f"element vertex {len(pos)}"]
    header += [f"property float {p}" for p in props]
    if faces is not None:
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    header.append("end_header")
    table = pos if normal is None else np.hstack([pos, normal])
    if fmt == "ascii":
        body = "\n".join(" ".join(f"{v:g}" for v in row) for row in table)
        body += "".join("\n" + " ".join(map(str, [len(f), *f])) for f in faces or [])
        path.write_text("\n".join(header) + "\n" + body + "\n")
        return
    order = "<" if fmt == "binary_little_endian" else ">"
    raw = table.astype(order + "f4").tobytes()
    for f in faces or []:
        raw += np.uint8(len(f)).tobytes() + np.asarray(f, dtype=order + "i4").tobytes()
    path.write_bytes(("\n".join(header) + "\n").encode() + raw)


def sphere_table(n: int, seed: int, columns: int = 6) -> np.ndarray:
    pos, normal = SHAPES["sphere"](np.random.default_rng(seed), n)
    return np.hstack([pos, normal])[:, :columns]


def write_txt(path: Path, table: np.ndarray, sep: str = ",") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(sep.join(f"{v:.6f}" for v in row) for row in table) + "\n")


# ---------------------------------------------------------------- readers


def test_off_fused_header_comments_and_quads(tmp_path: Path) -> None:
    for quads in (False, True):
        path = tmp_path / f"cube_{quads}.off"
        path.write_text(cube_off(quads=quads))
        pos, normal, faces = read_off(path)
        assert pos.shape == (8, 3) and normal is None and faces.shape == (12, 3)
        np.testing.assert_allclose(pos, CUBE_V)
    # the usual layout: "OFF" then counts on the next line
    path = tmp_path / "plain.off"
    path.write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n")
    assert read_off(path).faces.tolist() == [[0, 1, 2]]


def test_off_errors_name_the_file(tmp_path: Path) -> None:
    cases = {
        "notoff.off": "PLY 1 2\n",
        "short.off": "OFF\n8 12 0\n0 0 0\n",
        "badindex.off": "OFF3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=name):
            read_off(tmp_path / name)
    (tmp_path / "binary.off").write_bytes(b"\xff\xfe\x00OFF")
    with pytest.raises(ValueError, match="binary.off"):
        read_off(tmp_path / "binary.off")


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
def test_ply_reader(tmp_path: Path, fmt: str) -> None:
    normal = np.tile([0.0, 0.0, 1.0], (8, 1))
    path = tmp_path / "cube.ply"
    write_ply(path, CUBE_V, normal, CUBE_QUADS, fmt)
    pos, read_normal, faces = read_ply(path)
    np.testing.assert_allclose(pos, CUBE_V)
    np.testing.assert_allclose(read_normal, normal)
    assert faces.shape == (12, 3)  # 6 quads -> 12 fan triangles
    fans = {(q[0], q[1], q[2]) for q in CUBE_QUADS} | {(q[0], q[2], q[3]) for q in CUBE_QUADS}
    assert {tuple(f) for f in faces.tolist()} == fans
    write_ply(path, CUBE_V, None, None, fmt)
    pos, read_normal, faces = read_ply(path)
    assert pos.shape == (8, 3) and read_normal is None and faces is None


def test_ply_truncated_names_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.ply"
    write_ply(path, CUBE_V, None, CUBE_QUADS, "binary_little_endian")
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(ValueError, match="cut.ply"):
        read_ply(path)


def test_surface_sampling_is_area_weighted_seeded_with_face_normals(tmp_path: Path) -> None:
    # two triangles in the plane z=0 (area 0.5) and z=1 (area 2): 1/5 vs 4/5 of the points
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [2, 0, 1], [0, 2, 1]], dtype=float)
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    pos, normal = sample_surface(vertices, faces, 20000, seed=3)
    assert abs((pos[:, 2] == 1).mean() - 0.8) < 0.02
    np.testing.assert_allclose(normal, np.tile([0, 0, 1.0], (20000, 1)))
    assert (pos[:, :2] >= 0).all() and (pos[:, 0] + pos[:, 1] <= 2 + 1e-9).all()
    again, _ = sample_surface(vertices, faces, 20000, seed=3)
    np.testing.assert_array_equal(pos, again)
    with pytest.raises(ValueError, match="empty mesh"):
        sample_surface(vertices, faces[:0], 10, name="x.off")
    # a cube: outward face normals, points on the surface
    path = tmp_path / "cube.off"
    path.write_text(cube_off(quads=True))
    pos, normal = load_point_cloud(path, mesh_points=500, seed=0)
    assert ((pos - 0.5) * normal).sum(1).min() > 0.49  # = 0.5 exactly on each face


def test_txt_and_npy_readers(tmp_path: Path) -> None:
    table = sphere_table(50, 0)
    write_txt(tmp_path / "a.txt", table, sep=",")
    write_txt(tmp_path / "b.txt", table[:, :3], sep=" ")
    np.save(tmp_path / "c.npy", table.astype(np.float32))
    pos, normal = load_point_cloud(tmp_path / "a.txt")
    np.testing.assert_allclose(pos, table[:, :3], atol=1e-6)
    np.testing.assert_allclose(normal, table[:, 3:], atol=1e-6)
    assert load_point_cloud(tmp_path / "b.txt")[1] is None
    np.testing.assert_allclose(load_point_cloud(tmp_path / "c.npy")[1], table[:, 3:], atol=1e-6)
    np.save(tmp_path / "d.npy", np.zeros((5, 4)))
    with pytest.raises(ValueError, match="d.npy.*columns"):
        load_point_cloud(tmp_path / "d.npy")
    (tmp_path / "e.xyz").write_text("0 0 0\n")
    with pytest.raises(ValueError, match="e.xyz"):
        load_point_cloud(tmp_path / "e.xyz")


# ---------------------------------------------------------------- ModelNet layouts


def make_modelnet_meshes(root: Path) -> None:
    """<root>/<class>/{train,test}/<class>_NNNN.off, cubes and flattened cubes."""
    for label, (name, scale) in enumerate([("chair", 1.0), ("night_stand", 2.0)]):
        for split, ids in (("train", [1, 2, 3]), ("test", [4])):
            folder = root / name / split
            folder.mkdir(parents=True)
            for i in ids:
                (folder / f"{name}_{i:04d}.off").write_text(cube_off(scale))
    (root / "README.txt").write_text("not a class")


def test_modelnet_mesh_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    root, cache = tmp_path / "ModelNet40", tmp_path / "cache"
    make_modelnet_meshes(root)
    train = ds.ModelNetMesh(root, "train", num_points=64, mesh_points=256, cache_dir=cache)
    assert train.class_names == ["chair", "night_stand"] and train.up_axis == "z" and train.has_normals
    assert len(train) == 6 and len(ds.ModelNetMesh(root, "test", num_points=64)) == 2
    sample = train[4]
    assert sample["pos"].shape == (64, 3) and sample["normal"].shape == (64, 3)
    assert sample["pos"].dtype == torch.float32 and sample["label"].dtype == torch.int64
    assert int(sample["label"]) == 1
    assert torch.allclose(sample["pos"].norm(dim=1).max(), torch.tensor(1.0))  # unit sphere
    assert torch.allclose(sample["pos"].mean(0), torch.zeros(3), atol=1e-5)
    assert len(list(cache.glob("*.npz"))) == 1 and len(list(cache.glob("*.json"))) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("cache hit must not read files")

    monkeypatch.setattr(ds, "load_point_cloud", refuse)
    cached = ds.ModelNetMesh(root, "train", num_points=64, mesh_points=256, cache_dir=cache)
    np.testing.assert_array_equal(cached.arrays["pos"], train.arrays["pos"])
    monkeypatch.undo()

    # a changed file (size and mtime) makes the manifest stale: rebuilt, with the new content
    changed = root / "chair" / "train" / "chair_0001.off"
    changed.write_text(cube_off().replace("1  # vertex", "3  # vertex"))  # a 1 x 1 x 3 box
    caplog.set_level(logging.INFO, logger=ds.__name__)
    rebuilt = ds.ModelNetMesh(root, "train", num_points=64, mesh_points=256, cache_dir=cache)
    assert "stale" in caplog.text
    assert not np.array_equal(rebuilt.arrays["pos"][0], train.arrays["pos"][0])
    np.testing.assert_array_equal(rebuilt.arrays["pos"][1:], train.arrays["pos"][1:])
    # other parameters: another cache file, the first one is kept
    ds.ModelNetMesh(root, "train", num_points=32, mesh_points=256, cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 2


def test_modelnet_mesh_bad_files(tmp_path: Path) -> None:
    root = tmp_path / "ModelNet10"
    make_modelnet_meshes(root)
    empty = root / "chair" / "train" / "chair_0002.off"
    empty.write_text("OFF\n3 0 0\n0 0 0\n1 0 0\n0 1 0\n")
    with pytest.raises(ValueError, match=r"chair_0002\.off.*empty mesh"):
        ds.ModelNetMesh(root, "train", num_points=16)
    nan = root / "chair" / "train" / "chair_0003.off"
    nan.write_text(cube_off().replace("0 0 0  # vertex", "nan 0 0  # vertex"))
    data = ds.ModelNetMesh(root, "train", num_points=16, skip_bad=True)
    assert len(data) == 4 and [name for name, _ in data.skipped] == [str(empty), str(nan)]
    assert all(name in reason for name, reason in data.skipped)


def make_resampled(root: Path, bad: dict[str, str] | None = None) -> None:
    """modelnet40_normal_resampled: <class>/<class>_NNNN.txt and the list files (40 and 10)."""
    classes = ["airplane", "night_stand", "toilet"]
    ids = {"train": [], "test": []}
    for c, name in enumerate(classes):
        for i in range(1, 4):
            shape_id = f"{name}_{i:04d}"
            write_txt(root / name / f"{shape_id}.txt", sphere_table(120, 10 * c + i) * [1, 1, 1 + c, 1, 1, 1])
            ids["train" if i < 3 else "test"].append(shape_id)
    for shape_id, text in (bad or {}).items():
        (root / shape_id.rsplit("_", 1)[0] / f"{shape_id}.txt").write_bytes(text.encode("latin-1"))
    for n, names in ((40, classes), (10, classes[1:])):
        (root / f"modelnet{n}_shape_names.txt").write_text("\n".join(names) + "\n")
        for split, split_ids in ids.items():
            chosen = [i for i in split_ids if i.rsplit("_", 1)[0] in names]
            (root / f"modelnet{n}_{split}.txt").write_text("\n".join(chosen) + "\n")


def test_modelnet_resampled(tmp_path: Path) -> None:
    root = tmp_path / "modelnet40_normal_resampled"
    make_resampled(root)
    train = ds.ModelNetResampled(root, "train", num_points=64)
    test = ds.ModelNetResampled(root, "test", num_points=64, sampling="random")
    assert train.class_names == ["airplane", "night_stand", "toilet"] and train.up_axis == "y"
    assert len(train) == 6 and len(test) == 3
    assert [int(train[i]["label"]) for i in range(6)] == [0, 0, 1, 1, 2, 2]
    sample = train[0]
    assert sample["pos"].shape == (64, 3) and sample["normal"].shape == (64, 3)
    assert torch.allclose(sample["normal"].norm(dim=1), torch.ones(64), atol=1e-5)
    ten = ds.ModelNetResampled(root, "train", num_classes=10, num_points=64)
    assert ten.class_names == ["night_stand", "toilet"] and [int(s["label"]) for s in ten] == [0, 0, 1, 1]
    # FPS spreads points: its minimum pairwise distance beats the first 64 points'
    first = ds.ModelNetResampled(root, "train", num_points=64, sampling="first")
    spread = [torch.pdist(d[0]["pos"]).min() for d in (train, first)]
    assert spread[0] > spread[1]


def test_resampled_bad_files_error_or_skip(tmp_path: Path) -> None:
    root = tmp_path / "modelnet40_normal_resampled"
    bad = {
        "airplane_0002": "0,0,0,0,0,1\nnan,1,0,0,0,1\n" * 40,  # NaN coordinates
        "night_stand_0001": "\xff\xfe garbage \x00\n",  # unreadable
        "toilet_0002": "0,0,0,0,0,1\n1,0,0,0,0,1\n",  # too few points
    }
    make_resampled(root, bad)
    for name in bad:
        with pytest.raises(ValueError, match=name):
            ds.ModelNetResampled(root, "train", num_points=64, skip_bad=False)
        # each bad file is the first failure once the earlier ones are fixed
        write_txt(root / name.rsplit("_", 1)[0] / f"{name}.txt", sphere_table(120, 0))
    make_resampled(root, bad)
    data = ds.ModelNetResampled(root, "train", num_points=64, skip_bad=True)
    assert len(data) == 3 and len(data.skipped) == 3
    assert sorted(Path(name).stem for name, _ in data.skipped) == sorted(bad)
    reasons = " ".join(reason for _, reason in data.skipped)
    assert "NaN" in reasons and "cannot read" in reasons and "2 points, 64 requested" in reasons
    # a listed file that does not exist
    make_resampled(root)
    (root / "toilet" / "toilet_0002.txt").unlink()
    with pytest.raises(ValueError, match="toilet_0002.txt"):
        ds.ModelNetResampled(root, "train", num_points=64)


def test_too_few_points_allow_fewer_repeats(tmp_path: Path) -> None:
    root = tmp_path / "modelnet40_normal_resampled"
    make_resampled(root)
    with pytest.raises(ValueError, match=r"airplane_0001\.txt: has 120 points, 200 requested"):
        ds.ModelNetResampled(root, "train", num_points=200)
    data = ds.ModelNetResampled(root, "train", num_points=200, allow_fewer=True)
    pos = data[0]["pos"]
    assert pos.shape == (200, 3) and len(torch.unique(pos, dim=0)) == 120


def make_h5(path: Path, count: int, labels: list[int], normals: bool, extra: dict | None = None) -> None:
    rng = np.random.default_rng(len(labels))
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["data"] = rng.normal(size=(len(labels), count, 3)).astype(np.float32)
        f["label"] = np.asarray(labels, dtype=np.uint8)[:, None]
        if normals:
            normal = rng.normal(size=(len(labels), count, 3))
            f["normal"] = normal / np.linalg.norm(normal, axis=-1, keepdims=True)
        for key, value in (extra or {}).items():
            f[key] = value


def test_modelnet_hdf5(tmp_path: Path) -> None:
    root = tmp_path / "modelnet40_ply_hdf5_2048"
    make_h5(root / "ply_data_train0.h5", 2048, [0, 2, 1], normals=True)
    make_h5(root / "ply_data_train1.h5", 2048, [2, 2], normals=True)
    make_h5(root / "ply_data_test0.h5", 2048, [1], normals=False)
    (root / "train_files.txt").write_text(
        "data/modelnet40_ply_hdf5_2048/ply_data_train1.h5\ndata/modelnet40_ply_hdf5_2048/ply_data_train0.h5\n"
    )
    (root / "shape_names.txt").write_text("airplane\nbathtub\nbed\n")
    train = ds.ModelNetH5(root, "train", num_points=128)
    assert train.class_names == ["airplane", "bathtub", "bed"] and train.has_normals
    assert [int(s["label"]) for s in train] == [2, 2, 0, 2, 1]  # train1 listed first
    assert train[0]["pos"].shape == (128, 3) and train[0]["normal"].shape == (128, 3)
    assert train.arrays["name"][0].endswith("ply_data_train1.h5[0]")
    test = ds.ModelNetH5(root, "test", num_points=128, sampling="first")  # glob, no list file
    assert len(test) == 1 and not test.has_normals and test[0]["normal"].shape == (128, 0)


def test_h5_bad_rows_are_named(tmp_path: Path) -> None:
    root = tmp_path / "h5"
    make_h5(root / "ply_data_train0.h5", 256, [0, 1], normals=False)
    with h5py.File(root / "ply_data_train0.h5", "a") as f:
        f["data"][1, 5, 0] = np.inf
    with pytest.raises(ValueError, match=r"ply_data_train0\.h5\[1\]: NaN or inf"):
        ds.ModelNetH5(root, "train", num_points=64)
    data = ds.ModelNetH5(root, "train", num_points=64, skip_bad=True)
    assert len(data) == 1 and data.class_names == ["0", "1"]


def test_scanobjectnn_variants(tmp_path: Path) -> None:
    root = tmp_path / "h5_files"
    split = root / "main_split"
    mask = {"mask": np.zeros((3, 2048), dtype=np.int8)}
    make_h5(split / "training_objectdataset_augmentedrot_scale75.h5", 2048, [0, 14, 3], False, mask)
    make_h5(split / "test_objectdataset_augmentedrot_scale75.h5", 2048, [5], False)
    make_h5(split / "training_objectdataset.h5", 2048, [1, 2], False)
    hardest = ds.ScanObjectNN(root, "train", num_points=256, sampling="random")
    assert len(hardest) == 3 and hardest.num_classes == 15 and hardest.class_names[14] == "toilet"
    assert not hardest.has_normals and hardest[1]["normal"].shape == (256, 0) and int(hardest[1]["label"]) == 14
    batch = next(iter(torch.utils.data.DataLoader(hardest, batch_size=2)))
    assert batch["pos"].shape == (2, 256, 3) and batch["normal"].shape == (2, 256, 0)
    assert batch["label"].tolist() == [0, 14]
    assert len(ds.ScanObjectNN(split, "test", num_points=256, sampling="first")) == 1  # root = main_split
    assert len(ds.ScanObjectNN(root, "train", variant="obj_bg", num_points=256, sampling="first")) == 2
    with pytest.raises(ValueError, match="test_objectdataset.h5"):
        ds.ScanObjectNN(root, "test", variant="obj_bg")
    with pytest.raises(ValueError, match="variant"):
        ds.ScanObjectNN(root, "test", variant="pb_t25")


def make_shapenet(root: Path) -> None:
    """shapenetcore_partanno_segmentation_benchmark_v0_normal with two populated categories."""
    synsets = {name: f"{i:08d}" for i, name in enumerate(ds.SHAPENET_PARTS)}
    root.mkdir()
    (root / "synsetoffset2category.txt").write_text("".join(f"{n}\t{s}\n" for n, s in synsets.items()))
    lists = {"train": [], "val": [], "test": []}
    for name, split, shape_id in [("Airplane", "train", "a1"), ("Airplane", "val", "a2"), ("Mug", "train", "m1"),
                                  ("Mug", "test", "m2"), ("Airplane", "test", "a3")]:  # fmt: skip
        parts = np.array(ds.SHAPENET_PARTS[name])
        table = sphere_table(300, len(shape_id) + ord(shape_id[-1]))
        octant = (table[:, 5] > 0).astype(int) + (table[:, 3] > 0)
        labels = parts[np.minimum(octant, len(parts) - 1)]  # part by normal direction
        write_txt(root / synsets[name] / f"{shape_id}.txt", np.hstack([table, labels[:, None]]), sep=" ")
        lists[split].append(f"shape_data/{synsets[name]}/{shape_id}")
    (root / "train_test_split").mkdir()
    for split, entries in lists.items():
        (root / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(json.dumps(entries))


def test_shapenet_part(tmp_path: Path) -> None:
    root = tmp_path / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
    make_shapenet(root)
    train = ds.ShapeNetPart(root, "train", num_points=128)
    assert train.num_classes == 16 and sum(len(p) for p in ds.SHAPENET_PARTS.values()) == 50
    assert [int(s["category"]) for s in train] == [0, 11]  # Airplane, Mug
    sample = train[1]
    assert sample["part"].shape == (128,) and sample["part"].dtype == torch.int64
    assert set(sample["part"].tolist()) <= {36, 37} and sample["normal"].shape == (128, 3)
    # parts follow their points through the subsampling (the fixture's part comes from the normal)
    expected = 36 + ((sample["normal"][:, 2] > 0).long() + (sample["normal"][:, 0] > 0).long()).clamp(max=1)
    assert torch.equal(sample["part"], expected)
    batch = next(iter(torch.utils.data.DataLoader(train, batch_size=2)))
    assert batch["part"].shape == (2, 128) and batch["category"].tolist() == [0, 11]
    assert len(ds.ShapeNetPart(root, "trainval", num_points=128)) == 3
    assert len(ds.ShapeNetPart(root, "test", num_points=128, categories=["Mug"])) == 1
    with pytest.raises(ValueError, match="Mugs"):
        ds.ShapeNetPart(root, "test", categories=["Mugs"])
    bad = root / "00000000" / "a1.txt"  # Airplane is the first synset of the fixture
    table = np.loadtxt(bad)
    table[0, 6] = 40  # a Pistol part id in an Airplane
    write_txt(bad, table, sep=" ")
    with pytest.raises(ValueError, match=r"a1\.txt: part ids outside Airplane"):
        ds.ShapeNetPart(root, "train", num_points=128)


def test_point_folder_split_and_formats(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    for c, name in enumerate(["cubes", "spheres"]):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(5):
            write_txt(folder / f"s{i}.txt", sphere_table(100, 10 * c + i, columns=6))
        np.save(folder / "n.npy", sphere_table(100, 99, columns=6))
        write_ply(folder / "p.ply", CUBE_V, None, CUBE_QUADS, "binary_little_endian")
        (folder / "o.off").write_text(cube_off())
        (folder / "notes.md").write_text("ignored, with a warning")
    train = ds.PointFolder(root, "train", num_points=64, seed=1)
    test = ds.PointFolder(root, "test", num_points=64, seed=1)
    everything = ds.PointFolder(root, "all", num_points=64)
    assert train.class_names == ["cubes", "spheres"] and train.has_normals
    assert len(everything) == 16 and len(test) == 4 and len(train) == 12  # round(0.2 * 8) = 2 per class
    assert not set(train.arrays["name"]) & set(test.arrays["name"])
    assert set(ds.PointFolder(root, "test", num_points=64, seed=2).arrays["name"]) != set(test.arrays["name"])
    # a 3-column file: normals dropped for all (logged), not silently mixed
    write_txt(root / "cubes" / "xyz.txt", sphere_table(100, 5, columns=3))
    assert not ds.PointFolder(root, "all", num_points=64).has_normals
    # explicit train/test folders win over the seeded split
    for split in ("train", "test"):
        write_txt(root / split / "rings" / "r.txt", sphere_table(100, 1))
    presplit = ds.PointFolder(root, "test", num_points=64)
    assert presplit.class_names == ["rings"] and len(presplit) == 1


def test_cache_follows_the_class_list_not_only_the_files(tmp_path: Path, caplog) -> None:
    """Class lists come from folders and list files: a change relabels shapes even when no data file
    changed, so the cache must be rebuilt rather than hand back the old labels."""
    root, cache = tmp_path / "mine", tmp_path / "cache"
    for c, name in enumerate(["chair", "table"]):
        for i in range(2):
            write_txt(root / name / f"s{i}.txt", sphere_table(80, 10 * c + i, columns=6))
    first = ds.PointFolder(root, "all", num_points=32, cache_dir=cache)
    assert [first.class_names[int(s["label"])] for s in first] == ["chair", "chair", "table", "table"]
    (root / "bed").mkdir()  # a new class with its files: labels of chair and table move up
    write_txt(root / "bed" / "b.txt", sphere_table(80, 7, columns=6))
    (root / ".ipynb_checkpoints").mkdir()  # hidden: never a class
    (root / "empty").mkdir()  # no point files: logged, not a class
    with caplog.at_level(logging.INFO):
        second = ds.PointFolder(root, "all", num_points=32, cache_dir=cache)
    assert second.class_names == ["bed", "chair", "table"] and "stale" in caplog.text and "empty: no point files" in caplog.text
    named = {Path(n).parent.name: second.class_names[int(label)] for n, label in zip(second.arrays["name"], second.arrays["label"])}
    assert named == {"bed": "bed", "chair": "chair", "table": "table"}

    resampled = tmp_path / "modelnet40_normal_resampled"
    make_resampled(resampled)
    before = ds.ModelNetResampled(resampled, "train", num_points=32, cache_dir=cache)
    names = resampled / "modelnet40_shape_names.txt"
    names.write_text("\n".join(reversed(names.read_text().split())) + "\n")  # reordered: new labels
    after = ds.ModelNetResampled(resampled, "train", num_points=32, cache_dir=cache)
    for data in (before, after):
        assert all(data.class_names[int(label)] in name for name, label in zip(data.arrays["name"], data.arrays["label"]))
    assert list(before.arrays["label"]) != list(after.arrays["label"])


def test_files_without_faces_are_point_clouds_except_in_mesh_datasets(tmp_path: Path) -> None:
    points = np.random.default_rng(0).normal(size=(50, 3))
    write_ply(tmp_path / "cloud.ply", points, None, [], "ascii")  # element face 0
    (tmp_path / "cloud.off").write_text("OFF\n50 0 0\n" + "\n".join(" ".join(map(str, p)) for p in points) + "\n")
    for name in ("cloud.ply", "cloud.off"):
        pos, normal = load_point_cloud(tmp_path / name)
        np.testing.assert_allclose(pos, points, rtol=1e-4, atol=1e-5)
        assert normal is None
        with pytest.raises(ValueError, match=f"{name}: empty mesh"):
            load_point_cloud(tmp_path / name, mesh=True)


def test_off_faces_with_float_colours(tmp_path: Path) -> None:
    lines = ["OFF", "4 2 0", "0 0 0", "1 0 0", "1 1 0", "0 1 0", "3 0 1 2 1.0 0.5 0.25", "3 0 2 3 0.2 0.2 0.2 1.0"]
    (tmp_path / "coloured.off").write_text("\n".join(lines) + "\n")
    np.testing.assert_array_equal(read_off(tmp_path / "coloured.off").faces, [[0, 1, 2], [0, 2, 3]])


# ---------------------------------------------------------------- synthetic shapes


def test_synthetic_determinism_and_classes() -> None:
    assert len(SHAPES) >= 12
    a, b = ds.SyntheticShapes(30, 256, seed=0), ds.SyntheticShapes(30, 256, seed=0)
    c = ds.SyntheticShapes(30, 256, seed=1)
    for i in (0, 7, 29):
        assert torch.equal(a[i]["pos"], b[i]["pos"]) and torch.equal(a[i]["normal"], b[i]["normal"])
        assert not torch.allclose(a[i]["pos"], c[i]["pos"])
    assert [int(a[i]["label"]) for i in range(len(SHAPES) + 1)] == [*range(len(SHAPES)), 0]
    sample = a[3]
    assert sample["pos"].shape == (256, 3) and sample["pos"].dtype == torch.float32
    assert torch.allclose(sample["pos"].norm(dim=1).max(), torch.tensor(1.0))
    spun = ds.SyntheticShapes(30, 256, seed=0, rotate_z=True)[2]  # box: same heights, turned about z
    assert torch.allclose(spun["pos"][:, 2], a[2]["pos"][:, 2], atol=1e-5)
    assert not torch.allclose(spun["pos"], a[2]["pos"], atol=1e-3)
    with pytest.raises(ValueError, match="blob"):
        ds.SyntheticShapes(classes=["sphere", "blob"])


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_synthetic_normals_are_unit_and_perpendicular_to_the_surface(name: str) -> None:
    pos, normal = SHAPES[name](np.random.default_rng(5), 3000)
    assert pos.shape == normal.shape == (3000, 3)
    np.testing.assert_allclose(np.linalg.norm(normal, axis=1), 1.0, atol=1e-9)
    # offsets to the nearest neighbours lie in the tangent plane
    p = torch.from_numpy(pos)
    neighbours = torch.cdist(p, p).topk(6, largest=False).indices[:, 1:]  # (n, 5)
    offsets = torch.nn.functional.normalize(p[neighbours] - p[:, None], dim=-1)  # (n, 5, 3)
    cosine = (offsets * torch.from_numpy(normal)[:, None]).sum(-1).abs()
    assert cosine.median() < 0.1, f"{name}: normals not perpendicular to the surface"
    if name in ("sphere", "ellipsoid", "box", "pyramid", "octahedron", "cylinder", "capsule", "cone"):
        inside = pos.mean(0) if name != "pyramid" else np.array([0, 0, 0.1])  # convex, outward normals
        assert ((pos - inside) * normal).sum(1).min() > 0


def test_sphere_normals_point_along_position() -> None:
    pos, normal = SHAPES["sphere"](np.random.default_rng(0), 500)
    np.testing.assert_allclose(normal, pos / np.linalg.norm(pos, axis=1, keepdims=True), atol=1e-12)
    data = ds.SyntheticShapes(1, 2048, seed=4, classes=["sphere"])[0]
    cosine = (torch.nn.functional.normalize(data["pos"], dim=1) * data["normal"]).sum(1)
    assert cosine.min() > 0.95  # centring on the sample mean moves the centre slightly


# ---------------------------------------------------------------- transforms


def test_rotations_are_proper_and_so3_is_uniform() -> None:
    generator = torch.Generator().manual_seed(0)
    rotations = torch.stack([random_rotation("so3", generator=generator, dtype=torch.float64) for _ in range(4000)])
    eye = torch.eye(3, dtype=torch.float64).expand(4000, 3, 3)
    assert torch.allclose(rotations @ rotations.transpose(1, 2), eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(rotations), torch.ones(4000, dtype=torch.float64))
    # Haar measure: E[R] = 0 and each column uniform on the sphere (E[x^2] = 1/3)
    assert rotations.mean(0).abs().max() < 0.05
    assert (rotations[:, :, 0] ** 2).mean(0).sub(1 / 3).abs().max() < 0.03
    for axis, index in (("z", 2), ("y", 1)):
        turn = random_rotation("z", up_axis=axis, generator=generator)
        assert torch.allclose(turn[index], torch.eye(3)[index]) and torch.linalg.det(turn) > 0.999


def test_rotation_keeps_pos_normal_geometry() -> None:
    sample = ds.SyntheticShapes(3, 300, seed=2)[2]
    for kind in ("z", "so3"):
        rotated = RandomRotation(kind, seed=1)(sample)
        assert not torch.allclose(rotated["pos"], sample["pos"], atol=1e-3)
        offsets = lambda s: ((s["pos"][:, None] - s["pos"][None]) * s["normal"][:, None]).sum(-1)  # noqa: E731
        assert torch.allclose(offsets(rotated), offsets(sample), atol=1e-5)
        assert torch.allclose(torch.pdist(rotated["pos"]), torch.pdist(sample["pos"]), atol=1e-5)
    # seeded: a fixed rotation per (seed, index), different across indices
    fixed = RandomRotation("so3", seed=7)
    assert torch.equal(fixed(sample)["pos"], fixed(sample)["pos"])
    other = dict(sample, index=torch.tensor(3))
    assert not torch.allclose(fixed(other)["pos"], fixed(sample)["pos"])
    no_normals = dict(sample, normal=torch.zeros(300, 0))
    assert rotate(no_normals, torch.eye(3))["normal"].shape == (300, 0)


def test_scale_and_jitter() -> None:
    sample = ds.SyntheticShapes(1, 500, seed=0, classes=["sphere"])[0]
    stretched = RandomScale(0.5, 2.0, anisotropic=True, seed=0)(sample)
    assert torch.allclose(stretched["normal"].norm(dim=1), torch.ones(500), atol=1e-5)
    # an ellipsoid's normal is proportional to x / axes^2
    axes = stretched["pos"].abs().amax(0) / sample["pos"].abs().amax(0)
    expected = torch.nn.functional.normalize(stretched["pos"] / axes**2, dim=1)
    assert (expected * stretched["normal"]).sum(1).min() > 0.95
    shaken = Compose([Jitter(0.01, 0.02, seed=0)])(sample)
    assert 0 < (shaken["pos"] - sample["pos"]).abs().max() <= 0.02 + 1e-7
    assert torch.equal(shaken["normal"], sample["normal"])


def test_rotation_protocol_parsing() -> None:
    assert rotation_protocol("z/z") == ("z", "z")
    assert rotation_protocol("z/SO3") == ("z", "so3")
    assert rotation_protocol("SO3/SO3") == ("so3", "so3")
    for bad in ("z", "z/so2", "SO3/SO3/z", ""):
        with pytest.raises(ValueError, match="rotation protocol"):
            rotation_protocol(bad)
    train, test = rotation_transforms("z/SO3", up_axis="y", test_seed=3)
    assert (train.kind, train.seed, test.kind, test.seed, test.up_axis) == ("z", None, "so3", 3, "y")
    data = ds.SyntheticShapes(4, 64, seed=0, transform=test)
    first = data[1]["pos"].clone()
    # A reproducible rotated test set: the same rotation on every access and in a fresh copy ...
    assert torch.equal(data[1]["pos"], first)
    again = ds.SyntheticShapes(4, 64, seed=0, transform=rotation_transforms("z/SO3", up_axis="y", test_seed=3)[1])
    assert torch.equal(again[1]["pos"], first)
    # ... that does rotate, and that another test seed rotates differently.
    plain = ds.SyntheticShapes(4, 64, seed=0)[1]["pos"]
    assert not torch.allclose(first, plain, atol=1e-3)
    torch.testing.assert_close(first.norm(dim=-1), plain.norm(dim=-1), atol=1e-5, rtol=1e-5)
    other = ds.SyntheticShapes(4, 64, seed=0, transform=rotation_transforms("z/SO3", up_axis="y", test_seed=4)[1])
    assert not torch.allclose(other[1]["pos"], first, atol=1e-3)


@pytest.mark.parametrize("sampling", ["fps", "random", "first"])
def test_classify_prepares_a_file_as_the_folder_dataset_does(tmp_path: Path, sampling: str) -> None:
    from aug_attn_tasks.points.prepare import prepare_cloud

    for name, write in (("cube.off", lambda p: p.write_text(cube_off())), ("s.npy", lambda p: np.save(p, sphere_table(300, 4)))):
        root = tmp_path / name.split(".")[1] / "only"
        root.mkdir(parents=True)
        write(root / name)
        # `first` relies on files in random order (the benchmark's): a user's file may be sorted, so random
        data = ds.PointFolder(root.parent, "all", num_points=64, sampling={"first": "random"}.get(sampling, sampling), seed=3)
        pos, normal = prepare_cloud(root / name, {"num_points": 64, "sampling": sampling, "sampling_seed": 3})
        np.testing.assert_allclose(pos.numpy(), data.arrays["pos"][0], atol=1e-6)
        np.testing.assert_allclose(normal.numpy(), data.arrays["normal"][0], atol=1e-6)
