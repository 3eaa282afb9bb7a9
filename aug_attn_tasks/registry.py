"""The task registry: each task's name -> the package that implements it.

A task package holds modules of fixed roles, which the generic commands load by name from here
(so that they never import a modality themselves):

- ``recipe``: ``build_module``, ``build_data``, ``report`` and the optional hooks that
  :mod:`aug_attn_tasks.recipes` describes (``aug-attn train`` / ``test``);
- ``predict``: ``predictor(module, config, **options)``, the file reader and model runner of batch
  inference (:mod:`aug_attn_tasks.batch`, ``aug-attn tag`` / ``classify``);
- ``explain``: ``explain(module, config, path, out, top, **options)``, a picture of what the model
  attends to in one file (:mod:`aug_attn_tasks.explain`);
- ``plots`` (optional): ``run_figures(run_dir) -> [(file name, figure)]``, the task's own pictures
  of a run folder, and ``RUN_FILES``, the files they are drawn from (:mod:`aug_attn_tasks.plot`);
- ``cli`` (optional): ``add_commands(subparsers)``, the task's own ``aug-attn`` commands
  (:mod:`aug_attn_tasks.cli`);
- ``robustness`` (optional): ``PERTURBATIONS``, ``perturb_overrides`` and ``metric_names``, the
  task's robustness tests (:mod:`aug_attn_tasks.robustness`, ``aug-attn test CKPT --perturb KIND``).

Imports point one way: the generic modules use this table, task packages never import it.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

__all__ = ["TASKS", "ROLES", "task_module", "task_modules"]

TASKS: dict[str, str] = {
    "tagging": "aug_attn_tasks.audio",
    "points": "aug_attn_tasks.points",
    "images": "aug_attn_tasks.images",
}
ROLES = ("recipe", "predict", "explain", "plots", "cli", "robustness")
OPTIONAL_ROLES = ("plots", "cli", "robustness")


def task_module(task: str, role: str) -> ModuleType:
    """The ``role`` module of ``task`` (a key of :data:`TASKS`), e.g. ``("tagging", "recipe")`` ->
    :mod:`aug_attn_tasks.audio.recipe`."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(sorted(TASKS))}")
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    return importlib.import_module(f"{TASKS[task]}.{role}")


def task_modules(role: str) -> dict[str, ModuleType]:
    """Task -> its ``role`` module, in the order of :data:`TASKS`, for the tasks that have one."""
    return {
        task: task_module(task, role)
        for task, package in TASKS.items()
        if role not in OPTIONAL_ROLES or importlib.util.find_spec(f"{package}.{role}") is not None
    }
