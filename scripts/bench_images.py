"""Benchmark plain vs attention-augmented WRN-28-10 and ResNet-50 on CPU at CIFAR resolution (32x32).

Every case runs in a fresh subprocess so that its peak memory is its own: peak RSS growth
(``resource.getrusage``) over the state right after building the model, i.e. activations,
gradients, optimizer state and workspace of the measured steps. Timing: one warm-up step, then
``--steps`` timed training steps (forward, backward, SGD with momentum) and ``--steps`` timed
inference batches (eval mode, ``torch.inference_mode``); images/s = batch * steps / seconds.

Models (100 classes): WRN-28-10 (attention in every block, the paper's CIFAR-100 setting) and
ResNet-50 with the CIFAR stem (32x32 -> maps of 32, 16, 8, 4; attention in the blocks of stages
2-4 as in the paper's ImageNet ResNet-50, which leaves the highest-resolution stage plain).

Run: ``python scripts/bench_images.py`` (about 4 minutes on one busy core; ``--threads`` to change).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from aug_attn.models import count_parameters, resnet50, wrn28_10

MODELS = {
    "WRN-28-10": lambda attention: wrn28_10(100, attention),
    "ResNet-50": lambda attention: resnet50(100, stem="cifar", attention=attention, attention_stages=(2, 3, 4)),
}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_case(model_name: str, attention: bool, batch: int, steps: int, threads: int) -> dict:
    """Train and inference throughput of one model in this process."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = MODELS[model_name](attention)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 100, (batch,))
    base = peak_rss_mib()

    def train_step() -> None:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    train_step()  # warm-up: allocator, optimizer state
    start = time.perf_counter()
    for _ in range(steps):
        train_step()
    train_s = time.perf_counter() - start
    model.eval()
    with torch.inference_mode():
        model(x)
        start = time.perf_counter()
        for _ in range(steps):
            model(x)
        infer_s = time.perf_counter() - start
    return {
        "params": count_parameters(model),
        "train_ips": batch * steps / train_s,
        "infer_ips": batch * steps / infer_s,
        "peak_mib": peak_rss_mib() - base,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per case")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "ATTENTION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child[0], args.child[1] == "1", args.batch, args.steps, args.threads)))
        return
    print(f"CPU, 32x32 inputs, batch {args.batch}, {args.steps} timed steps, {args.threads} thread(s), 100 classes")
    header = "| model | attention | params | train img/s | inference img/s | peak memory (MiB) |"
    print(header + "\n|---|---|---:|---:|---:|---:|")
    for name in MODELS:
        results = {}
        for attention in (False, True):
            command = [sys.executable, __file__, "--child", name, str(int(attention))]
            command += ["--batch", str(args.batch), "--steps", str(args.steps), "--threads", str(args.threads)]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results[attention] = r = json.loads(out.strip().splitlines()[-1])
            print(
                f"| {name} | {'AA' if attention else 'plain'} | {r['params'] / 1e6:.2f}M | {r['train_ips']:.2f} "
                f"| {r['infer_ips']:.2f} | {r['peak_mib']:.0f} |",
                flush=True,
            )
        plain, aug = results[False], results[True]
        print(
            f"| {name} | AA / plain | {aug['params'] / plain['params']:.3f} | {aug['train_ips'] / plain['train_ips']:.2f} "
            f"| {aug['infer_ips'] / plain['infer_ips']:.2f} | {aug['peak_mib'] / plain['peak_mib']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
