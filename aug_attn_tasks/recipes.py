"""Task recipes: each turns a config into a LightningModule and a LightningDataModule.

A recipe module (the ``recipe`` role of a task package, :mod:`aug_attn_tasks.registry`) provides
``build_module(config) -> LightningModule`` (which must call
``save_hyperparameters({"config": config})`` so checkpoints are self-describing),
``build_data(config) -> LightningDataModule`` and ``report(metrics, config, run_dir)``
(print and write the task's final metrics), and optionally ``inference_command(config)``, a
command template with ``{checkpoint}`` printed after training (None: nothing to print),
``write_predictions(module, data, run_dir)``, per-sample test predictions written after a test
(audio: ``predictions.csv``), and ``resolve_config(config)``, the config with its data-dependent
choices made (audio: the tags, the sample rate of ``native``, the metric of
``checkpoint.monitor: auto``), applied before training. Batch inference's ``predictor`` is the
task's ``predict`` module's, not the recipe's.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from types import ModuleType
from typing import Any

import lightning as L
import torch

from aug_attn_tasks.registry import TASKS, task_module

__all__ = ["get_recipe", "load_checkpoint"]


def get_recipe(task: str) -> ModuleType:
    """The recipe module of ``task`` (a key of :data:`~aug_attn_tasks.registry.TASKS`)."""
    return task_module(task, "recipe")


def load_checkpoint(
    path: str | Path, map_location: str = "cpu", tasks: Collection[str] | None = None
) -> tuple[L.LightningModule, dict[str, Any]]:
    """Rebuild the module saved in a training checkpoint (loaded with ``weights_only=True``).

    ``tasks``: the tasks the caller can use; a checkpoint of another task is a ValueError naming
    its task and the command that reads it, raised before the model is built.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or foreign files
        raise ValueError(f"{path}: not a readable aug-attn checkpoint ({error})") from error
    config = state.get("hyper_parameters", {}).get("config") if isinstance(state, dict) else None
    if not isinstance(config, dict) or "state_dict" not in state:
        raise ValueError(f"{path}: checkpoint has no aug-attn config or state_dict; was it written by `aug-attn train`?")
    if config.get("task") not in TASKS:
        raise ValueError(f"{path}: the checkpoint's config names task {config.get('task')!r}; expected one of {', '.join(TASKS)}")
    recipe = get_recipe(config["task"])
    if tasks is not None and config["task"] not in tasks:
        command = recipe.inference_command(config) if hasattr(recipe, "inference_command") else None
        hint = f"; use it with: {command.format(checkpoint=path)}" if command else ""
        raise ValueError(f"{path}: a checkpoint of task {config['task']!r}, expected task {' or '.join(map(repr, tasks))}{hint}")
    bad = next((name for name, value in state["state_dict"].items() if value.is_floating_point() and not bool(value.isfinite().all())), None)
    if bad is not None:
        raise ValueError(f"{path}: weight {bad} holds NaN or infinite values; the checkpoint cannot give finite outputs")
    module = recipe.build_module(config)
    try:
        module.load_state_dict(state["state_dict"])
    except RuntimeError as error:  # missing, unexpected or mis-shaped weights
        first = str(error).strip().splitlines()[0]
        raise ValueError(f"{path}: its weights do not fit the model its config describes ({first})") from error
    module.eval()
    return module, config
