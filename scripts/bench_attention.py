"""Benchmark the attention core: ours vs today's blocked path vs the paper's algorithm vs plain fused attention.

Per case, forward+backward is timed and its peak memory measured in a fresh subprocess per run;
the implementations alternate, round after round, and each reports the median of its timed steps
over all rounds (so a busy machine slows all of them alike):

* ``ours``: :func:`aug_attn.relative_attention` as it chooses (the native kernel in 2D on the CPU,
  factorized fused SDPA in 2D elsewhere, the band
  path in 1D where the cost rules pick them, else query blocks);
* ``pytorch``: ours without the native CPU kernel of :mod:`aug_attn.attention.native` (2D: the PyTorch
  factorized path, per tile of keys on the CPU: what runs where no C++ compiler is found);
* ``untiled``: ``pytorch`` without the key tiles of :mod:`aug_attn.attention.tiled` (2D: one fused call of
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

Instead of the table, on the CPU: ``--networks BATCH`` (AA nets against plain ones, train steps),
``--threads 1,2`` (batch-1 inference of the ``wrn`` layer and of the native kernel alone at each
thread count) and ``--compiled BATCH`` (AA-WRN-28-10 train step, eager against ``torch.compile``).
"""

from __future__ import annotations

import argparse
import contextlib
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
        rel = relative_table(enc.rel, relative_offsets(0, size, size, enc.max_distance, q.device))
        logits = q @ k.transpose(-1, -2) + relative_logits_1d(q, rel)
    else:
        rows = relative_offsets(0, size, size, enc.max_distance, q.device)
        rel_h, rel_w = relative_table(enc.rel_h, rows), relative_table(enc.rel_w, rows)
        logits = q @ k.transpose(-1, -2) + relative_logits_2d(q, rel_h, rel_w, size, size)
    return module.proj(merge_heads(logits.softmax(-1) @ v))


def native_mode(device: str) -> str:
    """The kernel mode of ``ours``: on the CPU ``"on"`` (a failed build stops the benchmark instead
    of timing the PyTorch path as ours), elsewhere ``"auto"`` (the kernel is CPU-only)."""
    return "on" if device == "cpu" else "auto"


def build(kind: str, batch: int, size: int, impl: str, device: str):
    """The step's callable for one implementation; ``blocked`` runs the reference path (query blocks
    with materialized logits), ``untiled`` the factorized path as one fused call."""
    from aug_attn.attention import disabled_paths

    step = _build(kind, batch, size, impl, device)
    disabled = {"blocked": ("tiled", "factorized", "banded"), "untiled": ("tiled",)}.get(impl, ())

    def call():
        with disabled_paths(*disabled):
            return step()

    return call


def _build(kind: str, batch: int, size: int, impl: str, device: str):
    from aug_attn import AAConv2d, RelativeMultiheadAttention, RelativePositionEncoder1d, RelativePositionEncoder2d
    from aug_attn.attention.native import set_native_kernels

    set_native_kernels(native_mode(device) if impl == "ours" else "off")
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
    from aug_attn.attention.native import native_kernels

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


def _summary(times: list[float]) -> str:
    return f"{min(times):>9.4f}{statistics.median(times):>9.4f}"


