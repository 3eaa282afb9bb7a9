"""The attention core's dispatcher (aug_attn.attention.dispatch): which path takes a call, why the
others refuse, and that every path a call can take gives the float64 reference's values and gradients.
"""

from __future__ import annotations

import ast
import logging
import shutil
from pathlib import Path

import pytest
import torch

import aug_attn.attention as core
from aug_attn.attention import PATHS, attention_path, disabled_paths, relative_attention
from aug_attn.attention.native import native_kernels
from aug_attn.positional import RelativePositionEncoder1d, RelativePositionEncoder2d, SurfacePositionEncoder

D = torch.float64
HAS_COMPILER = any(shutil.which(name) for name in ("c++", "g++", "clang++"))
NATIVE = "native" if HAS_COMPILER else "tiled"  # what a grid call takes on this machine


def reference(q, k, v, logits, mask=None):
    """softmax(q.k / sqrt(d) + logits) v, everything materialized; ``logits`` from the scaled q."""
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if logits is not None:
        scores = scores + logits
    if mask is not None:
        scores = scores.masked_fill(mask[:, None, None, :], float("-inf"))
    return scores.softmax(-1) @ v


def qkv(tokens: int, dk: int, dv: int, heads: int = 2, batch: int = 2, dtype=D):
    generator = torch.Generator().manual_seed(tokens * 7 + dk)
    return [torch.randn(batch, heads, tokens, d, generator=generator, dtype=dtype).requires_grad_() for d in (dk, dk, dv)]


def surface(tokens: int):
    generator = torch.Generator().manual_seed(5)
    xyz = torch.randn(2, tokens, 3, generator=generator, dtype=D)
    return xyz, torch.nn.functional.normalize(torch.randn(2, tokens, 3, generator=generator, dtype=D), dim=-1)


# name -> (encoder, pos, tokens, dk, dv, masked, path taken on the CPU in float64)
CASES = {
    "plain": (None, None, 19, 8, 4, True, "plain"),
    "grid_wrn_32x32": (RelativePositionEncoder2d(20, 2, 64), (32, 32), 1024, 20, 2, False, NATIVE),
    "grid_odd": (RelativePositionEncoder2d(6, 2, 3, shared_heads=False), (5, 7), 35, 6, 5, False, NATIVE),
    "grid_masked": (RelativePositionEncoder2d(8, 2, 4), (5, 6), 30, 8, 8, True, "factorized"),
    "band_long": (RelativePositionEncoder1d(8, 2, 4), 40, 40, 8, 4, False, "banded"),
    "band_short": (RelativePositionEncoder1d(8, 2, 16), 40, 40, 8, 8, False, "reference"),
    "band_masked": (RelativePositionEncoder1d(8, 2, 4), 40, 40, 8, 8, True, "reference"),
    "surface": (SurfacePositionEncoder(8, 2), surface(24), 24, 8, 8, False, "reference"),
}


def _case(name: str):
    encoder, pos, tokens, dk, dv, masked, expected = CASES[name]
    encoder = encoder.to(D) if encoder is not None else None
    q, k, v = qkv(tokens, dk, dv)
    mask = None
    if masked:
        mask = torch.zeros(2, tokens, dtype=torch.bool)
        mask[1, -tokens // 3 :] = True
    return encoder, pos, q, k, v, mask, expected


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_path_a_call_takes_and_why_the_earlier_ones_refused(name):
    encoder, pos, q, k, v, mask, expected = _case(name)
    choice = attention_path(q, k, v, encoder, pos, mask)
    assert choice.path == expected, str(choice)
    names = [path.name for path in PATHS]
    assert list(choice.refused) == names[: names.index(expected)]  # every path before it, in order
    assert all(reasons and all(isinstance(r, str) and r for r in reasons) for reasons in choice.refused.values())
    assert str(choice).startswith(f"path: {expected}")
    if mask is not None and encoder is not None:
        assert "no padding mask" in choice.refused["banded" if expected == "reference" and "band" in name else "native"]


@pytest.mark.parametrize("name,factorize", [(name, None) for name in sorted(CASES)] + [("grid_wrn_32x32", True), ("grid_odd", True)])
def test_every_path_a_call_can_take_equals_the_reference(name, factorize):
    """Take the paths out one by one, the one just taken first, down to the reference: each path
    that takes the call gives the reference's output and gradients (float64)."""
    encoder, pos, q, k, v, mask, _ = _case(name)
    params = [q, k, v, *(encoder.parameters() if encoder is not None else [])]
    logits = encoder(q * q.shape[-1] ** -0.5, pos, 0, q.shape[2]) if encoder is not None else None
    expected = reference(q, k, v, logits, mask)
    weights = torch.randn_like(expected)
    expected_grads = torch.autograd.grad((expected * weights).sum(), params)
    taken: list[str] = []
    while True:
        with disabled_paths(*taken):
            path = attention_path(q, k, v, encoder, pos, mask, factorize=factorize).path
            out = relative_attention(q, k, v, encoder, pos, mask, factorize=factorize)
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12, msg=lambda m: f"{path}: {m}")
        for grad, ref in zip(torch.autograd.grad((out * weights).sum(), params), expected_grads):
            torch.testing.assert_close(grad, ref, rtol=1e-9, atol=1e-11, msg=lambda m: f"{path}: {m}")
        taken.append(path)
        if path in ("reference", "plain"):
            break
    if factorize:  # the sweep went through the factorized form's paths, then the reference
        assert taken[-2:] == ["factorized", "reference"] and ("tiled" in taken) == (name == "grid_wrn_32x32"), taken


