"""Export a trained model for deployment: ``torch.export`` (a ``.pt2`` program) or ONNX.

``aug-attn export CKPT OUT [--format pt2|onnx] [--batch-size B]`` rebuilds the checkpoint's module,
traces its ``forward`` on example inputs shaped like the config's data (batch size dynamic where the
model allows it), checks that the exported program reproduces the module's outputs, and saves it.

Inputs and outputs of the exported programs (the module's ``forward``):

- ``tagging``: waveform ``(B, chunk_samples)`` -> logits ``(B, tags)`` of one window (apply sigmoid or
  softmax and average over windows as ``aug-attn tag`` does);
- ``points``: ``pos (B, N, 3)`` and, when the run uses normals, ``normal (B, N, 3)`` (and ``category (B,)``
  for part segmentation) -> logits ``(B, classes)`` or ``(B, N, parts)``; ``N = data.num_points``;
- ``images``: normalized ``(B, 3, H, W)`` -> logits ``(B, classes)``.

A ``.pt2`` exported on the CPU from a model with 2D relative attention holds the native kernel as the
op ``aug_attn::grid_attention`` (:mod:`aug_attn.attention.native`): loading and running it needs ``import aug_attn``
(which registers the op; the kernel is compiled on first use there) and a CPU. For a program of PyTorch
ops only (to run on CUDA or without this package), export with ``AUG_ATTN_NATIVE=off``. ONNX files
never hold the op: their program is traced with the kernel switched off.

ONNX needs the extra ``export`` (``onnx``, ``onnxscript``, and ``onnxruntime`` to check the file;
``pip install -e ".[export]"``), asked for before the file is written. Every
model converts with torch 2.14's ONNX exporter except RISurConv with estimated normals (PCA needs
``eigh``, which ONNX lacks): export that one as ``.pt2``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from aug_attn.attention.native import native_kernels
from aug_attn.optional import import_extra
from aug_attn_tasks.recipes import load_checkpoint

__all__ = ["example_inputs", "export_module", "export_checkpoint", "FORMATS"]

FORMATS = ("pt2", "onnx")


def example_inputs(config: dict[str, Any], batch_size: int = 2) -> tuple[Tensor | None, ...]:
    """Random inputs of the module's ``forward`` with the shapes of ``config``'s data (module docstring)."""
    data, task = config.get("data", {}), config["task"]
    if task == "tagging":
        return (torch.randn(batch_size, int(data.get("chunk_samples", 59049))),)
    if task == "points":
        segmentation = data.get("dataset") == "shapenet_part"
        points = int(data.get("num_points", 2048 if segmentation else 1024))
        pos = torch.randn(batch_size, points, 3)
        normal = torch.nn.functional.normalize(torch.randn(batch_size, points, 3), dim=-1)
        normal = normal if data.get("use_normals", True) else None
        return (pos, normal, torch.zeros(batch_size, dtype=torch.long)) if segmentation else (pos, normal)
    if task == "images":
        size = int(data.get("image_size", 32)) if data.get("dataset", "synthetic") == "synthetic" else 32
        return (torch.randn(batch_size, 3, size, size),)
    raise ValueError(f"export: unknown task {task!r}")


def _check(program_outputs: Tensor, expected: Tensor, what: str) -> float:
    error = float((program_outputs - expected).abs().max())
    if not torch.allclose(program_outputs, expected, rtol=1e-4, atol=1e-5):
        raise RuntimeError(f"{what} differs from the eager module by up to {error:.3g}")
    return error


class _WithoutNone(torch.nn.Module):
    """``module`` called with ``None`` at the positions where ``given`` is False: its ``forward``
    takes the other inputs only, e.g. ``(pos, category)`` of a segmenter run without normals."""

    def __init__(self, module: torch.nn.Module, given: list[bool]) -> None:
        super().__init__()
        self.module, self.given = module, given

    def forward(self, *tensors: Tensor) -> Tensor:
        remaining = iter(tensors)
        return self.module(*(next(remaining) if present else None for present in self.given))


def export_module(module: torch.nn.Module, inputs: tuple[Tensor | None, ...], out: str | Path, fmt: str = "pt2") -> float:
    """Export ``module`` (in eval mode) traced on ``inputs`` to ``out`` and return the largest absolute
    difference between the exported program's outputs and the module's on ``inputs``.

    The batch dimension is exported as dynamic (``Dim.AUTO``: torch keeps the range the model allows,
    e.g. up to the batch where the attention starts chunking its queries). ``None`` inputs are left out
    of the program, which takes the others in their order (a model run without normals:
    ``(pos,)``, or ``(pos, category)`` for a segmenter).
    """
    if fmt not in FORMATS:
        raise ValueError(f"export format {fmt!r}: expected one of {', '.join(FORMATS)}")
    module = module.eval()
    name = type(module).__name__  # the user's model, also when wrapped below
    tensors = tuple(x for x in inputs if x is not None)
    dynamic: Any = tuple({0: torch.export.Dim.AUTO} for _ in tensors)
    if len(tensors) != len(inputs):  # the program takes the given inputs only, in their order
        module = _WithoutNone(module, [x is not None for x in inputs]).eval()
        dynamic = {"tensors": dynamic}  # the wrapper's *tensors
    # ONNX has no op for the native CPU kernel (aug_attn.attention.native): the program for it takes the PyTorch paths.
    with torch.no_grad(), native_kernels("off") if fmt == "onnx" else contextlib.nullcontext():
        expected = module(*tensors)
        program = torch.export.export(module, tensors, dynamic_shapes=dynamic)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "pt2":
        torch.export.save(program, out)
        with torch.no_grad():
            return _check(torch.export.load(out).module()(*tensors), expected, str(out))
    for package in ("onnx", "onnxscript", "onnxruntime"):  # the converter, and the runtime that checks its file
        import_extra(package, "export", "ONNX export")
    try:
        onnx_program = torch.onnx.export(program, tensors, dynamo=True, verbose=False)
    except Exception as error:  # the ONNX converter raises its own error types
        raise ValueError(f"ONNX export of {name} failed ({type(error).__name__}); export it as .pt2") from error
    onnx_program.save(str(out))
    onnxruntime = import_extra("onnxruntime", "export", "checking the ONNX file")
    session = onnxruntime.InferenceSession(str(out))
    feeds = {spec.name: x.numpy() for spec, x in zip(session.get_inputs(), tensors)}
    return _check(torch.from_numpy(session.run(None, feeds)[0]), expected, str(out))


def export_checkpoint(checkpoint: str | Path, out: str | Path, fmt: str = "pt2", batch_size: int = 2) -> float:
    """Export the module of a checkpoint written by ``aug-attn train``; see :func:`export_module`."""
    module, config = load_checkpoint(checkpoint)
    return export_module(module, example_inputs(config, batch_size), out, fmt)
