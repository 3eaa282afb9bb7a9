"""Optimizer and learning-rate schedule from the ``optim`` config section."""

from __future__ import annotations

import logging
from typing import Any, Iterable

import torch

from aug_attn_tasks.config import check_keys

__all__ = ["build_optimization", "weight_averaging", "OPTIM_KEYS"]

log = logging.getLogger(__name__)
OPTIM_KEYS = (
    "name", "lr", "weight_decay", "momentum", "nesterov", "schedule", "step_size", "gamma", "milestones", "warmup_epochs",
    "warmup_start_factor", "ema_decay",
)  # fmt: skip


def weight_averaging(cfg: dict[str, Any]):
    """The callback of ``optim.ema_decay`` (a number in ``(0, 1)``; absent, null or 0: none): an
    exponential moving average of the weights and buffers after every optimizer step, ``avg =
    decay * avg + (1 - decay) * w`` (Lightning's ``EMAWeightAveraging``). Validation, checkpoint
    selection, the saved ``state_dict`` (so testing and inference) use the average; the checkpoint
    also keeps the raw weights for resuming. ``1 / (1 - decay)`` steps is about the horizon."""
    decay = cfg.get("ema_decay")
    if decay in (None, 0, 0.0):
        return None
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 < float(decay) < 1.0:
        raise ValueError(f"optim.ema_decay must be a number in (0, 1) (e.g. 0.995), or 0/null for none; got {decay!r}")
    from lightning.pytorch.callbacks import EMAWeightAveraging

    return EMAWeightAveraging(decay=float(decay))


def build_optimization(params: Iterable[torch.nn.Parameter], cfg: dict[str, Any], max_epochs: int | None) -> dict[str, Any]:
    """Return what ``LightningModule.configure_optimizers`` returns.

    ``max_epochs``: the trainer's (``trainer.max_epochs``); every schedule but ``none`` needs it to be
    a positive number of epochs (a run bounded by ``trainer.max_steps`` alone has none: an error).

    ``cfg``: ``name`` (adam | adamw | sgd), ``lr``, ``weight_decay``, ``momentum`` and ``nesterov``
    (sgd), ``schedule`` (none | cosine | step | multistep), ``step_size`` and ``gamma`` (step: x gamma
    every ``step_size`` epochs), ``milestones`` and ``gamma`` (multistep: x gamma at each listed epoch),
    ``ema_decay`` (:func:`weight_averaging`; training adds its callback), ``warmup_epochs`` and ``warmup_start_factor`` (linear ramp of the learning rate from
    ``warmup_start_factor * lr`` in the first epoch to ``lr`` after ``warmup_epochs`` epochs; the main
    schedule then runs over the remaining ``max_epochs - warmup_epochs``, its epoch counts measured
    from the end of the warm-up). The learning rate changes once per epoch.
    """
    check_keys("optim", cfg, OPTIM_KEYS)
    name = cfg.get("name", "adamw").lower()
    lr, wd = float(cfg.get("lr", 1e-3)), float(cfg.get("weight_decay", 0.0))
    if name == "adam":
        optimizer = torch.optim.Adam(params, lr=lr, weight_decay=wd)
    elif name == "adamw":
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    elif name == "sgd":
        optimizer = torch.optim.SGD(
            params, lr=lr, weight_decay=wd, momentum=float(cfg.get("momentum", 0.9)), nesterov=bool(cfg.get("nesterov", True))
        )
    else:
        raise ValueError(f"optim.name={name!r}: expected adam, adamw or sgd")
    schedule = cfg.get("schedule", "cosine")
    warmup = int(cfg.get("warmup_epochs", 0))
    if schedule == "none":
        return {"optimizer": optimizer}
    if max_epochs is None or max_epochs < 1:
        raise ValueError(
            f"optim.schedule={schedule!r} is laid out over trainer.max_epochs, which is {max_epochs!r}: set "
            "trainer.max_epochs (a run bounded by trainer.max_steps alone can use optim.schedule none)"
        )
    if warmup < 0:
        raise ValueError(f"optim.warmup_epochs={warmup} must be >= 0")
    if warmup >= max_epochs:  # e.g. a one-epoch smoke run of a recipe that warms up for one epoch
        log.warning("optim.warmup_epochs=%d does not fit trainer.max_epochs=%d: warming up for %d", warmup, max_epochs, max_epochs - 1)
        warmup = max_epochs - 1
    if schedule == "cosine":
        main = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, max_epochs - warmup))
    elif schedule == "step":
        main = torch.optim.lr_scheduler.StepLR(optimizer, int(cfg.get("step_size", 20)), float(cfg.get("gamma", 0.7)))
    elif schedule == "multistep":
        milestones = cfg.get("milestones")
        if not isinstance(milestones, list) or not milestones or sorted(milestones) != milestones:
            raise ValueError(f"optim.milestones={milestones!r}: schedule multistep needs an increasing list of epochs")
        if int(milestones[0]) <= warmup:
            raise ValueError(f"optim.milestones={milestones!r} must come after the warm-up (optim.warmup_epochs={warmup})")
        # Milestones are epochs of the whole run; the scheduler counts from the end of the warm-up.
        main = torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(m) - warmup for m in milestones], float(cfg.get("gamma", 0.2)))
    else:
        raise ValueError(f"optim.schedule={schedule!r}: expected none, cosine, step or multistep")
    if warmup > 0:
        start = float(cfg.get("warmup_start_factor", 0.1))
        if not 0 < start <= 1:
            raise ValueError(f"optim.warmup_start_factor={start} must be in (0, 1]")
        ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=start, total_iters=warmup)
        main = torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": main, "interval": "epoch"}}
