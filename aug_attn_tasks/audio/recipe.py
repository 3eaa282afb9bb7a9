"""The ``tagging`` recipe: raw-waveform music tagging (multi-label) or classification (single-label).

Config sections used: ``data`` (see :class:`~aug_attn_tasks.audio.data.AudioDataModule`),
``model`` (``name``: muslcat | muslcan | samplecnn | plaincnn, other keys go to the model's constructor),
``optim`` (:func:`~aug_attn_tasks.optim.build_optimization`), ``loss``. Multi-label sets train with
binary cross-entropy and report macro ROC-AUC / PR-AUC; single-label sets use cross-entropy and
report accuracy (micro and macro over classes) and a confusion matrix, ``confusion_matrix.tsv`` in
the run folder. Validation and test average the sigmoid (softmax) outputs over ``val_chunks`` /
``eval_chunks`` (16) evenly spaced chunks per clip, the protocol of Won et al. 2020, or with
``cover`` over windows every ``chunk_samples`` covering the whole clip, as ``aug-attn tag`` does.

``model.normalize`` (``peak`` | ``rms`` | null) scales every model input window first
(:class:`~aug_attn_tasks.audio.transforms.LoudnessNormalize`), in training, evaluation and inference.
``loss.label_smoothing`` (single-label cross-entropy) and ``loss.mixup`` (alpha of the Beta
distribution of mixup, Zhang et al. 2018; 0 = off) act in training; mixup draws from torch's global
generator, which checkpoints save and restore.
"""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.aggregation import CatMetric
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_confusion_matrix

from aug_attn.models.muslcat import MuSLCAN, MuSLCAT
from aug_attn.models.plaincnn import PlainCNN
from aug_attn.models.samplecnn import SampleCNN
from aug_attn_tasks.audio.data import AudioDataModule, build_catalog, resolve_rate
from aug_attn_tasks.audio.metrics import PER_TAG_FILE, tagging_metrics
from aug_attn_tasks.audio.transforms import LoudnessNormalize
from aug_attn_tasks.config import check_keys, parameter_names
from aug_attn_tasks.optim import build_optimization

__all__ = [
    "MODELS", "TaggingModule", "build_model", "build_module", "build_data", "report", "write_predictions", "resolve_config",
    "PER_TAG_FILE", "CONFUSION_FILE", "PREDICTIONS_FILE",
]  # fmt: skip

MODELS: dict[str, type[nn.Module]] = {"muslcat": MuSLCAT, "muslcan": MuSLCAN, "samplecnn": SampleCNN, "plaincnn": PlainCNN}
PREDICTIONS_FILE = "predictions.csv"
CONFUSION_FILE = "confusion_matrix.tsv"


def inference_command(config: dict[str, Any]) -> str:
    """The ``aug-attn tag`` command printed after training (``{checkpoint}``: the tested checkpoint)."""
    return "aug-attn tag AUDIO_FILE --checkpoint {checkpoint}"


def build_model(model_cfg: dict[str, Any], num_tags: int) -> nn.Module:
    """The model named by ``model_cfg["name"]``, other keys as constructor arguments."""
    kwargs = dict(model_cfg)
    kwargs.pop("normalize", None)  # the module's input transform, not a constructor argument
    name = kwargs.pop("name", None)
    if name not in MODELS:
        raise ValueError(f"model.name={name!r}: expected one of {', '.join(MODELS)}")
    check_keys("model", kwargs, parameter_names(MODELS[name], skip=1))
    try:
        return MODELS[name](num_tags, **kwargs)
    except TypeError as error:  # e.g. MuSLCAN refusing the transformer's arguments
        raise ValueError(f"model section for name={name!r}: {error}") from error


