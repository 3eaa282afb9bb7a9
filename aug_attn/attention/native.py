"""The CPU kernel of 2D relative attention, compiled on first use (``attention/csrc/grid_attention.cpp``).

PyTorch's fused attention kernels take no relative logits, so on a grid the other exact paths either
materialize logits (the blocked path) or fold them into the fused call as extra one-hot depth (the
factorized and tiled paths: depth ``d + H + W`` or ``d + 2s`` instead of ``d``). The kernel here adds
Bello's two relative terms inside the fused loop instead, two additions per query-key pair:

.. math::
    s_{ij} = q_i \\cdot k_j + a_{i, y_j} + a_{i, H + x_j}, \\qquad a = [q\\,r^H, q\\,r^W]\\text{ gathered},

with the factors ``a`` of :meth:`~aug_attn.positional.RelativePositionEncoder.factorized` (the
encoder builds them, clipping included, and autograd takes their gradients on to ``q`` and the
tables). Per (batch, head) and block of four queries all scores sit in a per-thread buffer; the
backward pass recomputes them from the saved log-sum-exp. Values keep their own depth (no padding
to ``d``). ``scripts/bench_attention.py`` compares it with every other path and with plain fused
attention without relative logits.

**Build.** The first call compiles the file with the C++ compiler of ``$CXX`` (else ``c++``,
``g++`` or ``clang++`` on the ``PATH``; ``-O3 -march=native``, about 3 s) into
``$AUG_ATTN_CACHE_DIR`` (default ``~/.cache/aug_attn``), keyed by the source, the compiler and the
machine's CPU, and loads it with :mod:`ctypes`: no build step at install time and no Python headers.
Threads: ``torch.get_num_threads()`` Python threads, each running a share of the (batch, head)
pairs (ctypes releases the GIL).

**Choice.** :func:`set_native_kernels` (or the environment variable ``AUG_ATTN_NATIVE``):
``"auto"`` (default) uses the kernel where it applies (CPU, float32/float64, no dropout, no padding
mask, not while compiling, exporting or TorchScript-tracing) and, when it cannot be built, warns
once and runs the PyTorch paths; ``"on"`` makes a failed build an error; ``"off"`` never builds it.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from aug_attn.attention.common import AttentionInputs, AttentionPath, encoder_factors
from aug_attn.switch import Switch

__all__ = [
    "PATH",
    "NATIVE_MODES",
    "NativeKernelError",
    "set_native_kernels",
    "native_kernels",
    "native_library",
    "grid_attention_supported",
    "grid_attention",
]

log = logging.getLogger(__name__)

NATIVE_MODES = ("auto", "on", "off")
ABI_VERSION = 1
_FLAG_SETS = (
    ("-O3", "-std=c++17", "-shared", "-fPIC", "-march=native"),
    ("-O3", "-std=c++17", "-shared", "-fPIC"),  # a compiler that does not know -march=native
)
_MODE = Switch("the native kernel mode", "AUG_ATTN_NATIVE", NATIVE_MODES)


class NativeKernelError(RuntimeError):
    """The native kernel could not be built or loaded; the message says why."""


class _CompilerDidNotRun(NativeKernelError):
    """No compiler, or it could not be started: other flags would not help."""


def set_native_kernels(mode: str) -> str:
    """``"auto"``, ``"on"`` or ``"off"`` (module docstring). Returns the previous mode."""
    return _MODE.set(mode)


def native_kernels(mode: str) -> AbstractContextManager[None]:
    """``with native_kernels("off"): ...`` runs the block with that mode."""
    return _MODE.using(mode)


def _compiler() -> str:
    if os.environ.get("CXX"):
        return os.environ["CXX"]
    for name in ("c++", "g++", "clang++"):
        if shutil.which(name):
            return name
    raise _CompilerDidNotRun("no C++ compiler found (set CXX, or put c++, g++ or clang++ on the PATH)")


def _cpu_id() -> str:
    """What ``-march=native`` depends on: the architecture and, on Linux, the CPU's feature flags."""
    text = platform.machine() + platform.processor()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return text
    return text + next((line for line in lines if line.startswith(("flags", "Features"))), "")


def _cache_dir() -> Path:
    root = os.environ.get("AUG_ATTN_CACHE_DIR")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aug_attn"


