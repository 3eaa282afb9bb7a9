"""The GPU against the CPU float64 reference: every attention path, every model, compiled and eager,
a training step of each task and its checkpoint across devices.

Each check runs the same weights and inputs twice: on the device under test (float32 with TF32
off, or bfloat16 / float16 autocast) and on the CPU in float64, the reference. Errors are relative
norms, ``|a - ref| / |ref|`` over the whole output or over all gradients together, recorded in the
JUnit XML (``record_property``) so that ``scripts/device_check.sh`` reports them. The attention
cases also check which path ran (FlexAttention, factorized SDPA, query blocks, ...), so a test of
"the Flex band path" cannot silently pass through another one.

Without CUDA every test skips, naming why. ``AUG_ATTN_TEST_DEVICE=cpu`` runs the same comparisons
on the CPU: a dry run of this file's own logic (the CUDA-only paths, FlexAttention's backward
among them, skip there, and the paths are not checked).
"""

from __future__ import annotations

import copy
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import yaml
from test_audio_train import TINY_MODEL
from test_distributed import write_config
from test_mixed_precision import MODELS
from test_points_train import TINY_RISURCONV

from aug_attn.attention import DEFAULT_MAX_LOGITS_ELEMENTS, attention_path, disabled_paths, relative_attention
from aug_attn.positional import RelativePositionEncoder1d, RelativePositionEncoder2d, SurfacePositionEncoder
from aug_attn.models.plaincnn import PlainCNN
from aug_attn_tasks.cli import main
from aug_attn_tasks.recipes import load_checkpoint

