"""The native CPU kernel of 2D relative attention (aug_attn.attention.native) against the materialized reference:
values and gradients in float64 and float32, odd and non-square grids, clipped and per-head tables,
any depths, threads, the core's choice of path, and its build, cache and failure modes."""

import os
import shutil
import warnings

import pytest
import torch

from aug_attn.attention import native
from aug_attn.attention import relative_attention
from aug_attn.functional import relative_logits_2d_rows
from aug_attn.layers import AAConv2d
from aug_attn.attention.native import NativeKernelError, grid_attention, native_kernels, set_native_kernels
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
    """Whether ``out`` came out of the registered op (its autograd node is named after it)."""
    return "aug_attn_grid_attention" in type(out.grad_fn).__name__


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch,size", [(4, (6, 5)), (1, (13, 21))])
def test_kernel_is_batch_independent_and_thread_count_independent(batch, size, dtype):
    """The kernel's output and its gradients of q, k, v and the factors do not depend on the other
    samples or on the thread count (1, 2, and more threads than (batch, head) pairs): bitwise. The
    13x21 grid at batch 1 gives 3 pairs for 16 threads (the forward splits queries too) and 273
    queries (three backward chunks of dK, dV sums). (The encoder's table gradients, PyTorch's
    reductions, are outside this promise.)"""
    tokens = size[0] * size[1]
    inputs = [torch.randn(batch, 3, tokens, depth, dtype=dtype, requires_grad=True) for depth in (4, 4, 3, sum(size))]
    grad = torch.randn(batch, 3, tokens, 3, dtype=dtype)
    threads = torch.get_num_threads()
    try:
        results = []
        for count in (1, 2, 16):
            torch.set_num_threads(count)
            out = grid_attention(*inputs, size)
            results.append([out, *torch.autograd.grad(out, inputs, grad)])
        alone = grid_attention(*(t[-1:] for t in inputs), size)
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        assert [torch.equal(a, b) for a, b in zip(results[0], other)] == [True] * 5
    assert torch.equal(alone[0], results[0][0][-1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_registered_ops_pass_opcheck(dtype):
    """Schema, fake (meta) implementation, autograd registration and AOT dispatch of both ops, on
    an odd 3x5 grid with d = 3, d_v = 5 and non-contiguous inputs."""
    q, k = (torch.randn(2, 3, 15, 3, dtype=dtype).transpose(2, 3).contiguous().transpose(2, 3).requires_grad_() for _ in range(2))
    v = torch.randn(2, 15, 3, 5, dtype=dtype).transpose(1, 2).requires_grad_()  # (B, h, N, d_v), strided
    factors = torch.randn(2, 3, 15, 8, dtype=dtype, requires_grad=True)
    torch.library.opcheck(torch.ops.aug_attn.grid_attention.default, (q, k, v, factors, 3, 5))
    out, lse = torch.ops.aug_attn.grid_attention(q, k, v, factors, 3, 5)
    saved = [t.detach() for t in (q, k, v, factors, out, lse)]
    grads = (torch.randn_like(out), torch.randn_like(lse))
    torch.library.opcheck(torch.ops.aug_attn.grid_attention_backward.default, (*grads, *saved, 3, 5))


def test_log_sum_exp_output_and_its_gradient():
    """The forward op's second output is each query's log-sum-exp of its logits, and gradients
    through it are exact (gradcheck of both outputs)."""
    q, k, v = _inputs(1, 2, 3 * 4, 3, 2)
    factors = torch.randn(1, 2, 12, 3 + 4, dtype=D, requires_grad=True)
    _, lse = torch.ops.aug_attn.grid_attention(q, k, v, factors, 3, 4)
    bias = factors[..., :3, None].expand(-1, -1, -1, 3, 4) + factors[..., None, 3:].expand(-1, -1, -1, 3, 4)
    logits = q @ k.transpose(-1, -2) + bias.reshape(1, 2, 12, 12)
    torch.testing.assert_close(lse, logits.logsumexp(-1), rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda *t: torch.ops.aug_attn.grid_attention(*t, 3, 4), (q, k, v, factors))


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


def _graphs_with_the_ops(graphs: list[torch.fx.GraphModule]) -> list[set[str]]:
    ops = {torch.ops.aug_attn.grid_attention.default, torch.ops.aug_attn.grid_attention_backward.default}
    return [{str(node.target) for node in graph.graph.nodes if node.target in ops} for graph in graphs]


def test_layer_compiles_in_one_graph_with_the_kernel():
    """torch.compile(fullgraph=True) keeps the registered op: the forward graph calls
    aug_attn.grid_attention, the backward graph aug_attn.grid_attention_backward; output and
    gradients equal eager's."""
    import torch._dynamo
    from torch._dynamo.backends.common import aot_autograd

    graphs: list[torch.fx.GraphModule] = []

    def keep(graph: torch.fx.GraphModule, _inputs):
        graphs.append(graph)
        return graph.forward

    layer = AAConv2d(3, 8, 3, dk=8, dv=4, num_heads=2, relative=True)
    x = torch.randn(2, 3, 5, 7, requires_grad=True)
    torch._dynamo.reset()
    compiled = torch.compile(layer, backend=aot_autograd(fw_compiler=keep, bw_compiler=keep), fullgraph=True)
    out = compiled(x)
    grads = torch.autograd.grad(out.square().sum(), [x, *layer.parameters()])
    assert _graphs_with_the_ops(graphs) == [{"aug_attn.grid_attention.default"}, {"aug_attn.grid_attention_backward.default"}]
    eager = layer(x)
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, torch.autograd.grad(eager.square().sum(), [x, *layer.parameters()])):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()
    with torch.no_grad():  # and through the default aot_eager backend
        torch.testing.assert_close(torch.compile(layer, backend="aot_eager", fullgraph=True)(x), eager, rtol=1e-5, atol=1e-6)


def test_export_keeps_the_op_and_onnx_export_takes_the_pytorch_paths(tmp_path):
    """torch.export holds aug_attn.grid_attention (a .pt2 that runs where aug_attn is imported);
    torch.onnx.export(dynamo=True) of the same layer traces the PyTorch paths and runs in ONNX Runtime."""
    layer = AAConv2d(3, 8, 3, dk=8, dv=4, num_heads=2).eval()
    x = torch.randn(2, 3, 6, 5)
    with torch.no_grad():
        expected = layer(x)
        program = torch.export.export(layer, (x,))
    assert _graphs_with_the_ops([program.graph_module]) == [{"aug_attn.grid_attention.default"}]
    torch.export.save(program, tmp_path / "layer.pt2")
    with torch.no_grad():
        torch.testing.assert_close(torch.export.load(tmp_path / "layer.pt2").module()(x), expected, rtol=1e-5, atol=1e-6)
    with native_kernels("off"), torch.no_grad():
        portable = torch.export.export(layer, (x,))
    assert _graphs_with_the_ops([portable.graph_module]) == [set()]
    pytest.importorskip("onnxscript")
    onnxruntime = pytest.importorskip("onnxruntime")
    with torch.no_grad():
        onnx_program = torch.onnx.export(layer, (x,), dynamo=True, verbose=False)
    onnx_program.save(str(tmp_path / "layer.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "layer.onnx"))
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-4, atol=1e-5)


def test_torchscript_tracing_records_the_pytorch_path(tmp_path):
    """torch.jit.trace (behind the legacy ONNX exporter) records PyTorch ops, not the opaque kernel
    call, so the traced module saves and loads."""
    layer = AAConv2d(3, 8, 3, dk=8, dv=4, num_heads=2).eval()
    x = torch.randn(2, 3, 6, 5)
    with torch.no_grad():
        traced = torch.jit.trace(layer, x)
        assert "aug_attn::grid_attention" not in str(traced.inlined_graph)
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
