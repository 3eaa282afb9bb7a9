"""Exact resume: a run killed in the middle of an epoch and resumed from its last checkpoint ends with the
same weights and test metrics as the uninterrupted run (dropout and data augmentation included: for tagging,
every waveform transform and mixup, see test_distributed.CONFIGS)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from test_distributed import write_config

from aug_attn_tasks.config import load_config
from aug_attn_tasks.train import fit

STEPS_PER_EPOCH = 4  # 16 training clips (tagging), 32 images (images) in batches of 4 / 8


class Killed(RuntimeError):
    pass


class Kill(L.Callback):
    """Raises :class:`Killed` before the training step that follows ``step`` optimizer steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise Killed


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.parametrize("task", ["tagging", "images"])
def test_killed_and_resumed_run_matches_the_uninterrupted_run(task: str, tmp_path: Path) -> None:
    path = write_config(tmp_path, task, max_epochs=2, limit_train_batches=None)
    config = yaml.safe_load(path.read_text())
    config["checkpoint"]["every_n_train_steps"] = 3
    if task == "tagging":
        config["model"]["dropout"] = 0.2  # dropout and random crops must draw the same numbers after resume
    path.write_text(yaml.safe_dump(config))

    straight = fit(load_config(str(path), ["--output.dir", str(tmp_path / "straight")]))
    interrupted = load_config(str(path), ["--output.dir", str(tmp_path / "resumed")])
    with pytest.raises(Killed):
        fit(interrupted, callbacks=[Kill(step=STEPS_PER_EPOCH + 2)])  # 2 steps into the second epoch
    folder = tmp_path / "resumed" / task / "version_0" / "checkpoints"
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == STEPS_PER_EPOCH + 2
    resumed = fit(interrupted, resume=str(folder / "last.ckpt"))

    expected = weights(tmp_path / "straight" / task / "version_0" / "checkpoints" / "last.ckpt")
    for name, value in weights(folder / "last.ckpt").items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0, msg=name)
    assert resumed == pytest.approx(straight, abs=1e-7)


def _epoch(loader, epoch: int) -> list[list[int]]:
    loader.sampler.set_epoch(epoch)  # as Lightning's fit loop does before each epoch
    return [batch.tolist() for batch in loader]


def test_loader_position_applies_to_its_own_epoch_only() -> None:
    """A step checkpoint written after an epoch's last batch (and a run killed before the epoch-end
    checkpoint, e.g. during validation) resumes with the whole next epoch, not an empty one."""
    from aug_attn_tasks.loaders import train_loader

    data = torch.arange(16)
    straight = train_loader(data, 4, seed=3)
    epochs = [_epoch(straight, e) for e in range(3)]
    assert len(epochs[1]) == 4 and epochs[1] != epochs[0]

    at_end = train_loader(data, 4, seed=3)
    at_end.load_state_dict({"epoch": 0, "batches": 4})
    assert _epoch(at_end, 1) == epochs[1] and _epoch(at_end, 2) == epochs[2]

    mid = train_loader(data, 4, seed=3)
    mid.load_state_dict({"epoch": 1, "batches": 1})
    assert _epoch(mid, 1) == epochs[1][1:] and _epoch(mid, 2) == epochs[2]
    assert mid.state_dict() == {"epoch": 2, "batches": 4}


def test_a_failed_start_leaves_no_empty_run_folder(tmp_path: Path, capsys) -> None:
    """A run that fails before its first logged step (here: a learning rate torch refuses, found when
    the optimizer is built inside fit) removes its version_N folder; a finished run's folder stays."""
    from aug_attn_tasks.cli import main

    config = write_config(tmp_path, "points")
    assert main(["train", str(config), "--optim.lr", "-1"]) != 0
    assert "learning rate" in capsys.readouterr().err
    assert not list((tmp_path / "runs").rglob("version_*"))
    assert main(["train", str(config)]) == 0
    assert [p.name for p in (tmp_path / "runs").rglob("version_*")] == ["version_0"]
