"""Waveform augmentation and loudness normalisation; single-label training end to end (accuracy,
confusion matrix, label smoothing, mixup) on a Speech Commands fixture."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

from aug_attn_tasks.audio.transforms import (
    LoudnessNormalize,
    WaveAugment,
    change_speed,
    compress_dynamic_range,
    equalize,
    mix_at_snr,
    normalize_loudness,
    perturb,
    pitch_shift,
    place_or_crop,
    time_stretch,
)
from test_audio_layouts import _speech_commands

RATE = 16000


def _tone(samples: int, freq: float = 500.0) -> torch.Tensor:
    return 0.3 * torch.sin(2 * math.pi * freq * torch.arange(samples) / RATE)


def _peak_frequency(x: torch.Tensor) -> float:
    spectrum = torch.fft.rfft(x).abs()
    return float(torch.fft.rfftfreq(x.shape[0], 1 / RATE)[spectrum.argmax()])


def test_the_default_is_the_plain_random_crop():
    """Off by default: exactly the crop the dataset always made (end padding, one randint draw)."""
    audio = np.arange(100, dtype=np.float32)
    torch.manual_seed(3)
    crop = WaveAugment(None, 40, RATE)(audio)
    torch.manual_seed(3)
    start = int(torch.randint(0, 61, ()))
    assert torch.equal(crop, torch.from_numpy(audio[start : start + 40]))
    short = place_or_crop(torch.ones(10), 40)
    assert short[:10].eq(1).all() and short[10:].eq(0).all()


@pytest.mark.parametrize("length,random_place", [(100, False), (100, True), (25, False), (25, True), (40, False)])
def test_a_memory_mapped_clip_crops_as_its_tensor_does(tmp_path, length, random_place):
    """An array is cut before it is copied; the crop and the draws are those of the tensor path."""
    np.save(tmp_path / "clip.npy", np.arange(length, dtype=np.float32))
    mapped = np.load(tmp_path / "clip.npy", mmap_mode="r")
    torch.manual_seed(7)
    got = [place_or_crop(mapped, 40, random_place) for _ in range(5)]
    torch.manual_seed(7)
    expected = [place_or_crop(torch.arange(length, dtype=torch.float32), 40, random_place) for _ in range(5)]
    for a, b in zip(got, expected):
        assert a.dtype == torch.float32 and torch.equal(a, b)


def test_random_placement_keeps_the_whole_short_clip():
    torch.manual_seed(0)
    starts = set()
    for _ in range(20):
        x = place_or_crop(torch.ones(10), 40, random_place=True)
        assert x.shape == (40,) and x.sum() == 10
        starts.add(int(x.nonzero()[0]))
    assert len(starts) > 5 and max(starts) <= 30


def test_mix_at_snr_and_speed_and_normalisation():
    clean, noise = _tone(RATE), torch.randn(RATE)
    mixed = mix_at_snr(clean, noise, 10.0)
    snr = 10 * torch.log10(clean.pow(2).mean() / (mixed - clean).pow(2).mean())
    assert float(snr) == pytest.approx(10.0, abs=1e-4)
    fast = change_speed(clean, 1.25)
    assert abs(fast.shape[0] - RATE / 1.25) <= 2 and _peak_frequency(fast) == pytest.approx(625.0, abs=2)
    slow = time_stretch(clean, 0.8)
    assert slow.shape[0] == RATE / 0.8 and _peak_frequency(slow) == pytest.approx(500.0, abs=2)
    up = pitch_shift(clean, 4)  # 4 semitones: x 1.26
    assert up.shape == clean.shape and _peak_frequency(up[1000:-1000]) == pytest.approx(500 * 2 ** (4 / 12), rel=0.01)
    batch = torch.stack([clean, 0.01 * clean, torch.zeros(RATE)])
    assert normalize_loudness(batch, "peak").abs().amax(dim=1).tolist() == pytest.approx([1.0, 1.0, 0.0], abs=1e-5)
    rms = normalize_loudness(batch, "rms", 0.1).pow(2).mean(dim=1).sqrt()
    assert rms.tolist() == pytest.approx([0.1, 0.1, 0.0], abs=1e-5)
    with pytest.raises(ValueError, match="model.normalize='loud'"):
        LoudnessNormalize("loud")


def test_augment_is_seeded_by_torch_and_uses_background_noise():
    cfg = {"speed": [0.8, 1.2], "pitch_steps": [-2, 2], "pitch_prob": 0.5, "place": "random", "gain_db": [-6, 6], "polarity": True, "snr_db": [0, 10]}
    hum = np.full(3000, 0.5, dtype=np.float32)  # a background recording: a constant offset is easy to spot
    augment = WaveAugment(cfg, 2000, RATE, noise=[lambda: hum])
    audio = _tone(1500).numpy()
    torch.manual_seed(7)
    first = [augment(audio) for _ in range(4)]
    torch.manual_seed(7)
    again = [augment(audio) for _ in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert all(x.shape == (2000,) for x in first) and not torch.equal(first[0], first[1])
    # The constant background shifts the mean far from the tone's (about 0) wherever it is mixed in.
    assert all(abs(float(x.mean())) > 0.01 for x in first)
    white = WaveAugment({"snr_db": [0, 0]}, 2000, RATE)(audio)
    assert abs(float(white.mean())) < 0.02 and float((white[1600:]).abs().max()) > 0  # noise on the padding too
    with pytest.raises(ValueError, match=r"unknown keys \['volume'\]"):
        WaveAugment({"volume": 2}, 2000, RATE)
    with pytest.raises(ValueError, match=r"gain_db=\[6, -6\]"):
        WaveAugment({"gain_db": [6, -6]}, 2000, RATE)


def _amplitude(x: torch.Tensor) -> float:
    return float(x[RATE // 4 :].abs().max())  # after the filters' transient


def test_equalize_shapes_the_spectrum_as_its_filters_say():
    """A +12 dB low shelf at 200 Hz raises a 60 Hz tone about 4x and leaves a 3 kHz tone alone; the
    peak filter boosts at its centre only; zero gains are the identity. No clamping at |x| = 1:
    torchaudio's biquads clamp, equalize filters below its headroom."""
    low, high = 0.9 * torch.sin(2 * math.pi * 60 * torch.arange(RATE) / RATE), 3 * _tone(RATE, 3000.0)
    boost_low = dict(low_shelf=(200.0, 12.0), high_shelf=(2000.0, 0.0), peak=(1000.0, 0.0, 1.0))
    assert _amplitude(equalize(low, RATE, **boost_low)) == pytest.approx(0.9 * 10 ** (12 / 20), rel=0.05)
    assert _amplitude(equalize(high, RATE, **boost_low)) == pytest.approx(0.9, rel=0.02)
    flat = equalize(high, RATE, (200.0, 0.0), (2000.0, 0.0), (1000.0, 0.0, 1.0))
    assert torch.allclose(flat, high, atol=1e-4)
    peak_at_3k = dict(low_shelf=(200.0, 0.0), high_shelf=(2000.0, 0.0), peak=(3000.0, -12.0, 1.0))
    assert _amplitude(equalize(high, RATE, **peak_at_3k)) == pytest.approx(0.9 * 10 ** (-12 / 20), rel=0.05)
    assert _amplitude(equalize(low, RATE, **peak_at_3k)) == pytest.approx(0.9, rel=0.02)
    assert torch.equal(equalize(torch.zeros(100), RATE, **boost_low), torch.zeros(100))


