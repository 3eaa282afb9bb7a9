"""The fused PyTorch paths of the attention core (factorized 2D logits, padded depths) against the
reference functional API and the blocked path: values and gradients in float64.

The native CPU kernel (:mod:`aug_attn.attention.native`) would take the 2D cases here; it is switched off for
this module, so these tests keep covering the paths that run without it (no C++ compiler, CUDA,
bf16, compiling). ``tests/test_native_attention.py`` tests the kernel.
"""

import shutil

import pytest
import torch

from aug_attn.attention import banded, factorized, fused_attention, relative_attention, tiled
from aug_attn.attention.flex import band_table, flex_band_attention, flex_grid_attention
from aug_attn.functional import grid_one_hot, relative_logits_2d_factors, relative_logits_2d_rows
from aug_attn.layers import AAConv1d, AAConv2d
from aug_attn.attention.native import native_kernels
from aug_attn.positional import RelativePositionEncoder1d, RelativePositionEncoder2d

D = torch.float64


@pytest.fixture(autouse=True)
def _pytorch_paths():
    with native_kernels("off"):
        yield


def reference_attention(q, k, v, logits, mask=None):
    """softmax(q.k / sqrt(d) + logits) v with everything materialized; ``logits`` from the scaled q."""
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5 + logits
    if mask is not None:
        scores = scores.masked_fill(mask[:, None, None, :], float("-inf"))
    return scores.softmax(-1) @ v


@pytest.mark.parametrize("size,clip", [((5, 7), None), ((4, 6), 2), ((1, 3), 1), ((3, 1), 8)])
@pytest.mark.parametrize("per_head", [False, True])
def test_factors_and_one_hot_rebuild_the_logits(size, clip, per_head):
    height, width = size
    heads = (2,) if per_head else ()
    q = torch.randn(2, 2, height * width, 3, dtype=D)
    rows_h, rows_w = (2 * height - 1, 2 * width - 1) if clip is None else (2 * clip + 1,) * 2
    rel_h, rel_w = torch.randn(*heads, rows_h, 3, dtype=D), torch.randn(*heads, rows_w, 3, dtype=D)
    logits_h, logits_w = relative_logits_2d_factors(q, rel_h, rel_w, height, width, 0, clip)
    rebuilt = torch.cat([logits_h, logits_w], -1) @ grid_one_hot(height, width, D).T
    torch.testing.assert_close(rebuilt, relative_logits_2d_rows(q, rel_h, rel_w, height, width, 0, clip), rtol=0, atol=1e-12)


def _qkv(batch, heads, tokens, dk, dv, grad=True):
    return [torch.randn(batch, heads, tokens, d, dtype=D, requires_grad=grad) for d in (dk, dk, dv)]


@pytest.mark.parametrize("size,max_distance", [((5, 7), 64), ((4, 6), 2), ((1, 3), 8), ((6, 1), 1)])
@pytest.mark.parametrize("shared_heads", [True, False])
@pytest.mark.parametrize("dk,dv", [(4, 2), (3, 5)])
def test_factorized_path_equals_blocked_and_reference(size, max_distance, shared_heads, dk, dv):
    height, width = size
    encoder = RelativePositionEncoder2d(dk, 2, max_distance, shared_heads).to(D)
    q, k, v = _qkv(2, 2, height * width, dk, dv)
    mask = torch.zeros(2, height * width, dtype=torch.bool)
    mask[1, -2:] = height * width > 2
    params = [q, k, v, encoder.rel_h, encoder.rel_w]
    results = []
    for factorize in (True, False, "reference"):
        if factorize == "reference":
            logits = encoder(q * dk**-0.5, (height, width), 0, height * width)
            out = reference_attention(q, k, v, logits, mask)
        else:
            # a small block budget: the blocked path runs in several recomputed row blocks
            out = relative_attention(q, k, v, encoder, size, mask, max_logits_elements=8 * width, factorize=factorize)
        grads = torch.autograd.grad(out.square().sum(), params)
        results.append((out, grads))
    for out, grads in results[:2]:
        torch.testing.assert_close(out, results[2][0])
        for grad, expected in zip(grads, results[2][1]):
            torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("dk,dv", [(6, 2), (2, 6), (4, 4)])
