"""Mesh and cloud formats people have (OFF variants, OBJ, STL, PLY with normals) and the refusal of
clouds with fewer points than the model needs; fixtures written on the fly in the real layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aug_attn_tasks.points import datasets as ds
from aug_attn_tasks.points.io import load_point_cloud, read_obj, read_off, read_stl

CUBE_V = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=float)  # index 4x+2y+z
CUBE_QUADS = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]  # outward
CUBE_TRIANGLES = [t for q in CUBE_QUADS for t in ([q[0], q[1], q[2]], [q[0], q[2], q[3]])]


def on_cube_surface(pos: np.ndarray) -> bool:
    inside = (pos > -1e-9).all() and (pos < 1 + 1e-9).all()
    return bool(inside and (np.minimum(pos, 1 - pos).min(1) < 1e-9).all())


def off_text(header: str, extra: list[list[float]] | None = None, fused: bool = False) -> str:
    """The cube in an OFF variant: ``extra[i]`` appended to vertex ``i`` (normals, colours, uv)."""
    counts = f"{len(CUBE_V)} {len(CUBE_QUADS)} 0"
    lines = [f"{header}{counts}" if fused else header] + ([] if fused else [counts])
    for i, v in enumerate(CUBE_V):
        lines.append(" ".join(f"{c:g}" for c in [*v, *(extra[i] if extra else [])]))
    lines += ["4 " + " ".join(map(str, q)) + " 0.5 0.5 0.5" for q in CUBE_QUADS]
    return "\n".join(lines) + "\n"


NORMALS = (CUBE_V - 0.5) / np.linalg.norm(CUBE_V - 0.5, axis=1, keepdims=True)


@pytest.mark.parametrize(
    "header, extra, has_normals",
    [
        ("OFF", None, False),
        ("COFF", [[255, 0, 0, 255]] * 8, False),
        ("NOFF", NORMALS.tolist(), True),
        ("CNOFF", [[*n, 0.1, 0.2, 0.3, 1.0] for n in NORMALS.tolist()], True),
        ("STOFF", [[0.25, 0.75]] * 8, False),
        ("STCNOFF", [[*n, 1, 1, 1, 1, 0.5, 0.5] for n in NORMALS.tolist()], True),
    ],
)
@pytest.mark.parametrize("fused", [False, True])
def test_off_variants_load(tmp_path: Path, header: str, extra, has_normals: bool, fused: bool) -> None:
    path = tmp_path / "cube.off"
    path.write_text(off_text(header, extra, fused))
    pos, normal, faces = read_off(path)
    np.testing.assert_allclose(pos, CUBE_V)
    assert faces.shape == (12, 3)
    if has_normals:
        np.testing.assert_allclose(normal, NORMALS, atol=1e-6)
    else:
        assert normal is None
    sampled, face_normal = load_point_cloud(path, mesh_points=200)
    assert sampled.shape == (200, 3) and on_cube_surface(sampled)
    np.testing.assert_allclose(np.abs(face_normal).max(1), 1.0)  # face normals, whatever the file's vertex normals


def test_noff_point_cloud_keeps_the_file_normals(tmp_path: Path) -> None:
    rows = [f"{x:g} {y:g} {z:g} {a:g} {b:g} {c:g}" for (x, y, z), (a, b, c) in zip(CUBE_V, NORMALS)]
    (tmp_path / "cloud.off").write_text("NOFF\n8 0 0\n" + "\n".join(rows) + "\n")
    pos, normal = load_point_cloud(tmp_path / "cloud.off")
    np.testing.assert_allclose(pos, CUBE_V)
    np.testing.assert_allclose(normal, NORMALS, atol=1e-6)


@pytest.mark.parametrize(
    "header, reason",
    [("4OFF", "4OFF"), ("4NOFF", "4NOFF"), ("nOFF", "nOFF"), ("OFF BINARY", "binary OFF"), ("PLY", "not an OFF")],
)
def test_unsupported_off_variants_are_refused_naming_file_and_header(tmp_path: Path, header: str, reason: str) -> None:
    path = tmp_path / "odd.off"
    path.write_text(f"{header}\n8 6 0\n" + "0 0 0 1\n" * 8)
    with pytest.raises(ValueError, match=reason) as error:
        read_off(path)
    assert "odd.off" in str(error.value) and header.split()[0] in str(error.value)


def test_obj_mesh_with_normals_textures_and_negative_indices(tmp_path: Path) -> None:
    lines = ["# exported", "o cube", "mtllib cube.mtl"] + [f"v {x:g} {y:g} {z:g} 0.5 0.5 0.5" for x, y, z in CUBE_V]
    lines += ["vt 0 0", "vn 0 0 1", "usemtl grey", "s off"]
    for i, q in enumerate(CUBE_QUADS):
        corners = [f"{v + 1}/1/1" for v in q] if i % 2 else [f"{v - 8}//1" for v in q]  # 1-based and negative
        lines.append("f " + " ".join(corners))
    path = tmp_path / "cube.obj"
    path.write_text("\n".join(lines) + "\n")
    pos, normal, faces = read_obj(path)
    np.testing.assert_allclose(pos, CUBE_V)
    assert normal is None  # a mesh: sampled with face normals
    assert {tuple(f) for f in faces.tolist()} == {tuple(t) for t in CUBE_TRIANGLES}
    sampled, face_normal = load_point_cloud(path, mesh_points=300)
    assert on_cube_surface(sampled) and np.allclose(np.abs(face_normal).max(1), 1.0)
    # a point cloud with one vn per v keeps them
    cloud = tmp_path / "cloud.obj"
    cloud.write_text("".join(f"v {x:g} {y:g} {z:g}\nvn {a:g} {b:g} {c:g}\n" for (x, y, z), (a, b, c) in zip(CUBE_V, NORMALS)))
    pos, normal = load_point_cloud(cloud)
    np.testing.assert_allclose(normal, NORMALS, atol=1e-6)
    (tmp_path / "bad.obj").write_text("v 0 0 0\nv 1 0\n")
    with pytest.raises(ValueError, match=r"bad\.obj:2"):
        read_obj(tmp_path / "bad.obj")
    (tmp_path / "range.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n")
    with pytest.raises(ValueError, match=r"range\.obj: face vertex index"):
        read_obj(tmp_path / "range.obj")


def stl_ascii(triangles: np.ndarray) -> str:
    facets = []
    for tri in triangles:
        corners = "\n".join(f"      vertex {x:e} {y:e} {z:e}" for x, y, z in tri)
        facets.append(f"  facet normal 0 0 0\n    outer loop\n{corners}\n    endloop\n  endfacet")
    return "solid cube\n" + "\n".join(facets) + "\nendsolid cube\n"


def stl_binary(triangles: np.ndarray, header: bytes) -> bytes:
    records = np.zeros(len(triangles), dtype=[("normal", "<f4", 3), ("corners", "<f4", (3, 3)), ("attribute", "<u2")])
    records["corners"] = triangles
    return header.ljust(80, b" ") + np.uint32(len(triangles)).tobytes() + records.tobytes()


@pytest.mark.parametrize("kind", ["ascii", "binary", "binary_solid_header"])
def test_stl_ascii_and_binary(tmp_path: Path, kind: str) -> None:
    triangles = CUBE_V[np.array(CUBE_TRIANGLES)]  # (12, 3, 3)
    path = tmp_path / "cube.stl"
    if kind == "ascii":
        path.write_text(stl_ascii(triangles))
    else:  # some writers start binary headers with 'solid': the exact size tells them apart
        path.write_bytes(stl_binary(triangles, b"solid exported by a CAD tool" if kind.endswith("header") else b"binary"))
    pos, normal, faces = read_stl(path)
    np.testing.assert_allclose(pos[faces], triangles)
    assert normal is None
    sampled, face_normal = load_point_cloud(path, mesh_points=300)
    assert on_cube_surface(sampled)
    centre_side = np.einsum("nd,nd->n", face_normal, sampled - 0.5)
    assert (centre_side > 0).all()  # outward winding gives outward normals
    path.write_bytes(stl_binary(triangles, b"cut")[:-7])
    with pytest.raises(ValueError, match=r"cube\.stl: not an STL file"):
        read_stl(path)


def test_ply_point_cloud_with_normals(tmp_path: Path) -> None:
    header = ["ply", "format ascii 1.0", "element vertex 8"]
    header += [f"property float {p}" for p in ("x", "y", "z", "nx", "ny", "nz")]
    rows = [" ".join(f"{v:g}" for v in [*p, *n]) for p, n in zip(CUBE_V, NORMALS)]
    (tmp_path / "cloud.ply").write_text("\n".join(header + ["end_header"] + rows) + "\n")
    pos, normal = load_point_cloud(tmp_path / "cloud.ply")
    np.testing.assert_allclose(pos, CUBE_V)
    np.testing.assert_allclose(normal, NORMALS, atol=1e-6)


def test_folder_reads_every_format(tmp_path: Path) -> None:
    root = tmp_path / "shapes"
    triangles = CUBE_V[np.array(CUBE_TRIANGLES)]
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        (root / label / "m.off").write_text(off_text("COFF", [[1, 1, 1]] * 8))
        (root / label / "m.stl").write_bytes(stl_binary(triangles, b"x"))
        lines = [f"v {x:g} {y:g} {z:g}" for x, y, z in CUBE_V] + ["f " + " ".join(str(v + 1) for v in q) for q in CUBE_QUADS]
        (root / label / "m.obj").write_text("\n".join(lines) + "\n")
    data = ds.PointFolder(root, "all", num_points=32)
    assert len(data) == 6 and data.has_normals


def test_clouds_with_fewer_points_than_the_model_needs_are_refused(tmp_path: Path) -> None:
    from aug_attn_tasks.points.prepare import prepare_cloud
    from aug_attn_tasks.points.recipe import required_points

    np.savetxt(tmp_path / "two.txt", [[0.0, 0, 0], [1, 0, 0]])
    with pytest.raises(ValueError, match=r"two\.txt: has 2 distinct points, the model needs at least 3"):
        prepare_cloud(tmp_path / "two.txt", {"num_points": 64})
    np.savetxt(tmp_path / "dup.txt", np.repeat(np.eye(3)[:2], 50, axis=0))  # 100 rows, 2 distinct points
    with pytest.raises(ValueError, match=r"dup\.txt: has 2 distinct points"):
        prepare_cloud(tmp_path / "dup.txt", {"num_points": 64})
    np.savetxt(tmp_path / "ten.txt", np.random.default_rng(0).normal(size=(10, 3)))
    with pytest.raises(ValueError, match=r"ten\.txt: has 10 distinct points, the model needs at least 16"):
        prepare_cloud(tmp_path / "ten.txt", {"num_points": 64, "min_points": 16})
    assert prepare_cloud(tmp_path / "ten.txt", {"num_points": 64})[0].shape == (64, 3)  # repeated, as before
    config = {"data": {}, "model": {"name": "risurconv", "neighbors": [16, 16]}}
    assert required_points(config) == 16
    assert required_points({"model": {"name": "pointnet2"}}) == 32  # PointNet++'s default first K
    assert required_points({"data": {"min_points": 5}, "model": {"neighbors": [16]}}) == 5
    # training data: refused naming the file, even with allow_fewer
    for label in ("a", "b"):
        (tmp_path / "set" / label).mkdir(parents=True)
        for i in range(3):
            np.savetxt(tmp_path / "set" / label / f"{i}.txt", np.random.default_rng(i).normal(size=(40, 3)))
    np.savetxt(tmp_path / "set" / "b" / "small.txt", np.random.default_rng(9).normal(size=(10, 3)))
    with pytest.raises(ValueError, match=r"small\.txt: has 10 distinct points, the model needs at least 16"):
        ds.PointFolder(tmp_path / "set", "all", num_points=32, allow_fewer=True, min_points=16)


def test_datasets_feed_pyg_loaders_transforms_and_models(tmp_path: Path) -> None:
    import torch
    import torch_geometric.transforms as T
    from torch_geometric.loader import DataLoader

    from aug_attn.models import PointNet2Classifier, RISurConvClassifier
    from aug_attn_tasks.points.transforms import Compose, ToData

    data = ds.SyntheticShapes(6, 64, seed=0, transform=Compose([ToData(), T.NormalizeScale()]))
    item = data[1]
    assert item.pos.shape == (64, 3) and item.normal.shape == (64, 3) and item.y.tolist() == [1]
    assert torch.allclose(item.pos.abs().max(), torch.tensor(1.0))  # PyG's transform ran
    batch = next(iter(DataLoader(data, batch_size=3)))
    assert batch.y.tolist() == [0, 1, 2] and batch.batch.shape == (192,)
    torch.manual_seed(0)
    for model in (RISurConvClassifier(4, samples=(16,), neighbors=(8,), channels=(16,), global_channels=16,
                                      transformer_layers=0, head_channels=(8,), num_heads=2, feature_channels=(8, 16)),
                  PointNet2Classifier(4, samples=(16,), neighbors=(8,), radii=(0.5,), channels=((16,),),
                                      global_channels=(16,), head_channels=(8,))):  # fmt: skip
        model.eval()
        with torch.no_grad():
            logits = model(batch)  # the Batch itself
            assert logits.shape == (3, 4)
            torch.testing.assert_close(logits, model(batch.pos, batch.normal, batch.batch))
            torch.testing.assert_close(model(data[2]), logits[2:])  # a single Data is a batch of one
    with pytest.raises(ValueError, match="not both"):
        model(batch, batch.normal)
    # segmentation: per-point parts as y, the category beside them
    part = ds.PointCloudDataset(num_points=4)
    part.arrays = {"pos": np.zeros((1, 4, 3), np.float32), "normal": np.zeros((1, 4, 0), np.float32),
                   "label": np.array([2]), "part": np.array([[5, 5, 6, 6]])}  # fmt: skip
    item = ToData()(part[0])
    assert item.y.tolist() == [5, 5, 6, 6] and item.category.tolist() == [2] and "normal" not in item


def test_random_rotation_turns_normals_with_positions_on_pyg_data() -> None:
    """RandomRotation on a PyG Data (after ToData) turns pos and normal by the same seeded rotation
    as on the sample dict, so RISurConv's logits do not change; PyG's RandomRotate turns pos only."""
    import torch
    import torch_geometric.transforms as T

    from aug_attn.models import RISurConvClassifier
    from aug_attn_tasks.points.transforms import RandomRotation, ToData

    sample = ds.SyntheticShapes(4, 64, seed=0)[2]
    rotation = RandomRotation("so3", seed=5)
    by_dict = ToData()(rotation(sample))
    by_data = rotation(ToData()(sample))
    torch.testing.assert_close(by_data.pos, by_dict.pos)
    torch.testing.assert_close(by_data.normal, by_dict.normal)
    assert not torch.allclose(by_data.normal, sample["normal"], atol=1e-3)  # it did turn
    torch.testing.assert_close((by_data.pos * by_data.normal).sum(-1), (sample["pos"] * sample["normal"]).sum(-1), atol=1e-5, rtol=0)
    torch.manual_seed(0)
    model = RISurConvClassifier(4, samples=(16,), neighbors=(8,), channels=(16,), global_channels=16, transformer_layers=0,
                                head_channels=(8,), num_heads=2, feature_channels=(8, 16)).eval()  # fmt: skip
    with torch.no_grad():
        reference = model(ToData()(sample))
        torch.testing.assert_close(model(by_data), reference, atol=1e-4, rtol=1e-4)
        torch.manual_seed(1)
        pos_only = T.RandomRotate(90, axis=0)(ToData()(sample))  # normals left behind
        assert torch.equal(pos_only.normal, sample["normal"]) and not torch.equal(pos_only.pos, sample["pos"])


def test_point_files_that_hold_no_real_points_are_refused_by_name(tmp_path: Path) -> None:
    """An .npz named .npy, complex or empty arrays, an OFF face of -1 vertices: errors naming the file."""
    np.savez(tmp_path / "archive.npz", pos=np.zeros((5, 3)))
    (tmp_path / "archive.npy").write_bytes((tmp_path / "archive.npz").read_bytes())
    np.save(tmp_path / "complex.npy", np.ones((5, 3), np.complex64))
    np.save(tmp_path / "empty.npy", np.zeros((0, 3)))
    (tmp_path / "face.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n-1 0 1 2\n")
    for name, match in [
        ("archive.npy", "an .npz archive, not one .npy array"),
        ("complex.npy", "expected real numbers, got dtype complex64"),
        ("empty.npy", "empty array"),
        ("face.off", "a face needs at least 3 vertex indices"),
    ]:
        with pytest.raises(ValueError, match=f"{name}: .*{match}"):
            load_point_cloud(tmp_path / name)


def test_huge_coordinates_normalise_without_collapsing() -> None:
    """Coordinates near 1e200 square to inf in float64; the shape must keep its form, not collapse to a point."""
    shape = np.random.default_rng(0).normal(size=(50, 3))
    np.testing.assert_allclose(ds.normalize_unit_sphere(shape * 1e200), ds.normalize_unit_sphere(shape), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="degenerate point cloud"):
        ds.normalize_unit_sphere(np.ones((4, 3)))
