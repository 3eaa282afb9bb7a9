"""DDP on CPU (gloo): `aug-attn train CONFIG --trainer.devices 2 --trainer.strategy ddp` really starts two
processes; the test metrics they report equal a single-process evaluation of the same checkpoint, so each
test sample is counted exactly once (the test sets have odd sizes: Lightning's default sampler would
repeat one sample on the second process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from aug_attn_tasks.train import evaluate
from test_points_train import TINY_POINTNET2

TRAINER = {
    "max_epochs": 1,
    "limit_train_batches": 2,
    "num_sanity_val_steps": 0,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "log_every_n_steps": 1,
}

CONFIGS: dict[str, dict[str, Any]] = {
    "tagging": {
        "data": {
            "layout": "synthetic",
            "clip_seconds": 0.1,
            "num_train": 16,
            "num_valid": 5,
            "num_test": 11,
            "chunk_samples": 729,
            "batch_size": 4,
            "eval_batch_size": 2,
            "val_chunks": 2,
            "eval_chunks": 4,
            # Every training transform on: resume (test_resume) and DDP must hold with them.
            "augment": {
                "speed": [0.9, 1.1],
                "speed_prob": 0.5,
                "pitch_steps": [-1, 1],
                "pitch_prob": 0.5,
                "place": "random",
                "eq_db": [-6, 6],
                "eq_prob": 0.5,
                "gain_db": [-6, 6],
                "polarity": True,
                "snr_db": [5, 20],
                "noise_prob": 0.5,
            },
        },
        "model": {"name": "samplecnn", "channels": [8, 8, 8, 8, 8, 16], "normalize": "rms"},
        "loss": {"mixup": 0.4},
        "checkpoint": {"monitor": "val/roc_auc", "mode": "max"},
        "metrics": ["test/roc_auc", "test/pr_auc"],
    },
    "points": {
        "data": {
            "dataset": "synthetic",
            "num_train": 56,
            "num_test": 29,
            "num_points": 64,
            "protocol": "z/SO3",
            "test_rotations": ["z", "so3"],
            "val_fraction": 0.25,
            "batch_size": 8,
            "eval_batch_size": 4,
        },
        "model": TINY_POINTNET2,
        "checkpoint": {"monitor": "val/oa", "mode": "max"},
        "metrics": ["test/z_z/oa", "test/z_z/macc", "test/z_SO3/oa", "test/z_SO3/macc"],
    },
    "images": {
        "data": {
            "dataset": "synthetic",
            "num_train": 40,
            "num_test": 25,
            "image_size": 16,
            "val_size": 8,
            "batch_size": 8,
            "eval_batch_size": 4,
        },
        "model": {"arch": "aa_resnet_small"},
        "checkpoint": {"monitor": "val/acc", "mode": "max"},
        "metrics": ["test/top1", "test/top5"],
    },
}


def write_config(root: Path, task: str, **trainer: Any) -> Path:
    """A tiny synthetic config of ``task`` (one of :data:`CONFIGS`) writing its runs under ``root``."""
    spec = CONFIGS[task]
    config = {
        "task": task,
        "seed": 0,
        "data": spec["data"],
        "model": spec["model"],
        "loss": spec.get("loss", {}),
        "optim": {"name": "adam", "lr": 0.003, "schedule": "none"},
        "trainer": {**TRAINER, **trainer},
        "checkpoint": spec["checkpoint"],
        "output": {"dir": str(root / "runs")},
    }
    path = root / f"{task}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("task", sorted(CONFIGS))
def test_two_processes_report_the_single_process_metrics(task: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, task)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "aug_attn_tasks.cli", "train", str(config), "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in done.stderr
    run_dir = tmp_path / "runs" / task / "version_0"
    distributed = json.loads((run_dir / "test_metrics.json").read_text())
    single = evaluate(str(run_dir / "checkpoints" / "best.ckpt"), ["--trainer.devices", "1", "--trainer.strategy", "auto"])
    for key in CONFIGS[task]["metrics"]:
        assert distributed[key] == pytest.approx(single[key], abs=1e-6), key
