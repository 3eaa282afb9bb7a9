"""Training reduces the loss; end-to-end `aug-attn train` on a tiny synthetic config, then `aug-attn tag`."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from aug_attn_tasks.audio.recipe import PER_TAG_FILE, build_module
from aug_attn_tasks.audio.synthetic import SYNTHETIC_TAGS, synthetic_clip
from aug_attn_tasks.cli import main
from pictures import assert_picture

TINY_MODEL = {
    "name": "muslcat",
    "channels": [8, 8, 8, 16, 16],
    "d_model": 16,
    "front_heads": 2,
    "dk": 8,
    "dv": 8,
    "num_layers": 1,
    "num_heads": 2,
    "ff_mult": 2,
    "head_dropout": 0.0,
}


def test_a_few_training_steps_reduce_the_loss():
    module = build_module({"task": "tagging", "data": {"layout": "synthetic"}, "model": TINY_MODEL})
    clips = [synthetic_clip(0, i, seconds=0.1) for i in range(8)]
    audio = torch.from_numpy(np.stack([wave[:729] for wave, _ in clips]))  # (8, 729)
    target = torch.from_numpy(np.stack([tags for _, tags in clips]))  # (8, 10)
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = module.loss(module(audio), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    config = {
        "task": "tagging",
        "seed": 0,
        "data": {
            "layout": "synthetic",
            "clip_seconds": 0.1,
            "num_train": 16,
            "num_valid": 4,
            "num_test": 6,
            "chunk_samples": 729,
            "batch_size": 8,
            "val_chunks": 2,
            "eval_chunks": 16,
        },
        "model": TINY_MODEL,
        "optim": {"name": "adamw", "lr": 0.003},
        "trainer": {"max_epochs": 1, "num_sanity_val_steps": 0, "enable_progress_bar": False, "enable_model_summary": False},
        "checkpoint": {"monitor": "val/roc_auc", "mode": "max"},
        "output": {"dir": str(root / "runs"), "tensorboard": True},
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return root, path


def test_train_then_tag_from_the_command_line(tiny_run, capsys):
    root, config_path = tiny_run
    assert main(["train", str(config_path)]) == 0
    printed = capsys.readouterr().out
    assert "test ROC-AUC" in printed and "PR-AUC" in printed
    hint = [line for line in printed.splitlines() if line.startswith("use it: aug-attn tag AUDIO_FILE --checkpoint ")]
    assert len(hint) == 1 and hint[0].endswith("best.ckpt")
    run_dir = root / "runs" / "tiny" / "version_0"
    table = (run_dir / PER_TAG_FILE).read_text().splitlines()
    assert table[0] == "tag\troc_auc\tpr_auc\tpositives" and len(table) == 1 + len(SYNTHETIC_TAGS)
    assert (run_dir / "metrics.csv").is_file() and list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert main(["plot", str(run_dir), "--out", str(root / "plots")]) == 0
    assert capsys.readouterr().out.split()[1::2] == [str(root / "plots" / n) for n in ("curves.png", "roc_auc_per_tag.png")]
    assert_picture(root / "plots" / "curves.png")
    assert_picture(root / "plots" / "roc_auc_per_tag.png")

    wave, _ = synthetic_clip(5, 0, seconds=0.5, sample_rate=22050)
    audio_path = root / "song.wav"
    sf.write(audio_path, np.stack([wave, wave], axis=1), 22050)  # stereo at another rate
    checkpoint = run_dir / "checkpoints" / "best.ckpt"
    assert main(["tag", str(audio_path), "--checkpoint", str(checkpoint), "--top", "3", "--hop", "0.02"]) == 0
    header, row = capsys.readouterr().out.splitlines()  # tab-separated: path, (label, probability) x 3, error
    cells = row.split("\t")
    assert header.split("\t")[0] == "path" and cells[0] == str(audio_path) and cells[-1] == ""
    tags, probs = cells[1:7:2], [float(p) for p in cells[2:7:2]]
    assert set(tags) <= set(SYNTHETIC_TAGS)
    assert probs == sorted(probs, reverse=True) and all(0.0 <= p <= 1.0 for p in probs)


def test_tag_reports_a_missing_file(tiny_run, capsys):
    root, _ = tiny_run
    checkpoint = root / "runs" / "tiny" / "version_0" / "checkpoints" / "best.ckpt"
    if not checkpoint.is_file():
        pytest.skip("needs the checkpoint of test_train_then_tag_from_the_command_line")
    assert main(["tag", str(root / "missing.wav"), "--checkpoint", str(checkpoint)]) == 1  # its error row
    assert "missing.wav: no such file or folder" in capsys.readouterr().err


def test_a_non_finite_loss_stops_training_and_nan_weights_are_refused(tiny_run, tmp_path, monkeypatch, capsys):
    """A diverging run stops at the batch where its loss stops being finite, naming it (exit 2, no
    traceback, no test of NaN weights); a checkpoint holding NaN weights is refused when loaded."""
    import torch

    from aug_attn_tasks.audio.recipe import TaggingModule
    from aug_attn_tasks.recipes import load_checkpoint

    _, path = tiny_run
    loss = TaggingModule.loss
    monkeypatch.setattr(TaggingModule, "loss", lambda self, logits, target: loss(self, logits, target) * float("nan"))
    assert main(["train", str(path), "--output.dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "the training loss is nan at epoch 0, batch 0:" in err and "Traceback" not in err
    monkeypatch.undo()
    assert main(["train", str(path), "--output.dir", str(tmp_path / "good")]) == 0
    checkpoint = next((tmp_path / "good").rglob("best.ckpt"))
    state = torch.load(checkpoint, weights_only=True)
    name = next(iter(state["state_dict"]))
    state["state_dict"][name] = torch.full_like(state["state_dict"][name], float("nan"))
    torch.save(state, tmp_path / "nan.ckpt")
    with pytest.raises(ValueError, match=rf"nan.ckpt: weight {name} holds NaN or infinite values"):
        load_checkpoint(tmp_path / "nan.ckpt")


@pytest.mark.parametrize(
    "override,message",
    [
        (["--modle.channels", "[4]"], "unknown config key modle; did you mean model?"),
        (["--data.batchsize", "4"], "unknown config key data.batchsize; did you mean data.batch_size?"),
        (["--trainer.max_epoch", "1"], "unknown config key trainer.max_epoch; did you mean trainer.max_epochs?"),
        (["--optim.learning_rate", "0.1"], "unknown config key optim.learning_rate"),
        (["--model.num_head", "2"], "unknown config key model.num_head; did you mean model.num_heads?"),
        (["--checkpoint.monitr", "val/loss"], "unknown config key checkpoint.monitr; did you mean checkpoint.monitor?"),
    ],
)
def test_a_config_typo_is_an_error_naming_the_closest_key(tiny_run, tmp_path, capsys, override, message):
    _, path = tiny_run
    assert main(["train", str(path), "--output.dir", str(tmp_path / "runs"), *override]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not any((tmp_path / "runs").rglob("hparams.yaml"))  # refused before a run folder was written


def test_every_shipped_config_passes_the_key_checks():
    from aug_attn_tasks.config import SECTIONS, available_configs, check_keys, load_config
    from aug_attn_tasks.optim import OPTIM_KEYS

    for name in available_configs():
        config = load_config(name)
        check_keys("", config, SECTIONS)
        check_keys("optim", config.get("optim", {}), OPTIM_KEYS)


def test_every_shipped_data_section_passes_its_tasks_key_check():
    from aug_attn_tasks.audio.data import DATA_KEYS as AUDIO
    from aug_attn_tasks.config import available_configs, check_keys, load_config
    from aug_attn_tasks.images.data import DATA_KEYS as IMAGES
    from aug_attn_tasks.points.data import DATA_KEYS as POINTS

    keys = {"tagging": AUDIO, "points": POINTS, "images": IMAGES}
    for name in available_configs():
        config = load_config(name)
        check_keys("data", config["data"], keys[config["task"]])


def test_broken_checkpoints_and_overrides_are_errors_not_tracebacks(tiny_run, tmp_path, capsys):
    import torch

    root, path = tiny_run
    assert main(["train", str(path), "--output.dir", str(tmp_path / "runs")]) == 0
    checkpoint = next((tmp_path / "runs").rglob("best.ckpt"))
    capsys.readouterr()
    state = torch.load(checkpoint, weights_only=True)
    no_task = {**state, "hyper_parameters": {"config": {k: v for k, v in state["hyper_parameters"]["config"].items() if k != "task"}}}
    torch.save(no_task, tmp_path / "no_task.ckpt")
    wrong = {**state, "state_dict": {k: v[..., :1] if v.dim() else v for k, v in state["state_dict"].items()}}
    torch.save(wrong, tmp_path / "wrong.ckpt")
    (tmp_path / "random.ckpt").write_bytes(b"\x00\x01 not a checkpoint")
    cases = [
        (["test", str(tmp_path / "no_task.ckpt")], "no_task.ckpt: the checkpoint's config names task None"),
        (["test", str(tmp_path / "wrong.ckpt")], "wrong.ckpt: its weights do not fit the model its config describes"),
        (["train", str(path), "--resume", str(tmp_path / "random.ckpt")], "random.ckpt: not a readable aug-attn checkpoint"),
        (["train", "risurconv_synthetic", "--resume", str(checkpoint)], "a checkpoint of task 'tagging', expected task 'points'"),
        (["train", str(path), "--trainer.max_epochs", "[1"], "override --trainer.max_epochs: '[1' is not valid YAML"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err[-2000:]


def test_weight_averaging_tests_and_saves_the_average(tiny_run, tmp_path):
    """``optim.ema_decay``: the checkpoint's ``state_dict`` (what testing and inference load) is the
    moving average of the weights, which differs from the raw weights it also keeps for resuming."""
    root, config_path = tiny_run
    config = yaml.safe_load(config_path.read_text())
    config["output"] = {"dir": str(tmp_path / "runs")}
    config["trainer"]["max_epochs"] = 2
    config["optim"]["ema_decay"] = 0.5
    path = tmp_path / "ema.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path)]) == 0
    (best,) = (tmp_path / "runs").glob("*/version_0/checkpoints/best.ckpt")
    saved = torch.load(best, map_location="cpu", weights_only=False)
    averaged, raw = saved["state_dict"], saved["current_model_state"]
    assert averaged.keys() == raw.keys()
    weights = [name for name, value in raw.items() if value.is_floating_point() and "running" not in name]
    assert any(not torch.equal(averaged[name], raw[name]) for name in weights)


@pytest.mark.parametrize("decay", [1.5, "fast", True])
def test_a_bad_ema_decay_is_an_error_naming_the_option(tiny_run, tmp_path, capsys, decay):
    root, config_path = tiny_run
    assert main(["train", str(config_path), "--optim.ema_decay", str(decay).lower()]) != 0
    assert "optim.ema_decay must be a number in (0, 1)" in capsys.readouterr().err
