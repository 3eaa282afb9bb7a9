"""Recorded attention weights against a naive softmax, and against what the core's fast paths apply."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import aug_attn
from aug_attn import AAConv1d, AAConv2d, RelativeMultiheadAttention, RelativePositionEncoder1d
from aug_attn.attention import merge_heads, relative_attention
from aug_attn.attention_maps import attention_weights, record_attention, relative_logits

D = torch.float64


def naive_weights_1d(q, k, rel, max_distance, mask=None):
    """Loops over (i, j): softmax_j((q_i . k_j + q_i . rel[clip(j - i)]) / sqrt(d))."""
    batch, heads, length, dim = q.shape
    q = q * dim**-0.5
    logits = torch.empty(batch, heads, length, length, dtype=q.dtype)
    for i in range(length):
        for j in range(length):
            r = rel[max(-max_distance, min(max_distance, j - i)) + max_distance]
            logits[:, :, i, j] = (q[:, :, i] * (k[:, :, j] + r)).sum(-1)
    if mask is not None:
        logits = logits.masked_fill(mask[:, None, None, :], float("-inf"))
    return torch.softmax(logits, dim=-1)


def projected(module: RelativeMultiheadAttention, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The module's output recomputed from recorded weights: ``proj(merge(weights @ v))``."""
    v = module.qkv(x)[..., 2 * module.dk :].reshape(*x.shape[:2], module.num_heads, -1).transpose(1, 2)
    return module.proj(merge_heads(weights.to(v.dtype) @ v))


def test_weights_match_a_naive_softmax_with_clipped_offsets_and_padding():
    torch.manual_seed(0)
    encoder = RelativePositionEncoder1d(head_dim=4, num_heads=2, max_distance=3).double()
    q, k = torch.randn(2, 2, 9, 4, dtype=D), torch.randn(2, 2, 9, 4, dtype=D)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[1, 6:] = True
    expected = naive_weights_1d(q, k, encoder.rel.detach(), 3, mask)
    weights = attention_weights(q, k, encoder, 9, mask)
    assert weights.shape == (2, 2, 9, 9)
    assert torch.allclose(weights, expected, atol=1e-12)
    assert torch.all(weights[1, :, :, 6:] == 0)
    # blocks of one query row give the same weights; chosen queries are those rows
    assert torch.allclose(attention_weights(q, k, encoder, 9, mask, max_elements=1), expected, atol=1e-12)
    assert torch.allclose(attention_weights(q, k, encoder, 9, mask, queries=[7, 0]), expected[:, :, [7, 0]], atol=1e-12)
    # the relative logits alone: q_i . rel[clip(j - i)] / sqrt(d)
    rel = relative_logits(q, encoder, 9, queries=[4])
    r = encoder.rel.detach()
    assert torch.allclose(rel[0, 1, 0, 8], (q[0, 1, 4] * r[3 + 3]).sum() / 2, atol=1e-12)
    assert torch.allclose(rel[0, 1, 0, 0], (q[0, 1, 4] * r[0]).sum() / 2, atol=1e-12)  # offset -4 clipped to -3


def hooked(model: torch.nn.Module) -> bool:
    """Whether any module of ``model`` carries a forward hook (the recorder's, while it is active)."""
    return any(module._forward_hooks for module in model.modules())


