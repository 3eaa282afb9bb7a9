"""bfloat16 autocast (`--trainer.precision bf16-mixed`): every model family trains with finite values close
to float32, and the parts that must stay float32 (attention logits and softmax, PCA normals) do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from test_audio_train import TINY_MODEL
from test_distributed import write_config
from test_points_train import TINY_POINTNET2, TINY_POINTNET2_SEGMENTER, TINY_RISURCONV

from aug_attn.attention import relative_attention
from aug_attn.geometry import estimate_normals
from aug_attn.models.muslcat import MuSLCAN, MuSLCAT
from aug_attn.models.pointnet2 import PointNet2Classifier, PointNet2Segmenter
from aug_attn.models.resnet import WideResNet, aa_resnet_small
from aug_attn.models.risurconv import RISurConvClassifier, RISurConvSegmenter
from aug_attn.models.samplecnn import SampleCNN
from aug_attn.positional import RelativePositionEncoder1d
from aug_attn_tasks.cli import main


def _kwargs(config: dict, drop: tuple[str, ...] = ()) -> dict:
    return {k: v for k, v in config.items() if k not in ("name", *drop)}


def _clouds() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(2, 64, 3), F.normalize(torch.randn(2, 64, 3), dim=-1)


MUSLCAT = _kwargs(TINY_MODEL)
SEGMENTER = _kwargs(TINY_RISURCONV, ("global_channels", "transformer_layers", "transformer_heads"))
SEGMENTER.update(decoder_channels=[32, 16], head_channels=16)
# name -> (model builder, inputs builder, extra forward kwargs)
MODELS = {
    "muslcat": (lambda: MuSLCAT(5, **MUSLCAT), lambda: (torch.randn(2, 729),), {}),
    "muslcan": (lambda: MuSLCAN(5, **_kwargs(MUSLCAT, ("num_layers", "num_heads", "ff_mult"))), lambda: (torch.randn(2, 729),), {}),
    "samplecnn": (lambda: SampleCNN(5, channels=(8, 8, 16, 16, 16, 32)), lambda: (torch.randn(2, 729),), {}),
    "aa_resnet_small": (lambda: aa_resnet_small(10, True, None), lambda: (torch.randn(2, 3, 16, 16),), {}),
    "aa_wrn": (lambda: WideResNet(10, 1, 10, attention=True), lambda: (torch.randn(2, 3, 16, 16),), {}),
    "risurconv": (lambda: RISurConvClassifier(5, **_kwargs(TINY_RISURCONV)), _clouds, {}),
    "risurconv_estimated_normals": (lambda: RISurConvClassifier(5, **_kwargs(TINY_RISURCONV)), lambda: (_clouds()[0], None), {}),
    "risurconv_segmenter": (
        lambda: RISurConvSegmenter(50, num_categories=4, **SEGMENTER),
        _clouds,
        {"category": torch.tensor([0, 3])},
    ),
    "pointnet2": (lambda: PointNet2Classifier(5, **_kwargs(TINY_POINTNET2)), _clouds, {}),
    "pointnet2_segmenter": (
        lambda: PointNet2Segmenter(50, num_categories=4, **_kwargs(TINY_POINTNET2_SEGMENTER)),
        _clouds,
        {"category": torch.tensor([0, 3])},
    ),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bf16_autocast_forward_backward_is_finite_and_close_to_fp32(name: str) -> None:
    build, inputs, kwargs = MODELS[name]
    model, args = build().eval(), inputs()
    reference = model(*args, **kwargs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(*args, **kwargs)
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    assert (low.float() - reference).abs().max() <= 0.05 * reference.abs().max()
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(*args, **kwargs).float().square().mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_attention_logits_and_softmax_stay_float32_under_autocast() -> None:
    encoder = RelativePositionEncoder1d(16, 4, max_distance=256)
    with torch.no_grad():
        encoder.rel.mul_(10)  # large relative logits: where bfloat16 rounding would show
    q, k, v = (torch.randn(2, 4, 256, 16).mul(2).bfloat16() for _ in range(3))  # what a bf16 projection gives
    with torch.no_grad():
        exact = relative_attention(q.float(), k.float(), v.float(), encoder, 256)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = relative_attention(q, k, v, encoder, 256)
    assert mixed.dtype == torch.bfloat16
    # Only the final rounding to bfloat16 remains (about 0.2%; bfloat16 logits and softmax give about 2%).
    assert (mixed.float() - exact).abs().max() <= 0.005 * exact.abs().max()


def test_normals_are_estimated_in_float32_under_autocast() -> None:
    pos = torch.randn(2, 128, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = estimate_normals(pos, 16)
    torch.testing.assert_close(mixed, estimate_normals(pos, 16))


def test_bf16_mixed_training_from_the_command_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, "tagging", precision="bf16-mixed")
    config = yaml.safe_load(path.read_text())
    config["model"] = TINY_MODEL  # the attention model: MuSLCAT
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path)]) == 0
    metrics = json.loads(next((tmp_path / "runs").rglob("test_metrics.json")).read_text())
    assert all(value == value for value in metrics.values())  # no NaN
    assert 0 <= metrics["test/roc_auc"] <= 1
