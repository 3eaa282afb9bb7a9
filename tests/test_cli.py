"""`aug-attn train --name` (the run's folder)."""

from __future__ import annotations

import pytest
import yaml

from aug_attn_tasks.cli import main
from aug_attn_tasks.config import load_config

TINY = {
    "task": "tagging",
    "data": {"layout": "synthetic", "clip_seconds": 0.1, "num_train": 8, "num_valid": 4, "num_test": 4, "chunk_samples": 729, "batch_size": 4},
    "model": {"name": "muslcat", "channels": [8, 8, 8, 16, 16], "d_model": 16, "front_heads": 2, "dk": 8, "dv": 8, "num_layers": 1, "num_heads": 2},
    "trainer": {"max_epochs": 1, "num_sanity_val_steps": 0, "enable_progress_bar": False, "enable_model_summary": False},
}


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "output": {"dir": str(tmp_path / "runs")}}))
    return path


def test_name_puts_the_run_in_its_own_folder(tiny_config, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["train", str(tiny_config), "--name", "my-digits run"]) == 0
    assert main(["train", str(tiny_config), "--name=my-digits run"]) == 0
    assert sorted(p.name for p in runs.iterdir()) == ["my-digits run"]  # not runs/tiny
    for version in ("version_0", "version_1"):
        assert (runs / "my-digits run" / version / "checkpoints" / "last.ckpt").is_file()
    assert "[my-digits run] trained and tested" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["", "  ", "a/b", "../elsewhere", "/tmp/x", "a\\b", ".", "..", "tab\there"])
def test_a_name_that_is_not_one_folder_name_is_an_error(tiny_config, tmp_path, capsys, name):
    assert main(["train", str(tiny_config), "--name", name]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"aug-attn: error: run name {name!r}: expected ") and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_the_config_name_key_is_checked_and_yields_to_the_option(tiny_config):
    assert load_config(str(tiny_config))["name"] == "tiny"
    assert load_config(str(tiny_config), ["--name", "from-override"])["name"] == "from-override"
    assert load_config(str(tiny_config), ["--name", "from-override"], run_name="mine")["name"] == "mine"
    with pytest.raises(ValueError, match="run name 'a/b': expected one folder name"):
        load_config(str(tiny_config), ["--name", "a/b"])
    with pytest.raises(ValueError, match="run name 12: expected a non-empty folder name"):
        load_config(str(tiny_config), ["--name", "12"])  # read as YAML: an int

