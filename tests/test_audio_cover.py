"""Whole-clip evaluation (``data.eval_chunks: cover``): clips of different lengths get different
numbers of windows, batched one after the other with their counts, each clip averaged over its own."""

from __future__ import annotations

import csv

import lightning as L
import numpy as np
import pytest
import soundfile as sf
import torch

from aug_attn_tasks.audio.data import AudioDataModule
from aug_attn_tasks.audio.datasets import ClipDataset, collate_windows, window_count
from aug_attn_tasks.audio.recipe import TaggingModule

CHUNK = 100


def _module(multi_label: bool) -> TaggingModule:
    torch.manual_seed(0)
    config = {
        "data": {"tags": ["x", "y", "z"], "multi_label": multi_label},
        "model": {"name": "samplecnn", "channels": [4, 4], "dropout": 0.0},
    }
    return TaggingModule(config).eval()


def test_cover_windows_see_every_sample_and_end_at_the_clip_end():
    lengths = [250, 100, 60, 301]
    clips = [np.arange(1, n + 1, dtype=np.float32) for n in lengths]
    dataset = ClipDataset(clips.__getitem__, np.zeros((4, 3), dtype=np.float32), chunk=CHUNK, num_chunks="cover")
    windows = [dataset[i][0] for i in range(4)]
    assert [w.shape for w in windows] == [(3, CHUNK), (1, CHUNK), (1, CHUNK), (4, CHUNK)]
    assert windows[0][:, 0].tolist() == [1, 101, 151]  # every CHUNK samples, the last ending at the end
    assert windows[3][:, -1].tolist() == [100, 200, 300, 301]
    for clip, clip_windows in zip(clips, windows):  # every sample of the clip is in some window
        assert set(clip.tolist()) <= set(clip_windows.flatten().tolist())
    # A short clip is one window, the clip centred (as the centred count=1 window places it).
    assert windows[2][0].nonzero().flatten().tolist() == list(range(20, 80))


def test_collate_concatenates_windows_and_counts_them():
    items = [(torch.ones(3, 5), torch.tensor([1.0, 0.0]), torch.tensor(0)), (torch.full((1, 5), 2.0), torch.tensor([0.0, 1.0]), torch.tensor(1))]
    windows, targets, index, counts = collate_windows(items)
    assert windows.shape == (4, 5) and counts.tolist() == [3, 1] and index.tolist() == [0, 1]
    assert windows[:3].eq(1).all() and windows[3].eq(2).all()  # clip by clip, nothing padded
    assert targets.tolist() == [[1.0, 0.0], [0.0, 1.0]]


@pytest.mark.parametrize("multi_label", [True, False])
def test_window_scores_equal_each_clip_scored_alone(multi_label):
    module = _module(multi_label)
    torch.manual_seed(1)
    clips = [torch.randn(k, CHUNK) for k in (3, 1, 2)]
    windows, _, _, counts = collate_windows([(w, torch.zeros(3), torch.tensor(i)) for i, w in enumerate(clips)])
    with torch.no_grad():
        scores, logits = module.window_scores(windows, counts, batch_windows=2)  # batches across clip borders
        assert scores.shape == (3, 3) and logits.shape == (6, 3)
        for b, (clip, clip_logits) in enumerate(zip(clips, logits.split(counts.tolist()))):
            alone, alone_logits = module.clip_scores(clip[None])  # (1, T), (1, K, T)
            torch.testing.assert_close(scores[b], alone[0])
            torch.testing.assert_close(clip_logits, alone_logits[0])
            probs = torch.sigmoid(module(clip)) if multi_label else torch.softmax(module(clip), dim=-1)
            torch.testing.assert_close(scores[b], probs.mean(dim=0))  # the naive reference


def test_window_scores_rejects_counts_that_do_not_add_up():
    module = _module(True)
    windows = torch.zeros(4, CHUNK)
    for counts in ([3, 0, 1], [2, 1], [[2, 2]]):
        with pytest.raises(ValueError, match="counts must be"):
            module.window_scores(windows, torch.tensor(counts))


@pytest.mark.parametrize("value", [0, -2, 2.5, "all", True, None])
def test_window_count_names_the_bad_key(value):
    with pytest.raises(ValueError, match=r"data\.val_chunks=.*expected a number of windows >= 1 or 'cover'"):
        window_count(value, "data.val_chunks")
    assert window_count(3, "data.val_chunks") == 3 and window_count("cover", "data.val_chunks") == "cover"


def test_cover_through_the_data_module_and_a_test_step(tmp_path):
    """A csv set of clips of 0.5-2.6 chunks: the test loader batches their windows one after the
    other with counts, the recipe's test step scores each clip as the mean over its own windows (the
    order of the split kept)."""
    (tmp_path / "audio").mkdir()
    rng = np.random.default_rng(0)
    seconds = {"train": [0.1] * 4, "valid": [0.05, 0.2], "test": [0.26, 0.05, 0.1, 0.15, 0.21]}
    rows = []
    for split, lengths in seconds.items():
        for i, length in enumerate(lengths):
            name = f"audio/{split}{i}.wav"
            sf.write(tmp_path / name, rng.uniform(-0.5, 0.5, int(length * 1000)).astype(np.float32), 1000)
            rows.append({"path": name, "x": i % 2, "y": 1 - i % 2, "split": split})
    with open(tmp_path / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "x", "y", "split"])
        writer.writeheader()
        writer.writerows(rows)
    cfg = {"layout": "csv", "csv": str(tmp_path / "labels.csv"), "sample_rate": 1000, "chunk_samples": CHUNK,
           "eval_chunks": "cover", "eval_batch_size": 3}  # fmt: skip
    data = AudioDataModule(cfg)
    data.prepare_data()
    data.setup()
    assert [len(data.datasets["test"][i][0]) for i in range(5)] == [3, 1, 1, 2, 3]
    assert len(data.datasets["valid"][1][0]) == 2  # val_chunks defaults to eval_chunks
    batches = list(data.test_dataloader())
    assert [b[0].shape for b in batches] == [(5, CHUNK), (5, CHUNK)] and [b[3].tolist() for b in batches] == [[3, 1, 1], [2, 3]]

    module = TaggingModule({"data": {"tags": ["x", "y"], "multi_label": True}, "model": {"name": "samplecnn", "channels": [4, 4]}})
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(module, dataloaders=data.test_dataloader(), verbose=False)
    module.eval()  # Lightning hands the module back in training mode
    with torch.no_grad():
        expected = torch.stack([torch.sigmoid(module(data.datasets["test"][i][0])).mean(dim=0) for i in range(5)])
    torch.testing.assert_close(module.test_scores, expected)

    with pytest.raises(ValueError, match="data.eval_chunks='whole'"):
        AudioDataModule({**cfg, "eval_chunks": "whole"}).setup()