def test_the_core_and_the_layers_do_not_import_the_recorder():
    """The recorder attaches from outside: importing the core, its functions and the layers (and running
    a layer) loads nothing of it. The package's ``__init__`` imports every module, so the subprocess
    stands in a bare ``aug_attn`` package to see what the core alone imports."""
    script = f"""
import sys, types
package = types.ModuleType("aug_attn")
package.__path__ = [{str(Path(aug_attn.__file__).parent)!r}]
sys.modules["aug_attn"] = package
import torch
import aug_attn.attention, aug_attn.functional, aug_attn.layers
aug_attn.layers.AAConv1d(2, 4, kernel_size=3, dk=4, dv=2, num_heads=1)(torch.randn(1, 2, 9))
print(sorted(name for name in sys.modules if name.startswith("aug_attn")))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    loaded = done.stdout
    assert "'aug_attn.attention'" in loaded and "'aug_attn.layers'" in loaded
    assert "aug_attn.attention_maps" not in loaded


def test_the_hooks_are_removed_when_the_body_raises():
    model = torch.nn.Sequential(RelativeMultiheadAttention(4, 4, 4, 2), RelativeMultiheadAttention(4, 4, 4, 2))
    with pytest.raises(RuntimeError, match="stop"):
        with record_attention(model) as records:
            assert [bool(m._forward_hooks) for m in model] == [True, True]
            model(torch.randn(1, 5, 4))
            raise RuntimeError("stop")
    assert not hooked(model) and [r.name for r in records] == ["0", "1"]
    model(torch.randn(1, 5, 4))  # no hook left to record it
    assert len(records) == 2


@pytest.mark.parametrize("case", ["float32", "float64", "autocast", "bfloat16"])
def test_recorded_weights_are_the_softmax_of_the_queries_and_keys_the_layer_attended_with(case, monkeypatch):
    """Bitwise the reference softmax (:func:`attention_weights`, tested against the naive loop) of the
    ``q, k`` that the module's forward hands to the core, in at least float32: the layer's dtype and
    autocast are kept for the projection, as when the core itself reported them to the recorder."""
    import aug_attn.attention.module as core

    torch.manual_seed(3)
    dtype = {"float64": torch.float64, "bfloat16": torch.bfloat16}.get(case, torch.float32)
    encoder = RelativePositionEncoder1d(head_dim=4, num_heads=2, max_distance=3)
    module = RelativeMultiheadAttention(6, 8, 4, 2, encoder).to(dtype).eval()
    x = torch.randn(2, 9, 6, dtype=dtype)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[1, 6:] = True
    seen = []

    def spy(q, k, *args):
        seen.append((q, k))
        return relative_attention(q, k, *args)

    monkeypatch.setattr(core, "relative_attention", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "autocast"), record_attention(module) as records:
        module(x, 9, key_padding_mask=mask)
    (q, k), weights = seen[0], records[0].weights
    assert q.dtype == (torch.bfloat16 if case in ("autocast", "bfloat16") else dtype)
    wide = torch.promote_types(q.dtype, torch.float32)
    assert weights.dtype == wide and weights.shape == (2, 2, 9, 9)
    with torch.no_grad():  # as the recorder (matmul picks another kernel when grad is needed)
        assert torch.equal(weights, attention_weights(q.to(wide), k.to(wide), encoder, 9, mask))
    if case != "bfloat16":  # a bfloat16 encoder's logits carry its rounding
        expected = naive_weights_1d(q.double(), k.double(), encoder.rel.detach().double(), 3, mask)
        assert torch.allclose(weights.double(), expected, atol=1e-12 if case == "float64" else 1e-6)


def test_recorded_weights_are_what_the_1d_layer_applies():
    torch.manual_seed(1)
    layer = AAConv1d(6, 8, kernel_size=3, stride=2, dk=8, dv=4, num_heads=2, max_distance=4).eval()
    x = torch.randn(3, 6, 21)
    assert not hooked(layer)
    with record_attention(layer) as records:
        assert hooked(layer)
        out = layer(x)
    assert not hooked(layer)
    assert [r.name for r in records] == ["attn"] and records[0].pos == 11
    weights = records[0].weights  # (B, h, L_out, L_out)
    assert weights.shape == (3, 2, 11, 11) and torch.allclose(weights.sum(-1), torch.ones(3, 2, 11))
    tokens = torch.nn.functional.avg_pool1d(x, 2, 2, ceil_mode=True)[..., :11].transpose(1, 2)
    assert torch.allclose(projected(layer.attn, tokens, weights), out[:, 4:].transpose(1, 2), atol=1e-5)
    layer(x)  # outside the context: nothing recorded
    assert len(records) == 1


@pytest.mark.parametrize("max_logits_elements", [1 << 24, 64])  # one block, then row blocks recomputed
def test_recorded_weights_are_what_the_2d_layer_applies_in_blocks(max_logits_elements):
    torch.manual_seed(2)
    layer = AAConv2d(4, 8, kernel_size=3, dk=8, dv=4, num_heads=2, max_logits_elements=max_logits_elements).eval()
    x = torch.randn(2, 4, 5, 7)
    with record_attention(layer) as full:
        out = layer(x)
    with record_attention(layer, queries=[34, 3, 17]) as chosen:
        layer(x)
    weights = full[0].weights  # (2, 2, 35, 35)
    assert full[0].pos == (5, 7) and weights.shape == (2, 2, 35, 35)
    tokens = x.flatten(2).transpose(1, 2)
    assert torch.allclose(projected(layer.attn, tokens, weights), out[:, 4:].flatten(2).transpose(1, 2), atol=1e-5)
    assert chosen[0].queries.tolist() == [34, 3, 17]
    assert torch.allclose(chosen[0].weights, weights[:, :, [34, 3, 17]], atol=1e-6)


def test_only_the_given_model_is_recorded_and_bad_queries_are_named():
    inner = RelativeMultiheadAttention(4, 4, 4, 2)
    other = RelativeMultiheadAttention(4, 4, 4, 2)
    model = torch.nn.Sequential(inner)
    x = torch.randn(1, 5, 4)
    with record_attention(model) as records:
        model(x)
        other(x)
    assert [r.name for r in records] == ["0"] and records[0].weights.shape == (1, 2, 5, 5)
    with pytest.raises(ValueError, match=r"queries \[5\]"):
        with record_attention(model, queries=[5]):
            model(x)
    assert not hooked(model)
