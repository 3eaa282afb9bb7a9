"""The ``points`` recipe: point cloud classification and ShapeNet part segmentation under rotation protocols.

Config sections used: ``data`` (see :mod:`aug_attn_tasks.points.data`; ``dataset: shapenet_part``
makes it a segmentation run, ``use_normals`` feeds the data's normals to the model, else RISurConv
estimates them), ``model`` (``name``: ``risurconv`` or ``pointnet2`` (the non-invariant baseline);
other keys go to the constructor), ``optim``
(:func:`~aug_attn_tasks.optim.build_optimization`).

Logged metrics: ``train/loss``; ``val/loss`` and ``val/oa``, ``val/macc`` (classification) or
``val/instance_miou``, ``val/class_miou`` (segmentation); for each test protocol ``P`` (e.g.
``z_SO3`` for ``z/SO3``): ``test/P/loss`` and ``test/P/oa``, ``test/P/macc`` or
``test/P/instance_miou``, ``test/P/class_miou``.
"""

from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path
from typing import Any

import lightning as L
import torch.nn.functional as F
from torch import Tensor, nn

from aug_attn.models.pointnet2 import PointNet2Classifier, PointNet2Segmenter
from aug_attn.models.risurconv import RISurConvClassifier, RISurConvSegmenter
from aug_attn_tasks.optim import build_optimization
from aug_attn_tasks.points.data import PointDataModule, evaluation_protocols, load_dataset, protocol_name
from aug_attn_tasks.points.datasets import SHAPENET_PARTS
from aug_attn_tasks.points.prepare import MIN_POINTS
from aug_attn_tasks.points.metrics import ClassAccuracy, PartIoU

__all__ = [
    "MODELS",
    "SEGMENTERS",
    "PointCloudModule",
    "build_model",
    "build_module",
    "build_data",
    "report",
    "metric_key",
    "required_points",
]

MODELS: dict[str, type[nn.Module]] = {"risurconv": RISurConvClassifier, "pointnet2": PointNet2Classifier}
SEGMENTERS: dict[str, type[nn.Module]] = {"risurconv": RISurConvSegmenter, "pointnet2": PointNet2Segmenter}
NUM_PARTS = sum(len(parts) for parts in SHAPENET_PARTS.values())


def is_segmentation(config: dict[str, Any]) -> bool:
    return config.get("data", {}).get("dataset") == "shapenet_part"


def inference_command(config: dict[str, Any]) -> str | None:
    """The ``aug-attn classify`` command printed after training a classifier (segmenters: none)."""
    return None if is_segmentation(config) else "aug-attn classify POINT_CLOUD_FILE --checkpoint {checkpoint}"


def metric_key(train: str, test: str) -> str:
    """The metric-name fragment of a protocol: ``("z", "so3")`` -> ``"z_SO3"``."""
    return protocol_name(train, test).replace("/", "_")


def build_model(model_cfg: dict[str, Any], num_classes: int, segmentation: bool = False) -> nn.Module:
    """The network named by ``model_cfg["name"]``; other keys are its constructor's keyword arguments.

    Segmentation builds a :class:`~aug_attn.models.RISurConvSegmenter` or
    :class:`~aug_attn.models.PointNet2Segmenter` with ShapeNet's 50 parts and ``num_classes``
    categories given as one-hot input.
    """
    kwargs = dict(model_cfg)
    name = kwargs.pop("name", "risurconv")
    try:
        if segmentation:
            if name not in SEGMENTERS:
                raise ValueError(f"model.name={name!r}: expected one of {', '.join(SEGMENTERS)} for segmentation")
            return SEGMENTERS[name](NUM_PARTS, num_categories=num_classes, **kwargs)
        if name not in MODELS:
            raise ValueError(f"model.name={name!r}: expected one of {', '.join(MODELS)}")
        return MODELS[name](num_classes, **kwargs)
    except TypeError as error:
        raise ValueError(f"model section for name={name!r}: {error}") from error