DEVICE = os.environ.get("AUG_ATTN_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else "")
ON_CUDA = DEVICE.startswith("cuda")
pytestmark = pytest.mark.skipif(
    not DEVICE,
    reason="no CUDA device: these tests compare the GPU with the CPU float64 reference "
    "(scripts/device_check.sh runs them on a GPU; AUG_ATTN_TEST_DEVICE=cpu dry-runs them on the CPU)",
)
needs_cuda = pytest.mark.skipif(not ON_CUDA, reason="CUDA only (FlexAttention's backward, the CUDA kernels)")

D = torch.float64
PRECISIONS = ("fp32", "bf16", "fp16")
# Relative-norm bounds (output, gradients) per precision: float32 against float64 is exact to
# rounding; bfloat16 carries 8 mantissa bits (0.4% per rounding), float16 11.
ATTENTION_TOL = {"fp32": (1e-5, 1e-5), "bf16": (2e-2, 4e-2), "fp16": (3e-3, 6e-3)}
MODEL_TOL = {"fp32": (1e-4, 1e-4), "bf16": (5e-2, 1e-1), "fp16": (1e-2, 5e-2)}


@pytest.fixture(autouse=True)
def _exact_float32():
    """TF32 off: float32 on the GPU is compared with float64 at float32 tolerances."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def precision(name: str):
    """The autocast context of a precision name (``fp32``: none)."""
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
    return nullcontext() if dtype is None else torch.autocast(torch.device(DEVICE).type, dtype=dtype)


def relative_error(value: torch.Tensor | list[torch.Tensor], reference: torch.Tensor | list[torch.Tensor]) -> float:
    """``|value - reference| / |reference|`` in float64 over all elements (lists: concatenated)."""
    if isinstance(value, list):
        value = torch.cat([v.detach().double().cpu().flatten() for v in value])
        reference = torch.cat([r.detach().double().cpu().flatten() for r in reference])
    value, reference = value.detach().double().cpu(), reference.detach().double().cpu()
    assert torch.isfinite(value).all(), "non-finite values"
    return float((value - reference).norm() / reference.norm().clamp_min(1e-300))


# ---------------------------------------------------------------------------------------------
# Attention paths

def reference_attention(q, k, v, logits, mask):
    """softmax(q.k / sqrt(d) + logits) v, everything materialized; ``logits`` from the scaled q."""
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if logits is not None:
        scores = scores + logits
    if mask is not None:
        scores = scores.masked_fill(mask[:, None, None, :], float("-inf"))
    return scores.softmax(-1) @ v


def _grid(size, max_distance=64, shared=True):
    return lambda d, h: (RelativePositionEncoder2d(d, h, max_distance, shared), tuple(size), size[0] * size[1])


def _line(length, max_distance):
    return lambda d, h: (RelativePositionEncoder1d(d, h, max_distance), length, length)


def _surface(tokens):
    def build(d, h):
        generator = torch.Generator().manual_seed(1)
        xyz = torch.randn(2, tokens, 3, generator=generator, dtype=D)
        normal = torch.nn.functional.normalize(torch.randn(2, tokens, 3, generator=generator, dtype=D), dim=-1)
        return SurfacePositionEncoder(d, h), (xyz, normal), tokens

    return build


def _plain(tokens):
    return lambda d, h: (None, None, tokens)


# name -> (encoder builder, dk, dv, heads, masked, force, path expected on CUDA: a name of aug_attn.attention.PATHS)
# force: None (the dispatch's choice), "sdpa" (FlexAttention off, factorize=True), "blocked" (factorize=False, no band path)
ATTENTION_CASES: dict[str, tuple[Callable, int, int, int, bool, str | None, str]] = {
    "plain_mask_pad_value": (_plain(37), 8, 12, 2, True, None, "plain"),
    "plain_odd_wrn_depths": (_plain(129), 20, 2, 4, False, None, "plain"),
    "grid_flex_wrn_depths": (_grid((7, 9), 3), 20, 2, 4, False, None, "flex_grid"),
    "grid_flex_per_head": (_grid((12, 10), 64, False), 16, 16, 2, False, None, "flex_grid"),
    "grid_sdpa": (_grid((7, 9), 3), 20, 2, 4, False, "sdpa", "factorized"),
    "grid_sdpa_mask": (_grid((5, 6)), 8, 8, 2, True, "sdpa", "factorized"),
    "grid_blocked_mask": (_grid((6, 7), 2), 8, 6, 2, True, "blocked", "reference"),
    "band_flex": (_line(100, 8), 16, 16, 2, False, None, "flex_band"),
    "band_flex_value_depth": (_line(77, 5), 12, 4, 3, False, None, "flex_band"),
    "band_blocked_mask": (_line(50, 4), 8, 8, 2, True, None, "reference"),
    "surface_blocked": (_surface(24), 8, 8, 2, False, None, "reference"),
}
def _to(value: Any, device: str, dtype: torch.dtype) -> Any:
    if isinstance(value, tuple):
        return tuple(_to(v, device, dtype) for v in value)
    return value.to(device, dtype) if isinstance(value, torch.Tensor) else value


@pytest.mark.parametrize("precision_name", PRECISIONS)
@pytest.mark.parametrize("case", sorted(ATTENTION_CASES))
def test_attention_path_matches_cpu_float64(case: str, precision_name: str, record_property) -> None:
    build, dk, dv, heads, masked, force, expected = ATTENTION_CASES[case]
    if expected.startswith("flex") and not ON_CUDA:
        pytest.skip("FlexAttention's backward runs on CUDA only")
    torch.manual_seed(0)
    encoder, pos, tokens = build(dk, heads)
    encoder = encoder.to(D) if encoder is not None else None
    q, k, v = (torch.randn(2, heads, tokens, d, dtype=D) for d in (dk, dk, dv))
    mask = None
    if masked:
        mask = torch.zeros(2, tokens, dtype=torch.bool)
        mask[1, -tokens // 3 :] = True  # a third of the second sample is padding
    factorize = {"sdpa": True, "blocked": False}.get(force)
    disabled = {"sdpa": ("flex_grid", "flex_band"), "blocked": ("flex_band", "banded")}.get(force, ())
    budget = 4 * tokens if force == "blocked" else DEFAULT_MAX_LOGITS_ELEMENTS  # several recomputed blocks

    # Reference: CPU float64, everything materialized.
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    params = list(encoder.parameters()) if encoder is not None else []
    logits = encoder(leaves[0] * dk**-0.5, pos, 0, tokens) if encoder is not None else None
    reference = reference_attention(*leaves, logits, mask)
    reference_grads = torch.autograd.grad(reference.square().sum(), leaves + params)

    # Device under test: float32 leaves; under autocast they enter as the projections would give them.
    device_encoder = copy.deepcopy(encoder).to(DEVICE, torch.float32) if encoder is not None else None
    device_leaves = [t.to(DEVICE, torch.float32).requires_grad_() for t in (q, k, v)]
    device_params = list(device_encoder.parameters()) if device_encoder is not None else []
    with precision(precision_name), disabled_paths(*disabled):
        low = torch.get_autocast_dtype(torch.device(DEVICE).type) if precision_name != "fp32" else torch.float32
        inputs = [t.to(low) for t in device_leaves]
        arguments = (*inputs, device_encoder, _to(pos, DEVICE, torch.float32), None if mask is None else mask.to(DEVICE))
        choice = attention_path(*arguments, max_logits_elements=budget, factorize=factorize)
        out = relative_attention(*arguments, max_logits_elements=budget, factorize=factorize)
    assert out.dtype == low and out.shape == reference.shape
    grads = torch.autograd.grad(out.float().square().sum(), device_leaves + device_params)
    if ON_CUDA:
        assert choice.path == expected, f"expected the {expected} path:\n{choice}"
    out_error, grad_error = relative_error(out, reference), relative_error(list(grads), list(reference_grads))
    record_property("output_error", f"{out_error:.2e}")
    record_property("gradient_error", f"{grad_error:.2e}")
    out_tol, grad_tol = ATTENTION_TOL[precision_name]
    assert out_error <= out_tol and grad_error <= grad_tol, (out_error, grad_error)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_plain_attention_at_wrn_depths_runs_the_flash_kernel(dtype: torch.dtype) -> None:
    """WRN-28-10's heads (d_k = 20, d_v = 2) are padded to a depth the flash kernel takes; without
    that SDPA would fall back to its math backend, which materializes the logits."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k = (torch.randn(2, 8, 1024, 20, device=DEVICE, dtype=dtype) for _ in range(2))
    v = torch.randn(2, 8, 1024, 2, device=DEVICE, dtype=dtype)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):  # raises where flash cannot take the call
        out = relative_attention(q, k, v)
    reference = reference_attention(q.double(), k.double(), v.double(), None, None)
    assert relative_error(out, reference) <= 1e-2


