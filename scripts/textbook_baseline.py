"""The textbook calibration for short single-label clips: a plain 1D CNN in a plain torch loop.

What a practitioner writes outside any toolkit (the recipe of issue 23), to read every recipe of the
project against on the same splits:

- each recording at its own sample rate (no resampling), peak-normalised;
- training: a random 1 s crop of a longer recording, a shorter one zero-padded at a random offset;
  evaluation: the centred 1 s (zero-padded around a shorter recording);
- conv k3 stride 3, then 5 x [conv3, BatchNorm, ReLU, max-pool 3] at widths 48/48/96/96/192/192
  (the stem also BatchNorm + ReLU), global average + max pooling, dropout 0.5, linear head
  (about 220k parameters for 10 classes);
- Adam 1e-3 with cosine decay, batch 32, 30 epochs, no other augmentation; the last epoch's model
  is tested (no checkpoint selection).

Reads the toolkit's ``csv`` layout (``path``, ``label``, ``split`` columns; paths relative to the
CSV's folder) and touches nothing of the toolkit. Prints one JSON line with the validation and test
accuracy, the parameter count and the epochs. Run::

    python scripts/textbook_baseline.py --csv DATA/fold.csv [--seed 0] [--epochs 30]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def read_split(csv_path: Path) -> tuple[dict[str, list[tuple[np.ndarray, int]]], list[str], int]:
    """Per split, (peak-normalised recording, class index); the class names; the sample rate."""
    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    classes = sorted({row["label"] for row in rows})
    splits: dict[str, list[tuple[np.ndarray, int]]] = {"train": [], "valid": [], "test": []}
    rates = set()
    for row in rows:
        audio, rate = sf.read(str(csv_path.parent / row["path"]), dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
        rates.add(rate)
        splits[row["split"]].append((audio / max(float(np.abs(audio).max()), 1e-8), classes.index(row["label"])))
    if len(rates) != 1:
        raise ValueError(f"{csv_path}: recordings at several sample rates {sorted(rates)}; this baseline takes one")
    return splits, classes, rates.pop()


def training_crop(audio: np.ndarray, window: int, generator: torch.Generator) -> np.ndarray:
    """A random ``window`` of a longer recording; a shorter one zero-padded at a random offset."""
    if len(audio) >= window:
        start = int(torch.randint(0, len(audio) - window + 1, (), generator=generator))
        return audio[start : start + window]
    start = int(torch.randint(0, window - len(audio) + 1, (), generator=generator))
    return np.pad(audio, (start, window - len(audio) - start))


def centred(audio: np.ndarray, window: int) -> np.ndarray:
    """The centred ``window``: a longer recording cropped, a shorter one zero-padded around it."""
    if len(audio) >= window:
        start = (len(audio) - window) // 2
        return audio[start : start + window]
    before = (window - len(audio)) // 2
    return np.pad(audio, (before, window - len(audio) - before))


class PlainCNN(nn.Module):
    """``(B, L)`` waveform -> ``(B, classes)`` logits."""

    def __init__(self, classes: int, widths: tuple[int, ...] = (48, 48, 96, 96, 192, 192)) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv1d(1, widths[0], 3, stride=3), nn.BatchNorm1d(widths[0]), nn.ReLU()]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv1d(c_in, c_out, 3, padding=1), nn.BatchNorm1d(c_out), nn.ReLU(), nn.MaxPool1d(3)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(2 * widths[-1], classes))

    def forward(self, x: Tensor) -> Tensor:
        h = self.features(x[:, None])  # (B, C, T)
        return self.head(torch.cat([h.mean(dim=-1), h.amax(dim=-1)], dim=1))


@torch.no_grad()
def accuracy(model: nn.Module, items: list[tuple[np.ndarray, int]], window: int) -> float:
    model.eval()
    x = torch.from_numpy(np.stack([centred(audio, window) for audio, _ in items]))
    y = torch.tensor([label for _, label in items])
    predictions = torch.cat([model(part).argmax(dim=1) for part in x.split(256)])
    return float((predictions == y).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--csv", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=1.0, help="window length")
    args = parser.parse_args()
    start = time.time()
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    splits, classes, rate = read_split(args.csv)
    window = int(round(args.seconds * rate))
    model = PlainCNN(len(classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps_per_epoch = math.ceil(len(splits["train"]) / 32)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs * steps_per_epoch)
    train = splits["train"]
    for _ in range(args.epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator).tolist()
        for first in range(0, len(order), 32):
            batch = [train[i] for i in order[first : first + 32]]
            x = torch.from_numpy(np.stack([training_crop(audio, window, generator) for audio, _ in batch]))
            y = torch.tensor([label for _, label in batch])
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    result = {
        "val_accuracy": accuracy(model, splits["valid"], window) if splits["valid"] else None,
        "test_accuracy": accuracy(model, splits["test"], window) if splits["test"] else None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "sample_rate": rate,
        "epochs": args.epochs,
        "seed": args.seed,
        "wall_s": round(time.time() - start, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
