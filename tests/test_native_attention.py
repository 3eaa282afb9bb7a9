"""The native CPU kernel of 2D relative attention (aug_attn.native) against the materialized reference:
values and gradients in float64 and float32, odd and non-square grids, clipped and per-head tables,
any depths, threads, the core's choice of path, and its build, cache and failure modes."""

import os
import shutil
import warnings

import pytest
import torch

from aug_attn import native
from aug_attn.attention import relative_attention
from aug_attn.functional import relative_logits_2d_rows
from aug_attn.layers import AAConv2d
from aug_attn.native import NativeKernelError, grid_attention, native_kernels, set_native_kernels
from aug_attn.positional import RelativePositionEncoder2d

D = torch.float64

if not (os.environ.get("CXX") or any(shutil.which(name) for name in ("c++", "g++", "clang++"))):
    pytest.skip("no C++ compiler on this machine: the native kernel cannot be built", allow_module_level=True)


@pytest.fixture(autouse=True)
def _native_on():
    """Mode "on": a kernel that fails to build fails these tests instead of falling back."""
    with native_kernels("on"):
        yield


def _reference(q, k, v, encoder, size):
    """softmax(q.k / sqrt(d) + Bello's 2D logits) v, all (B, h, N, N) tensors materialized."""
    scaled = q * q.shape[-1] ** -0.5
    logits = relative_logits_2d_rows(scaled, encoder.rel_h, encoder.rel_w, *size, 0, encoder.max_distance)
    return (scaled @ k.transpose(-1, -2) + logits).softmax(-1) @ v


def _inputs(batch, heads, tokens, dk, dv, dtype=D):
    return [torch.randn(batch, heads, tokens, d, dtype=dtype, requires_grad=True) for d in (dk, dk, dv)]


def _is_native(out: torch.Tensor) -> bool:
    return type(out.grad_fn).__name__ == "_GridAttentionBackward"


@pytest.mark.parametrize(
    "size,max_distance", [((5, 7), 64), ((4, 6), 2), ((1, 1), 4), ((3, 17), 3), ((16, 3), 64), ((2, 9), 1)]
)
@pytest.mark.parametrize("shared_heads", [True, False])
@pytest.mark.parametrize("dk,dv", [(4, 4), (20, 2), (3, 8), (1, 1)])
def test_kernel_equals_reference_float64(size, max_distance, shared_heads, dk, dv):
    """Odd, non-square and 1-pixel grids; N not a multiple of the kernel's 16 lanes or 4-row blocks;
    offsets clipped at max_distance; d_v below, equal to and above d_k."""
    encoder = RelativePositionEncoder2d(dk, 2, max_distance, shared_heads).to(D)
    q, k, v = _inputs(3, 2, size[0] * size[1], dk, dv)
    params = [q, k, v, encoder.rel_h, encoder.rel_w]
    out = relative_attention(q, k, v, encoder, size)
    assert _is_native(out)
    expected = _reference(q, k, v, encoder, size)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    grad = torch.randn_like(out)
    for got, want in zip(torch.autograd.grad(out, params, grad), torch.autograd.grad(expected, params, grad)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-11)


def test_kernel_float32_against_float64_reference():
    """The float32 kernel (polynomial exp) within float32 rounding of the float64 reference."""
    encoder = RelativePositionEncoder2d(20, 8, 64).to(D)
    q, k, v = _inputs(2, 8, 12 * 11, 20, 2)
    params = [q, k, v, encoder.rel_h, encoder.rel_w]
    expected = _reference(q, k, v, encoder, (12, 11))
    grads = torch.autograd.grad(expected.square().sum(), params)
    single = [t.detach().float().requires_grad_() for t in params]
    encoder32 = RelativePositionEncoder2d(20, 8, 64)
    with torch.no_grad():
        encoder32.rel_h.copy_(single[3])
        encoder32.rel_w.copy_(single[4])
    out = relative_attention(*single[:3], encoder32, (12, 11))
    assert _is_native(out) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=2e-6)
    got = torch.autograd.grad(out.square().sum(), [*single[:3], encoder32.rel_h, encoder32.rel_w])
    for g32, g64 in zip(got, grads):
        torch.testing.assert_close(g32.double(), g64, rtol=1e-4, atol=1e-5)


