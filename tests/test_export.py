"""torch.compile (one graph, no breaks), torch.export and ONNX export of the models: the compiled and exported
programs give the module's outputs, also at a batch size other than the traced one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch._dynamo
from test_distributed import write_config
from test_mixed_precision import MODELS

from aug_attn import RelativeMultiheadAttention
from aug_attn.geometry.normals import estimate_normals
from aug_attn_tasks.cli import main
from aug_attn_tasks.export import export_module
from aug_attn_tasks.recipes import load_checkpoint

# One model per family and positional encoder: 1D relative (MuSLCAT), 2D relative (AA-ResNet),
# surface (RISurConv with given and estimated normals, segmenter), plain convolutions and PointNet++
# (classifier, segmenter).
FAMILIES = [
    "muslcat",
    "aa_resnet_small",
    "risurconv",
    "risurconv_estimated_normals",
    "risurconv_segmenter",
    "samplecnn",
    "pointnet2",
    "pointnet2_segmenter",
]


def _build(name: str, batch: int = 2) -> tuple[torch.nn.Module, tuple, dict]:
    build, inputs, kwargs = MODELS[name]
    torch.manual_seed(0)
    model = build().eval()
    args = tuple(torch.cat([x] * (batch // 2) + [x[: batch % 2]]) if x is not None else None for x in inputs())
    kwargs = {k: torch.cat([v] * (batch // 2) + [v[: batch % 2]]) for k, v in kwargs.items()}
    return model, args, kwargs


@pytest.mark.parametrize("name", FAMILIES)
def test_compile_is_one_graph_and_matches_eager(name: str) -> None:
    model, args, kwargs = _build(name)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)  # fullgraph: a graph break raises
    with torch.no_grad():
        torch.testing.assert_close(compiled(*args, **kwargs), model(*args, **kwargs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["aa_resnet_small", "pointnet2", "muslcat", "samplecnn", "risurconv"])
def test_compiled_training_step_matches_eager(name: str) -> None:
    model, args, kwargs = _build(name)
    model.train()
    for module in model.modules():  # compiled and eager dropout draw different masks
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(module, RelativeMultiheadAttention):
            module.dropout = 0.0
    torch._dynamo.reset()
    torch.compile(model, backend="aot_eager", fullgraph=True)(*args, **kwargs).square().mean().backward()
    compiled_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(*args, **kwargs).square().mean().backward()
    for compiled_grad, p in zip(compiled_grads, model.parameters()):
        torch.testing.assert_close(compiled_grad, p.grad, rtol=1e-4, atol=1e-5)


# The segmenter takes its category as a keyword; estimated normals export like given ones (test above).
@pytest.mark.parametrize("name", [n for n in FAMILIES if not MODELS[n][2] and n != "risurconv_estimated_normals"])
def test_exported_program_matches_eager_at_another_batch_size(name: str, tmp_path: Path) -> None:
    model, args, _ = _build(name)
    assert export_module(model, args, tmp_path / "model.pt2") < 1e-5
    program = torch.export.load(tmp_path / "model.pt2").module()
    _, other, _ = _build(name, batch=3)
    tensors = [x for x in other if x is not None]
    with torch.no_grad():
        torch.testing.assert_close(program(*tensors), model(*tensors), rtol=1e-5, atol=1e-5)


# The segmenters' encoders are the classifiers' (set abstraction, RISurConv stages), and SampleCNN's
# layers are all in MuSLCAT's stem, so these four cover every converted operation at less test time.
@pytest.mark.parametrize("name", ["muslcat", "aa_resnet_small", "risurconv_segmenter", "pointnet2_segmenter"])
def test_onnx_export_runs_in_onnxruntime(name: str, tmp_path: Path) -> None:
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    import onnxruntime

    model, args, kwargs = _build(name)
    _, other, other_kwargs = _build(name, batch=3)
    if kwargs:  # the segmenter: category positionally, as the points recipe's module takes it
        model, args, other = _CategoryLast(model), (*args, *kwargs.values()), (*other, *other_kwargs.values())
    assert export_module(model, args, tmp_path / f"{name}.onnx", "onnx") < 1e-4
    session = onnxruntime.InferenceSession(str(tmp_path / f"{name}.onnx"))  # the batch size is dynamic
    tensors = [x for x in other if x is not None]
    outputs = session.run(None, {spec.name: x.numpy() for spec, x in zip(session.get_inputs(), tensors)})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(outputs), model(*tensors), rtol=1e-4, atol=1e-5)


class _CategoryLast(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pos: torch.Tensor, normal: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        return self.model(pos, normal, category=category)


class _Normals(torch.nn.Module):
    def forward(self, pos: torch.Tensor, normal: torch.Tensor | None = None) -> torch.Tensor:
        return estimate_normals(pos, 8) if normal is None else normal


def test_onnx_export_of_estimated_normals_is_refused_with_advice(tmp_path: Path) -> None:
    """PCA normals (what RISurConv runs without given normals) need eigh, which ONNX lacks."""
    pytest.importorskip("onnxscript")
    with pytest.raises(ValueError, match="export it as .pt2"):
        export_module(_Normals(), (torch.randn(2, 32, 3),), tmp_path / "normals.onnx", "onnx")
    # Called without normals (the None left out of the program by an internal wrapper): the error
    # still names the user's model.
    with pytest.raises(ValueError, match=r"ONNX export of _Normals failed .*export it as .pt2"):
        export_module(_Normals(), (torch.randn(2, 32, 3), None), tmp_path / "normals.onnx", "onnx")


def test_export_command_on_a_trained_checkpoint(tmp_path: Path, capsys) -> None:
    assert main(["train", str(write_config(tmp_path, "points"))]) == 0
    checkpoint = next((tmp_path / "runs").rglob("best.ckpt"))
    out = tmp_path / "classifier.pt2"
    assert main(["export", str(checkpoint), str(out), "--batch-size", "3"]) == 0
    assert "largest difference" in capsys.readouterr().out
    module, config = load_checkpoint(checkpoint)
    points = config["data"]["num_points"]
    pos, normal = torch.randn(4, points, 3), torch.nn.functional.normalize(torch.randn(4, points, 3), dim=-1)
    with torch.no_grad():
        torch.testing.assert_close(torch.export.load(out).module()(pos, normal), module(pos, normal), rtol=1e-5, atol=1e-5)


def test_export_leaves_out_a_missing_input_in_the_middle(tmp_path: Path) -> None:
    """A segmenter run without normals: the program takes (pos, category)."""
    from test_points_train import TINY_POINTNET2_SEGMENTER

    from aug_attn.models import PointNet2Segmenter

    kwargs = {k: v for k, v in TINY_POINTNET2_SEGMENTER.items() if k != "name"}
    model = _CategoryLast(PointNet2Segmenter(50, num_categories=4, use_normals=False, **kwargs)).eval()
    pos, category = torch.randn(2, 64, 3), torch.tensor([0, 3])
    assert export_module(model, (pos, None, category), tmp_path / "segmenter.pt2") < 1e-5
    program = torch.export.load(tmp_path / "segmenter.pt2").module()
    pos, category = torch.randn(3, 64, 3), torch.tensor([1, 2, 0])
    with torch.no_grad():
        torch.testing.assert_close(program(pos, category), model(pos, None, category), rtol=1e-5, atol=1e-5)
