"""MuSLCAT, MuSLCAN, SampleCNN and PlainCNN: shapes on several lengths, attention placement, argument errors."""

from __future__ import annotations

import pytest
import torch

from aug_attn.layers import AAConv1d
from aug_attn.models.muslcat import MuSLCAN, MuSLCAT
from aug_attn.models.samplecnn import SampleCNN, WaveformConv1d

TINY = {"channels": (8, 8, 8, 16, 16), "d_model": 16, "front_heads": 2, "dk": 8, "dv": 8}


@pytest.mark.parametrize("length", [243, 500, 729, 1000])
@pytest.mark.parametrize("cls", [MuSLCAT, MuSLCAN])
def test_muslcat_shapes_on_several_lengths(cls, length):
    kwargs = dict(TINY, num_layers=1, num_heads=2, ff_mult=2) if cls is MuSLCAT else TINY
    model = cls(5, **kwargs).eval()
    assert model.min_length == 3 * 3**4
    out = model(torch.randn(2, length))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    assert model(torch.randn(2, 1, length)).shape == (2, 5)


def test_attention_only_in_the_last_blocks_and_back_end():
    model = MuSLCAN(3, **TINY, attention_blocks=1)
    # One AAC block per branch plus the back end: the long early sequences stay convolutional.
    assert sum(isinstance(m, AAConv1d) for m in model.modules()) == 3
    assert all(not isinstance(m, AAConv1d) for m in model.branches[0].blocks[:-1].modules())


def test_inputs_shorter_than_the_receptive_field_are_rejected():
    with pytest.raises(ValueError, match="at least 243 samples"):
        MuSLCAT(3, **TINY)(torch.randn(1, 242))
    with pytest.raises(ValueError, match=r"\(B, L\) or \(B, 1, L\)"):
        MuSLCAT(3, **TINY)(torch.randn(1, 2, 500))


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="scales"):
        MuSLCAT(3, **TINY, scales=[(3, 3), (8, 6)])
    with pytest.raises(ValueError, match="back_end"):
        MuSLCAT(3, **TINY, back_end="lstm")
    with pytest.raises(TypeError, match="num_layers"):
        MuSLCAN(3, **TINY, num_layers=2)


@pytest.mark.parametrize("length", [729, 1000])
def test_samplecnn_shapes(length):
    model = SampleCNN(4, channels=(8, 8, 16, 16, 16, 32)).eval()
    assert model.receptive_field == 729
    assert model(torch.randn(3, length)).shape == (3, 4)
    with pytest.raises(ValueError, match="at least 729"):
        model(torch.randn(3, 728))


def test_samplecnn_default_is_the_paper_3_9_model():
    model = SampleCNN(50)
    assert model.receptive_field == 59049
    assert len(model.features) == 10  # strided stem + nine blocks
    assert sum(p.numel() for p in model.parameters()) == 1866930


def test_waveform_conv_matches_conv1d():
    stem = WaveformConv1d(6, kernel_size=27, stride=9, padding=9)
    conv = torch.nn.Conv1d(1, 6, 27, 9, 9, bias=False)
    conv.weight.data.copy_(stem.weight.data)
    x = torch.randn(2, 1, 1000)
    torch.testing.assert_close(stem(x), conv(x))


def test_plain_cnn_shapes_and_minimum_length():
    from aug_attn.models.plaincnn import PlainCNN

    model = PlainCNN(4, channels=(8, 16, 16), kernel_size=16, stride=4, pool=4).eval()
    assert model.min_length == 4 * 4**3
    for length in (256, 1000, 4000):
        out = model(torch.randn(3, length))
        assert out.shape == (3, 4) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="PlainCNN needs at least 256 samples"):
        model(torch.randn(1, 255))
    assert sum(p.numel() for p in PlainCNN(10).parameters()) == 184_522  # the default of plaincnn_clips (10 classes)


def test_muslcat_meanmax_head_reads_every_token_and_no_class_token():
    from aug_attn.models.muslcat import MuSLCAT

    torch.manual_seed(0)
    model = MuSLCAT(5, channels=(8, 8, 8, 16, 16), d_model=16, front_heads=2, dk=8, dv=8, num_layers=1, num_heads=2, pool="meanmax").eval()
    assert model.cls is None and model.head[1].in_features == 32
    x = torch.randn(2, 729 * 3)
    out = model(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="pool='max': expected 'cls' or 'meanmax'"):
        MuSLCAT(5, pool="max")