def thread_scaling(threads: list[int], rounds: int, size: int = 32) -> None:
    """Batch-1 inference of the WRN-28-10 stage-1 layer (``wrn``, 32x32) and of the native kernel
    alone at its shapes (8 heads, ``d = 20``, ``d_v = 2``), at each thread count: the counts
    alternate step after step in one process; min and median seconds, and the speed-up over the
    first count (by medians)."""
    from aug_attn import AAConv2d
    from aug_attn.attention.native import grid_attention, native_kernels

    torch.manual_seed(0)
    layer = AAConv2d(160, 160, 3, dk=160, dv=16, num_heads=8).eval()
    x = torch.randn(1, 160, size, size)
    tokens = size * size
    q, k = (torch.randn(1, 8, tokens, 20) * 20**-0.25 for _ in range(2))
    v, factors = torch.randn(1, 8, tokens, 2), torch.randn(1, 8, tokens, 2 * size)
    cases = {
        f"wrn layer {size}x{size} b1": lambda: layer(x),
        "native kernel alone": lambda: grid_attention(q, k, v, factors, (size, size)),
    }
    print(f"batch-1 inference, {rounds} alternating rounds after one warm-up; min / median s")
    print(f"{'case':<24}" + "".join(f"{f'{n} thr min':>12}{'median':>9}" for n in threads) + "".join(f"{f'{n}/{threads[0]} speed-up':>17}" for n in threads[1:]))
    before = torch.get_num_threads()
    try:
        with native_kernels("on"), torch.inference_mode():
            for name, step in cases.items():
                times: dict[int, list[float]] = {n: [] for n in threads}
                for round_ in range(rounds + 1):
                    for n in threads:
                        torch.set_num_threads(n)
                        start = time.perf_counter()
                        step()
                        if round_:
                            times[n].append(time.perf_counter() - start)
                row = f"{name:<24}" + "".join(f"   {_summary(times[n])}" for n in threads)
                speedup = [statistics.median(times[threads[0]]) / statistics.median(times[n]) for n in threads[1:]]
                print(row + "".join(f"{s:>17.2f}" for s in speedup), flush=True)
    finally:
        torch.set_num_threads(before)


def compiled_network(batch: int, rounds: int, backend: str) -> None:
    """AA-WRN-28-10 train step (fwd+bwd, 32x32, 100 classes, ``batch``) eager against
    ``torch.compile(fullgraph=True, backend=backend)``: same weights, steps alternating in one
    process after the compiled model's first (compiling) step; min and median seconds."""
    import torch.nn.functional as F

    from aug_attn.models import wrn28_10
    from aug_attn.attention.native import native_kernels

    torch.manual_seed(0)
    eager = wrn28_10(100, True)
    compiled = torch.compile(eager, fullgraph=True, backend=backend)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 100, (batch,))
    models = {"eager": eager, f"compiled ({backend})": compiled}
    times: dict[str, list[float]] = {name: [] for name in models}
    with native_kernels("on"):
        start = time.perf_counter()
        F.cross_entropy(compiled(x), y).backward()
        print(f"AA-WRN-28-10 train step (fwd+bwd), batch {batch}, 32x32; first compiled step (compiling) {time.perf_counter() - start:.1f} s")
        for round_ in range(rounds + 1):
            for name, model in models.items():
                eager.zero_grad(set_to_none=True)
                start = time.perf_counter()
                F.cross_entropy(model(x), y).backward()
                if round_:
                    times[name].append(time.perf_counter() - start)
    print(f"{'model':<24}{'min s':>9}{'median s':>9}")
    for name, t in times.items():
        print(f"{name:<24}{_summary(t)}")
    first, second = (statistics.median(t) for t in times.values())
    print(f"compiled / eager (medians): {second / first:.2f}", flush=True)


# --- CUDA: one process, CUDA events; every implementation at the same shapes, bf16 autocast and fp32 ---

# (kind, batch, size, precisions): training-sized batches (WRN-28-10 trains CIFAR at 128)
CUDA_CASES = [("wrn", 128, 32, ("bf16", "fp32")), ("wrn", 32, 64, ("bf16",)), ("1d", 4, 16384, ("bf16",))]
CUDA_IMPLS = ("ours", "sdpa", "blocked", "paper", "plain")


@contextlib.contextmanager
def cuda_path(impl: str):
    """Force the core's path for one implementation: ``sdpa`` the factorized fused SDPA (FlexAttention
    off), ``blocked`` query blocks with materialized logits; ``ours``/``paper``/``plain`` as they are."""
    from aug_attn.attention import disabled_paths

    disabled = {"sdpa": ("flex_grid", "flex_band"), "blocked": ("flex_grid", "flex_band", "factorized", "banded")}.get(impl, ())
    with disabled_paths(*disabled):
        yield


