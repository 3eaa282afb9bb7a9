"""`aug-attn explain` on tiny checkpoints of the three tasks and `aug-attn plot` on a run folder: real PNGs with content."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

import aug_attn_tasks.audio.explain as audio_explain
import aug_attn_tasks.images.explain as image_explain
import aug_attn_tasks.plot as plot_module

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


def capture_figures(monkeypatch, module):
    """``[(path, figure)]`` that ``module`` saves from now on (through its ``save_figure``, still written)."""
    saved = []

    def save(fig, path, *args, **kwargs):
        saved.append((path, fig))
        return real(fig, path, *args, **kwargs)

    real = module.save_figure
    monkeypatch.setattr(module, "save_figure", save)
    return saved


def drawn(fig):
    """Draw ``fig`` (closed by save_figure, so on a fresh Agg canvas); returns the renderer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


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


@pytest.mark.parametrize("pool", ["cls", "meanmax"])
def test_the_taggers_attention_lines_have_a_labelled_scale(tmp_path, monkeypatch, pool):
    from matplotlib.colors import same_color

    config = {**TAGGING, "model": {**TAGGING["model"], "pool": pool}}
    checkpoint = write_checkpoint(config, tmp_path / "tagger.ckpt")
    wave, _ = synthetic_clip(3, 1, seconds=0.4, sample_rate=8000)
    sf.write(tmp_path / "song.wav", wave, 8000)
    saved = capture_figures(monkeypatch, audio_explain)
    assert main(["explain", str(tmp_path / "song.wav"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "song.png")]) == 0
    [(_, fig)] = saved
    drawn(fig)
    expected = "[CLS] attention weight" if pool == "cls" else "attention received"
    line_axes = [ax for ax in fig.axes for line in ax.get_lines() if same_color(line.get_color(), "cyan")]
    fill_axes = [ax for ax in fig.axes if ax.collections]  # the shaded attention over the waveform
    assert len(line_axes) == 1 and len(fill_axes) == 1 and line_axes[0] is not fill_axes[0]
    for ax in line_axes + fill_axes:
        assert expected in ax.get_ylabel()  # says what the values are ...
        assert ax.yaxis.get_label_position() == "right" and ax.yaxis.get_visible()
        assert len([t for t in ax.get_yticklabels() if t.get_text()]) >= 2  # ... with a scale to read them on
    [line] = [line for line in line_axes[0].get_lines() if same_color(line.get_color(), "cyan")]
    values = np.asarray(line.get_ydata())
    assert 0 < values.max() <= 1 and values.min() >= 0  # softmax weights on their own axis, not rescaled to Hz
    low, high = line_axes[0].get_ylim()
    assert low == 0 and values.max() < high
    [spectrogram] = [ax for ax in fig.axes if ax.get_ylabel() == "frequency (Hz)"]  # the spectrogram keeps its own axis
    [levels] = spectrogram.get_images()
    [colour_bar] = spectrogram.child_axes  # outside the axes: both panels keep one time axis
    assert colour_bar.get_ylabel() == "STFT magnitude (dB)" and colour_bar.get_ylim() == pytest.approx(levels.get_clim())


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


def test_the_image_attention_maps_have_a_labelled_colour_bar(tmp_path, monkeypatch):
    checkpoint = write_checkpoint(IMAGES, tmp_path / "images.ckpt")
    image_folder(tmp_path / "pictures", per_class=1)
    picture = tmp_path / "pictures" / "circle" / "0.jpg"
    saved = capture_figures(monkeypatch, image_explain)
    out = tmp_path / "circle.png"
    assert main(["explain", str(picture), "--checkpoint", str(checkpoint), "--out", str(out), "--query", "8", "8", "--query", "0", "15"]) == 0
    [(path, fig)] = saved
    assert path == out
    assert len(fig.axes) == 1 + 2 + 1  # input, two queries and the colour bar
    colour_bar = fig.axes[-1]
    assert "attention weight" in colour_bar.get_ylabel() and "mean over heads" in colour_bar.get_ylabel()
    heats = [image for ax in fig.axes[1:3] for image in ax.get_images() if image.get_cmap().name == "inferno"]
    assert len(heats) == 2 and heats[0].get_clim() == heats[1].get_clim()  # one scale for all maps ...
    low, high = heats[0].get_clim()
    assert low == 0 and colour_bar.get_ylim() == pytest.approx((0, high))  # ... the colour bar's
    module, config = load_checkpoint(checkpoint)
    image = image_explain.ImagePredictor(module, config).load(picture)
    maps, _ = query_attention(module, image, [(8, 8), (0, 15)])
    assert high == pytest.approx(float(maps.max()))


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
    names = ["curves.png", "confusion_matrix.png", "roc_auc_per_tag.png", "accuracy_per_rotation.png"]  # shared pictures, then the tasks'
    assert printed == [f"wrote {tmp_path / 'plots' / name}" for name in names]
    for name in names:
        assert_picture(tmp_path / "plots" / name)
    assert main(["plot", str(tmp_path)]) == 2
    assert "nothing to plot" in capsys.readouterr().err


