"""Image recipe: CIFAR loading and its errors, synthetic data, augmentation, the (AA-)WRN/ResNet models."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aug_attn.layers import AAConv2d
from aug_attn.models import AttentionSpec, ResNet, WideResNet, aa_resnet_small, count_parameters, resnet18, resnet34, resnet50, wrn28_10
from aug_attn.models.resnet import BasicBlock, Bottleneck, WideBasicBlock
from aug_attn_tasks.images.cifar import CIFAR_LAYOUTS, load_cifar
from aug_attn_tasks.images.data import ImageDataModule, channel_stats, random_crop_flip
from aug_attn_tasks.images.recipe import build_model
from aug_attn_tasks.images.synthetic import synthetic_images


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core machine two OpenMP threads spin against other jobs
    and run some of these small steps 20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- CIFAR archives in the real layout


def _batch(dataset: str, n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    layout = CIFAR_LAYOUTS[dataset]
    out = {b"batch_label": b"fake", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
    out[layout.label_key] = rng.integers(0, layout.num_classes, n).tolist()
    if dataset == "cifar100":
        out[b"coarse_labels"] = rng.integers(0, 20, n).tolist()
    return out


def _meta(dataset: str) -> dict:
    layout = CIFAR_LAYOUTS[dataset]
    names = [f"class{i}".encode() for i in range(layout.num_classes)]
    if dataset == "cifar100":
        return {b"fine_label_names": names, b"coarse_label_names": [f"super{i}".encode() for i in range(20)]}
    return {b"label_names": names, b"num_cases_per_batch": 4}


def _files(dataset: str, n: int = 4) -> dict[str, bytes]:
    layout = CIFAR_LAYOUTS[dataset]
    files = {layout.meta: pickle.dumps(_meta(dataset))}
    for i, name in enumerate(layout.train + layout.test):
        files[name] = pickle.dumps(_batch(dataset, n, i))
    return files


def _write(tmp_path: Path, dataset: str, archive: bool, files: dict[str, bytes] | None = None) -> Path:
    layout = CIFAR_LAYOUTS[dataset]
    files = files or _files(dataset)
    if not archive:
        folder = tmp_path / layout.folder
        folder.mkdir()
        for name, raw in files.items():
            (folder / name).write_bytes(raw)
        return folder
    path = tmp_path / layout.archive
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in files.items():
            info = tarfile.TarInfo(f"{layout.folder}/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
@pytest.mark.parametrize("archive", [False, True])
def test_load_cifar_layouts(tmp_path, dataset, archive):
    _write(tmp_path, dataset, archive)
    layout = CIFAR_LAYOUTS[dataset]
    train, test = load_cifar(tmp_path, dataset, "train"), load_cifar(tmp_path, dataset, "test")
    assert train.images.shape == (4 * len(layout.train), 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (4, 3, 32, 32) and len(train.classes) == layout.num_classes
    first = _batch(dataset, 4, 0)
    # Channel-major rows of 3072: R plane, G plane, B plane, each 32x32 row-major.
    assert train.images[1, 1, 2, 3] == first[b"data"][1, 1024 + 2 * 32 + 3]
    assert train.labels[:4].tolist() == first[layout.label_key]  # fine labels for CIFAR-100
    assert test.labels.tolist() == _batch(dataset, 4, len(layout.train))[layout.label_key]


def test_load_cifar_accepts_the_archive_or_folder_itself(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    folder, archive = _write(tmp_path / "a", "cifar10", False), _write(tmp_path / "b", "cifar10", True)
    assert torch.equal(load_cifar(folder, "cifar10").images, load_cifar(archive, "cifar10").images)


def test_wrong_archive_names_the_file(tmp_path):
    path = _write(tmp_path, "cifar100", True)
    with pytest.raises(ValueError, match=r"cifar-100-python\.tar\.gz.*wrong archive.*batches\.meta"):
        load_cifar(path, "cifar10")
    bogus = tmp_path / "cifar-10-python.tar.gz"
    bogus.write_bytes(b"this is not gzip")
    with pytest.raises(ValueError, match=r"cifar-10-python\.tar\.gz: not a readable"):
        load_cifar(tmp_path, "cifar10")
    with pytest.raises(FileNotFoundError, match="no CIFAR data"):
        load_cifar(tmp_path / "nowhere", "cifar10")


@pytest.mark.parametrize("archive", [False, True])
def test_corrupt_batch_names_the_file(tmp_path, archive):
    files = _files("cifar10")
    files["data_batch_3"] = files["data_batch_3"][:100]  # truncated pickle
    _write(tmp_path, "cifar10", archive, files)
    with pytest.raises(ValueError, match=r"data_batch_3: corrupt CIFAR batch"):
        load_cifar(tmp_path, "cifar10")
    load_cifar(tmp_path, "cifar10", "test")  # the intact test batch still loads


def test_batch_with_wrong_content_names_the_file(tmp_path):
    files = _files("cifar100")
    bad = _batch("cifar100", 4, 0)
    bad[b"data"] = bad[b"data"][:, :100]
    files["test"] = pickle.dumps(bad)
    del_labels = _batch("cifar100", 4, 0)
    del del_labels[b"fine_labels"]
    files["train"] = pickle.dumps(del_labels)
    _write(tmp_path, "cifar100", False, files)
    with pytest.raises(ValueError, match=r"cifar-100-python/test: corrupt CIFAR batch \(data uint8 \(4, 100\)"):
        load_cifar(tmp_path, "cifar100", "test")
    with pytest.raises(ValueError, match=r"cifar-100-python/train: not a CIFAR batch.*fine_labels"):
        load_cifar(tmp_path, "cifar100", "train")


def test_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    files = _files("cifar10")
    files["test_batch"] = pickle.dumps(Evil())
    _write(tmp_path, "cifar10", False, files)
    with pytest.raises(ValueError, match=r"test_batch: corrupt CIFAR batch.*refusing to load builtins\.print"):
        load_cifar(tmp_path, "cifar10", "test")


# ---------------------------------------------------------------- synthetic data, augmentation, splits


def test_synthetic_is_deterministic_and_balanced():
    x, y = synthetic_images(200, seed=3)
    x2, y2 = synthetic_images(200, seed=3)
    x3, _ = synthetic_images(200, seed=4)
    assert x.shape == (200, 3, 32, 32) and x.dtype == torch.uint8
    assert torch.equal(x, x2) and torch.equal(y, y2) and not torch.equal(x, x3)
    assert torch.bincount(y, minlength=10).tolist() == [20] * 10


def test_random_crop_flip_is_a_shifted_window():
    images = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).view(2, 3, 5, 7) + 1
    unpadded = random_crop_flip(images, 0, torch.Generator().manual_seed(0))
    for a, b in zip(unpadded, images):
        assert torch.equal(a, b) or torch.equal(a, b.flip(-1))
    out = random_crop_flip(images, 2, torch.Generator().manual_seed(1))
    assert out.shape == images.shape
    padded = F.pad(images, (2, 2, 2, 2))
    for a, p in zip(out, padded):
        windows = [p[:, i : i + 5, j : j + 7] for i in range(5) for j in range(5)]
        assert any(torch.equal(a, w) or torch.equal(a, w.flip(-1)) for w in windows)


def test_channel_stats():
    x = torch.randint(0, 256, (50, 3, 4, 5), dtype=torch.uint8)
    mean, std = channel_stats(x, chunk=7)
    ref = x.double().div(255).transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(mean.double(), ref.mean(1), atol=1e-6, rtol=0)
    torch.testing.assert_close(std.double(), ref.std(1, unbiased=False), atol=1e-6, rtol=0)


def test_no_validation_split_trains_on_everything():
    dm = ImageDataModule({"dataset": "synthetic", "num_train": 50, "num_test": 10, "val_size": 0})
    dm.setup()
    assert not dm.has_validation and len(dm.splits["train"]) == 50 and dm.val_dataloader() == []
    for bad in (-1, "5000", True):
        with pytest.raises(ValueError, match="data.val_size"):
            ImageDataModule({"dataset": "synthetic", "val_size": bad})
    with pytest.raises(ValueError, match="must leave images"):
        ImageDataModule({"dataset": "synthetic", "num_train": 50, "num_test": 10, "val_size": 50}).setup()


def test_validation_split_is_carved_from_train():
    dm = ImageDataModule({"dataset": "synthetic", "num_train": 100, "num_test": 30, "val_size": 0.2, "split_seed": 5})
    dm.setup()
    train, val, test = (dm.splits[k].tensors[0] for k in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (80, 20, 30)
    full, _ = synthetic_images(100, seed=1)
    rows = {bytes(r.numpy()) for r in full}
    assert all(bytes(r.numpy()) in rows for r in torch.cat([train, val]))  # both from the training draw
    assert not {bytes(r.numpy()) for r in train} & {bytes(r.numpy()) for r in val}
    assert not rows & {bytes(r.numpy()) for r in test}


# ---------------------------------------------------------------- models


def _first_convs(model):
    """(block, its first 3x3 conv, stage index) for every residual block."""
    if isinstance(model, WideResNet):
        per_group = len(model.blocks) // 3
        return [(b, b.conv1, i // per_group + 1) for i, b in enumerate(model.blocks)]
    out = []
    for s, stage in enumerate(model.stages, start=1):
        for b in stage:
            out.append((b, b.conv2 if isinstance(b, Bottleneck) else b.conv1, s))
    return out


SMALL_MODELS = {
    "wrn16_2": lambda a: WideResNet(16, 2, 10, attention=a),
    "resnet_basic_cifar": lambda a: ResNet(BasicBlock, (1, 2, 1, 1), 10, (16, 16, 32, 32), "cifar", a),
    "resnet_bottleneck_imagenet": lambda a: ResNet(Bottleneck, (1, 1, 2, 1), 10, (16, 16, 32, 32), "imagenet", a),
    "aa_resnet_small": lambda a: aa_resnet_small(10, a, None),
}


# Narrow models on CIFAR-sized and odd non-square inputs (stride-2 stages then see ceil-halved odd sizes).
@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
@pytest.mark.parametrize("size", [(32, 32), (19, 27)])
def test_forward_backward(name, size):
    model = SMALL_MODELS[name](AttentionSpec(num_heads=4, min_key_dim=4))
    tokens = {}
    for module in model.modules():
        if isinstance(module, AAConv2d):
            module.register_forward_hook(lambda m, i, o: tokens.__setitem__(m, o.shape[2] * o.shape[3]))
    x = torch.randn(2, 3, *size)
    logits = model(x)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    logits.square().sum().backward()
    for param_name, p in model.named_parameters():
        assert p.grad is not None, param_name
    # Relative tables learn wherever there are two or more tokens (one token: softmax weight is 1).
    assert tokens and any(n > 1 for n in tokens.values())
    for module, n in tokens.items():
        if n > 1:
            assert all(p.grad.abs().sum() > 0 for p in module.attn.encoder.parameters())


@pytest.mark.parametrize(
    "build",
    [
        lambda: wrn28_10(100, attention=True),
        lambda: resnet50(100, stem="cifar", attention=True, attention_stages=(2, 3, 4)),
        lambda: resnet34(10, attention=True),
    ],
)
def test_full_size_models_forward_backward_on_tiny_inputs(build):
    model = build()
    logits = model(torch.randn(2, 3, 8, 7))
    logits.logsumexp(1).sum().backward()
    assert torch.isfinite(logits).all() and all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_attention_switch_augments_the_first_conv_of_every_block(name):
    plain, augmented = SMALL_MODELS[name](False), SMALL_MODELS[name](True)
    assert not any(isinstance(m, AAConv2d) for m in plain.modules())
    blocks = _first_convs(augmented)
    assert all(isinstance(conv, AAConv2d) for _, conv, _ in blocks)
    assert sum(isinstance(m, AAConv2d) for m in augmented.modules()) == len(blocks)
    for block, conv, _ in blocks:
        assert conv.num_heads == 8 and conv.dk // 8 >= 20 and conv.dk >= round(0.2 * conv.out_channels)
        assert conv.dv == max(8, round(0.1 * conv.out_channels / 8) * 8) and conv.relative
        bn = block.bn2 if isinstance(block, (WideBasicBlock, Bottleneck)) else block.bn1
        assert bn.num_features == conv.out_channels  # BatchNorm right after the augmented conv


def test_attention_stages_select_blocks():
    model = resnet50(10, attention=True, attention_stages=(2, 3, 4))
    kinds = {(s, isinstance(conv, AAConv2d)) for _, conv, s in _first_convs(model)}
    assert kinds == {(1, False), (2, True), (3, True), (4, True)}
    with pytest.raises(ValueError, match="attention_stages"):
        resnet18(attention=True, attention_stages=(0, 5))


def test_paper_depths_in_wrn28_10():
    model = wrn28_10(100, attention=True)
    depths = {(conv.out_channels, conv.dk, conv.dv) for _, conv, _ in _first_convs(model)}
    # kappa=0.2 gives 32/64/128 key dims; the >= 20 per head rule lifts all three to 160.
    assert depths == {(160, 160, 16), (320, 160, 32), (640, 160, 64)}


# Published plain counts: Zagoruyko & Komodakis (WRN-28-10, CIFAR-10: 36.5M), torchvision / He et al.
# (ResNet-18/34/50 on 1000 classes). Ours are exact for these architectures.
@pytest.mark.parametrize(
    "build, expected",
    [
        (lambda: wrn28_10(10), 36_479_194),
        (lambda: wrn28_10(100), 36_536_884),
        (lambda: resnet18(), 11_689_512),
        (lambda: resnet34(), 21_797_672),
        (lambda: resnet50(), 25_557_032),
    ],
)
def test_plain_parameter_counts(build, expected):
    assert count_parameters(build()) == expected


def test_augmented_parameter_counts_near_the_paper():
    # Paper (rounded to 0.1M): AA-WRN-28-10 36.2M on CIFAR-100, AA-ResNet-50 25.8M (last 3 stages).
    assert abs(count_parameters(wrn28_10(100, attention=True)) / 36.2e6 - 1) < 0.01
    assert abs(count_parameters(resnet50(attention=True, attention_stages=(2, 3, 4))) / 25.8e6 - 1) < 0.005


def test_build_model_from_config():
    model = build_model({"arch": "wide_resnet", "depth": 10, "widen_factor": 1, "attention": {"num_heads": 2}}, 7)
    assert isinstance(model.blocks[0].conv1, AAConv2d) and model.blocks[0].conv1.num_heads == 2
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 7)
    with pytest.raises(ValueError, match="model.arch='vgg'"):
        build_model({"arch": "vgg"}, 10)


def test_a_few_steps_reduce_the_loss_on_synthetic_data():
    x, y = synthetic_images(64, seed=0, size=16)
    x = (x.float() / 255 - 0.5) / 0.25
    model = aa_resnet_small(10)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("val_size", [8, 0])
def test_recipe_trains_and_tests_on_a_cifar_archive(tmp_path, capsys, val_size):
    """The paper's config (no validation: tests the last epoch) and the held-out variant (tests the best)."""
    from aug_attn_tasks.config import load_config
    from aug_attn_tasks.recipes import load_checkpoint
    from aug_attn_tasks.train import fit

    _write(tmp_path, "cifar100", True, _files("cifar100", n=40))
    overrides = {
        "data.root": str(tmp_path),
        "data.val_size": val_size,
        "data.batch_size": 16,
        "optim.warmup_epochs": 0,
        "model.depth": 10,
        "model.widen_factor": 1,
        "model.attention": "{num_heads: 2, min_key_dim: 4}",
        "trainer.max_epochs": 1,
        "trainer.enable_progress_bar": "false",
        "trainer.enable_model_summary": "false",
        "output.dir": str(tmp_path / "runs"),
    }
    if not val_size:  # without validation, epoch-end checkpoints must not wait for a validation run
        overrides["trainer.check_val_every_n_epoch"] = 2
    config = load_config("aa_wrn28_10_cifar100", [f"--{k}={v}" for k, v in overrides.items()])
    config["trainer"]["accelerator"] = "cpu"
    metrics = fit(config)
    assert {"test/top1", "test/top5", "test/loss"} <= set(metrics) and 0 <= metrics["test/top1"] <= metrics["test/top5"]
    out = capsys.readouterr().out
    assert "top-1" in out
    logged = next((tmp_path / "runs").rglob("metrics.csv")).read_text().splitlines()[0].split(",")
    names = {p.name for p in (tmp_path / "runs").rglob("*.ckpt")}
    if val_size:
        assert "val/acc" in logged and names == {"best.ckpt", "last.ckpt"} and "best by val/acc" in out
    else:  # nothing validated, nothing selected: the last epoch is tested
        assert not any(name.startswith("val/") for name in logged) and names == {"last.ckpt"}
        assert "last epoch, no validation set" in out
    tested = next((tmp_path / "runs").rglob("best.ckpt" if val_size else "last.ckpt"))
    module, saved = load_checkpoint(tested)
    assert saved["data"]["dataset"] == "cifar100" and isinstance(module.model.blocks[0].conv1, AAConv2d)
