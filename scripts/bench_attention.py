"""Benchmark the attention core: ours vs today's blocked path vs the paper's algorithm vs plain fused attention.

Per case, forward+backward is timed and its peak memory measured in a fresh subprocess per run;
the implementations alternate, round after round, and each reports the median of its timed steps
over all rounds (so a busy machine slows all of them alike):

* ``ours``: :func:`aug_attn.relative_attention` as it chooses (the native kernel in 2D on the CPU,
  factorized fused SDPA in 2D elsewhere, the band
  path in 1D where the cost rules pick them, else query blocks);
* ``pytorch``: ours without the native CPU kernel of :mod:`aug_attn.native` (2D: the PyTorch
  factorized path, per tile of keys on the CPU: what runs where no C++ compiler is found);
* ``untiled``: ``pytorch`` without the key tiles of :mod:`aug_attn.tiled` (2D: one fused call of
  depth ``d + H + W``, the path before the tiles);
* ``blocked``: the same module forced onto the query-block path with materialized logits (the
  algorithm before the fused paths: chunks recomputed in backward beyond the block budget);
* ``paper``: Bello et al.'s algorithm (appendix A.3): full ``(B, h, N, N)`` content logits plus
  relative logits by ``rel_to_abs``, softmax, all materialized; skipped when its logits alone would
  exceed ``--naive-limit-gb``;
* ``plain``: the same module without relative logits, through SDPA's fused kernel: the floor.

Cases: the core alone (64 input channels, dk = dv = 64, 8 heads; 1D tables clipped at the layer
default ``max_distance = 1024``, 2D at 64) and ``AAConv2d(160, 160, 3, dk=160, dv=16, num_heads=8)``,
the WRN-28-10 stage-1 layer of the paper (``wrn``: conv branch included).

Peak memory = growth of the process's peak RSS (CPU) or ``torch.cuda.max_memory_allocated``
(CUDA) over the state before the first forward. Run: ``python scripts/bench_attention.py``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

CHANNELS, DK, DV, HEADS = 64, 64, 64, 8
# (kind, batch, size): "1d"/"2d" the core alone, "wrn" the WRN-28-10 stage-1 AAConv2d
CASES = [
    ("wrn", 8, 16),
    ("wrn", 8, 32),
    ("wrn", 2, 64),
    ("2d", 8, 16),
    ("2d", 8, 32),
    ("2d", 2, 64),
    ("1d", 2, 1024),
    ("1d", 2, 4096),
    ("1d", 2, 16384),
]
IMPLS = ("ours", "pytorch", "untiled", "blocked", "paper", "plain")


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


def native_mode(device: str) -> str:
    """The kernel mode of ``ours``: on the CPU ``"on"`` (a failed build stops the benchmark instead
    of timing the PyTorch path as ours), elsewhere ``"auto"`` (the kernel is CPU-only)."""
    return "on" if device == "cpu" else "auto"


def build(kind: str, batch: int, size: int, impl: str, device: str):
    """The step's callable for one implementation."""
    from aug_attn import AAConv2d, RelativeMultiheadAttention, RelativePositionEncoder1d, RelativePositionEncoder2d
    from aug_attn import attention
    from aug_attn.native import set_native_kernels

    set_native_kernels(native_mode(device) if impl == "ours" else "off")
    if impl == "blocked":  # the cost rules say no: query blocks with materialized logits
        attention.factorized_is_faster = lambda *args: False
        attention.banded_is_faster = lambda *args: False
    if impl == "untiled":  # the factorized path as one fused call
        attention.tiled_supported = lambda *args: False
    torch.manual_seed(0)
    if kind == "wrn":
        layer = AAConv2d(160, 160, 3, dk=160, dv=16, num_heads=8, relative=impl != "plain").to(device)
        x = torch.randn(batch, 160, size, size, device=device, requires_grad=True)
        if impl != "paper":
            return lambda: layer(x)

        def paper_layer():
            tokens = x.flatten(2).transpose(1, 2)  # (B, HW, C)
            attn = paper_attention(layer.attn, tokens, "2d", size).transpose(1, 2).reshape(batch, 16, size, size)
            return torch.cat([layer.conv(x), attn], dim=1)

        return paper_layer
    head_dim = DK // HEADS
    if kind == "1d":
        encoder, tokens_n, pos = RelativePositionEncoder1d(head_dim, HEADS), size, size
    else:
        encoder, tokens_n, pos = RelativePositionEncoder2d(head_dim, HEADS), size * size, (size, size)
    module = RelativeMultiheadAttention(CHANNELS, DK, DV, HEADS, None if impl == "plain" else encoder).to(device)
    x = torch.randn(batch, tokens_n, CHANNELS, device=device, requires_grad=True)
    if impl == "paper":
        return lambda: paper_attention(module, x, kind, size)
    return lambda: module(x, None if impl == "plain" else pos)


def run_one(kind: str, batch: int, size: int, impl: str, device: str, repeats: int) -> dict:
    forward = build(kind, batch, size, impl, device)

    def step():
        forward().square().mean().backward()

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def peak_now() -> int:
        return torch.cuda.max_memory_allocated() if device == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = peak_now()
    times = []
    for _ in range(max(1, repeats + 1)):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    # first step: the peak-memory run (allocator warm-up), timed only when repeats == 0
    return {"seconds": times if repeats == 0 else times[1:], "peak_bytes": peak_now() - base}