def test_kernel_is_stable_for_large_logits():
    """Logits in the hundreds (saturated softmax) in float32: no overflow, no NaN, no lost rows."""
    encoder = RelativePositionEncoder2d(8, 2, 64)
    q, k, v = (t.detach() for t in _inputs(2, 2, 7 * 9, 8, 4, torch.float32))
    q = (q * 60).requires_grad_()
    out = relative_attention(q, k, v, encoder, (7, 9))
    expected = _reference(q.double(), k.double(), v.double(), encoder.double(), (7, 9))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-4)
    assert torch.isfinite(torch.autograd.grad(out.sum(), q)[0]).all()


def test_kernel_gradcheck():
    q, k, v = _inputs(1, 2, 3 * 4, 3, 2)
    factors = torch.randn(1, 2, 12, 3 + 4, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: grid_attention(*t, (3, 4)), (q, k, v, factors))


def test_kernel_is_batch_independent_and_thread_count_independent():
    """A sample's output does not depend on the other samples or on how the (batch, head) pairs are
    shared between threads (1, 2, and more threads than pairs): bitwise."""
    encoder = RelativePositionEncoder2d(4, 3, 5).to(D)
    q, k, v = (t.detach() for t in _inputs(4, 3, 6 * 5, 4, 4))
    threads = torch.get_num_threads()
    try:
        outs = []
        for count in (1, 2, 16):
            torch.set_num_threads(count)
            outs.append(relative_attention(q, k, v, encoder, (6, 5)))
        alone = relative_attention(q[2:3], k[2:3], v[2:3], encoder, (6, 5))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(outs[0], out) for out in outs[1:])
    assert torch.equal(alone[0], outs[0][2])


@pytest.mark.parametrize("stride", [1, 2])
def test_layer_on_the_kernel_equals_the_pytorch_paths(stride):
    """A whole AAConv2d (odd 7x9 input, strided attention) with and without the kernel: output and
    every parameter's gradient."""
    layer = AAConv2d(6, 12, 3, dk=8, dv=4, num_heads=2, stride=stride).to(D)
    x = torch.randn(2, 6, 7, 9, dtype=D)
    results = []
    for mode in ("on", "off"):
        with native_kernels(mode):
            out = layer(x)
            results.append((out, torch.autograd.grad(out.square().sum(), list(layer.parameters()))))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=1e-12)
    for got, want in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_the_core_leaves_the_kernel_where_it_does_not_apply():
    """Padding masks, dropout, bf16 inputs, factorize=False and mode "off" run the PyTorch paths."""
    encoder = RelativePositionEncoder2d(4, 2, 8)
    q, k, v = _inputs(2, 2, 4 * 5, 4, 4, torch.float32)
    mask = torch.zeros(2, 20, dtype=torch.bool)
    mask[0, -3:] = True
    assert _is_native(relative_attention(q, k, v, encoder, (4, 5)))
    assert not _is_native(relative_attention(q, k, v, encoder, (4, 5), key_padding_mask=mask))
    assert not _is_native(relative_attention(q, k, v, encoder, (4, 5), dropout_p=0.5))
    assert not _is_native(relative_attention(q, k, v, encoder, (4, 5), factorize=False))
    bf16 = [t.detach().bfloat16() for t in (q, k, v)]
    assert relative_attention(*bf16, encoder.bfloat16(), (4, 5)).dtype == torch.bfloat16
    with native_kernels("off"):
        assert not _is_native(relative_attention(q, k, v, encoder.float(), (4, 5)))


def test_autocast_runs_the_kernel_in_float32():
    encoder = RelativePositionEncoder2d(4, 2, 8)
    q, k, v = (t.detach() for t in _inputs(2, 2, 5 * 5, 4, 4, torch.float32))
    exact = _reference(q.double(), k.double(), v.double(), encoder.double(), (5, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = relative_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), encoder.float(), (5, 5))
    assert out.dtype == torch.bfloat16
    exact_from_bf16 = _reference(*(t.bfloat16().double() for t in (q, k, v)), encoder.double(), (5, 5))
    torch.testing.assert_close(out.double(), exact_from_bf16, rtol=0, atol=1e-2)  # bf16 output rounding
    assert (out.double() - exact).abs().max() < 0.05


