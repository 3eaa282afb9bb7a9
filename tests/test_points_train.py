"""Point training and evaluation: rotation protocols, validation split, metrics, training smoke, classify CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from aug_attn.models.pointnet2 import PointNet2Classifier, PointNet2Segmenter
from aug_attn_tasks.cli import main
from aug_attn_tasks.points.data import PointDataModule, evaluation_protocols, stratified_split
from aug_attn_tasks.points.datasets import SHAPENET_PARTS
from aug_attn_tasks.points.metrics import ClassAccuracy, PartIoU
from aug_attn_tasks.points.recipe import build_module, metric_key
from aug_attn_tasks.points.synthetic import SHAPES
from pictures import assert_picture

TINY_DATA = {
    "dataset": "synthetic",
    "num_train": 56,
    "num_test": 28,
    "num_points": 64,
    "protocol": "z/SO3",
    "test_rotations": ["z", "so3"],
    "val_fraction": 0.25,
    "batch_size": 14,
    "eval_batch_size": 14,
}
TINY_RISURCONV = {
    "name": "risurconv",
    "samples": [16, 4],
    "neighbors": [8, 4],
    "channels": [16, 32],
    "feature_channels": [16, 16],
    "global_channels": 32,
    "transformer_layers": 1,
    "transformer_heads": 2,
    "head_channels": [32],
    "dropout": 0.0,
}
TINY_POINTNET2 = {
    "name": "pointnet2",
    "samples": [16, 4],
    "neighbors": [8, 4],
    "radii": [0.4, 0.8],
    "channels": [[16, 16], [32, 32]],
    "global_channels": [32],
    "head_channels": [32],
    "dropout": 0.0,
}


def stacked(dataset, workers: int = 0) -> dict[str, torch.Tensor]:
    batches = list(DataLoader(dataset, batch_size=5, num_workers=workers))
    return {key: torch.cat([b[key] for b in batches]) for key in batches[0]}


def test_protocols_and_names() -> None:
    assert evaluation_protocols({"protocol": "z/SO3", "test_rotations": ["z", "SO3"]}) == [("z", "z"), ("z", "so3")]
    assert evaluation_protocols({"protocol": "SO3/SO3"}) == [("so3", "so3")]
    assert metric_key("z", "so3") == "z_SO3"
    with pytest.raises(ValueError, match="protocol"):
        evaluation_protocols({"protocol": "z/x"})


def test_rotated_test_sets_are_rotations_and_reproducible() -> None:
    data = PointDataModule(TINY_DATA)
    data.setup("fit")
    base = stacked(data.test_sets[0].dataset)  # the unrotated test shapes
    z_set, so3_set = stacked(data.test_sets[0]), stacked(data.test_sets[1])
    # z: turned about the vertical axis only, each shape by its own angle
    assert torch.allclose(z_set["pos"][..., 2], base["pos"][..., 2], atol=1e-6)
    assert not torch.allclose(z_set["pos"], base["pos"], atol=1e-2)
    before = torch.cat([base["pos"], base["normal"]], dim=1).double()  # (S, 2N, 3): planes need their normals
    tilts = []
    for rotated in (z_set, so3_set):
        # one proper rotation per shape, applied to points and normals alike: after = before @ r
        after = torch.cat([rotated["pos"], rotated["normal"]], dim=1).double()
        r = torch.linalg.lstsq(before, after).solution  # (S, 3, 3)
        assert torch.allclose(before @ r, after, atol=1e-4)
        assert torch.allclose(r.transpose(1, 2) @ r, torch.eye(3, dtype=torch.float64).expand_as(r), atol=1e-4)
        assert torch.allclose(torch.linalg.det(r), torch.ones(len(r), dtype=torch.float64), atol=1e-4)
        tilts.append(r[:, 2, 2])
    assert torch.allclose(tilts[0], torch.ones_like(tilts[0]), atol=1e-5)
    assert (tilts[1] < 0.9).float().mean() > 0.5  # SO3 tilts the vertical axis of most shapes
    # the same rotations in a fresh data module, and through worker processes
    again = PointDataModule(dict(TINY_DATA))
    again.setup("test")
    assert torch.equal(stacked(again.test_sets[1], workers=2)["pos"], so3_set["pos"])
    # another rotation seed gives other rotations
    other = PointDataModule({**TINY_DATA, "rotation_seed": 1})
    other.setup("test")
    assert not torch.allclose(stacked(other.test_sets[1])["pos"], so3_set["pos"], atol=1e-3)


def test_validation_split_is_disjoint_stratified_and_upright() -> None:
    labels = np.arange(200) % 7
    train, val = stratified_split(labels, 0.2, seed=3)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 200
    assert np.bincount(labels[val]).tolist() == [round(0.2 * c) for c in np.bincount(labels)]
    assert np.array_equal(stratified_split(labels, 0.2, seed=3)[1], val)
    assert not np.array_equal(stratified_split(labels, 0.2, seed=4)[1], val)
    data = PointDataModule(TINY_DATA)
    data.setup("fit")
    train_idx, val_idx = set(data.train_set.indices), set(data.val_set.indices)
    assert not train_idx & val_idx and train_idx | val_idx == set(range(56))
    val = stacked(data.val_set)
    base = stacked(torch.utils.data.Subset(data.val_set.dataset, data.val_set.indices))
    # validation is rotated like training (about z), never like the SO3 test set
    assert torch.allclose(val["pos"][..., 2], base["pos"][..., 2], atol=1e-6)
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(labels, 0.0, seed=0)


def test_class_accuracy_hand_computed() -> None:
    metric = ClassAccuracy(4)
    metric.update(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]))
    logits = torch.tensor([[0.0, 2.0, 0, 0], [0, 0, 0, 3.0]])  # predicts 1, 3
    metric.update(logits, torch.tensor([1, 2]))
    result = metric.compute()
    assert result["oa"].item() == pytest.approx(3 / 5)
    # recalls: class 0 1/1, class 1 2/3, class 2 0/1; class 3 (predicted, never a target) is not averaged
    assert result["macc"].item() == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_part_iou_hand_computed() -> None:
    categories = [(0, 1), (2, 3, 4)]
    metric = PartIoU(categories, num_parts=5)
    # shape A, category 0: part 0 IoU 1/2, part 1 IoU 2/3
    metric.update(torch.tensor([[0, 1, 1, 1]]), torch.tensor([[0, 0, 1, 1]]), torch.tensor([0]))
    # shape B, category 1: perfect; part 4 absent from prediction and truth counts 1 -> 1.0
    # shape C, category 1: part 2 IoU 2/4, part 3 IoU 0/2, part 4 absent in both: 1 -> 0.5
    preds = torch.tensor([[2, 2, 3, 3], [3, 3, 2, 2]])
    metric.update(preds, torch.tensor([[2, 2, 3, 3], [2, 2, 2, 2]]), torch.tensor([1, 1]))
    result = metric.compute()
    a, b, c = (0.5 + 2 / 3) / 2, 1.0, 0.5
    assert result["instance_miou"].item() == pytest.approx((a + b + c) / 3)
    assert result["class_miou"].item() == pytest.approx((a + (b + c) / 2) / 2)
    # logits: the argmax is taken over the shape's own category's parts only
    metric.reset()
    logits = torch.full((1, 2, 5), -5.0)
    logits[0, :, 4] = 10.0  # a part of the other category wins overall ...
    logits[0, 0, 0], logits[0, 1, 1] = 1.0, 2.0  # ... but among parts 0, 1 these do
    metric.update(logits, torch.tensor([[0, 1]]), torch.tensor([0]))
    assert metric.compute()["instance_miou"].item() == pytest.approx(1.0)


def test_metrics_merge_like_processes() -> None:
    """States are sums: metrics updated on two shards and merged (what DDP's sync does) equal one metric."""
    pred, target = torch.randint(0, 4, (30,)), torch.randint(0, 4, (30,))
    parts, part_target = torch.randint(0, 5, (6, 10)), torch.randint(0, 5, (6, 10))
    category = torch.tensor([0, 1, 1, 0, 1, 0])
    cases = [(lambda: ClassAccuracy(4), (pred, target))]
    cases.append((lambda: PartIoU([(0, 1), (2, 3, 4)], 5), (parts, part_target, category)))
    for make, args in cases:
        full, first, second = make(), make(), make()
        full.update(*args)
        first.update(*(a[: len(a) // 2] for a in args))
        second.update(*(a[len(a) // 2 :] for a in args))
        first.merge_state(second)
        assert all(torch.allclose(first.compute()[k], v) for k, v in full.compute().items())


def overfit_losses(module, batch: dict[str, torch.Tensor], steps: int) -> list[float]:
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    module.train()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = module.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("model", [TINY_RISURCONV, TINY_POINTNET2], ids=["risurconv", "pointnet2"])
def test_classifier_training_reduces_loss(model: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    module = build_module({"task": "points", "data": TINY_DATA, "model": model})
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)  # no Trainer attached
    assert module.class_names == list(SHAPES)
    data = PointDataModule(TINY_DATA)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    losses = overfit_losses(module, batch, 12)
    assert np.mean(losses[-3:]) < 0.7 * losses[0]


def make_shapenet(root: Path) -> None:
    """A 2-category ShapeNet part tree (Airplane, Mug) in the benchmark layout; parts split by height."""
    synsets = {name: f"{i:08d}" for i, name in enumerate(SHAPENET_PARTS)}
    root.mkdir(parents=True)
    (root / "synsetoffset2category.txt").write_text("".join(f"{n}\t{s}\n" for n, s in synsets.items()))
    rng = np.random.default_rng(0)
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for i in range(12):
        name = ("Airplane", "Mug")[i % 2]
        split = "train" if i < 8 else ("val" if i < 10 else "test")
        pos = rng.normal(size=(150, 3))
        normal = pos / np.linalg.norm(pos, axis=1, keepdims=True)
        parts = np.array(SHAPENET_PARTS[name])
        labels = parts[np.clip(((normal[:, 2] + 1) / 2 * len(parts)).astype(int), 0, len(parts) - 1)]
        folder = root / synsets[name]
        folder.mkdir(exist_ok=True)
        np.savetxt(folder / f"s{i}.txt", np.hstack([normal, normal, labels[:, None]]), fmt="%.6f")
        lists[split].append(f"shape_data/{synsets[name]}/s{i}")
    (root / "train_test_split").mkdir()
    for split, entries in lists.items():
        (root / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(json.dumps(entries))


TINY_POINTNET2_SEGMENTER = {
    "name": "pointnet2",
    "samples": [16, 8],
    "neighbors": [8, 8],
    "radii": [0.6, 1.2],
    "channels": [[16, 16], [16, 32]],
    "global_channels": [32],
    "decoder_channels": [[32], [16], [16]],
    "head_channels": 16,
    "dropout": 0.0,
}


@pytest.mark.parametrize("name", ["risurconv", "pointnet2"])
def test_segmenter_training_and_evaluation(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    root = tmp_path / "shapenet"
    make_shapenet(root)
    data_cfg = {
        "dataset": "shapenet_part",
        "root": str(root),
        "num_points": 64,
        "protocol": "z/SO3",
        "test_rotations": ["z", "so3"],
        "batch_size": 4,
        "eval_batch_size": 4,
    }
    if name == "risurconv":
        model = {**TINY_RISURCONV, "decoder_channels": [32, 16], "head_channels": 16}
        for key in ("global_channels", "transformer_layers", "transformer_heads"):  # classifier-only arguments
            del model[key]
    else:
        model = TINY_POINTNET2_SEGMENTER
    module = build_module({"task": "points", "data": data_cfg, "model": model})
    assert type(module.model).__name__ == {"risurconv": "RISurConvSegmenter", "pointnet2": "PointNet2Segmenter"}[name]
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)
    data = PointDataModule(data_cfg)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["part"].shape == (4, 64)
    losses = overfit_losses(module, batch, 10)
    assert np.mean(losses[-3:]) < 0.8 * losses[0]
    # end to end through the CLI: fit, select on the official val list, test both protocols
    config = tmp_path / "seg.yaml"
    config.write_text(json.dumps({"task": "points", "data": data_cfg, "model": model, "trainer": {"max_epochs": 1}}))
    overrides = ["--output.dir", str(tmp_path / "runs"), "--checkpoint.monitor", "val/instance_miou"]
    overrides += ["--checkpoint.mode", "max", "--trainer.enable_progress_bar", "false"]
    assert main(["train", str(config), *overrides]) == 0
    report = json.loads(next((tmp_path / "runs").rglob("report.json")).read_text())
    for protocol in ("z/z", "z/SO3"):
        values = report["protocols"][protocol]
        assert 0 <= values["instance_miou"] <= 1 and 0 <= values["class_miou"] <= 1
    printed = capsys.readouterr().out
    assert "z/SO3: instance mIoU" in printed and "use it:" not in printed  # `classify` is for classifiers


def test_pointnet2_segmenter_ragged_matches_dense_and_is_not_rotation_invariant() -> None:
    model = PointNet2Segmenter(6, num_categories=3, **{k: v for k, v in TINY_POINTNET2_SEGMENTER.items() if k != "name"}).eval()
    torch.manual_seed(0)
    pos = torch.randn(2, 20, 3, dtype=torch.float64)
    normal = torch.nn.functional.normalize(torch.randn(2, 20, 3, dtype=torch.float64), dim=-1)
    category = torch.tensor([0, 2])
    model = model.double()
    with torch.no_grad():
        dense = model(pos, normal, category=category)
        # a second cloud with fewer points: the padding of the dense batch must not leak into the result
        small = model(pos[1:, :13], normal[1:, :13], category=category[1:])
        ragged = model(torch.cat([pos[0], pos[1, :13]]), torch.cat([normal[0], normal[1, :13]]),
                       torch.tensor([0] * 20 + [1] * 13), category=category)  # fmt: skip
        rotation = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64)).Q
        rotated = model(pos @ rotation.T, normal @ rotation.T, category=category)
    assert dense.shape == (2, 20, 6) and ragged.shape == (33, 6)
    torch.testing.assert_close(ragged[:20], dense[0])
    torch.testing.assert_close(ragged[20:], small[0])
    assert (rotated - dense).abs().max() > 1e-3  # raw coordinates: the baseline is not invariant
    with pytest.raises(ValueError, match="category labels are required"):
        model(pos, normal)
    with pytest.raises(ValueError, match="one non-empty MLP per level"):
        PointNet2Segmenter(6, samples=(8,), neighbors=(4,), radii=(None,), channels=((8,),), decoder_channels=((8,),))


def test_pointnet2_ragged_matches_dense() -> None:
    model = PointNet2Classifier(5, samples=(8,), neighbors=(4,), radii=(None,), channels=((8,),), global_channels=(8,),
                                head_channels=(8,)).eval()  # fmt: skip
    pos = torch.randn(2, 20, 3)
    normal = torch.nn.functional.normalize(torch.randn(2, 20, 3), dim=-1)
    batch = torch.arange(2).repeat_interleave(20)
    with torch.no_grad():
        dense, ragged = model(pos, normal), model(pos.flatten(0, 1), normal.flatten(0, 1), batch)
    assert dense.shape == (2, 5) and torch.allclose(dense, ragged, atol=1e-5)
    with pytest.raises(ValueError, match="needs normals"):
        model(pos)


def test_classify_cli(tmp_path: Path, capsys) -> None:
    overrides = [f"--data.{k}={json.dumps(v)}" for k, v in TINY_DATA.items()]
    overrides += [f"--model={json.dumps(TINY_RISURCONV)}", "--trainer.max_epochs=1", f"--output.dir={tmp_path}"]
    assert main(["train", "risurconv_synthetic", "--trainer.enable_progress_bar=false", *overrides]) == 0
    checkpoint = next(tmp_path.rglob("best.ckpt"))
    printed = capsys.readouterr().out
    assert "z/z: OA" in printed and "z/SO3: OA" in printed and f"use it: aug-attn classify POINT_CLOUD_FILE --checkpoint {checkpoint}" in printed
    metrics = json.loads(next(tmp_path.rglob("test_metrics.json")).read_text())
    assert {"test/z_z/oa", "test/z_z/macc", "test/z_SO3/oa", "test/z_SO3/macc"} <= set(metrics)
    run_dir = checkpoint.parent.parent
    assert main(["plot", str(run_dir)]) == 0  # curves, a confusion matrix per protocol, accuracy per rotation
    pictures = ["curves.png", "confusion_z_SO3.png", "confusion_z_z.png", "accuracy_per_rotation.png"]
    assert capsys.readouterr().out.splitlines() == [f"wrote {run_dir / name}" for name in pictures]
    for name in pictures:
        assert_picture(run_dir / name)

    # `aug-attn test` with another set of test rotations than the run's
    rotations = "--data.test_rotations=[so3, none]"
    assert main(["test", str(checkpoint), rotations, "--trainer.enable_progress_bar=false"]) == 0
    printed = capsys.readouterr().out
    assert "z/SO3: OA" in printed and "z/none: OA" in printed and "z/z: OA" not in printed

    pos, normal = SHAPES["box"](np.random.default_rng(0), 500)
    np.save(tmp_path / "box.npy", np.hstack([pos, normal]))
    np.savetxt(tmp_path / "box.txt", pos)  # no normals: RISurConv estimates them
    # a mesh in ModelNet's quirky OFF (header fused with the counts): sampled by area, normals from faces
    cube = [[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)]
    quads = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    lines = ["OFF8 6 0", "# comment"] + [" ".join(map(str, v)) for v in cube]
    lines += ["4 " + " ".join(map(str, q)) for q in quads]
    (tmp_path / "cube.off").write_text("\n".join(lines) + "\n")
    for name in ("box.npy", "box.txt", "cube.off"):
        assert main(["classify", str(tmp_path / name), "--checkpoint", str(checkpoint), "--top", "3"]) == 0
        _, row = capsys.readouterr().out.splitlines()  # header, then path, (class, probability) x 3, error
        cells = row.split("\t")
        names, probs = cells[1:7:2], list(map(float, cells[2:7:2]))
        assert cells[0] == str(tmp_path / name) and set(names) <= set(SHAPES)
        assert probs == sorted(probs, reverse=True)
    assert main(["classify", str(tmp_path / "missing.off"), "--checkpoint", str(checkpoint)]) == 1  # an error row, not the end of the run
    assert "missing.off" in capsys.readouterr().err