class TaggingModule(L.LightningModule):
    """Trains a waveform tagger; ``config["data"]`` must hold ``tags`` and ``multi_label``
    (:func:`build_module` fills them in, so checkpoints carry the tag names)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.config = config
        self.tags: list[str] = list(config["data"]["tags"])
        self.multi_label = bool(config["data"]["multi_label"])
        self.model = build_model(config.get("model", {}), len(self.tags))
        self.normalize = LoudnessNormalize(config.get("model", {}).get("normalize"))
        loss = config.get("loss", {})
        unknown = sorted(set(loss) - {"label_smoothing", "mixup"})
        if unknown:
            raise ValueError(f"loss: unknown keys {unknown}; expected label_smoothing, mixup")
        self.label_smoothing, self.mixup = float(loss.get("label_smoothing", 0.0)), float(loss.get("mixup", 0.0))
        if self.label_smoothing and self.multi_label:
            raise ValueError("loss.label_smoothing applies to single-label cross-entropy; this dataset is multi-label")
        # The last single-label test's confusion matrix, written by aug_attn_tasks.confusion (confusion_matrix.tsv).
        self.test_confusions: dict[str, Tensor] = {}
        # Clip scores, targets and indices of the evaluated split; compute() concatenates them across processes.
        self.eval_scores, self.eval_targets = CatMetric(nan_strategy="disable"), CatMetric(nan_strategy="disable")
        self.eval_index = CatMetric(nan_strategy="disable")
        # The last test's per-clip probabilities in the split's order, written by write_predictions.
        self.test_scores: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        """``(B, L)`` waveforms -> ``(B, T)`` logits."""
        return self.model(self.normalize(x))

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.multi_label:
            return F.binary_cross_entropy_with_logits(logits, target)
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)

    def clip_scores(self, windows: Tensor, batch_windows: int = 64) -> tuple[Tensor, Tensor]:
        """``(B, K, L)`` windows of B clips -> (per-clip probabilities averaged over windows ``(B, T)``,
        per-window logits ``(B, K, T)``); windows run in batches of ``batch_windows``."""
        batch, count, length = windows.shape
        counts = torch.full((batch,), count, device=windows.device)
        scores, logits = self.window_scores(windows.reshape(batch * count, length), counts, batch_windows)
        return scores, logits.view(batch, count, -1)  # (B, T), (B, K, T)

    def window_scores(self, windows: Tensor, counts: Tensor, batch_windows: int = 64) -> tuple[Tensor, Tensor]:
        """Clips of different numbers of windows: ``windows (sum K_b, L)``, clip by clip, with
        ``counts (B,)`` = the ``K_b`` (:func:`~aug_attn_tasks.audio.datasets.collate_windows`) ->
        (per-clip probabilities averaged over the clip's own windows ``(B, T)``, per-window logits
        ``(sum K_b, T)``); windows run in batches of ``batch_windows``."""
        if counts.ndim != 1 or bool((counts < 1).any()) or int(counts.sum()) != len(windows):
            raise ValueError(
                f"counts must be (B,) positive window counts summing to the {len(windows)} windows, got {counts.tolist()}"
            )
        logits = torch.cat([self(part) for part in windows.split(batch_windows)])  # (sum K, T)
        probs = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)
        scores = torch.stack([part.mean(dim=0) for part in probs.split(counts.tolist())])  # (B, T), deterministic on GPUs
        return scores, logits

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        audio, target = batch  # (B, L), (B, T) or (B,)
        if self.mixup > 0:
            weight = float(torch.distributions.Beta(self.mixup, self.mixup).sample())
            partner = torch.randperm(audio.shape[0], device=audio.device)
            logits = self(weight * audio + (1 - weight) * audio[partner])  # (B, T)
            loss = weight * self.loss(logits, target) + (1 - weight) * self.loss(logits, target[partner])
        else:
            loss = self.loss(self(audio), target)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=audio.shape[0])
        return loss

    def _eval_step(self, batch: tuple[Tensor, ...], split: str) -> None:
        windows, target, index, counts = batch  # (sum K, L), (B, T) or (B,), (B,), (B,): collate_windows
        scores, logits = self.window_scores(windows, counts)  # (B, T), (sum K, T)
        loss = self.loss(logits, target.repeat_interleave(counts, dim=0))
        self.log(f"{split}/loss", loss, prog_bar=True, batch_size=len(counts), sync_dist=True)
        self.eval_scores.update(scores.detach())
        self.eval_targets.update(target.detach())
        self.eval_index.update(index.float())

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _epoch_metrics(self, split: str, per_tag: bool) -> None:
        if self.eval_scores.update_count == 0:  # an empty split (e.g. valid_fraction: 0) has nothing to score
            return
        scores, targets = self.eval_scores.compute().cpu().numpy(), self.eval_targets.compute().cpu().numpy()
        order = self.eval_index.compute().cpu().long().argsort()
        if split == "test":
            self.test_scores = torch.from_numpy(scores)[order]  # (N, T), the split's order
        for metric in (self.eval_scores, self.eval_targets, self.eval_index):
            metric.reset()
        if not self.multi_label:
            self._class_metrics(split, torch.from_numpy(scores), torch.from_numpy(targets), per_class=per_tag)
            return
        result = tagging_metrics(scores, targets, self.tags)
        self.log(f"{split}/roc_auc", result["roc_auc"], prog_bar=True)
        values = {f"{split}/pr_auc": result["pr_auc"], f"{split}/excluded_tags": float(len(result["excluded"]))}
        if per_tag:
            for tag, m in result["per_tag"].items():
                values[f"{split}/roc_auc/{tag}"] = m["roc_auc"]
                values[f"{split}/pr_auc/{tag}"] = m["pr_auc"]
                values[f"{split}/positives/{tag}"] = float(m["positives"])
        self.log_dict(values)

    @property
    def class_names(self) -> list[str]:
        """The tags, under the name :mod:`aug_attn_tasks.confusion` labels its rows with."""
        return self.tags

    def _class_metrics(self, split: str, scores: Tensor, targets: Tensor, per_class: bool) -> None:
        """Accuracy (micro: of clips; macro: mean per-class recall) of ``scores (N, C)``, ``targets (N,)``;
        with ``per_class``, the confusion matrix (rows: true class, columns: predicted) in ``test_confusions``."""
        num = len(self.tags)
        self.log(f"{split}/accuracy", float(multiclass_accuracy(scores, targets, num, average="micro")), prog_bar=True)
        self.log(f"{split}/macro_accuracy", float(multiclass_accuracy(scores, targets, num, average="macro")))
        if per_class:
            self.test_confusions = {"matrix": multiclass_confusion_matrix(scores, targets, num).cpu()}  # CONFUSION_FILE

    def on_validation_epoch_end(self) -> None:
        self._epoch_metrics("val", per_tag=False)

    def on_test_epoch_end(self) -> None:
        self._epoch_metrics("test", per_tag=True)

    def configure_optimizers(self) -> dict[str, Any]:
        return build_optimization(self.parameters(), self.config.get("optim", {}), self.trainer.max_epochs)


def _with_tags(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with ``data.tags`` and ``data.multi_label`` filled from the dataset when missing,
    and the sample rate and window resolved to numbers (:func:`~aug_attn_tasks.audio.data.resolve_rate`):
    what a checkpoint stores."""
    config = copy.deepcopy(config)
    data = config.setdefault("data", {})
    resolved = isinstance(data.get("sample_rate", 16000), int) and data.get("chunk_seconds") is None
    if "tags" not in data or "multi_label" not in data or not resolved:
        catalog = build_catalog(data)
        data["tags"], data["multi_label"] = catalog.tags, catalog.multi_label
        config["data"] = resolve_rate(data, catalog)
    return config


