"""Optimizer and learning-rate schedule from the ``optim`` config section."""

from __future__ import annotations

from typing import Any, Iterable

import torch

__all__ = ["build_optimization"]


def build_optimization(params: Iterable[torch.nn.Parameter], cfg: dict[str, Any], max_epochs: int) -> dict[str, Any]:
    """Return what ``LightningModule.configure_optimizers`` returns.

    ``cfg``: ``name`` (adam | adamw | sgd), ``lr``, ``weight_decay``, ``momentum`` and ``nesterov``
    (sgd), ``schedule`` (none | cosine | step), ``step_size`` and ``gamma`` (step), ``warmup_epochs``.
    """
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
    if schedule == "cosine":
        main = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, max_epochs - warmup))
    elif schedule == "step":
        main = torch.optim.lr_scheduler.StepLR(optimizer, int(cfg.get("step_size", 20)), float(cfg.get("gamma", 0.7)))
    else:
        raise ValueError(f"optim.schedule={schedule!r}: expected none, cosine or step")
    if warmup > 0:
        ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=warmup)
        main = torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": main, "interval": "epoch"}}