def test_random_equalizer_in_the_augmentation():
    """``eq_db``: seeded by torch, finite, the window's length, different draws differ; gains beyond
    +-12 dB and reversed ranges are refused by name."""
    augment = WaveAugment({"eq_db": [-6, 6]}, 4000, RATE)
    audio = torch.randn(4000).numpy()
    torch.manual_seed(3)
    first = [augment(audio) for _ in range(3)]
    torch.manual_seed(3)
    assert all(torch.equal(a, augment(audio)) for a in first)
    assert all(x.shape == (4000,) and torch.isfinite(x).all() for x in first)
    assert not torch.allclose(first[0], first[1]) and not torch.allclose(first[0], torch.from_numpy(audio))
    # 8 kHz data: the filters' frequencies stay below Nyquist.
    assert torch.isfinite(WaveAugment({"eq_db": [12, 12]}, 4000, 8000)(audio)).all()
    with pytest.raises(ValueError, match=r"eq_db=\[-20, 6\]: each gain must lie within \+-12 dB"):
        WaveAugment({"eq_db": [-20, 6]}, 4000, RATE)
    with pytest.raises(ValueError, match=r"eq_db=\[6, -6\]"):
        WaveAugment({"eq_db": [6, -6]}, 4000, RATE)
    for key, value in [("eq_prob", 1.5), ("speed_prob", -0.1), ("noise_prob", "half"), ("pitch_prob", True)]:
        with pytest.raises(ValueError, match=rf"data.augment.{key}={value!r}: expected a probability in \[0, 1\]"):
            WaveAugment({key: value}, 4000, RATE)