def resolve_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config training runs with: :func:`_with_tags`, and ``checkpoint.monitor: auto`` as the
    dataset's metric, ``val/accuracy`` (single-label) or ``val/roc_auc`` (multi-label), maximized."""
    config = _with_tags(config)
    checkpoint = config.setdefault("checkpoint", {})
    if checkpoint.get("monitor") == "auto":
        checkpoint["monitor"] = "val/roc_auc" if config["data"]["multi_label"] else "val/accuracy"
        checkpoint["mode"] = "max"
    return config


def build_module(config: dict[str, Any]) -> TaggingModule:
    return TaggingModule(_with_tags(config))


def build_data(config: dict[str, Any]) -> AudioDataModule:
    data = AudioDataModule(config.get("data", {}))
    expected = config.get("data", {}).get("tags")
    if expected is not None and list(expected) != data.catalog.tags:
        raise ValueError(
            f"data.tags of the config ({len(expected)} tags) differ from the dataset's ({len(data.catalog.tags)}): "
            "a checkpoint can only be evaluated on data with its own tag set"
        )
    return data


def write_predictions(module: TaggingModule, data: AudioDataModule, run_dir: str | Path) -> Path | None:
    """``run_dir/predictions.csv``: per test clip its path (relative to the dataset root), true
    label(s) (``;``-separated tags when multi-label), the predicted class (single-label) and the
    probability of every tag (the averages over evaluation windows the metrics are computed from)."""
    if module.test_scores is None:
        return None
    keys, targets = data.catalog.keys["test"], data.catalog.targets["test"]
    scores = module.test_scores.numpy()
    if len(keys) != len(scores):
        raise RuntimeError(f"{len(scores)} test scores for {len(keys)} test clips")
    path = Path(run_dir) / PREDICTIONS_FILE
    tags = module.tags
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "true", *([] if module.multi_label else ["predicted"]), *tags])
        for key, target, row in zip(keys, targets, scores):
            if module.multi_label:
                truth = ";".join(tag for tag, on in zip(tags, target) if on)
                writer.writerow([key, truth, *(f"{p:.6f}" for p in row)])
            else:
                writer.writerow([key, tags[int(target)], tags[int(row.argmax())], *(f"{p:.6f}" for p in row)])
    print(f"[{module.config.get('name', 'run')}] per-clip test predictions: {path}")
    return path


