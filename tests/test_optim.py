"""Learning-rate schedules of ``aug_attn_tasks.optim`` against their closed forms, epoch by epoch."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from aug_attn_tasks.optim import build_optimization


def _lrs(cfg: dict, max_epochs: int) -> list[float]:
    """The learning rate used in each epoch, stepping the scheduler once per epoch as Lightning does."""
    built = build_optimization([torch.nn.Parameter(torch.zeros(1))], cfg, max_epochs)
    optimizer, scheduler = built["optimizer"], built["lr_scheduler"]["scheduler"]
    assert built["lr_scheduler"]["interval"] == "epoch"
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SequentialLR's deprecation chatter
        for _ in range(max_epochs):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
    return out


def test_warmup_then_cosine_is_the_papers_cifar_schedule():
    lr, warmup, epochs = 0.2, 25, 500
    got = _lrs({"name": "sgd", "lr": lr, "schedule": "cosine", "warmup_epochs": warmup, "warmup_start_factor": 0.04}, epochs)
    for epoch in range(warmup):  # linear from lr/25 to lr
        assert got[epoch] == pytest.approx(lr * (0.04 + 0.96 * epoch / warmup))
    for epoch in range(warmup, epochs):  # cosine over the remaining epochs
        t = epoch - warmup
        assert got[epoch] == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi * t / (epochs - warmup))), abs=1e-9)


def test_multistep_milestones_count_whole_run_epochs():
    got = _lrs({"name": "sgd", "lr": 0.1, "schedule": "multistep", "milestones": [60, 120, 160], "gamma": 0.2}, 200)
    expected = [0.1 * 0.2 ** sum(epoch >= m for m in (60, 120, 160)) for epoch in range(200)]
    assert got == pytest.approx(expected)
    warm = _lrs({"name": "sgd", "lr": 0.1, "schedule": "multistep", "milestones": [3, 6], "gamma": 0.5, "warmup_epochs": 2}, 8)
    assert warm == pytest.approx([0.01, 0.055, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025])


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"schedule": "cosine", "warmup_epochs": -1}, "warmup_epochs=-1"),
        ({"schedule": "cosine", "warmup_epochs": 2, "warmup_start_factor": 0.0}, "warmup_start_factor"),
        ({"schedule": "multistep"}, "milestones"),
        ({"schedule": "multistep", "milestones": [5, 3]}, "milestones"),
        ({"schedule": "multistep", "milestones": [2, 6], "warmup_epochs": 2}, "after the warm-up"),
        ({"schedule": "linear"}, "optim.schedule='linear'"),
    ],
)
def test_bad_schedules_name_the_option(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_optimization([torch.nn.Parameter(torch.zeros(1))], {"name": "sgd", **cfg}, 10)


@pytest.mark.parametrize("max_epochs", [None, -1, 0])
def test_a_schedule_needs_the_number_of_epochs(max_epochs):
    """Lightning reports max_epochs None (or -1) for runs bounded by max_steps: no silent 1-epoch cosine."""
    params = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(ValueError, match="set trainer.max_epochs"):
        build_optimization(params, {"name": "sgd", "schedule": "cosine"}, max_epochs)
    assert "lr_scheduler" not in build_optimization(params, {"name": "sgd", "schedule": "none"}, max_epochs)


def test_a_warmup_longer_than_the_run_is_shortened_and_said(caplog):
    """A one-epoch smoke run of a recipe that warms up for one epoch runs, saying what it changed."""
    with caplog.at_level("WARNING"):
        got = _lrs({"name": "sgd", "lr": 0.1, "schedule": "cosine", "warmup_epochs": 3}, 2)
    assert "optim.warmup_epochs=3 does not fit trainer.max_epochs=2: warming up for 1" in caplog.text
    assert got[0] < got[1] == pytest.approx(0.1)
