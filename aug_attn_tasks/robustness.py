"""``aug-attn test CKPT --perturb KIND [--strengths S,...]``: a checkpoint's test split evaluated again
with every input perturbed, once per strength.

A task offers such tests through its ``robustness`` module (:mod:`aug_attn_tasks.registry`):
``PERTURBATIONS`` (kind -> default grid of strengths), ``perturb_overrides(kind, strength)`` (the
``--section.key VALUE`` overrides that perturb the test inputs) and ``metric_names(config)`` (the
test metrics to tabulate). Only tagging has one (:mod:`aug_attn_tasks.audio.robustness`).

The table goes to ``<checkpoint dir>/eval/robustness_<kind>.tsv``; each strength's own reports
(per-tag table or confusion matrix) go to ``eval/robustness_<kind>/<strength>/``, so the clean
test's reports in ``eval/`` stay as they were.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from aug_attn_tasks.recipes import load_checkpoint
from aug_attn_tasks.registry import task_modules
from aug_attn_tasks.train import evaluate

__all__ = ["robustness", "robustness_module"]


def robustness_module(task: str, where: str = "") -> ModuleType:
    """The ``robustness`` module of ``task``; a task without one is a ValueError naming it and the
    tasks that have one."""
    tests = task_modules("robustness")
    if task not in tests:
        offered = ", ".join(f"{name} ({', '.join(module.PERTURBATIONS)})" for name, module in tests.items())
        raise ValueError(f"{where}--perturb: task {task!r} has no robustness tests; tasks with them: {offered}")
    return tests[task]


def robustness(checkpoint: str, kind: str, strengths: list[float] | None = None, overrides: list[str] | None = None) -> list[dict[str, float]]:
    """Test metrics of ``checkpoint`` with its test inputs perturbed by ``kind`` at each strength
    (default: the kind's grid); ``overrides`` as for ``aug-attn test``. Returns one row per strength."""
    _, config = load_checkpoint(checkpoint)
    tests = robustness_module(config["task"], f"{checkpoint}: ")
    if kind not in tests.PERTURBATIONS:
        raise ValueError(f"--perturb {kind}: task {config['task']!r} perturbs with one of {', '.join(tests.PERTURBATIONS)}")
    columns = tests.metric_names(config)
    rows, folder = [], Path(checkpoint).resolve().parent / "eval"
    for strength in strengths if strengths is not None else tests.PERTURBATIONS[kind]:
        changes = [*(overrides or []), *tests.perturb_overrides(kind, strength)]
        metrics = evaluate(checkpoint, changes, folder / f"robustness_{kind}" / f"{float(strength):g}")
        rows.append({"strength": float(strength), **{c: metrics[c] for c in columns}})
    table = ["strength\t" + "\t".join(c.split("/")[1] for c in columns)]
    table += [f"{row['strength']:.4g}\t" + "\t".join(f"{row[c]:.4f}" for c in columns) for row in rows]
    out = folder / f"robustness_{kind}.tsv"
    out.write_text("\n".join(table) + "\n")
    print(f"robustness to {kind} ({out}):\n" + "\n".join(table))
    return rows