def _build(source: bytes, compiler: str, flags: tuple[str, ...], target: Path) -> None:
    """Compile into a private temporary file, then rename it into place (atomic: DDP ranks may race)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src, lib = Path(tmp) / "grid_attention.cpp", Path(tmp) / target.name
        src.write_bytes(source)
        try:
            result = subprocess.run([compiler, *flags, str(src), "-o", str(lib)], capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise _CompilerDidNotRun(f"running the C++ compiler {compiler!r} failed: {error}") from error
        if result.returncode != 0:
            raise NativeKernelError(
                f"{compiler} {' '.join(flags)} failed (exit {result.returncode}):\n{result.stderr.strip()[-2000:]}"
            )
        os.replace(lib, target)


def _bind(library: ctypes.CDLL) -> ctypes.CDLL:
    pointer, integer = ctypes.c_void_p, ctypes.c_int64
    for suffix in ("f32", "f64"):
        getattr(library, f"grid_attention_{suffix}_forward").argtypes = [pointer] * 6 + [integer] * 7
        getattr(library, f"grid_attention_{suffix}_forward").restype = None
        getattr(library, f"grid_attention_{suffix}_backward").argtypes = [pointer] * 11 + [integer] * 7
        getattr(library, f"grid_attention_{suffix}_backward").restype = None
    if library.grid_attention_f32_abi_version() != ABI_VERSION:
        raise NativeKernelError("the cached native library has another interface version")
    return library


@functools.cache
def _load() -> ctypes.CDLL | NativeKernelError:
    """Build (once per machine) and load the library; the error instead where that fails."""
    try:
        source = resources.files("aug_attn.attention").joinpath("csrc/grid_attention.cpp").read_bytes()
        compiler = _compiler()
        errors = []
        for flags in _FLAG_SETS:
            key = hashlib.sha256(b"\0".join([source, compiler.encode(), " ".join(flags).encode(), _cpu_id().encode()]))
            target = _cache_dir() / f"grid_attention-{key.hexdigest()[:16]}.so"
            try:
                if not target.exists():
                    log.info("aug_attn: compiling the native 2D attention kernel into %s", target)
                    _build(source, compiler, flags, target)
                return _bind(ctypes.CDLL(str(target)))
            except _CompilerDidNotRun:
                raise
            except (NativeKernelError, OSError, AttributeError) as error:  # next: the flags without -march=native
                errors.append(str(error))
        raise NativeKernelError("; ".join(errors))
    except (NativeKernelError, OSError) as error:
        return error if isinstance(error, NativeKernelError) else NativeKernelError(str(error))


def native_library() -> ctypes.CDLL | None:
    """The loaded kernel library, or None where the mode is ``"off"`` or (``"auto"``) the build failed.

    Raises:
        NativeKernelError: mode ``"on"`` and the kernel cannot be built or loaded.
    """
    mode = _MODE.current()
    if mode == "off":
        return None
    library = _load()
    if isinstance(library, NativeKernelError):
        if mode == "on":
            raise NativeKernelError(str(library))  # a new error each time (the cached one keeps its traceback)
        _warn_once(str(library))
        return None
    return library


@functools.cache
def _warn_once(reason: str) -> None:
    warnings.warn(
        f"aug_attn: the native CPU kernel of 2D relative attention is unavailable ({reason}); using the "
        "PyTorch paths, 1.3-2x slower on CPU. AUG_ATTN_NATIVE=off silences this.",
        RuntimeWarning,
        stacklevel=4,
    )


def grid_attention_refusals(q: Tensor, v: Tensor, dropout_p: float, masked: bool) -> list[str]:
    """Why :func:`grid_attention` cannot run for these inputs; empty where it can (and the kernel is,
    or can be, loaded: the first call builds it)."""
    reasons = []
    if q.device.type != "cpu" or v.device.type != "cpu":
        reasons.append(f"needs CPU tensors, got {q.device.type}")
    if q.dtype not in (torch.float32, torch.float64) or v.dtype != q.dtype:
        reasons.append(f"needs float32/float64 queries and values of one dtype, got {q.dtype}, {v.dtype}")
    if dropout_p:
        reasons.append("no dropout")
    if masked:
        reasons.append("no padding mask")
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        reasons.append("not while compiling or exporting (an opaque ctypes call: the PyTorch paths trace)")
    if torch.jit.is_tracing():
        reasons.append("not while TorchScript-tracing (records PyTorch ops only)")
    if not reasons and native_library() is None:
        reasons.append(f"the kernel is switched off or could not be built (mode {_MODE.current()!r})")
    return reasons


def grid_attention_supported(q: Tensor, v: Tensor, dropout_p: float, masked: bool) -> bool:
    """Whether :func:`grid_attention` runs for these inputs (:func:`grid_attention_refusals` is empty)."""
    return not grid_attention_refusals(q, v, dropout_p, masked)


@functools.cache
def _executor(pid: int, threads: int) -> ThreadPoolExecutor:
    """One pool per process (a forked DataLoader worker builds its own) and thread count."""
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="aug_attn_native")


def _parallel(call: Callable[[int, int], None], pairs: int) -> None:
    """``call(start, stop)`` over ``torch.get_num_threads()`` even shares of ``[0, pairs)``."""
    threads = max(1, min(torch.get_num_threads(), pairs))
    if threads == 1:
        call(0, pairs)
        return
    step = -(-pairs // threads)
    futures = [_executor(os.getpid(), threads).submit(call, s, min(pairs, s + step)) for s in range(0, pairs, step)]
    for future in futures:
        future.result()


def _pointers(*tensors: Tensor) -> list[ctypes.c_void_p]:
    return [ctypes.c_void_p(t.data_ptr()) for t in tensors]


class _GridAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, factors: Tensor, height: int, width: int) -> Tensor:
        library = native_library()
        suffix = "f32" if q.dtype == torch.float32 else "f64"
        q, k, v, factors = (t.contiguous() for t in (q, k, v, factors))
        batch, heads, tokens, depth = q.shape
        value_depth = v.shape[-1]
        out = q.new_empty(batch, heads, tokens, value_depth)
        lse = q.new_empty(batch, heads, tokens)
        pointers = _pointers(q, k, v, factors, out, lse)
        kernel = getattr(library, f"grid_attention_{suffix}_forward")
        _parallel(lambda s, e: kernel(*pointers, s, e, tokens, depth, value_depth, height, width), batch * heads)
        ctx.save_for_backward(q, k, v, factors, out, lse)
        ctx.grid = (height, width)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        q, k, v, factors, out, lse = ctx.saved_tensors
        height, width = ctx.grid
        library = native_library()
        if library is None:
            raise NativeKernelError("the native kernel was switched off between the forward and backward pass")
        suffix = "f32" if q.dtype == torch.float32 else "f64"
        grad_out = grad_out.contiguous().to(q.dtype)
        batch, heads, tokens, depth = q.shape
        grads = [torch.empty_like(t) for t in (q, k, v, factors)]
        pointers = _pointers(q, k, v, factors, out, lse, grad_out, *grads)
        kernel = getattr(library, f"grid_attention_{suffix}_backward")
        _parallel(lambda s, e: kernel(*pointers, s, e, tokens, depth, v.shape[-1], height, width), batch * heads)
        return (*grads, None, None)


def grid_attention(q: Tensor, k: Tensor, v: Tensor, factors: Tensor, grid: tuple[int, int]) -> Tensor:
    """Attention of pre-scaled ``q`` with logits ``q_i . k_j + factors[i, y_j] + factors[i, H + x_j]``.

    Args:
        q, k: ``(B, h, N, d)``, ``N = H * W`` tokens in raster order; ``q`` already scaled.
        v: ``(B, h, N, d_v)``, any ``d_v``.
        factors: ``(B, h, N, H + W)``, the query factors of
            :meth:`~aug_attn.positional.RelativePositionEncoder.factorized` (differentiable).
        grid: ``(H, W)``.

    Returns:
        ``(B, h, N, d_v)``. Needs :func:`grid_attention_supported`.
    """
    height, width = grid
    batch, heads, tokens, _ = q.shape
    if tokens != height * width or factors.shape != (batch, heads, tokens, height + width):
        raise ValueError(
            f"grid attention on a {height}x{width} grid takes {height * width} tokens and factors "
            f"(B, h, N, {height + width}); got q {tuple(q.shape)}, factors {tuple(factors.shape)}"
        )
    if k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} disagree")
    return _GridAttention.apply(q, k, v.to(q.dtype), factors.to(q.dtype), height, width)


def supported(inputs: AttentionInputs) -> list[str]:
    """An encoder whose factorized form is a grid's (``factorize`` not False) and
    :func:`grid_attention_refusals` empty."""
    if inputs.grid is None:
        return ["the encoder has no grid form for these positions"]
    if inputs.factorize is False:
        return ["factorize=False"]
    return grid_attention_refusals(inputs.q, inputs.v, inputs.dropout_p, inputs.masked)


def run(inputs: AttentionInputs) -> Tensor:
    """``(B, h, N, d_v)``: the relative terms added inside the kernel's loop, at the plain depth."""
    q = inputs.scaled_q()
    q_aug, _ = encoder_factors(inputs.encoder, q, inputs.pos, inputs.tokens)  # (B, h, N, H + W)
    return grid_attention(q, inputs.k, inputs.v, q_aug, inputs.grid)


PATH = AttentionPath("native", supported, run)