def required_points(config: dict[str, Any]) -> int:
    """Distinct points a cloud needs for the model of ``config``: ``data.min_points`` when set, else
    the model's first neighbourhood ``K`` (``neighbors[0]``, the constructor's default when the model
    section leaves it out: for RISurConv, :data:`~aug_attn.models.risurconv.CLASSIFIER_STAGES` or
    :data:`~aug_attn.models.risurconv.SEGMENTER_STAGES`), and never fewer than :data:`~aug_attn_tasks.points.prepare.MIN_POINTS`
    (normal estimation needs a plane; with fewer than its ``normal_k`` points neighbours repeat)."""
    data, model = config.get("data", {}), dict(config.get("model", {}))
    if "min_points" in data:
        return int(data["min_points"])
    name = model.get("name", "risurconv")
    table = SEGMENTERS if is_segmentation(config) else MODELS
    defaults = {
        key: p.default for key, p in inspect.signature(table.get(name, RISurConvClassifier)).parameters.items()
    }
    neighbors = list(model.get("neighbors", defaults.get("neighbors", ())))
    return max([MIN_POINTS, *(int(k) for k in neighbors[:1])])


class PointCloudModule(L.LightningModule):
    """Trains a point cloud classifier or part segmenter; evaluates every test rotation protocol.

    ``config["data"]["class_names"]`` must be set (:func:`build_module` fills it in from the
    dataset, so checkpoints carry the class names). Batches are dicts of ``pos (B, N, 3)``,
    ``normal (B, N, 3)`` or ``(B, N, 0)``, ``label (B,)`` (and ``part (B, N)``, ``category (B,)``).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.config = config
        data = config["data"]
        self.class_names: list[str] = list(data["class_names"])
        self.segmentation = is_segmentation(config)
        self.use_normals = bool(data.get("use_normals", True))
        self.model = build_model(config.get("model", {}), len(self.class_names), self.segmentation)
        self.protocols = evaluation_protocols(data)
        self.val_metric = self._metric()
        self.test_metrics = nn.ModuleList(self._metric() for _ in self.protocols)

    def _metric(self) -> ClassAccuracy | PartIoU:
        if self.segmentation:
            return PartIoU([SHAPENET_PARTS[name] for name in self.class_names], NUM_PARTS)
        return ClassAccuracy(len(self.class_names))

    def forward(self, pos: Tensor, normal: Tensor | None = None, category: Tensor | None = None) -> Tensor:
        """Logits ``(B, classes)``, or ``(B, N, 50)`` part logits for segmentation (``category (B,)``)."""
        if normal is not None and (normal.shape[-1] != 3 or not self.use_normals):
            normal = None  # data without normals, or a run told to estimate them
        if self.segmentation:
            return self.model(pos, normal, category=category)
        return self.model(pos, normal)

    def _step(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        logits = self(batch["pos"], batch["normal"], batch.get("category"))
        if self.segmentation:
            return F.cross_entropy(logits.flatten(0, 1), batch["part"].flatten()), logits
        return F.cross_entropy(logits, batch["label"]), logits

    def _update(self, metric: ClassAccuracy | PartIoU, logits: Tensor, batch: dict[str, Tensor]) -> None:
        if self.segmentation:
            metric.update(logits, batch["part"], batch["category"])
        else:
            metric.update(logits, batch["label"])

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, _ = self._step(batch)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["pos"]))
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        loss, logits = self._step(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch["pos"]), sync_dist=True)
        self._update(self.val_metric, logits, batch)

    def on_test_start(self) -> None:
        # `aug-attn test CKPT --data.test_rotations ...` evaluates other protocols than the run did.
        protocols = getattr(getattr(self.trainer, "datamodule", None), "protocols", None)
        if protocols is not None and list(protocols) != self.protocols:
            self.protocols = list(protocols)
            self.test_metrics = nn.ModuleList(self._metric() for _ in self.protocols).to(self.device)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        loss, logits = self._step(batch)
        key = metric_key(*self.protocols[dataloader_idx])
        self.log(f"test/{key}/loss", loss, batch_size=len(batch["pos"]), add_dataloader_idx=False, sync_dist=True)
        self._update(self.test_metrics[dataloader_idx], logits, batch)

    def _log_metric(self, metric: ClassAccuracy | PartIoU, prefix: str) -> None:
        # compute() syncs the summed states across processes; logging the values needs no further reduction.
        values = {f"{prefix}/{name}": value for name, value in metric.compute().items()}
        self.log_dict(values, prog_bar=prefix == "val", add_dataloader_idx=False, sync_dist=False)
        metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metric(self.val_metric, "val")

    def on_test_epoch_end(self) -> None:
        if not self.segmentation:  # kept for aug_attn_tasks.confusion (confusion_<protocol>.tsv)
            self.test_confusions = {metric_key(*p): m.confusion.clone().cpu() for p, m in zip(self.protocols, self.test_metrics)}
        for protocol, metric in zip(self.protocols, self.test_metrics):
            self._log_metric(metric, f"test/{metric_key(*protocol)}")

    def configure_optimizers(self) -> dict[str, Any]:
        return build_optimization(self.parameters(), self.config.get("optim", {}), self.trainer.max_epochs)


def _with_min_points(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` whose ``data.min_points`` is :func:`required_points` (so training data,
    checkpoints and ``classify`` refuse clouds the model cannot use, naming the file)."""
    config = copy.deepcopy(config)
    config.setdefault("data", {})["min_points"] = required_points(config)
    return config


