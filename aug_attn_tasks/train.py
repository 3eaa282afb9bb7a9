"""Train, checkpoint, resume and test any recipe from a config.

Runs on one process or many: ``--trainer.devices N --trainer.strategy ddp`` (Lightning starts the
other processes), or under ``torchrun`` / SLURM, where Lightning reads the rank from the environment.
Resume is exact: checkpoints carry the RNG states (:class:`RandomState`) and the position in the
epoch of the recipes' training loaders (:mod:`aug_attn_tasks.loaders`); ``checkpoint.every_n_train_steps``
also writes ``last.ckpt`` every N optimizer steps, so a killed run loses at most N steps.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from aug_attn.optional import import_extra
from aug_attn_tasks.config import TEST_SECTIONS, apply_overrides, check_keys, parameter_names
from aug_attn_tasks.confusion import write_confusions
from aug_attn_tasks.optim import weight_averaging
from aug_attn_tasks.recipes import get_recipe, load_checkpoint

__all__ = ["fit", "evaluate", "RandomState", "FiniteLoss"]

log = logging.getLogger(__name__)


def _trainer(config: dict[str, Any], callbacks: list, logger, validate: bool = True) -> L.Trainer:
    options = {"accelerator": "cpu", "devices": 1, "log_every_n_steps": 10, "deterministic": False}
    check_keys("trainer", config.get("trainer", {}), parameter_names(L.Trainer))
    options.update(config.get("trainer", {}))
    if not validate:  # the data has no validation split
        options.update(limit_val_batches=0, num_sanity_val_steps=0)
    return L.Trainer(callbacks=callbacks, logger=logger, **options)


def _loggers(config: dict[str, Any]) -> list:
    output = config.get("output", {})
    check_keys("output", output, ("dir", "tensorboard"))
    root = Path(output.get("dir", "runs")).resolve()  # absolute: a resumed run finds its checkpoint folder by name
    loggers: list = [CSVLogger(root, name=config["name"], version=_claim_version(root / config["name"]))]
    if output.get("tensorboard", False):
        import_extra("tensorboard", "tensorboard", "output.tensorboard: true")  # Lightning's own error names no extra
        loggers.append(TensorBoardLogger(root, name=config["name"], version=loggers[0].version, sub_dir="tensorboard"))
    return loggers


def _claim_version(folder: Path) -> int | None:
    """The next free ``version_N`` under ``folder``, created here so that runs started at once in one
    output folder never share a version (Lightning's own choice lists the folder and can hand two
    processes the same N: their metrics and checkpoints would mix). ``None`` on the non-zero ranks
    of a distributed launch (Lightning's ``rank_zero_only.rank``, read from the launcher's
    environment), which log nothing and leave the choice to Lightning."""
    if rank_zero_only.rank != 0:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name[8:]) for p in folder.glob("version_*") if p.name[8:].isdigit()]
    version = max(taken, default=-1) + 1
    while True:
        try:
            (folder / f"version_{version}").mkdir()  # atomic: exactly one process creates it
            return version
        except FileExistsError:
            version += 1


class RandomState(Callback):
    """Saves the global RNG states (torch, CUDA, numpy, python) in checkpoints and restores them on
    resume, so dropout and augmentation draw the same numbers as an uninterrupted run.

    The states are stored as tensors and ints (checkpoints load with ``weights_only=True``). Under DDP
    the checkpoint holds rank 0's states (CUDA: of its current device); every rank starts from the
    same seed and draws as many numbers, so their states coincide.
    """

    def state_dict(self) -> dict[str, Any]:
        _, keys, pos, has_gauss, gauss = np.random.get_state()
        version, internal, gauss_next = random.getstate()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
            "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        numpy = state["numpy"]
        np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"], numpy["gauss"]))
        python = state["python"]
        random.setstate((python["version"], tuple(python["internal"].tolist()), python["gauss_next"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])


class FiniteLoss(Callback):
    """Stops training with a ValueError naming the epoch and batch where the training loss stops
    being finite, instead of training on (and testing) a model of NaN weights."""

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss.detach()).all()):
            raise ValueError(
                f"the training loss is {loss.item()} at epoch {trainer.current_epoch}, batch {batch_idx}: "
                "a non-finite input or a diverging step (a lower optim.lr?)"
            )


def _checkpoints(config: dict[str, Any], resume: str | None, validate: bool = True) -> list[ModelCheckpoint]:
    """``best.ckpt`` (by ``checkpoint.monitor``; only when ``validate``) and ``last.ckpt``, rewritten
    after every epoch and, with ``checkpoint.every_n_train_steps``, also every that many steps, in
    order of preference for the checkpoint that gets tested. (Lightning 2.6's ``save_last``
    only writes ``last.ckpt`` when the best improves, so ``last.ckpt`` has callbacks of its own.)

    A new run lets Lightning put them in rank 0's ``<log dir>/checkpoints`` (and tell the other
    processes); a resumed run keeps writing next to the checkpoint it resumes from, so the best score
    so far is restored with the callback's state and ``best.ckpt`` stays the run's best.
    """
    cfg = config.get("checkpoint", {})
    check_keys("checkpoint", cfg, ("monitor", "mode", "every_n_train_steps", "select"))
    # No version counter: each file is overwritten in place, never doubled as last-v1.ckpt.
    options = {"dirpath": str(Path(resume).resolve().parent) if resume else None, "enable_version_counter": False}
    # Without validation, Lightning saves epoch-end checkpoints only if told to (it waits for a
    # validation run that never comes when check_val_every_n_epoch > 1).
    callbacks = [ModelCheckpoint(filename="last", save_on_train_epoch_end=None if validate else True, **options)]
    if validate:
        callbacks.insert(0, ModelCheckpoint(filename="best", monitor=cfg.get("monitor", "val/loss"), mode=cfg.get("mode", "min"), **options))
    if cfg.get("every_n_train_steps"):
        callbacks.append(ModelCheckpoint(filename="last", every_n_train_steps=int(cfg["every_n_train_steps"]), **options))
    return callbacks


def _selection(config: dict[str, Any]) -> str:
    """``checkpoint.select``: ``best`` (by ``checkpoint.monitor``, default) or ``last`` (the last epoch's)."""
    select = config.get("checkpoint", {}).get("select", "best")
    if select not in ("best", "last"):
        raise ValueError(f"checkpoint.select={select!r}: expected best or last")
    return select


def _remove_unstarted_run(run_dir: Path) -> None:
    """Remove the ``version_N`` folder of a run that failed before it logged a metric or wrote a
    checkpoint (it holds at most ``hparams.yaml`` and empty folders); a run that got further is kept."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not run_dir.is_dir() or (distributed and torch.distributed.get_rank() != 0):
        return
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    if all(p.name == "hparams.yaml" or p.name.startswith("events.out.tfevents") for p in files) and not any(
        p.suffix == ".ckpt" for p in files
    ):
        shutil.rmtree(run_dir, ignore_errors=True)
        log.info("removed %s: the run failed before its first logged step", run_dir)


def fit(config: dict[str, Any], resume: str | None = None, callbacks: list[Callback] | None = None) -> dict[str, float]:
    """Train with checkpointing of the best model by ``checkpoint.monitor``, then test that model.

    ``resume``: a checkpoint of this config (e.g. ``.../checkpoints/last.ckpt``) to continue from, in
    the middle of an epoch if it was written there; checkpoints go on in its folder, logs in a new
    version. ``callbacks``: extra Lightning callbacks.
    Returns the test metrics; the recipe's ``report`` prints them and writes its files into the
    run directory ``<output.dir>/<name>/version_N``. A data module whose ``has_validation`` is False
    (e.g. images with ``data.val_size: 0``) trains without validation and tests ``last.ckpt``. Under DDP the process group stays up for the
    caller; end the script with ``torch.distributed.destroy_process_group()`` (the CLI does).
    """
    started = time.monotonic()
    L.seed_everything(int(config.get("seed", 0)), workers=True)
    _selection(config)  # a bad value fails before training, not after
    recipe = get_recipe(config["task"])
    if resume:  # a file that is no checkpoint of this task fails here, named, not inside Lightning
        _, saved = load_checkpoint(resume, tasks=(config["task"],))
        if saved.get("name") != config.get("name"):
            log.warning("resuming from %s, a checkpoint of run %r, with the config of %r", resume, saved.get("name"), config.get("name"))
    if hasattr(recipe, "resolve_config"):  # e.g. checkpoint.monitor: auto, data.sample_rate: native
        config = recipe.resolve_config(config)
    data, module = recipe.build_data(config), recipe.build_module(config)
    validate = bool(getattr(data, "has_validation", True))
    checkpoints = _checkpoints(config, resume, validate)
    averaging = [c for c in [weight_averaging(config.get("optim", {}))] if c is not None]
    loggers = _loggers(config)
    try:
        trainer = _trainer(config, [*checkpoints, RandomState(), FiniteLoss(), *averaging, *(callbacks or [])], loggers, validate)
        trainer.fit(module, datamodule=data, ckpt_path=resume)
    except BaseException:
        _remove_unstarted_run(Path(loggers[0].log_dir))
        raise
    # The callbacks come in order of preference: the best by validation (when there is validation),
    # the epoch-end last.ckpt, the step-wise one (a run resumed after its final step saves nothing new).
    # checkpoint.select: last tests the last epoch's model even when there is validation.
    select = _selection(config)
    best = next((c.best_model_path for c in checkpoints if c.best_model_path and (select == "best" or c.monitor is None)), "")
    if not best and resume:
        best = str(Path(resume).resolve())
    if not best:
        raise RuntimeError("training wrote no checkpoint to test (no training epoch finished?)")
    metrics = trainer.test(module, datamodule=data, ckpt_path=best, verbose=False)[0]
    metrics = {key: float(value) for key, value in metrics.items()}
    run_dir = Path(trainer.log_dir or ".")  # rank 0's, sent to every process
    if trainer.is_global_zero:
        (run_dir / "test_metrics.json").write_text(json.dumps(metrics, indent=2))
        recipe.report(metrics, config, run_dir)
        write_confusions(module, run_dir)
        if hasattr(recipe, "write_predictions"):
            recipe.write_predictions(module, data, run_dir)
        chosen = f"best by {checkpoints[0].monitor}" if validate and select == "best" else (
            "last epoch, checkpoint.select: last" if validate else "last epoch, no validation set")  # fmt: skip
        print(f"tested checkpoint ({chosen}): {best}")
        minutes, seconds = divmod(round(time.monotonic() - started), 60)
        print(f"[{config.get('name', 'run')}] trained and tested in {minutes} min {seconds} s (wall clock)")
        command = recipe.inference_command(config) if hasattr(recipe, "inference_command") else None
        if command:
            print("use it: " + command.format(checkpoint=best))
    return metrics


def evaluate(checkpoint: str, overrides: list[str] | None = None, out: str | Path | None = None) -> dict[str, float]:
    """Test a saved checkpoint; ``overrides`` (``--section.key value``: ``data``, ``trainer`` or
    ``seed``; the model comes from the checkpoint) change its config, e.g. another rotation protocol
    or dataset root. Reports go to ``out`` (default ``<checkpoint dir>/eval``)."""
    module, config = load_checkpoint(checkpoint)
    config = apply_overrides(config, overrides or [], sections=TEST_SECTIONS)
    L.seed_everything(int(config.get("seed", 0)), workers=True)
    recipe = get_recipe(config["task"])
    trainer = _trainer(config, [], False)
    data = recipe.build_data(config)
    metrics = trainer.test(module, datamodule=data, verbose=False)[0]
    metrics = {key: float(value) for key, value in metrics.items()}
    if trainer.is_global_zero:
        out = Path(out) if out is not None else Path(checkpoint).resolve().parent / "eval"
        out.mkdir(parents=True, exist_ok=True)
        recipe.report(metrics, config, out)
        write_confusions(module, out)
        if hasattr(recipe, "write_predictions"):
            recipe.write_predictions(module, data, out)
    return metrics