def test_fused_attention_pads_depths_exactly(dk, dv):
    q, k, v = _qkv(2, 3, 9, dk, dv)
    allowed = torch.rand(2, 1, 1, 9) > 0.3
    allowed[..., 0] = True
    out = fused_attention(q, k, v, allowed)
    expected = (q @ k.transpose(-1, -2)).masked_fill(~allowed, float("-inf")).softmax(-1) @ v
    torch.testing.assert_close(out, expected)
    for grad, ref in zip(torch.autograd.grad(out.sum(), (q, k, v)), torch.autograd.grad(expected.sum(), (q, k, v))):
        torch.testing.assert_close(grad, ref)


def test_factorized_errors_name_the_positions():
    encoder = RelativePositionEncoder2d(4, 2, 8).to(D)
    q, k, v = _qkv(1, 2, 12, 4, 4, grad=False)
    with pytest.raises(ValueError, match=r"key factors for 16 tokens for pos=\(4, 4\); expected 12"):
        relative_attention(q, k, v, encoder, (4, 4), factorize=True)
    with pytest.raises(ValueError, match="RelativePositionEncoder1d has no factorized form for pos=12"):
        relative_attention(q, k, v, RelativePositionEncoder1d(4, 2, 8).to(D), 12, factorize=True)


def test_factorized_under_bf16_autocast_is_float32_inside():
    torch.manual_seed(0)
    encoder = RelativePositionEncoder2d(8, 2, 8)
    with torch.no_grad():
        encoder.rel_h.mul_(10)
    q, k, v = (torch.randn(2, 2, 64, 8).mul(2).bfloat16() for _ in range(3))
    with torch.no_grad():
        exact = relative_attention(q.float(), k.float(), v.float(), encoder, (8, 8), factorize=False)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = relative_attention(q, k, v, encoder, (8, 8), factorize=True)
    assert mixed.dtype == torch.bfloat16
    assert (mixed.float() - exact).abs().max() <= 0.005 * exact.abs().max()


def _factorized_layer() -> AAConv2d:
    """A small layer on the factorized path: its logits would exceed one block (the cost rule)."""
    torch.manual_seed(0)
    return AAConv2d(3, 16, 3, dk=8, dv=8, num_heads=2, max_distance=2, max_logits_elements=64)


def test_cost_rule_picks_the_factorized_path_beyond_one_block(monkeypatch):
    calls = []
    monkeypatch.setattr(factorized, "fused_attention", lambda q, *args: calls.append(q.shape[-1]) or q[..., :4])
    layer = _factorized_layer()
    layer(torch.randn(2, 3, 5, 6))
    assert calls == [4 + 5 + 6]  # d_k / h + H + W
    layer.attn.max_logits_elements = 10**6  # one block, depth 15 <= 32: still fused
    layer(torch.randn(2, 3, 5, 6))
    assert calls == [15, 15]
    layer(torch.randn(2, 3, 20, 20))  # one block, depth 44: blocked
    assert len(calls) == 2


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_factorized_layer_exports(fmt, tmp_path):
    if fmt == "onnx":
        pytest.importorskip("onnxscript")
        pytest.importorskip("onnxruntime")
    from aug_attn_tasks.export import export_module

    assert export_module(_factorized_layer(), (torch.randn(2, 3, 5, 6),), tmp_path / f"layer.{fmt}", fmt) < 1e-4


def test_layer_compiles_in_one_graph_on_the_factorized_path():
    layer = _factorized_layer()
    x = torch.randn(2, 3, 5, 6, requires_grad=True)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    torch.testing.assert_close(out, layer(x))
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    torch.testing.assert_close(grad, torch.autograd.grad(layer(x).square().sum(), x)[0])