def cuda_time(step, warmup: int, steps: int) -> tuple[float, int]:
    """Median seconds of ``steps`` calls after ``warmup`` (which compile), and the peak memory of one
    call over what was allocated before it."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    times = []
    for _ in range(steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times), torch.cuda.max_memory_allocated() - before


def cuda_attention(args) -> list[dict]:
    """The attention table on CUDA; returns its rows."""
    rows = []
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}; fwd+bwd; median of {args.steps} steps after {args.warmup} warm-up")
    header = f"{'case':<20}{'prec':>6}" + "".join(f"{name + ' ms':>12}{name + ' MB':>11}" for name in CUDA_IMPLS)
    header += f"{'ours/plain t':>14}{'paper/ours t':>14}{'ours/paper m':>14}{'sdpa/ours t':>13}{'blocked/ours t':>16}"
    print(header)
    print("-" * len(header))
    wanted = set(args.only.split(",")) if args.only else None
    impls = set(args.impls.split(",")) if args.impls else set(CUDA_IMPLS)
    for kind, batch, size, precisions in CUDA_CASES:
        if wanted and f"{kind}{size}" not in wanted:
            continue
        tokens = size if kind == "1d" else size * size
        for precision in precisions:
            result: dict = {"case": f"{kind}{size}", "batch": batch, "tokens": tokens, "precision": precision}
            for impl in CUDA_IMPLS:
                if impl not in impls or (impl == "sdpa" and kind == "1d") or (impl == "paper" and batch * 8 * tokens * tokens * 4 / 1e9 > args.naive_limit_gb):
                    continue
                with cuda_path(impl):
                    forward = build(kind, batch, size, impl, "cuda")
                    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16")

                    def step():
                        with autocast:
                            out = forward()
                        out.float().square().mean().backward()

                    try:
                        seconds, peak = cuda_time(step, args.warmup, args.steps)
                        result[impl] = {"seconds": seconds, "peak_bytes": peak}
                    except Exception as error:  # one failing path must not hide the others' numbers
                        result.setdefault("errors", {})[impl] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
                        print(f"{kind}{size} {precision} {impl} failed: {result['errors'][impl]}", flush=True)
                del forward
                torch.cuda.empty_cache()
            rows.append(result)
            label = f"{kind} {size if kind == '1d' else f'{size}x{size}'} b{batch}"
            line = f"{label:<20}{precision:>6}"
            for impl in CUDA_IMPLS:
                r = result.get(impl)
                line += f"{r['seconds'] * 1e3:>12.2f}{r['peak_bytes'] / 2**20:>11.0f}" if r else f"{'-':>12}{'-':>11}"

            def ratio(x: str, y: str, key: str = "seconds") -> str:
                return f"{result[x][key] / max(result[y][key], 1e-12):.2f}" if x in result and y in result else "-"

            line += f"{ratio('ours', 'plain'):>14}{ratio('paper', 'ours'):>14}{ratio('ours', 'paper', 'peak_bytes'):>14}"
            line += f"{ratio('sdpa', 'ours'):>13}{ratio('blocked', 'ours'):>16}"
            print(line, flush=True)
    print("ours/plain t: cost of the relative logits over fused SDPA without them (the floor); paper/ours t > 1: ours faster")
    return rows


def cuda_networks(batch: int, steps: int, warmup: int) -> list[dict]:
    """Train steps (fwd+bwd+SGD, bf16 autocast) of AA-WRN-28-10 vs WRN-28-10 on CIFAR-sized input,
    and RISurConv (the paper's configuration, 1024 points with normals) clouds per second."""
    rows: list[dict] = []
    try:
        _cuda_wrn(batch, steps, warmup, rows)
    except Exception as error:
        print(f"WRN-28-10 train steps failed: {type(error).__name__}: {str(error).splitlines()[0][:300]}", flush=True)
    try:
        _cuda_risurconv(steps, warmup, rows)
    except Exception as error:
        print(f"RISurConv steps failed: {type(error).__name__}: {str(error).splitlines()[0][:300]}", flush=True)
    return rows


def _cuda_wrn(batch: int, steps: int, warmup: int, rows: list[dict]) -> None:
    import torch.nn.functional as F

    from aug_attn.models import wrn28_10

    torch.manual_seed(0)
    x, y = torch.randn(batch, 3, 32, 32, device="cuda"), torch.randint(0, 100, (batch,), device="cuda")
    print(f"\ntrain step (fwd+bwd+SGD, bf16 autocast), batch {batch}, 32x32, median of {steps} steps after {warmup} warm-up")
    times = {}
    for name, attention in (("WRN-28-10", False), ("AA-WRN-28-10", True)):
        model = wrn28_10(100, attention).cuda()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        times[name] = cuda_time(step, warmup, steps)
        print(f"{name:<14}{times[name][0] * 1e3:>10.1f} ms{times[name][1] / 2**30:>8.2f} GiB  {batch / times[name][0]:>8.0f} images/s", flush=True)
        rows.append({"net": name, "batch": batch, "seconds": times[name][0], "peak_bytes": times[name][1]})
        del model, optimizer
        torch.cuda.empty_cache()
    print(f"AA-WRN-28-10 / WRN-28-10 step time: {times['AA-WRN-28-10'][0] / times['WRN-28-10'][0]:.2f}")


def _cuda_risurconv(steps: int, warmup: int, rows: list[dict]) -> None:
    import torch.nn.functional as F

    from aug_attn.models import RISurConvClassifier

    clouds = 32
    model = RISurConvClassifier(40).cuda()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    pos = torch.randn(clouds, 1024, 3, device="cuda")
    normal = F.normalize(torch.randn(clouds, 1024, 3, device="cuda"), dim=-1)
    labels = torch.randint(0, 40, (clouds,), device="cuda")

    def train_step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(pos, normal), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def infer_step():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            model(pos, normal)

    model.train()
    train = cuda_time(train_step, warmup, steps)
    model.eval()
    infer = cuda_time(infer_step, warmup, steps)
    print(f"RISurConv (paper config, 1024 points, batch {clouds}, bf16): train {clouds / train[0]:.0f} clouds/s "
          f"({train[1] / 2**30:.2f} GiB), inference {clouds / infer[0]:.0f} clouds/s")  # fmt: skip
    rows.append({"net": "RISurConv", "batch": clouds, "train_seconds": train[0], "train_peak_bytes": train[1], "infer_seconds": infer[0]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=1, help="timed steps per run after the first (0: time the first step)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of every implementation")
    parser.add_argument("--naive-limit-gb", type=float, help="skip the paper baseline above this logits size (default 3 on the CPU, 24 on CUDA)")
    parser.add_argument("--skip", default="", help="comma-separated implementations to leave out, e.g. blocked")
    parser.add_argument("--only", help="comma-separated case names to run, e.g. 2d16,wrn32,1d1024")
    parser.add_argument("--networks", type=int, metavar="BATCH", help="instead: AA-WRN-28-10 / AA-ResNet-50 train steps vs plain")
    parser.add_argument("--threads", help="instead: batch-1 inference of the wrn layer at these thread counts, e.g. 1,2")
    parser.add_argument("--compiled", type=int, metavar="BATCH", help="instead: AA-WRN-28-10 train step eager vs torch.compile")
    parser.add_argument("--backend", default="inductor", help="--compiled: the torch.compile backend")
    parser.add_argument("--child", nargs=4, metavar=("KIND", "BATCH", "SIZE", "IMPL"), help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=10, help="CUDA: timed steps per implementation")
    parser.add_argument("--warmup", type=int, default=3, help="CUDA: untimed steps first (FlexAttention compiles in them)")
    parser.add_argument("--json", help="CUDA: also write the rows to this JSON file")
    parser.add_argument("--impls", help=f"CUDA: comma-separated implementations to run (default all: {','.join(CUDA_IMPLS)})")
    args = parser.parse_args()
    if args.naive_limit_gb is None:
        args.naive_limit_gb = 24.0 if args.device == "cuda" else 3.0
    if args.device == "cuda" and not args.child:
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device here")
        results = {"attention": [] if args.networks else cuda_attention(args)}
        if args.networks or not args.only:
            results["networks"] = cuda_networks(args.networks or 128, args.steps, args.warmup)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump({"torch": torch.__version__, "device": torch.cuda.get_device_name(), **results}, handle, indent=2)
        return
    if args.child:
        kind, batch, size, impl = args.child
        print(json.dumps(run_one(kind, int(batch), int(size), impl, args.device, args.repeats)))
        return
    if args.networks:
        networks(args.networks, max(1, args.rounds))
        return
    if args.threads:
        thread_scaling([int(n) for n in args.threads.split(",")], max(1, args.rounds))
        return
    if args.compiled:
        compiled_network(args.compiled, max(1, args.rounds), args.backend)
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
