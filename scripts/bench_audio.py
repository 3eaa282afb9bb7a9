"""Throughput and size of MuSLCAT, MuSLCAN and SampleCNN on raw waveforms, side by side.

Training (forward + backward + Adam step) and inference (``no_grad``) throughput in clips per second
at the paper-scale defaults (59,049 samples, 50 tags), with ratios to SampleCNN. Models are timed
in interleaved rounds and the median round is reported, so load from other processes on a shared
machine affects all three alike.

    python scripts/bench_audio.py [--length 59049] [--train-batch 8] [--infer-batch 16] [--rounds 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from aug_attn.models.muslcat import MuSLCAN, MuSLCAT
from aug_attn.models.samplecnn import SampleCNN

MODELS = {"SampleCNN": SampleCNN, "MuSLCAT": MuSLCAT, "MuSLCAN": MuSLCAN}


def train_rate(model: nn.Module, optimizer: torch.optim.Optimizer, batch: int, length: int, tags: int) -> float:
    """Clips per second of one training step on random audio and random multi-hot targets."""
    model.train()
    x, y = torch.randn(batch, length), (torch.rand(batch, tags) < 0.1).float()
    start = time.perf_counter()
    loss = F.binary_cross_entropy_with_logits(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return batch / (time.perf_counter() - start)


@torch.no_grad()
def infer_rate(model: nn.Module, batch: int, length: int) -> float:
    """Clips per second of one evaluation-mode forward pass."""
    model.eval()
    x = torch.randn(batch, length)
    start = time.perf_counter()
    model(x)
    return batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=59049, help="input samples (default 59049 = 3^10)")
    parser.add_argument("--tags", type=int, default=50)
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--infer-batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per model (after one warm-up round)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {name: cls(args.tags) for name, cls in MODELS.items()}
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=1e-4) for name, m in models.items()}
    train: dict[str, list[float]] = {name: [] for name in models}
    infer: dict[str, list[float]] = {name: [] for name in models}
    for round_ in range(args.rounds + 1):
        for name, model in models.items():
            t = train_rate(model, optimizers[name], args.train_batch, args.length, args.tags)
            i = infer_rate(model, args.infer_batch, args.length)
            if round_:  # round 0 warms up allocators and oneDNN kernels
                train[name].append(t)
                infer[name].append(i)
        print(f"round {round_}/{args.rounds} done", flush=True)
    base_train, base_infer = statistics.median(train["SampleCNN"]), statistics.median(infer["SampleCNN"])
    print(
        f"\n{args.length} samples, {args.tags} tags, CPU threads {torch.get_num_threads()}, "
        f"train batch {args.train_batch}, inference batch {args.infer_batch}, median of {args.rounds} rounds\n"
    )
    print("| model | parameters | train clips/s | inference clips/s | train vs SampleCNN | inference vs SampleCNN |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters())
        t, i = statistics.median(train[name]), statistics.median(infer[name])
        print(f"| {name} | {params / 1e6:.2f}M | {t:.2f} | {i:.2f} | {t / base_train:.2f}x | {i / base_infer:.2f}x |")


if __name__ == "__main__":
    main()
