"""Benchmark the attention branch: chunked relative attention vs the paper's materialized logits.

For each size, forward+backward of multi-head relative self-attention (dk = dv = 64, 8 heads,
64 input channels) is timed and its peak memory measured, in a fresh subprocess per run:

* ``ours``: :class:`aug_attn.RelativeMultiheadAttention` with the 1D/2D encoder (query chunks,
  recomputed in backward when the logits exceed the block budget);
* ``paper``: the reference algorithm of Bello et al. (appendix A.3): full ``(B, h, N, N)`` content
  logits plus relative logits built by ``rel_to_abs`` and tiled over the other axis, softmax, all
  materialized. Skipped when its logits alone would exceed ``--naive-limit-gb``.

Peak memory = growth of the process's peak RSS (CPU) or ``torch.cuda.max_memory_allocated``
(CUDA) over the state before the first forward. Run: ``python scripts/bench_attention.py``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

CHANNELS, DK, DV, HEADS = 64, 64, 64, 8
CASES = [("2d", 8, 16), ("2d", 8, 32), ("2d", 8, 64), ("1d", 2, 1024), ("1d", 2, 4096), ("1d", 2, 16384)]


def paper_attention(module, tokens: torch.Tensor, kind: str, size: int) -> torch.Tensor:
    """Bello et al.'s materialized relative attention with the module's own weights."""
    from aug_attn.attention import merge_heads, split_heads
    from aug_attn.functional import relative_logits_1d, relative_logits_2d, relative_offsets, relative_table

    q, k, v = module.qkv(tokens).split([module.dk, module.dk, module.dv], dim=-1)
    q, k, v = (split_heads(t, module.num_heads) for t in (q, k, v))
    q = q * (module.dk // module.num_heads) ** -0.5
    enc = module.encoder
    if kind == "1d":
        rel = relative_table(enc.rel, relative_offsets(0, size, size, enc.max_distance))
        logits = q @ k.transpose(-1, -2) + relative_logits_1d(q, rel)
    else:
        rows = relative_offsets(0, size, size, enc.max_distance)
        rel_h, rel_w = relative_table(enc.rel_h, rows), relative_table(enc.rel_w, rows)
        logits = q @ k.transpose(-1, -2) + relative_logits_2d(q, rel_h, rel_w, size, size)
    return module.proj(merge_heads(logits.softmax(-1) @ v))


def run_one(kind: str, batch: int, size: int, impl: str, device: str, repeats: int) -> dict:
    from aug_attn import RelativeMultiheadAttention, RelativePositionEncoder1d, RelativePositionEncoder2d

    torch.manual_seed(0)
    head_dim = DK // HEADS
    if kind == "1d":
        encoder, tokens_n, pos = RelativePositionEncoder1d(head_dim, HEADS, max_distance=size), size, size
    else:
        encoder, tokens_n, pos = RelativePositionEncoder2d(head_dim, HEADS, max_distance=size), size * size, (size, size)
    module = RelativeMultiheadAttention(CHANNELS, DK, DV, HEADS, encoder).to(device)
    x = torch.randn(batch, tokens_n, CHANNELS, device=device, requires_grad=True)

    def step():
        out = module(x, pos) if impl == "ours" else paper_attention(module, x, kind, size)
        out.square().mean().backward()

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    step()  # first step: the peak-memory run, and the timing when repeats == 0
    sync()
    first = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if device == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) - base
    if repeats == 0:
        return {"seconds": first, "peak_bytes": peak}
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    sync()
    return {"seconds": (time.perf_counter() - start) / repeats, "peak_bytes": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps after the first (0: time the first step)")
    parser.add_argument("--naive-limit-gb", type=float, default=3.0, help="skip the paper baseline above this logits size")
    parser.add_argument("--only", help="comma-separated case names to run, e.g. 2d16,1d1024")
    parser.add_argument("--child", nargs=4, metavar=("KIND", "BATCH", "SIZE", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, batch, size, impl = args.child
        print(json.dumps(run_one(kind, int(batch), int(size), impl, args.device, args.repeats)))
        return
    torch_threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, device {args.device}, {torch_threads} threads; dk=dv={DK}, {HEADS} heads, fwd+bwd")
    header = f"{'case':<18}{'tokens':>8}{'ours s':>10}{'paper s':>10}{'time x':>8}{'ours MB':>10}{'paper MB':>10}{'mem x':>8}"
    print(header)
    print("-" * len(header))
    wanted = set(args.only.split(",")) if args.only else None
    for kind, batch, size in CASES:
        name = f"{kind}{size}"
        if wanted and name not in wanted:
            continue
        tokens = size if kind == "1d" else size * size
        results = {}
        for impl in ("ours", "paper"):
            logits_gb = batch * HEADS * tokens * tokens * 4 / 1e9
            if impl == "paper" and logits_gb > args.naive_limit_gb:
                results[impl] = None
                continue
            cmd = [sys.executable, __file__, "--device", args.device, "--repeats", str(args.repeats), "--child", kind, str(batch), str(size), impl]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{name} {impl} failed:\n{proc.stderr[-2000:]}")
            results[impl] = json.loads(proc.stdout.strip().splitlines()[-1])
        ours, paper = results["ours"], results["paper"]
        label = f"{kind} {'x'.join([str(size)] * (1 if kind == '1d' else 2))} b{batch}"
        if paper is None:
            skipped = f"skip(>{args.naive_limit_gb:g}GB)"
            print(f"{label:<18}{tokens:>8}{ours['seconds']:>10.3f}{skipped:>18}{ours['peak_bytes'] / 2**20:>10.0f}{'-':>10}{'-':>8}")
        else:
            print(
                f"{label:<18}{tokens:>8}{ours['seconds']:>10.3f}{paper['seconds']:>10.3f}{paper['seconds'] / ours['seconds']:>8.2f}"
                f"{ours['peak_bytes'] / 2**20:>10.0f}{paper['peak_bytes'] / 2**20:>10.0f}{paper['peak_bytes'] / max(ours['peak_bytes'], 1):>8.2f}"
            )
    print("time x / mem x: paper / ours (> 1 means ours is faster / smaller)")


if __name__ == "__main__":
    main()