@needs_cuda
def test_flex_grid_path_over_many_batch_sizes_and_grids() -> None:
    """Each new shape compiles FlexAttention again (one kernel per shape): past Dynamo's default of 8
    kernels the results stay exact and come from compiled kernels, not the unfused fallback."""
    import torch._dynamo

    torch.manual_seed(0)
    torch._dynamo.reset()
    shapes = [(batch, size) for size in [(4, 4), (5, 3), (3, 11)] for batch in (1, 2, 3, 5)]  # 12 kernels
    for batch, size in shapes:
        encoder = RelativePositionEncoder2d(16, 2, 4).to(D)
        tokens = size[0] * size[1]
        q, k, v = (torch.randn(batch, 2, tokens, 16, dtype=D) for _ in range(3))
        reference = reference_attention(q, k, v, encoder(q * 0.25, size, 0, tokens), None)
        with torch.no_grad():
            out = relative_attention(*(t.to(DEVICE, torch.float32) for t in (q, k, v)), encoder.to(DEVICE, torch.float32), size)
        assert relative_error(out, reference) <= 1e-5, (batch, size)
    frames = torch._dynamo.utils.counters["frames"]
    assert frames["ok"] >= len(shapes), dict(frames)  # every shape compiled


# ---------------------------------------------------------------------------------------------
# Models

def _clouds(batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch, 64, 3), torch.nn.functional.normalize(torch.randn(batch, 64, 3), dim=-1)


MODEL_CASES = {
    **MODELS,
    "plaincnn": (lambda: PlainCNN(5, channels=(8, 8, 16, 16, 32)), lambda: (torch.randn(2, 4096),), {}),
    # Classifiers on 8 clouds: with 2, a bfloat16 run's gradients differ from float64 by 12-26%
    # on the CPU as well (a two-sample batch is ill-conditioned), by 1.3-2% with 8.
    **{name: (MODELS[name][0], _clouds, {}) for name in ("risurconv", "pointnet2")},
    "risurconv_estimated_normals": (MODELS["risurconv_estimated_normals"][0], lambda: (_clouds()[0], None), {}),
}


