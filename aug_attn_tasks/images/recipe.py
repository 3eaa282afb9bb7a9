"""The ``images`` recipe: (AA-)WRN / (AA-)ResNet classifiers on CIFAR-10/100, image folders or the synthetic set.

Config sections used here: ``data`` (see :class:`~aug_attn_tasks.images.data.ImageDataModule`),
``model`` (``arch`` plus the constructor's keyword arguments, see :func:`build_model`), ``optim``
(see :func:`aug_attn_tasks.optim.build_optimization`), ``trainer.max_epochs``.
Logged metrics: ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``, ``test/loss``, ``test/top1``,
``test/top5``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from aug_attn.models.resnet import (
    AttentionSpec,
    WideResNet,
    aa_resnet_small,
    count_parameters,
    resnet18,
    resnet34,
    resnet50,
)
from aug_attn_tasks.images.data import ImageDataModule, class_names_of, normalize_images, num_classes_of
from aug_attn_tasks.optim import build_optimization

__all__ = ["ARCHITECTURES", "build_model", "ImageClassifier", "build_module", "build_data", "report"]

ARCHITECTURES = {
    "wide_resnet": WideResNet,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "aa_resnet_small": aa_resnet_small,
}


def build_model(model_cfg: dict[str, Any], num_classes: int) -> nn.Module:
    """The classifier named by ``model_cfg["arch"]`` (a key of :data:`ARCHITECTURES`).

    Other keys are the constructor's keyword arguments; ``attention`` may be a bool or a mapping
    of :class:`~aug_attn.models.AttentionSpec` fields (e.g. ``{num_heads: 8, kappa: 0.2}``).
    """
    kwargs = dict(model_cfg)
    arch = kwargs.pop("arch", "aa_resnet_small")
    if arch not in ARCHITECTURES:
        raise ValueError(f"model.arch={arch!r}: expected one of {', '.join(ARCHITECTURES)}")
    if isinstance(kwargs.get("attention"), dict):
        kwargs["attention"] = AttentionSpec(**kwargs["attention"])
    try:
        return ARCHITECTURES[arch](num_classes=num_classes, **kwargs)
    except TypeError as error:
        raise ValueError(f"model section for arch={arch!r}: {error}") from error


class ImageClassifier(L.LightningModule):
    """Cross-entropy training of an image classifier; top-1/top-5 accuracy.

    Shapes: ``forward`` maps ``(B, 3, H, W)`` normalized images to ``(B, num_classes)`` logits;
    :meth:`normalize` turns ``(B, 3, H, W)`` uint8 images into that input with the training set's
    per-channel statistics, which checkpoints carry (buffers ``input_mean``, ``input_std``).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.config = config
        self.class_names = class_names_of(config.get("data", {}))
        num_classes = len(self.class_names)
        self.model = build_model(config.get("model", {}), num_classes)
        self.register_buffer("input_mean", torch.zeros(3))
        self.register_buffer("input_std", torch.ones(3))
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.test_top5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro")
        self.test_confusion = MulticlassConfusionMatrix(num_classes)

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def on_fit_start(self) -> None:
        # The data module computes the statistics on its training split; inference needs them too.
        data = self.trainer.datamodule
        self.input_mean.copy_(data.mean)
        self.input_std.copy_(data.std)

    def normalize(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` uint8 -> normalized float32, as the data module feeds training."""
        return normalize_images(images, self.input_mean, self.input_std)

    def _step(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        images, labels = batch
        logits = self(images)  # (B, num_classes)
        return F.cross_entropy(logits, labels), logits, labels

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, logits, labels = self._step(batch)
        self.train_acc(logits, labels)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        loss, logits, labels = self._step(batch)
        self.val_acc(logits, labels)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)
        self.log("val/acc", self.val_acc, prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        loss, logits, labels = self._step(batch)
        self.test_top1(logits, labels)
        self.test_top5(logits, labels)
        self.test_confusion.update(logits, labels)
        self.log("test/loss", loss, sync_dist=True)
        self.log("test/top1", self.test_top1)
        self.log("test/top5", self.test_top5)

    def on_test_epoch_end(self) -> None:
        # kept for aug_attn_tasks.confusion (confusion_test.tsv in the run folder)
        self.test_confusions = {"test": self.test_confusion.compute().cpu()}
        self.test_confusion.reset()

    def configure_optimizers(self) -> dict[str, Any]:
        return build_optimization(self.parameters(), self.config.get("optim", {}), self.trainer.max_epochs)


def build_module(config: dict[str, Any]) -> ImageClassifier:
    """The LightningModule of ``config`` (saves the config, with an image folder's ``data.class_names``)."""
    config = copy.deepcopy(config)
    data = config.setdefault("data", {})
    if data.get("dataset") == "imagefolder" and "class_names" not in data:
        data["class_names"] = class_names_of(data)
    return ImageClassifier(config)


def inference_command(config: dict[str, Any]) -> str:
    """The ``aug-attn classify`` command printed after training (``{checkpoint}``: the tested checkpoint)."""
    return "aug-attn classify IMAGE_FILE --checkpoint {checkpoint}"


def build_data(config: dict[str, Any]) -> ImageDataModule:
    """The LightningDataModule of ``config["data"]``."""
    return ImageDataModule(config.get("data", {}), int(config.get("seed", 0)))


def report(metrics: dict[str, float], config: dict[str, Any], run_dir: str | Path) -> None:
    """Print top-1/top-5 test accuracy and write them with the model size to ``run_dir/report.json``."""
    data = config.get("data", {})
    model = build_model(config.get("model", {}), num_classes_of(data))
    summary = {
        "config": config.get("name"),
        "dataset": data.get("dataset", "synthetic"),
        "arch": config.get("model", {}).get("arch", "aa_resnet_small"),
        "parameters": count_parameters(model),
        "top1": metrics.get("test/top1"),
        "top5": metrics.get("test/top5"),
    }
    print(
        f"{summary['config']}: {summary['arch']} ({summary['parameters'] / 1e6:.2f}M params) on {summary['dataset']} "
        f"test top-1 {100 * summary['top1']:.2f}%  top-5 {100 * summary['top5']:.2f}%"
    )
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / "report.json").write_text(json.dumps(summary, indent=2))