def bars_under_legend(fig, path):
    """``(legend, bar)`` pairs of ``fig`` whose drawn boxes overlap, and whether every legend lies
    inside the picture saved at ``path`` (nothing clipped): the saved PNG must be the figure's tight box
    (``bbox_inches="tight"``, 0.1 inch padding, 100 dpi, as save_figure writes) and hold the legends."""
    from PIL import Image

    renderer = drawn(fig)
    tight = fig.get_tightbbox(renderer)  # inches
    with Image.open(path) as image:
        width, height = image.size
    assert abs(width - 100 * (tight.width + 0.2)) <= 2 and abs(height - 100 * (tight.height + 0.2)) <= 2, (path, image.size)
    saved_box = tight.transformed(fig.dpi_scale_trans).padded(0.5)  # inches -> pixels, float slack
    overlaps, inside = [], True
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is None:
            continue
        box = legend.get_window_extent(renderer)
        inside &= saved_box.x0 <= box.x0 and box.x1 <= saved_box.x1 and saved_box.y0 <= box.y0 and box.y1 <= saved_box.y1
        overlaps += [(legend, bar) for bar in ax.patches if box.overlaps(bar.get_window_extent(renderer))]
    return overlaps, inside


def test_bar_chart_legends_cover_no_bar(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    tags = ["bass", "voice", "hihat", "noise", "lead", "organ", "snare", "pluck", "pad", "kick"]  # high bars everywhere
    rows = [f"{tag}\t{1 - 0.012 * i:.3f}\t0.9\t5" for i, tag in enumerate(tags)]
    (run_dir / "per_tag_metrics.tsv").write_text("tag\troc_auc\tpr_auc\tpositives\n" + "\n".join(rows) + "\n")
    protocols = {"z/z": {"oa": 0.996, "macc": 0.996}, "z/SO3": {"oa": 0.6, "macc": 0.55}}
    (run_dir / "report.json").write_text(json.dumps({"protocols": protocols}))
    saved = capture_figures(monkeypatch, plot_module)
    assert plot_module.plot_run(run_dir) == [run_dir / "roc_auc_per_tag.png", run_dir / "accuracy_per_rotation.png"]
    assert [path.name for path, _ in saved] == ["roc_auc_per_tag.png", "accuracy_per_rotation.png"]
    for path, fig in saved:
        assert fig.axes[0].get_legend() is not None and len(fig.axes[0].patches) >= 4, path
        overlaps, inside = bars_under_legend(fig, path)
        assert not overlaps, f"{path.name}: the legend covers {len(overlaps)} bars"
        assert inside, f"{path.name}: the legend is cut off the saved picture"
        assert_picture(path)
    [label] = [t.get_text() for t in saved[0][1].axes[0].get_legend().get_texts()]
    assert label == "chance"


def test_pictures_without_matplotlib_name_the_extra(tmp_path, monkeypatch, capsys):
    for name in ("matplotlib", "matplotlib.pyplot"):
        monkeypatch.setitem(sys.modules, name, None)  # imports of it fail as if it were absent
    write_run(tmp_path / "run")
    assert main(["plot", str(tmp_path / "run")]) == 2
    assert 'pip install -e ".[viz]"' in capsys.readouterr().err