TINY_PLAIN = {"name": "plaincnn", "channels": [8, 8, 16], "kernel_size": 16, "stride": 4, "pool": 4, "normalize": "peak"}


@pytest.mark.parametrize(("speed_prob", "noise_prob"), [(0.8, 0.3), (0.2, 0.7)])
def test_each_augmentation_fires_at_its_stated_rate(monkeypatch, speed_prob, noise_prob):
    """Over 2,000 clips at a fixed seed, speed change, noise, equaliser and polarity flip each fire at their
    configured probability (a swapped or inverted probability is off by 0.4 or more)."""
    import aug_attn_tasks.audio.transforms as transforms

    fired = {"speed": 0, "noise": 0, "eq": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            fired[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(transforms, "change_speed", counted("speed", transforms.change_speed))
    monkeypatch.setattr(transforms, "mix_at_snr", counted("noise", transforms.mix_at_snr))
    monkeypatch.setattr(transforms, "random_equalize", counted("eq", transforms.random_equalize))
    cfg = {
        "speed": [0.9, 1.1], "speed_prob": speed_prob, "snr_db": [10, 20], "noise_prob": noise_prob, "polarity": True,
        "eq_db": [-3, 3], "eq_prob": noise_prob,
    }  # fmt: skip
    augment = WaveAugment(cfg, window=32, sample_rate=RATE)
    clip = np.linspace(0.1, 0.5, 32, dtype=np.float32)  # positive: a flipped clip sums below zero
    torch.manual_seed(0)
    n, flipped = 2000, 0
    for _ in range(n):
        flipped += int(float(augment(clip).sum()) < 0)
    tolerance = 4 * math.sqrt(0.25 / n)  # 4 standard deviations of a rate
    assert abs(fired["speed"] / n - speed_prob) < tolerance, fired
    assert abs(fired["noise"] / n - noise_prob) < tolerance, fired
    assert abs(fired["eq"] / n - noise_prob) < tolerance, fired
    assert abs(flipped / n - 0.5) < tolerance, flipped


def test_single_label_training_writes_accuracy_and_a_confusion_matrix(tmp_path, capsys):
    from aug_attn_tasks.cli import main

    data = tmp_path / "speech"
    _speech_commands(data)
    config = {
        "task": "tagging",
        "seed": 0,
        "data": {
            "layout": "speech_commands",
            "root": str(data),
            "chunk_samples": 800,
            "batch_size": 2,
            "val_chunks": 1,
            "eval_chunks": 1,
            "augment": {"place": "random", "polarity": True, "snr_db": [10, 20], "speed": [0.9, 1.1]},
        },
        "model": TINY_PLAIN,
        "loss": {"label_smoothing": 0.1, "mixup": 0.4},
        "optim": {"name": "adam", "lr": 0.01, "schedule": "none"},
        "trainer": {"max_epochs": 2, "num_sanity_val_steps": 0, "enable_progress_bar": False, "enable_model_summary": False},
        "checkpoint": {"monitor": "val/accuracy", "mode": "max"},
        "output": {"dir": str(tmp_path / "runs")},
    }
    path = tmp_path / "words.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy: " in printed and "(3 classes)" in printed
    run = tmp_path / "runs" / "words" / "version_0"
    rows = (run / "confusion_matrix.tsv").read_text().splitlines()
    assert rows[0].split("\t")[1:] == ["no", "up", "yes"]
    counts = np.array([[int(v) for v in row.split("\t")[1:]] for row in rows[1:]])
    assert counts.sum() == 3 and counts.sum(axis=1).tolist() == [1, 1, 1]  # one test clip per word
    assert main(["test", str(run / "checkpoints" / "best.ckpt")]) == 0
    assert (run / "checkpoints" / "eval" / "confusion_matrix.tsv").read_text() == (run / "confusion_matrix.tsv").read_text()
    plain = float(printed.split("test accuracy: ")[1].split()[0])
    capsys.readouterr()
    assert main(["test", str(run / "checkpoints" / "best.ckpt"), "--perturb", "white_noise", "--strengths", "0,0.4"]) == 0
    table = (run / "checkpoints" / "eval" / "robustness_white_noise.tsv").read_text().splitlines()
    assert table[0] == "strength\taccuracy\tmacro_accuracy" and len(table) == 3
    assert float(table[1].split("\t")[1]) == pytest.approx(plain, abs=1e-4)  # strength 0: the plain test
    assert "robustness to white_noise" in capsys.readouterr().out
    # each strength keeps its own confusion matrix; the clean test's report is not overwritten
    evals = run / "checkpoints" / "eval"
    assert (evals / "confusion_matrix.tsv").read_text() == (run / "confusion_matrix.tsv").read_text()
    assert (evals / "robustness_white_noise" / "0.4" / "confusion_matrix.tsv").is_file()
    assert (evals / "robustness_white_noise" / "0" / "confusion_matrix.tsv").read_text() == (run / "confusion_matrix.tsv").read_text()


def test_robustness_perturbations():
    clip = _tone(RATE)
    loud = torch.cat([clip[: RATE // 2], 0.01 * clip[RATE // 2 :]])  # a loud and a quiet half
    squeezed = compress_dynamic_range(loud, 4.0)
    assert float(squeezed.abs().max()) == pytest.approx(float(loud.abs().max()), rel=1e-5)  # make-up gain
    ratio = lambda x: float(x[: RATE // 2].pow(2).mean() / x[RATE // 2 :].pow(2).mean())  # noqa: E731
    assert ratio(squeezed) < ratio(loud) / 10  # the level difference shrinks
    generator = torch.Generator().manual_seed(0)
    noisy = perturb(clip, "white_noise", 0.25, generator)
    assert float((noisy - 0.75 * clip).abs().max()) == pytest.approx(0.25 * float(clip.max()), rel=1e-5)
    assert perturb(clip, "time_stretch", 2**0.5).shape[0] == round(RATE / 2**0.5)
    assert torch.equal(perturb(clip, "pitch_shift", 0.0), clip)
    with pytest.raises(ValueError, match="perturbation 'reverb'"):
        perturb(clip, "reverb", 1.0)


def test_label_smoothing_needs_single_label():
    from aug_attn_tasks.audio.recipe import build_module

    with pytest.raises(ValueError, match="label_smoothing applies to single-label"):
        build_module({"task": "tagging", "data": {"layout": "synthetic"}, "model": TINY_PLAIN, "loss": {"label_smoothing": 0.1}})