@pytest.mark.parametrize("length,max_distance,budget", [(23, 3, 2 * 2 * 5 * 11), (40, 2, 2 * 2 * 3 * 7), (17, 4, 10**6), (9, 2, 10**6)])
@pytest.mark.parametrize("shared_heads", [True, False])
@pytest.mark.parametrize("dk,dv", [(4, 4), (4, 2), (3, 5)])  # dv < dk: values padded; dv > dk: blocked
def test_banded_path_equals_blocked_and_reference(monkeypatch, length, max_distance, budget, shared_heads, dk, dv):
    """Exact band + fused far keys (several recomputed query blocks where the budget is small)."""
    encoder = RelativePositionEncoder1d(dk, 2, max_distance, shared_heads).to(D)
    q, k, v = _qkv(2, 2, length, dk, dv)
    params = [q, k, v, encoder.rel]
    reference = reference_attention(q, k, v, encoder(q * dk**-0.5, length, 0, length))
    expected = torch.autograd.grad(reference.square().sum(), params)
    for on_band in (True, False):
        monkeypatch.setattr(banded, "banded_is_faster", lambda tokens, band: on_band)
        out = relative_attention(q, k, v, encoder, length, max_logits_elements=budget)
        torch.testing.assert_close(out, reference)
        for grad, ref in zip(torch.autograd.grad(out.square().sum(), params), expected):
            torch.testing.assert_close(grad, ref)


def test_default_aaconv1d_on_the_band_path_equals_blocked(monkeypatch):
    """AAConv1d's default depths (dk = 0.2, dv = 0.1 of the channels) on a sequence long enough for the band."""
    layer = AAConv1d(32, 32, 3, max_distance=16, num_heads=4).to(D).eval()
    x = torch.randn(2, 32, 64, dtype=D)
    calls = []
    real = banded.banded_block_attention
    monkeypatch.setattr(banded, "banded_block_attention", lambda *args: calls.append(1) or real(*args))
    on_band = layer(x)
    assert calls
    monkeypatch.setattr(banded, "banded_is_faster", lambda tokens, band: False)
    torch.testing.assert_close(on_band, layer(x))


def test_band_path_refuses_positions_of_another_length():
    encoder = RelativePositionEncoder1d(4, 2, 4)
    q = torch.randn(1, 2, 40, 4)
    with pytest.raises(ValueError, match=r"for pos=99; expected \(\.\.\., 1, 40\)"):
        relative_attention(q, q, q, encoder, 99)


def test_band_rule_and_fallbacks(monkeypatch):
    """The band path runs where most keys lie beyond the band, in float32/64 on CPU without mask or dropout."""
    calls = []
    monkeypatch.setattr(banded, "banded_block_attention", lambda *args: calls.append(args) or args[0])
    encoder = RelativePositionEncoder1d(4, 2, 4)
    q = k = v = torch.randn(1, 2, 16, 4)
    relative_attention(q, k, v, encoder, 16)
    assert len(calls) == 1
    relative_attention(q[:, :, :15], k[:, :, :15], v[:, :, :15], encoder, 15)  # 4 * 4 > 15
    relative_attention(q, k, v, encoder, 16, key_padding_mask=torch.zeros(1, 16, dtype=torch.bool))
    relative_attention(q, k, v, encoder, 16, dropout_p=0.1)
    relative_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), encoder.bfloat16(), 16)
    assert len(calls) == 1


def test_banded_layer_compiles_in_one_graph_and_matches_eager():
    """Eager runs the band path; the compiled graph the blocked one (the band path's backward
    differentiates the encoder, which Dynamo does not trace): same values and gradients."""
    torch.manual_seed(0)
    layer = AAConv1d(3, 8, 3, dk=4, dv=4, num_heads=2, max_distance=3)
    x = torch.randn(2, 3, 20, requires_grad=True)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    torch.testing.assert_close(out, layer(x))
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    torch.testing.assert_close(grad, torch.autograd.grad(layer(x).square().sum(), x)[0])


