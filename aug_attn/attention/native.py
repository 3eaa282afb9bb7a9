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
``g++`` or ``clang++`` on the ``PATH``; ``-O3 -fopenmp -march=native``, about 3 s; where the
compiler refuses, without ``-fopenmp`` (one thread, with a logged warning), then without
``-march=native``) into ``$AUG_ATTN_CACHE_DIR`` (default ``~/.cache/aug_attn``), keyed by the
source, the compiler, the flags and the machine's CPU, and loads it with :mod:`ctypes`: no build
step at install time and no Python headers. Threads: OpenMP inside the kernel, as many as
``torch.get_num_threads()`` at the call, over (batch, head, chunk of queries) items; the results
are bitwise the same for any thread count (the backward pass adds its per-chunk key and value
gradients in a fixed order).

**Op.** The kernel is the PyTorch op ``aug_attn::grid_attention`` (CPU; returns the output and each
query's log-sum-exp) with its gradient ``aug_attn::grid_attention_backward``, both registered by
``torch.library.custom_op`` with fake (shape-only) implementations and autograd: ``torch.compile``
(``fullgraph=True`` included) and ``torch.export`` keep the kernel as one op in their graphs. A
``.pt2`` exported on the CPU therefore holds ``aug_attn::grid_attention``: loading and running it
needs ``import aug_attn`` (which registers the op; the kernel is built on first use where it runs)
and a CPU; export with ``AUG_ATTN_NATIVE=off`` (or inside ``native_kernels("off")``) for a program
of PyTorch ops only. ONNX has no such op: under ``torch.onnx.export`` (``dynamo=True`` or the
TorchScript exporter) and ``torch.jit.trace`` the core takes the PyTorch paths instead (the check
is :func:`torch.onnx.is_in_onnx_export` at trace time, in :func:`grid_attention_supported`), so
the ONNX file holds standard operators. An already exported ``.pt2`` with the op does not convert
to ONNX: export the module again.

**Choice.** :func:`set_native_kernels` (or the environment variable ``AUG_ATTN_NATIVE``):
``"auto"`` (default) uses the kernel where it applies (CPU, float32/float64, no dropout, no padding
mask, not under ONNX export or TorchScript tracing) and, when it cannot be built, warns once and
runs the PyTorch paths; ``"on"`` makes a failed build an error; ``"off"`` never builds it. Under
``torch.compile`` the choice is made when the graph is traced and kept by it.
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
from contextlib import AbstractContextManager
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

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
ABI_VERSION = 2
_BASE_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC")
# Tried in order: without OpenMP the kernel runs on one thread, without -march=native unvectorized for
# the machine's widest registers (a compiler that knows neither, e.g. Apple clang without libomp).
_FLAG_SETS = (
    (*_BASE_FLAGS, "-fopenmp", "-march=native"),
    (*_BASE_FLAGS, "-fopenmp"),
    (*_BASE_FLAGS, "-march=native"),
    _BASE_FLAGS,
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
        getattr(library, f"grid_attention_{suffix}_backward").argtypes = [pointer] * 12 + [integer] * 7
        getattr(library, f"grid_attention_{suffix}_backward").restype = None
    if library.grid_attention_abi_version() != ABI_VERSION:
        raise NativeKernelError("the cached native library has another interface version")
    if not library.grid_attention_openmp():
        log.warning("aug_attn: the native 2D attention kernel was built without OpenMP and runs on one thread")
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


@torch.compiler.assume_constant_result
def _kernel_usable() -> bool:
    """Whether this call may take the kernel: not while the ONNX exporter or TorchScript traces, and
    the library loaded. Under ``torch.compile`` the answer is taken once, when the graph is traced
    (the build happens then, in Python), and kept as a constant of that graph."""
    return (
        not torch.onnx.is_in_onnx_export()  # ONNX has no such op: the exporter gets the PyTorch paths
        and not torch.jit.is_tracing()  # TorchScript tracing (the legacy ONNX exporter) records PyTorch ops only
        and native_library() is not None
    )


def grid_attention_refusals(q: Tensor, v: Tensor, dropout_p: float, masked: bool) -> list[str]:
    """Why :func:`grid_attention` cannot run for these inputs; empty where it can (and the kernel is,
    or can be, loaded: the first call builds it). Also under ``torch.compile`` and ``torch.export``
    (the kernel is the registered op ``aug_attn::grid_attention``); not under ONNX export or
    TorchScript tracing."""
    reasons = []
    if q.device.type != "cpu" or v.device.type != "cpu":
        reasons.append(f"needs CPU tensors, got {q.device.type}")
    if q.dtype not in (torch.float32, torch.float64) or v.dtype != q.dtype:
        reasons.append(f"needs float32/float64 queries and values of one dtype, got {q.dtype}, {v.dtype}")
    if dropout_p:
        reasons.append("no dropout")
    if masked:
        reasons.append("no padding mask")
    if not reasons and not _kernel_usable():
        reasons.append("under ONNX export or TorchScript tracing, or the kernel is switched off or could not be built")
    return reasons


def grid_attention_supported(q: Tensor, v: Tensor, dropout_p: float, masked: bool) -> bool:
    """Whether :func:`grid_attention` runs for these inputs (:func:`grid_attention_refusals` is empty)."""
    return not grid_attention_refusals(q, v, dropout_p, masked)


def _pointer(t: Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def _kernel(direction: str, dtype: torch.dtype) -> Callable[..., None]:
    library = native_library()
    if library is None:
        raise NativeKernelError(
            "aug_attn::grid_attention needs the native kernel, which is switched off (AUG_ATTN_NATIVE=off) or "
            "could not be built; a program exported with the kernel runs only where it is available"
        )
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"aug_attn::grid_attention takes float32 or float64 tensors, got {dtype}")
    return getattr(library, f"grid_attention_{'f32' if dtype == torch.float32 else 'f64'}_{direction}")


def _contiguous(dtype: torch.dtype, *tensors: Tensor) -> list[Tensor]:
    if any(t.dtype != dtype for t in tensors):
        raise TypeError(f"aug_attn::grid_attention: all tensors must be {dtype}, got {[t.dtype for t in tensors]}")
    return [t.contiguous() for t in tensors]


@torch.library.custom_op("aug_attn::grid_attention", mutates_args=(), device_types="cpu")
def _forward_op(q: Tensor, k: Tensor, v: Tensor, factors: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """The kernel's forward: ``(out (B, h, N, d_v), lse (B, h, N))``, shapes as :func:`grid_attention`'s;
    ``lse`` is each query's log-sum-exp of its logits (differentiable)."""
    q, k, v, factors = _contiguous(q.dtype, q, k, v, factors)
    batch, heads, tokens, depth = q.shape
    out = q.new_empty(batch, heads, tokens, v.shape[-1])
    lse = q.new_empty(batch, heads, tokens)
    _kernel("forward", q.dtype)(
        *map(_pointer, (q, k, v, factors, out, lse)),
        batch * heads, tokens, depth, v.shape[-1], height, width, torch.get_num_threads(),
    )
    return out, lse


@_forward_op.register_fake
def _forward_fake(q: Tensor, k: Tensor, v: Tensor, factors: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    batch, heads, tokens, _ = q.shape
    return q.new_empty(batch, heads, tokens, v.shape[-1]), q.new_empty(batch, heads, tokens)


@torch.library.custom_op("aug_attn::grid_attention_backward", mutates_args=(), device_types="cpu")
def _backward_op(
    grad_out: Tensor,
    grad_lse: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    factors: Tensor,
    out: Tensor,
    lse: Tensor,
    height: int,
    width: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients of ``q, k, v, factors`` (their shapes, contiguous) from those of the forward's ``out``
    and ``lse``; recomputes the probabilities from ``lse`` instead of keeping them."""
    grad_out, grad_lse, q, k, v, factors, out, lse = _contiguous(q.dtype, grad_out, grad_lse, q, k, v, factors, out, lse)
    batch, heads, tokens, depth = q.shape
    grads = [torch.empty_like(t) for t in (q, k, v, factors)]
    _kernel("backward", q.dtype)(
        *map(_pointer, (q, k, v, factors, out, lse, grad_out, grad_lse, *grads)),
        batch * heads, tokens, depth, v.shape[-1], height, width, torch.get_num_threads(),
    )
    return tuple(grads)


@_backward_op.register_fake
def _backward_fake(
    grad_out: Tensor,
    grad_lse: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    factors: Tensor,
    out: Tensor,
    lse: Tensor,
    height: int,
    width: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return tuple(t.new_empty(t.shape) for t in (q, k, v, factors))


def _setup_context(ctx: Any, inputs: tuple[Tensor, Tensor, Tensor, Tensor, int, int], output: tuple[Tensor, Tensor]) -> None:
    q, k, v, factors, height, width = inputs
    ctx.save_for_backward(q, k, v, factors, *output)
    ctx.grid = (height, width)


def _backward(ctx: Any, grad_out: Tensor | None, grad_lse: Tensor | None) -> tuple[Tensor | None, ...]:
    """Gradients of the forward op's inputs; an unused output (None) has a zero gradient."""
    q, k, v, factors, out, lse = ctx.saved_tensors
    grad_out = torch.zeros_like(out) if grad_out is None else grad_out
    grad_lse = torch.zeros_like(lse) if grad_lse is None else grad_lse
    grads = torch.ops.aug_attn.grid_attention_backward(grad_out, grad_lse, q, k, v, factors, out, lse, *ctx.grid)
    return (*grads, None, None)


_forward_op.register_autograd(_backward, setup_context=_setup_context)


def grid_attention(q: Tensor, k: Tensor, v: Tensor, factors: Tensor, grid: tuple[int, int]) -> Tensor:
    """Attention of pre-scaled ``q`` with logits ``q_i . k_j + factors[i, y_j] + factors[i, H + x_j]``.

    Runs the registered op ``aug_attn::grid_attention`` (its gradient: ``aug_attn::grid_attention_backward``).

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
    # Contiguous here, outside the op: autograd then saves these copies for the backward pass (not
    # the views of the caller's projections, nor a second copy made inside the op).
    q, k, v, factors = (t.to(q.dtype).contiguous() for t in (q, k, v, factors))
    out, _ = torch.ops.aug_attn.grid_attention(q, k, v, factors, height, width)
    return out


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
