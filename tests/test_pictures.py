"""`aug-attn explain` on tiny checkpoints of the three tasks and `aug-attn plot` on a run folder: real PNGs with content."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from aug_attn_tasks.audio.synthetic import synthetic_clip
from aug_attn_tasks.cli import main
from aug_attn_tasks.images.explain import query_attention
from aug_attn_tasks.plot import epoch_curves
from aug_attn_tasks.points.explain import gradient_saliency
from aug_attn_tasks.points.synthetic import SHAPES
from aug_attn_tasks.recipes import load_checkpoint
from pictures import assert_picture
from test_batch_inference import image_folder
from tiny_checkpoints import IMAGES, POINTS, TAGGING, write_checkpoint


def test_explain_a_tagger(tmp_path, capsys):
    checkpoint = write_checkpoint(TAGGING, tmp_path / "tagger.ckpt")
    wave, _ = synthetic_clip(3, 1, seconds=0.4, sample_rate=8000)
    sf.write(tmp_path / "song.wav", wave, 8000)
    out = tmp_path / "pictures" / "song.png"
    assert main(["explain", str(tmp_path / "song.wav"), "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert_picture(out)
    assert main(["explain", str(tmp_path / "song.wav"), "--checkpoint", str(checkpoint), "--out", str(out), "--query", "1", "2"]) == 2
    assert "--query chooses image pixels" in capsys.readouterr().err


def test_explain_an_image_classifier(tmp_path):
    checkpoint = write_checkpoint(IMAGES, tmp_path / "images.ckpt")
    image_folder(tmp_path / "pictures", per_class=1)
    picture = tmp_path / "pictures" / "circle" / "0.jpg"
    out = tmp_path / "circle.png"
    assert main(["explain", str(picture), "--checkpoint", str(checkpoint), "--out", str(out), "--query", "8", "8", "--query", "0", "15"]) == 0
    assert_picture(out)
    module, _ = load_checkpoint(checkpoint)
    image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    maps, probs = query_attention(module, image, [(8, 8), (0, 15)])
    assert maps.shape == (2, 16, 16) and torch.allclose(probs.sum(), torch.tensor(1.0))
    assert not torch.allclose(maps[0], maps[1])  # two queries, two maps
    assert main(["explain", str(picture), "--checkpoint", str(checkpoint), "--out", str(out), "--query", "16", "0"]) == 2


def test_explain_a_point_classifier(tmp_path):
    checkpoint = write_checkpoint(POINTS, tmp_path / "points.ckpt")
    pos, normal = SHAPES["torus"](np.random.default_rng(0), 300)
    np.save(tmp_path / "torus.npy", np.hstack([pos, normal]))
    out = tmp_path / "torus.png"
    assert main(["explain", str(tmp_path / "torus.npy"), "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    assert_picture(out)
    module, _ = load_checkpoint(checkpoint)
    saliency, probs = gradient_saliency(module, torch.from_numpy(pos[:64]).float(), torch.from_numpy(normal[:64]).float())
    assert saliency.shape == (64,) and bool((saliency >= 0).all()) and float(saliency.max()) > 0


def write_run(run_dir):
    """A run folder as `aug-attn train` leaves it (metrics.csv of Lightning's CSVLogger, hparams, test files)."""
    run_dir.mkdir(parents=True)
    lines = ["epoch,step,train/loss_epoch,train/loss_step,val/acc,val/loss"]
    for epoch in range(4):
        lines += [f"{epoch},{10 * epoch + 4},,{1.5 - 0.2 * epoch},,", f"{epoch},{10 * epoch + 9},,,{0.4 + 0.1 * epoch},{1.2 - 0.2 * epoch}"]
        lines += [f"{epoch},{10 * epoch + 9},{1.4 - 0.25 * epoch},,,"]
    (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    (run_dir / "hparams.yaml").write_text("config:\n  checkpoint:\n    monitor: val/acc\n    mode: max\n")
    (run_dir / "per_tag_metrics.tsv").write_text("tag\troc_auc\tpr_auc\tpositives\nkick\t0.9\t0.8\t5\nhihat\t0.7\t0.5\t4\nvoice\tnan\tnan\t(excluded)\n")
    rows = ["true \\ predicted\ta\tb\tc", "a\t5\t1\t0", "b\t0\t6\t0", "c\t2\t0\t4"]
    (run_dir / "confusion_matrix.tsv").write_text("\n".join(rows) + "\n")  # as single-label audio runs write it
    protocols = {"z/z": {"oa": 0.9, "macc": 0.88}, "z/SO3": {"oa": 0.6, "macc": 0.55}}
    (run_dir / "report.json").write_text(json.dumps({"protocols": protocols}))


def test_plot_draws_every_picture_a_run_folder_allows(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "tiny" / "version_0"
    write_run(run_dir)
    curves = epoch_curves(run_dir / "metrics.csv")
    assert curves["train/loss"] == pytest.approx({0: 1.4, 1: 1.15, 2: 0.9, 3: 0.65})
    assert curves["val/acc"][3] == pytest.approx(0.7) and "train/loss_step" not in curves
    assert main(["plot", str(run_dir), "--out", str(tmp_path / "plots")]) == 0
    printed = capsys.readouterr().out.splitlines()
    names = ["curves.png", "roc_auc_per_tag.png", "confusion_matrix.png", "accuracy_per_rotation.png"]
    assert printed == [f"wrote {tmp_path / 'plots' / name}" for name in names]
    for name in names:
        assert_picture(tmp_path / "plots" / name)
    assert main(["plot", str(tmp_path)]) == 2
    assert "nothing to plot" in capsys.readouterr().err


def test_pictures_without_matplotlib_name_the_extra(tmp_path, monkeypatch, capsys):
    for name in ("matplotlib", "matplotlib.pyplot"):
        monkeypatch.setitem(sys.modules, name, None)  # imports of it fail as if it were absent
    write_run(tmp_path / "run")
    assert main(["plot", str(tmp_path / "run")]) == 2
    assert 'pip install -e ".[viz]"' in capsys.readouterr().err