def test_layer_compiles_in_one_graph_with_the_kernel_on():
    """torch.compile traces the PyTorch path (the ctypes call is opaque); results equal eager's."""
    layer = AAConv2d(3, 8, 3, dk=8, dv=4, num_heads=2, relative=True)
    x = torch.randn(2, 3, 5, 6, requires_grad=True)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    torch.testing.assert_close(out, layer(x), rtol=1e-5, atol=1e-6)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    torch.testing.assert_close(grad, torch.autograd.grad(layer(x).square().sum(), x)[0], rtol=1e-5, atol=1e-6)


def test_torchscript_tracing_records_the_pytorch_path(tmp_path):
    """torch.jit.trace (behind the legacy ONNX exporter) records PyTorch ops, not the opaque kernel
    call, so the traced module saves and loads."""
    layer = AAConv2d(3, 8, 3, dk=8, dv=4, num_heads=2).eval()
    x = torch.randn(2, 3, 6, 5)
    with torch.no_grad():
        traced = torch.jit.trace(layer, x)
        assert "_GridAttention" not in str(traced.inlined_graph)
        traced.save(tmp_path / "layer.pt")
        loaded = torch.jit.load(tmp_path / "layer.pt")
        torch.testing.assert_close(loaded(x), layer(x), rtol=1e-5, atol=1e-6)


def test_grid_attention_refuses_mismatched_shapes():
    q, k, v = _inputs(1, 2, 12, 4, 4)
    with pytest.raises(ValueError, match=r"3x5 grid takes 15 tokens"):
        grid_attention(q, k, v, torch.zeros(1, 2, 12, 8, dtype=D), (3, 5))
    with pytest.raises(ValueError, match="disagree"):
        grid_attention(q, k[:, :, :6], v, torch.zeros(1, 2, 12, 7, dtype=D), (3, 4))


def test_modes_are_checked(monkeypatch):
    with pytest.raises(ValueError, match="the native kernel mode must be one of auto, on, off"):
        set_native_kernels("fast")
    with native_kernels("auto"):  # the mode set here wins over the environment
        monkeypatch.setenv("AUG_ATTN_NATIVE", "off")
        assert native.native_library() is not None
    monkeypatch.setattr(native._MODE, "_mode", None)  # back to the environment
    monkeypatch.setenv("AUG_ATTN_NATIVE", "sometimes")
    with pytest.raises(ValueError, match="AUG_ATTN_NATIVE must be one of"):
        native.native_library()
    monkeypatch.setenv("AUG_ATTN_NATIVE", "off")
    assert native.native_library() is None


@pytest.fixture
def fresh_build(monkeypatch, tmp_path):
    """An empty cache directory and no loaded library; the real one is reloaded afterwards."""
    monkeypatch.setenv("AUG_ATTN_CACHE_DIR", str(tmp_path / "cache"))
    native._load.cache_clear()
    native._warn_once.cache_clear()
    yield tmp_path / "cache"
    monkeypatch.undo()
    native._load.cache_clear()
    native._warn_once.cache_clear()


def test_build_lands_in_the_cache_and_is_reused(fresh_build):
    assert native.native_library() is not None
    (built,) = fresh_build.glob("grid_attention-*.so")
    stamp = built.stat().st_mtime_ns
    native._load.cache_clear()
    assert native.native_library() is not None
    assert built.stat().st_mtime_ns == stamp  # loaded, not compiled again
    assert list(fresh_build.iterdir()) == [built]  # no temporary files left behind


@pytest.mark.parametrize("compiler,message", [("/nonexistent/c++", r"running the C\+\+ compiler '/nonexistent/c\+\+' failed"), ("false", r"false -O3 .* failed \(exit 1\)")])
def test_failed_build_warns_once_and_falls_back_or_raises(fresh_build, monkeypatch, compiler, message):
    monkeypatch.setenv("CXX", compiler)
    encoder = RelativePositionEncoder2d(4, 2, 8).to(D)
    q, k, v = _inputs(1, 2, 3 * 4, 4, 4)
    with native_kernels("on"), pytest.raises(NativeKernelError, match=message):
        relative_attention(q, k, v, encoder, (3, 4))
    with native_kernels("auto"):
        with pytest.warns(RuntimeWarning, match="native CPU kernel of 2D relative attention is unavailable"):
            out = relative_attention(q, k, v, encoder, (3, 4))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once per reason, not per call
            relative_attention(q, k, v, encoder, (3, 4))
    assert not _is_native(out)
    torch.testing.assert_close(out, _reference(q, k, v, encoder, (3, 4)), rtol=0, atol=1e-12)
