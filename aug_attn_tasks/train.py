"""Train, checkpoint, resume and test any recipe from a config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from aug_attn_tasks.config import apply_overrides
from aug_attn_tasks.recipes import get_recipe, load_checkpoint

__all__ = ["fit", "evaluate"]


def _trainer(config: dict[str, Any], callbacks: list, logger) -> L.Trainer:
    options = {"accelerator": "cpu", "devices": 1, "log_every_n_steps": 10, "deterministic": False}
    options.update(config.get("trainer", {}))
    return L.Trainer(callbacks=callbacks, logger=logger, **options)


def _loggers(config: dict[str, Any]) -> list:
    output = config.get("output", {})
    root = Path(output.get("dir", "runs"))
    loggers: list = [CSVLogger(root, name=config["name"])]
    if output.get("tensorboard", False):
        loggers.append(TensorBoardLogger(root, name=config["name"], version=loggers[0].version, sub_dir="tensorboard"))
    return loggers


def fit(config: dict[str, Any], resume: str | None = None) -> dict[str, float]:
    """Train with checkpointing of the best model by ``checkpoint.monitor``, then test that model.

    Returns the test metrics; the recipe's ``report`` prints them and writes its files into the
    run directory ``<output.dir>/<name>/version_N``.
    """
    L.seed_everything(int(config.get("seed", 0)), workers=True)
    recipe = get_recipe(config["task"])
    data, module = recipe.build_data(config), recipe.build_module(config)
    loggers = _loggers(config)
    run_dir = Path(loggers[0].log_dir)
    ckpt_cfg = config.get("checkpoint", {})
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor=ckpt_cfg.get("monitor", "val/loss"),
        mode=ckpt_cfg.get("mode", "min"),
        save_last=True,
    )
    trainer = _trainer(config, [checkpoint], loggers)
    trainer.fit(module, datamodule=data, ckpt_path=resume)
    best = checkpoint.best_model_path or checkpoint.last_model_path
    metrics = trainer.test(module, datamodule=data, ckpt_path=best, verbose=False)[0]
    metrics = {key: float(value) for key, value in metrics.items()}
    if trainer.is_global_zero:
        (run_dir / "test_metrics.json").write_text(json.dumps(metrics, indent=2))
        recipe.report(metrics, config, run_dir)
        print(f"best checkpoint ({checkpoint.monitor}): {best}")
        command = getattr(recipe, "INFERENCE_COMMAND", None)
        if command:
            print("use it: " + command.format(checkpoint=best))
    return metrics


def evaluate(checkpoint: str, overrides: list[str] | None = None) -> dict[str, float]:
    """Test a saved checkpoint; ``overrides`` (``--section.key value``) change its config, e.g.
    another rotation protocol or dataset root. Reports go to ``<checkpoint dir>/eval``."""
    module, config = load_checkpoint(checkpoint)
    config = apply_overrides(config, overrides or [])
    L.seed_everything(int(config.get("seed", 0)), workers=True)
    recipe = get_recipe(config["task"])
    trainer = _trainer(config, [], False)
    metrics = trainer.test(module, datamodule=recipe.build_data(config), verbose=False)[0]
    metrics = {key: float(value) for key, value in metrics.items()}
    out = Path(checkpoint).resolve().parent / "eval"
    out.mkdir(exist_ok=True)
    recipe.report(metrics, config, out)
    return metrics