def _model_run(model: torch.nn.Module, args: tuple, kwargs: dict, device: str, dtype: torch.dtype, precision_name: str):
    """Forward and gradients of ``mean(out^2)`` (over the model's parameters) on ``device``."""
    moved = [a.to(device, dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
    moved_kwargs = {key: value.to(device) for key, value in kwargs.items()}
    with precision(precision_name):
        out = model(*moved, **moved_kwargs)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(out.float().square().mean(), params, allow_unused=True)
    return out, [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


@pytest.mark.parametrize("precision_name", PRECISIONS)
@pytest.mark.parametrize("name", sorted(MODEL_CASES))
def test_model_forward_backward_matches_cpu_float64(name: str, precision_name: str, record_property) -> None:
    build, inputs, kwargs = MODEL_CASES[name]
    torch.manual_seed(0)
    model, args = build().eval(), inputs()
    reference_model = copy.deepcopy(model).to(D)
    reference, reference_grads = _model_run(reference_model, args, kwargs, "cpu", D, "fp32")
    out, grads = _model_run(copy.deepcopy(model).to(DEVICE), args, kwargs, DEVICE, torch.float32, precision_name)
    out_error, grad_error = relative_error(out, reference), relative_error(grads, reference_grads)
    record_property("output_error", f"{out_error:.2e}")
    record_property("gradient_error", f"{grad_error:.2e}")
    out_tol, grad_tol = MODEL_TOL[precision_name]
    assert out_error <= out_tol and grad_error <= grad_tol, (out_error, grad_error)


@pytest.mark.parametrize("name", ["aa_resnet_small", "muslcat", "risurconv"])
def test_compiled_model_equals_eager(name: str, record_property) -> None:
    """``torch.compile`` on the device: outputs and gradients of the compiled model equal eager's."""
    build, inputs, kwargs = MODEL_CASES[name]
    torch.manual_seed(0)
    model, args = build().eval().to(DEVICE), inputs()
    eager, eager_grads = _model_run(model, args, kwargs, DEVICE, torch.float32, "fp32")
    compiled, compiled_grads = _model_run(torch.compile(model), args, kwargs, DEVICE, torch.float32, "fp32")
    out_error, grad_error = relative_error(compiled, eager), relative_error(compiled_grads, eager_grads)
    record_property("output_error", f"{out_error:.2e}")
    record_property("gradient_error", f"{grad_error:.2e}")
    assert out_error <= 1e-5 and grad_error <= 1e-4, (out_error, grad_error)


# ---------------------------------------------------------------------------------------------
# Training and checkpoints

TRAINING = {
    "tagging": TINY_MODEL,  # MuSLCAT
    "points": {key: value for key, value in TINY_RISURCONV.items()},
    "images": {"arch": "aa_resnet_small"},
}


@pytest.mark.parametrize("task", sorted(TRAINING))
def test_bf16_training_on_device_and_checkpoint_on_cpu(task: str, tmp_path: Path, record_property) -> None:
    """A bf16-mixed training run of each task's attention model on the device through the CLI; its
    checkpoint, saved from the device, loads on the CPU and back and gives the same outputs."""
    accelerator = "gpu" if ON_CUDA else "cpu"
    path = write_config(tmp_path, task, accelerator=accelerator, precision="bf16-mixed")
    config = yaml.safe_load(path.read_text())
    config["model"] = TRAINING[task]
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path)]) == 0
    checkpoint = next((tmp_path / "runs").rglob("best.ckpt"))
    on_cpu, _ = load_checkpoint(checkpoint, map_location="cpu")
    on_device = load_checkpoint(checkpoint, map_location=DEVICE)[0].to(DEVICE)  # tensors read onto the device, module moved there
    assert all(p.device.type == "cpu" for p in on_cpu.parameters())
    assert all(p.device.type == torch.device(DEVICE).type for p in on_device.parameters())
    build, inputs, kwargs = MODEL_CASES[{"tagging": "muslcat", "points": "risurconv", "images": "aa_resnet_small"}[task]]
    args = inputs()
    if task == "images":
        args = (torch.randn(2, 3, 16, 16),)
    with torch.no_grad():
        cpu_out = on_cpu.model(*args, **kwargs)
        device_out = on_device.model(*(a.to(DEVICE) for a in args), **{k: v.to(DEVICE) for k, v in kwargs.items()})
    error = relative_error(device_out, cpu_out)
    record_property("checkpoint_output_error", f"{error:.2e}")
    assert error <= 1e-5