def networks(batch: int, rounds: int) -> None:
    """Train-step time of AA-WRN-28-10 and AA-ResNet-50 against their plain nets (CIFAR 32x32, 100
    classes; ResNet-50 with the CIFAR stem, attention in stages 2-4), steps alternating in one
    process; the AA nets with the native kernel (as they run by default on the CPU) and without it."""
    import torch.nn.functional as F

    from aug_attn.models import resnet50, wrn28_10
    from aug_attn.native import native_kernels

    nets = {
        "WRN-28-10": lambda attention: wrn28_10(100, attention),
        "ResNet-50": lambda attention: resnet50(100, stem="cifar", attention=attention, attention_stages=(2, 3, 4)),
    }
    # column: (attention, native kernel mode)
    configs = {"plain": (False, "off"), "AA": (True, native_mode("cpu")), "AA pytorch": (True, "off")}
    torch.manual_seed(0)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 100, (batch,))
    print(f"\ntrain step (fwd+bwd+SGD), batch {batch}, 32x32, median of {rounds} alternating steps after one warm-up")
    print(f"{'net':<12}" + "".join(f"{name + ' s':>15}" for name in configs) + f"{'AA/plain':>10}{'AA pytorch/plain':>18}")
    for name, make in nets.items():
        models = {column: make(attention) for column, (attention, _) in configs.items()}
        optimizers = {c: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for c, m in models.items()}
        times: dict[str, list[float]] = {column: [] for column in configs}
        for round_ in range(rounds + 1):
            for column, model in models.items():
                with native_kernels(configs[column][1]):
                    start = time.perf_counter()
                    loss = F.cross_entropy(model(x), y)
                    optimizers[column].zero_grad(set_to_none=True)
                    loss.backward()
                    optimizers[column].step()
                if round_:
                    times[column].append(time.perf_counter() - start)
        median = {column: statistics.median(t) for column, t in times.items()}
        row = f"{name:<12}" + "".join(f"{median[column]:>15.2f}" for column in configs)
        print(row + f"{median['AA'] / median['plain']:>10.2f}{median['AA pytorch'] / median['plain']:>18.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=1, help="timed steps per run after the first (0: time the first step)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of every implementation")
    parser.add_argument("--naive-limit-gb", type=float, default=3.0, help="skip the paper baseline above this logits size")
    parser.add_argument("--skip", default="", help="comma-separated implementations to leave out, e.g. blocked")
    parser.add_argument("--only", help="comma-separated case names to run, e.g. 2d16,wrn32,1d1024")
    parser.add_argument("--networks", type=int, metavar="BATCH", help="instead: AA-WRN-28-10 / AA-ResNet-50 train steps vs plain")
    parser.add_argument("--child", nargs=4, metavar=("KIND", "BATCH", "SIZE", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, batch, size, impl = args.child
        print(json.dumps(run_one(kind, int(batch), int(size), impl, args.device, args.repeats)))
        return
    if args.networks:
        networks(args.networks, max(1, args.rounds))
        return
    print(
        f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads; fwd+bwd; "
        f"median of {args.rounds} alternating rounds x {max(1, args.repeats)} steps"
    )
    header = f"{'case':<16}{'tokens':>7}" + "".join(f"{name + ' s':>11}{name + ' MB':>11}" for name in IMPLS)
    header += f"{'paper/ours t':>14}{'ours/paper m':>14}{'ours/plain t':>14}{'pytorch/ours t':>16}{'untiled/ours t':>16}{'blocked/ours t':>16}"
    print(header)
    print("-" * len(header))
    wanted = set(args.only.split(",")) if args.only else None
    skipped = set(filter(None, args.skip.split(",")))
    for kind, batch, size in CASES:
        name = f"{kind}{size}"
        if wanted and name not in wanted:
            continue
        tokens = size if kind == "1d" else size * size
        heads = 8
        impls = [impl for impl in IMPLS if impl not in skipped]
        if batch * heads * tokens * tokens * 4 / 1e9 > args.naive_limit_gb:
            impls = [impl for impl in impls if impl != "paper"]
        runs: dict[str, list] = {impl: [] for impl in impls}
        peaks: dict[str, int] = {}
        for _ in range(args.rounds):
            for impl in impls:
                cmd = [sys.executable, __file__, "--device", args.device, "--repeats", str(args.repeats), "--child", kind, str(batch), str(size), impl]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise SystemExit(f"{name} {impl} failed:\n{proc.stderr[-2000:]}")
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                runs[impl].extend(result["seconds"])
                peaks[impl] = max(peaks.get(impl, 0), result["peak_bytes"])
        seconds = {impl: statistics.median(times) for impl, times in runs.items()}
        label = f"{kind} {size if kind == '1d' else f'{size}x{size}'} b{batch}"
        row = f"{label:<16}{tokens:>7}"
        for impl in IMPLS:
            row += f"{seconds[impl]:>11.3f}{peaks[impl] / 2**20:>11.0f}" if impl in seconds else f"{'-':>11}{'-':>11}"

        def ratio(a: dict, x: str, b: dict, y: str) -> str:
            return f"{a[x] / max(b[y], 1e-9):.2f}" if x in a and y in b else "-"

        row += f"{ratio(seconds, 'paper', seconds, 'ours'):>14}{ratio(peaks, 'ours', peaks, 'paper'):>14}"
        row += f"{ratio(seconds, 'ours', seconds, 'plain'):>14}{ratio(seconds, 'pytorch', seconds, 'ours'):>16}"
        row += f"{ratio(seconds, 'untiled', seconds, 'ours'):>16}"
        row += f"{ratio(seconds, 'blocked', seconds, 'ours'):>16}"
        print(row, flush=True)
    print("paper/ours t > 1: ours faster; ours/paper m < 1: ours smaller; ours/plain t: cost over the fused floor")


if __name__ == "__main__":
    main()