def test_factorize_forces_and_forbids_the_factorized_form():
    encoder, pos, q, k, v, _, _ = _case("grid_odd")
    assert attention_path(q, k, v, encoder, pos, factorize=False).path == "reference"
    with native_kernels("off"):
        assert attention_path(q, k, v, encoder, pos, factorize=True).path in ("tiled", "factorized")
    line = RelativePositionEncoder1d(8, 2, 4).to(D)
    q1, k1, v1 = qkv(40, 8, 8)
    with pytest.raises(ValueError, match="factorize=True, but RelativePositionEncoder1d has no factorized form"):
        relative_attention(q1, k1, v1, line, 40, factorize=True)


def test_cost_rules_say_why_they_refuse():
    """The grid of 16x16 with d_k = 20 fits one block of logits: the factorized depth 52 > 32 refuses."""
    encoder = RelativePositionEncoder2d(20, 2, 64).to(D)
    q, k, v = qkv(256, 20, 2)
    with native_kernels("off"):
        choice = attention_path(q, k, v, encoder, (16, 16))
    assert choice.path == "reference"
    assert any("cost rule" in reason for reason in choice.refused["factorized"])


def test_autocast_calls_are_chosen_on_their_float32_form():
    """Under CPU autocast the projections give bfloat16; the paths other than FlexAttention see the
    float32 call (and the output comes back in bfloat16)."""
    encoder, pos, q, k, v, _, _ = _case("grid_odd")
    q, k, v = (t.detach().float().to(torch.bfloat16) for t in (q, k, v))
    encoder = encoder.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert attention_path(q, k, v, encoder, pos).path == NATIVE
        out = relative_attention(q, k, v, encoder, pos)
    assert out.dtype == torch.bfloat16
    exact = relative_attention(q.float(), k.float(), v.float(), encoder, pos)
    torch.testing.assert_close(out.float(), exact, rtol=0.01, atol=0.01)


def test_disabled_paths_restores_and_refuses_unknown_names():
    encoder, pos, q, k, v, _, _ = _case("band_long")
    with disabled_paths("banded"):
        assert attention_path(q, k, v, encoder, pos).refused["banded"] == ["disabled (disabled_paths)"]
        with disabled_paths("tiled"):
            assert attention_path(q, k, v, encoder, pos).path == "reference"
    assert attention_path(q, k, v, encoder, pos).path == "banded"
    with pytest.raises(ValueError, match="cannot disable \\['bogus'\\]"):
        with disabled_paths("bogus"):
            pass
    with pytest.raises(ValueError, match="cannot disable \\['reference'\\]"):
        with disabled_paths("reference"):
            pass


def test_debug_log_names_the_path_of_each_call(caplog):
    encoder, pos, q, k, v, _, _ = _case("band_long")
    with caplog.at_level(logging.DEBUG, logger="aug_attn.attention.dispatch"):
        relative_attention(q, k, v, encoder, pos)
    assert "path: banded" in caplog.text and "not native: the encoder has no grid form" in caplog.text


def test_paths_do_not_call_back_into_the_dispatcher():
    """One trip: the dispatcher calls one path, and no path module imports the dispatcher (or the
    layer module, which imports it)."""
    folder = Path(core.__file__).parent
    for path in PATHS:
        module = path.run.__module__
        tree = ast.parse((folder / f"{module.rsplit('.', 1)[1]}.py").read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert not {"aug_attn.attention.dispatch", "aug_attn.attention.module", "aug_attn.attention"} & imported, module
