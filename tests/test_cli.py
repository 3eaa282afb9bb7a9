"""`aug-attn train --name` (the run's folder), `aug-attn configs` (what each shipped config is) and
`aug-attn test` (`--perturb` routed to the checkpoint's task; overrides it would ignore refused)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import aug_attn_tasks
from aug_attn_tasks.cli import main
from aug_attn_tasks.config import (
    ConfigSummary,
    available_configs,
    configs_table,
    describe_config,
    first_sentence,
    header_comment,
    load_config,
    stated_time,
)
from aug_attn_tasks.registry import task_modules

from tiny_checkpoints import POINTS, TAGGING, write_checkpoint

SHIPPED = Path(aug_attn_tasks.__file__).parent / "configs"
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


def test_configs_lists_every_shipped_config_with_its_task_and_model(capsys):
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["CONFIG", "TASK", "MODEL", "TIME", "DESCRIPTION"]
    names = available_configs()
    assert [line.split()[0] for line in lines[1:]] == names
    columns = [lines[0].index(title) for title in ("TASK", "MODEL", "TIME", "DESCRIPTION")]
    for name, line in zip(names, lines[1:]):
        config = yaml.safe_load((SHIPPED / f"{name}.yaml").read_text())
        summary = describe_config(name)
        assert line[columns[0] :].split()[0] == config["task"] == summary.task
        model = config["model"].get("name") or config["model"]["arch"]
        assert summary.model in (model, model + "+attention")
        assert line[columns[3] :] == summary.description and summary.description.endswith(".")
        assert all(line[c - 2 : c] == "  " for c in columns)
    assert main(["configs", "--names"]) == 0
    assert capsys.readouterr().out.split() == names


def test_the_table_format():
    table = configs_table(
        [
            ConfigSummary("a", "images", "wide_resnet+attention", None, "First sentence."),
            ConfigSummary("longer_name", "tagging", "muslcat", "79 s wall", "Another one."),
        ]
    )
    assert table.splitlines() == [
        "CONFIG       TASK     MODEL                  TIME       DESCRIPTION",
        "a            images   wide_resnet+attention  -          First sentence.",
        "longer_name  tagging  muslcat                79 s wall  Another one.",
    ]


def test_shipped_headers_give_their_stated_times():
    """The times are the headers' own words; a header that states none shows none."""
    times = {name: describe_config(name).time for name in available_configs()}
    assert times["muslcat_synthetic"] and "s wall" in times["muslcat_synthetic"]
    assert times["aa_resnet_synthetic"] == "about 2 minutes of CPU time"
    assert times["aa_wrn28_10_cifar100"] is None and times["muslcat_esc50"] is None  # "5 s at 44.1 kHz" is no run time
    for name, time in times.items():
        if time is not None:
            assert time in header_comment((SHIPPED / f"{name}.yaml").read_text()), name


@pytest.mark.parametrize(
    "text,time",
    [
        ("A demo in about 2 minutes of CPU time (one thread).", "about 2 minutes of CPU time"),
        ("Measured: ROC-AUC 0.97, 79 s wall. 150,370 parameters.", "79 s wall"),
        ("27 s wall, z/z 99.71%.", "27 s wall"),
        ("Trains in minutes (about 330 CPU seconds for 4,000).", "about 330 CPU seconds for 4,000"),
        ("(10 epochs; 3-6 min for 882 training scans on one busy core).", "3-6 min for 882 training scans on one busy core"),
        ("Clips are 5 s at 44.1 kHz; crops of 3.7 s.", None),
        ("1 s at 16 kHz, single-label. 500 epochs.", None),
        ("", None),
    ],
)
def test_stated_time(text, time):
    assert stated_time(text) == time


def test_header_and_first_sentence():
    text = "# First line of the\n#   header (Bello et al. 2019,\n#\n# e.g. this). Second sentence.\ntask: images\n# not header\n"
    assert header_comment(text) == "First line of the header (Bello et al. 2019, e.g. this). Second sentence."
    assert first_sentence(header_comment(text)) == "First line of the header (Bello et al. 2019, e.g. this)."
    assert first_sentence("No full stop") == "No full stop"
    assert header_comment("task: images\n") == ""


def test_perturb_goes_to_the_task_of_the_checkpoint(tmp_path, capsys):
    assert list(task_modules("robustness")) == ["tagging"]
    with pytest.raises(SystemExit):
        main(["test", "--help"])
    assert "(tagging: time_stretch, pitch_shift, compression, white_noise)" in " ".join(capsys.readouterr().out.split())
    points = write_checkpoint(POINTS, tmp_path / "points.ckpt")
    assert main(["test", str(points), "--perturb", "white_noise"]) == 2
    err = capsys.readouterr().err
    assert "task 'points' has no robustness tests; tasks with them: tagging (time_stretch, " in err and "Traceback" not in err
    tagger = write_checkpoint(TAGGING, tmp_path / "tagger.ckpt")
    assert main(["test", str(tagger), "--perturb", "reverb"]) == 2
    assert "--perturb reverb: task 'tagging' perturbs with one of time_stretch, " in capsys.readouterr().err
    assert not (tmp_path / "eval").exists()



@pytest.mark.parametrize("override", [["--model.dropout", "0.5"], ["--optim.lr=1"], ["--out", "elsewhere"], ["--loss.mixup", "0.2"]])
def test_test_refuses_overrides_the_checkpoint_would_ignore(tmp_path, capsys, override):
    """`aug-attn test` restores the model from the checkpoint: changing its model, loss or optimiser
    settings (or a key that is no section) is an error naming the override, not a silent no-op."""
    tagger = write_checkpoint(TAGGING, tmp_path / "tagger.ckpt")
    assert main(["test", str(tagger), *override]) == 2
    err = capsys.readouterr().err
    key = override[0].split("=")[0]
    assert err.startswith(f"aug-attn: error: override {key}: a checkpoint keeps its model, loss and optimiser settings")
    assert "only seed, data.*, trainer.* can change" in err and "Traceback" not in err
    assert not (tmp_path / "eval").exists()