def _with_classes(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with ``data.min_points`` and ``data.class_names`` filled in (the latter from the
    training set when missing)."""
    config = _with_min_points(config)
    data = config["data"]
    if "class_names" not in data:
        data["class_names"] = list(load_dataset(data, "train").class_names)
    return config


def build_module(config: dict[str, Any]) -> PointCloudModule:
    """The LightningModule of ``config`` (its saved config carries ``data.class_names``)."""
    return PointCloudModule(_with_classes(config))


def build_data(config: dict[str, Any]) -> PointDataModule:
    """The LightningDataModule of ``config["data"]``; checks the classes match a checkpoint's."""
    data = PointDataModule(_with_min_points(config)["data"])
    expected = config.get("data", {}).get("class_names")
    if expected is not None and list(expected) != list(data.class_names):
        raise ValueError(
            f"data.class_names of the config ({len(expected)} classes) differ from the dataset's "
            f"({len(data.class_names)}): a checkpoint can only be evaluated on data with its own classes"
        )
    return data


def report(metrics: dict[str, float], config: dict[str, Any], run_dir: str | Path) -> None:
    """Print each test protocol's metrics; write them to ``run_dir/report.json``."""
    data, name = config.get("data", {}), config.get("name", "run")
    names = ("instance_miou", "class_miou") if is_segmentation(config) else ("oa", "macc")
    labels = {"oa": "OA", "macc": "mAcc", "instance_miou": "instance mIoU", "class_miou": "class mIoU"}
    summary: dict[str, Any] = {
        "config": name,
        "dataset": data.get("dataset", "synthetic"),
        "model": config.get("model", {}).get("name", "risurconv"),
        "protocols": {},
    }
    for protocol in evaluation_protocols(data):
        key = metric_key(*protocol)
        values = {m: metrics.get(f"test/{key}/{m}", float("nan")) for m in names}
        summary["protocols"][protocol_name(*protocol)] = values
        shown = "  ".join(f"{labels[m]} {100 * v:.2f}%" for m, v in values.items())
        print(f"[{name}] {summary['model']} on {summary['dataset']} {protocol_name(*protocol)}: {shown}")
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / "report.json").write_text(json.dumps(summary, indent=2))