def test_banded_with_frozen_table_and_under_bf16_autocast():
    torch.manual_seed(0)
    encoder = RelativePositionEncoder1d(8, 2, 4)
    encoder.rel.requires_grad_(False)
    q, k, v = (torch.randn(2, 2, 32, 8, requires_grad=True) for _ in range(3))
    out = relative_attention(q, k, v, encoder, 32)
    reference = reference_attention(q, k, v, encoder(q * 8**-0.5, 32, 0, 32))
    torch.testing.assert_close(out, reference)
    for grad, ref in zip(torch.autograd.grad(out.sum(), (q, k, v)), torch.autograd.grad(reference.sum(), (q, k, v))):
        torch.testing.assert_close(grad, ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = relative_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), encoder, 32)
    assert mixed.dtype == torch.bfloat16
    exact = relative_attention(*(t.bfloat16().float() for t in (q, k, v)), encoder, 32)
    assert (mixed.float() - exact).abs().max() <= 0.005 * exact.abs().max()


@pytest.mark.skipif(shutil.which("g++") is None, reason="FlexAttention on CPU compiles C++ kernels")
def test_flex_band_kernel_forward_on_cpu_equals_reference():
    """The score_mod and the per-query band table of the CUDA path, checked where this machine can:
    FlexAttention's CPU forward (its backward exists on CUDA only)."""
    torch.manual_seed(0)
    encoder = RelativePositionEncoder1d(16, 2, 5)
    q, k, v = (torch.randn(2, 2, 64, 16) for _ in range(3))
    with torch.no_grad():
        q = q * 16**-0.5
        out = flex_band_attention(q, k, v, band_table(encoder, q, 64, 5, 24), 5)
        torch.testing.assert_close(out, reference_attention(q * 16**0.5, k, v, encoder(q, 64, 0, 64)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention's band path and its backward run on CUDA only")
def test_flex_band_path_on_cuda_equals_reference():
    torch.manual_seed(0)
    encoder = RelativePositionEncoder1d(16, 2, 8).cuda()
    q, k, v = (torch.randn(2, 2, 64, 16, device="cuda", requires_grad=True) for _ in range(3))
    params = [q, k, v, encoder.rel]
    out = relative_attention(q, k, v, encoder, 64)
    reference = reference_attention(q, k, v, encoder(q * 16**-0.5, 64, 0, 64))
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)
    for grad, ref in zip(torch.autograd.grad(out.sum(), params), torch.autograd.grad(reference.sum(), params)):
        torch.testing.assert_close(grad, ref, rtol=1e-3, atol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA fused kernels need a GPU")
def test_factorized_path_on_cuda_equals_blocked():
    torch.manual_seed(0)
    encoder = RelativePositionEncoder2d(20, 8, 64).cuda()
    q, k, v = (torch.randn(2, 8, 12 * 10, d, device="cuda", requires_grad=True) for d in (20, 20, 2))
    outs = [relative_attention(q, k, v, encoder, (12, 10), factorize=f) for f in (True, False)]
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        mixed = relative_attention(q, k, v, encoder, (12, 10), factorize=True)
    assert mixed.dtype == torch.bfloat16


def test_strided_layer_same_on_factorized_and_blocked_paths(monkeypatch):
    """Strides pool the attention input to the output grid (odd, non-square here); both paths agree."""
    layer = AAConv2d(3, 16, 3, stride=2, dk=8, dv=8, num_heads=2, max_distance=3, max_logits_elements=64).to(D)
    x = torch.randn(2, 3, 9, 14, dtype=D, requires_grad=True)
    results = []
    for fused in (True, False):
        monkeypatch.setattr(factorized, "factorized_is_faster", lambda *args: fused)
        out = layer(x)
        results.append((out, torch.autograd.grad(out.square().sum(), (x, layer.attn.encoder.rel_h))))
    assert results[0][0].shape == (2, 16, 5, 7)
    torch.testing.assert_close(results[0][0], results[1][0])
    for grad, ref in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(grad, ref)


@pytest.mark.parametrize("size,side", [((9, 13), 4), ((16, 16), 8), ((12, 7), 5), ((1, 11), 3), ((6, 6), 6)])
@pytest.mark.parametrize("max_distance", [64, 3])
@pytest.mark.parametrize("dk,dv,shared_heads", [(6, 3, True), (4, 10, False), (5, 5, True)])
def test_tiled_factorized_path_equals_reference(monkeypatch, size, side, max_distance, dk, dv, shared_heads):
    """Key tiles of side x side run as separate fused calls, merged by log-sum-exp: exact in value and gradient."""
    monkeypatch.setattr(tiled, "tile_side", lambda head_dim: side)
    monkeypatch.setattr(tiled, "tiled_is_faster", lambda full, tile: True)
    calls = []
    real = tiled.tiled_factorized_attention
    monkeypatch.setattr(tiled, "tiled_factorized_attention", lambda *args: calls.append(len(args[-1])) or real(*args))
    height, width = size
    encoder = RelativePositionEncoder2d(dk, 2, max_distance, shared_heads).to(D)
    q, k, v = _qkv(2, 2, height * width, dk, dv)
    params = [q, k, v, encoder.rel_h, encoder.rel_w]
    out = relative_attention(q, k, v, encoder, size, factorize=True)
    assert calls == [-(-height // side) * -(-width // side)]  # the tiles ran
    expected = reference_attention(q, k, v, encoder(q * dk**-0.5, size, 0, height * width))
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    weights = torch.randn_like(out)
    for grad, ref in zip(torch.autograd.grad((out * weights).sum(), params), torch.autograd.grad((expected * weights).sum(), params)):
        torch.testing.assert_close(grad, ref, rtol=1e-10, atol=1e-12)


def test_tiles_cover_every_key_once_and_every_nonzero_factor():
    encoder = RelativePositionEncoder2d(4, 2, 8).to(D)
    _, key_factors = encoder.factorized(torch.randn(1, 2, 7 * 10, 4, dtype=D), (7, 10))  # (70, 17)
    tiles = encoder.factorized_tiles((7, 10), 3)
    assert torch.equal(torch.cat([keys for keys, _ in tiles]).sort().values, torch.arange(70))
    for keys, columns in tiles:
        outside = torch.ones(17, dtype=torch.bool)
        outside[columns] = False
        assert not key_factors[keys][:, outside].any() and columns.numel() <= 6


def test_tiled_rule_and_fallbacks(monkeypatch):
    """The WRN-28-10 stage-1 head (d_k = 20, tile side 16): 4 tiles at 32x32 (depth 84 -> 20 + 32),
    16 at 64x64 (148 -> 52); 16x16 stays one call (one tile); masks and dropout take the one fused call."""
    calls = []
    monkeypatch.setattr(tiled, "tiled_factorized_attention", lambda q, k, v, *rest: calls.append(len(rest[-1])) or v)
    encoder = RelativePositionEncoder2d(20, 2, 64)
    for size, expected in (((32, 32), [4]), ((64, 64), [16]), ((16, 16), [])):
        calls.clear()
        q, k, v = (torch.randn(1, 2, size[0] * size[1], 20) for _ in range(3))
        relative_attention(q, k, v, encoder, size, factorize=True)
        assert calls == expected, size
    mask = torch.zeros(1, 1024, dtype=torch.bool)
    mask[:, -1] = True
    q, k, v = (torch.randn(1, 2, 1024, 20) for _ in range(3))
    calls.clear()
    relative_attention(q, k, v, encoder, (32, 32), mask, factorize=True)
    relative_attention(q, k, v, encoder, (32, 32), dropout_p=0.1, factorize=True)
    assert calls == []


def test_flex_grid_kernel_forward_on_cpu_equals_reference():
    """The 2D score_mod of the CUDA grid path (two factor lookups per score), checked where this
    machine can: FlexAttention's CPU forward. WRN-28-10's depths (d_k = 20, d_v = 2) are padded."""
    torch.manual_seed(0)
    encoder = RelativePositionEncoder2d(20, 2, 3)
    q, k = (torch.randn(2, 2, 35, 20) for _ in range(2))
    v = torch.randn(2, 2, 35, 2)
    with torch.no_grad():
        scaled = q * 20**-0.5
        q_aug, _ = encoder.factorized(scaled, (5, 7))
        out = flex_grid_attention(scaled, k, v, q_aug, (5, 7))
        torch.testing.assert_close(out, reference_attention(q, k, v, encoder(scaled, (5, 7), 0, 35)))