def report(metrics: dict[str, float], config: dict[str, Any], run_dir: str | Path) -> None:
    """Print the test metrics; write the per-tag table ``per_tag_metrics.tsv`` into ``run_dir``."""
    config = _with_tags(config)
    tags, name = config["data"]["tags"], config.get("name", "run")
    if "test/accuracy" in metrics:
        print(
            f"[{name}] test accuracy: {metrics['test/accuracy']:.4f}  macro (mean per-class): "
            f"{metrics['test/macro_accuracy']:.4f}  ({len(tags)} classes)"
        )
        print(f"[{name}] confusion matrix: {Path(run_dir) / CONFUSION_FILE}")
        return
    rows = [
        (tag, metrics[f"test/roc_auc/{tag}"], metrics[f"test/pr_auc/{tag}"], int(metrics[f"test/positives/{tag}"]))
        for tag in tags
        if f"test/roc_auc/{tag}" in metrics
    ]
    excluded = [tag for tag in tags if f"test/roc_auc/{tag}" not in metrics]
    path = Path(run_dir) / PER_TAG_FILE
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("tag\troc_auc\tpr_auc\tpositives\n")
        for tag, roc, pr, positives in sorted(rows, key=lambda r: -r[1]):
            handle.write(f"{tag}\t{roc:.4f}\t{pr:.4f}\t{positives}\n")
        for tag in excluded:
            handle.write(f"{tag}\tnan\tnan\t(excluded: no positive or no negative clip)\n")
    roc, pr = metrics.get("test/roc_auc", math.nan), metrics.get("test/pr_auc", math.nan)
    print(f"[{name}] test ROC-AUC: {roc:.4f}  PR-AUC: {pr:.4f}  (macro over {len(rows)} tags)")
    if excluded:
        print(f"[{name}] excluded from the averages (no positive or no negative test clip): {', '.join(excluded)}")
    print(f"[{name}] per-tag table: {path}")

