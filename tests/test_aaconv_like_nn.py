"""AAConv1d / AAConv2d take nn.Conv1d / nn.Conv2d's arguments: output grids and the conv branch
against nn.Conv with the same weights, the attention tokens against the documented pooling rule
written out per position, and refusals at construction (never in forward, never a TypeError)."""

import inspect
import itertools
import logging

import pytest
import torch
from torch import nn

from aug_attn import AAConv1d, AAConv2d

D = torch.float64
HEADS = dict(dk=4, dv=4, num_heads=2)


def per_axis(value, dims):
    return (value,) * dims if isinstance(value, int) else tuple(value)


def refusal(kernel, stride, padding, dilation, dims):
    """The start of the error message the layer must raise for these arguments, or None."""
    kernel, stride, dilation = per_axis(kernel, dims), per_axis(stride, dims), per_axis(dilation, dims)
    footprint = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    if padding is None and any(k % 2 == 0 for k in kernel):
        return "kernel_size="
    if padding == "same" and any(s > 1 for s in stride) and any(e % 2 == 0 for e in footprint):
        return "padding='same' with stride="
    if not isinstance(padding, str) and padding is not None:
        if any(p > (e - 1) // 2 for p, e in zip(per_axis(padding, dims), footprint)):
            return f"padding={padding!r} is larger than 'same'"
    return None


def torch_padding(kernel, stride, padding, dilation, dims):
    """The nn.Conv padding that gives the layer's conv branch."""
    if padding == "same" and all(s == 1 for s in per_axis(stride, dims)):
        return "same"
    if padding in (None, "same"):
        return tuple(d * (k - 1) // 2 for k, d in zip(per_axis(kernel, dims), per_axis(dilation, dims)))
    return padding


def reference_tokens(x, kernel, stride, padding, dilation, out):
    """The documented rule, per output position: along each axis token o averages the input
    positions [o*s + a, min(o*s + a + s, n)) with a = max(0, (e - s) // 2 - p), and a = 0 for
    padding='same'. x: (B, C, *grid) -> (B, N_out, C)."""
    dims = x.dim() - 2
    stride = per_axis(stride, dims)
    if padding == "same":
        crop = (0,) * dims
    else:
        pads = (0,) * dims if padding == "valid" else per_axis(torch_padding(kernel, stride, padding, dilation, dims), dims)
        footprint = [d * (k - 1) + 1 for k, d in zip(per_axis(kernel, dims), per_axis(dilation, dims))]
        crop = [max(0, (e - s) // 2 - p) for e, s, p in zip(footprint, stride, pads)]
    tokens = []
    for position in itertools.product(*(range(n) for n in out)):
        window = tuple(
            slice(o * s + a, min(o * s + a + s, n)) for o, s, a, n in zip(position, stride, crop, x.shape[2:])
        )
        tokens.append(x[(..., *window)].flatten(2).mean(-1))  # (B, C)
    return torch.stack(tokens, dim=1)  # (B, N_out, C)


def check_against_nn(layer_cls, conv_cls, kernel, stride, padding, dilation, sizes):
    dims = 1 if layer_cls is AAConv1d else 2
    expected = refusal(kernel, stride, padding, dilation, dims)
    if expected is not None:
        with pytest.raises(ValueError, match="^" + expected.replace("(", r"\(").replace(")", r"\)")):
            layer_cls(3, 8, kernel, stride, padding, dilation, **HEADS)
        return
    layer = layer_cls(3, 8, kernel, stride, padding, dilation, **HEADS).to(D)
    conv = conv_cls(3, 4, kernel, stride, torch_padding(kernel, stride, padding, dilation, dims), dilation).to(D)
    conv.load_state_dict(layer.conv.state_dict())
    for size in sizes:
        x = torch.randn(2, 3, *size, dtype=D)
        try:
            want = conv(x)
        except RuntimeError:  # nn.Conv: the input is smaller than the kernel
            with pytest.raises(ValueError, match="too small"):
                layer(x)
            continue
        out = layer(x)
        assert out.shape == (2, 8, *want.shape[2:]), (kernel, stride, padding, dilation, size)
        assert torch.equal(out[:, :4], want)
        tokens = reference_tokens(x, kernel, stride, padding, dilation, want.shape[2:])
        pos = want.shape[-1] if dims == 1 else tuple(want.shape[2:])
        attn = layer.attn(tokens, pos).transpose(1, 2).reshape(2, 4, *want.shape[2:])
        torch.testing.assert_close(out[:, 4:], attn, msg=lambda m: f"{(kernel, stride, padding, dilation, size)}: {m}")


@pytest.mark.parametrize("padding", [None, "same", "valid", 0, 1, 2])
def test_1d_matches_nn_conv1d(padding):
    for kernel, stride, dilation in itertools.product((1, 2, 3, 4, 5), (1, 2, 3), (1, 2)):
        check_against_nn(AAConv1d, nn.Conv1d, kernel, stride, padding, dilation, [(n,) for n in range(1, 12)])


@pytest.mark.parametrize("padding", [None, "same", "valid", 1, (1, 0), (0, 2)])
def test_2d_matches_nn_conv2d(padding):
    sizes = [(1, 2), (5, 7), (6, 9), (8, 4)]
    for kernel, stride, dilation in itertools.product((1, 2, 3, (3, 5), (2, 3)), (1, 2, (2, 1), (1, 3)), (1, (2, 1))):
        check_against_nn(AAConv2d, nn.Conv2d, kernel, stride, padding, dilation, sizes)


def test_the_issues_example_gives_nn_conv2ds_grid():
    x = torch.randn(1, 3, 15, 15)
    assert AAConv2d(3, 16, (3, 5), padding=0, **HEADS)(x).shape == (1, 16, 13, 11)
    assert AAConv2d(3, 16, (3, 5), padding="valid", **HEADS)(x).shape == (1, 16, 13, 11)
    assert AAConv2d(3, 16, (3, 5), padding="same", **HEADS)(x).shape == (1, 16, 15, 15)
    assert AAConv2d(3, 16, (3, 5), **HEADS)(x).shape == (1, 16, 15, 15)  # the default stays "same"
    assert AAConv2d(3, 16, 3, stride=(2, 2), **HEADS)(x).shape == (1, 16, 8, 8)
    assert AAConv2d(3, 16, 3, stride=(2, 1), padding=0, **HEADS)(x).shape == (1, 16, 7, 13)


def test_valid_padding_attends_over_the_centres_of_the_windows():
    """Stride 1, padding 0: the attention branch is the 'same' layer's on the input cropped by
    (kernel_size - 1) // 2 on each side, so its tokens sit where the conv's windows are centred."""
    valid = AAConv2d(3, 8, (3, 5), padding="valid", **HEADS).to(D)
    same = AAConv2d(3, 8, (3, 5), **HEADS).to(D)
    same.load_state_dict(valid.state_dict())
    x = torch.randn(2, 3, 7, 9, dtype=D)
    torch.testing.assert_close(valid(x)[:, 4:], same(x[:, :, 1:-1, 2:-2])[:, 4:])


def test_1d_mask_follows_the_crop():
    layer = AAConv1d(3, 8, 5, padding=0, **HEADS).to(D)
    x = torch.randn(1, 3, 12, dtype=D)
    mask = torch.zeros(1, 12, dtype=torch.bool)
    mask[:, 9:] = True
    out = layer(x, key_padding_mask=mask)[:, 4:]  # tokens are x[2:10]; the last one is padding
    alone = layer.attn(x[..., 2:9].transpose(1, 2), 7).transpose(1, 2)
    torch.testing.assert_close(out[..., :7], alone)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [1, "same"])
def test_padding_mode_pads_the_conv_branch_only(mode, padding):
    layer = AAConv2d(3, 8, 3, padding=padding, padding_mode=mode, **HEADS).to(D)
    zeros = AAConv2d(3, 8, 3, padding=padding, **HEADS).to(D)
    zeros.load_state_dict(layer.state_dict())
    conv = nn.Conv2d(3, 4, 3, padding=padding, padding_mode=mode).to(D)
    conv.load_state_dict(layer.conv.state_dict())
    x = torch.randn(2, 3, 5, 6, dtype=D)
    out = layer(x)
    assert torch.equal(out[:, :4], conv(x))
    torch.testing.assert_close(out[:, 4:], zeros(x)[:, 4:])
    assert f"padding_mode='{mode}'" in repr(layer)


def test_positional_arguments_are_nn_convs():
    nn_names = list(inspect.signature(nn.Conv2d).parameters)[:9]
    assert list(inspect.signature(AAConv2d).parameters)[:9] == nn_names
    layer = AAConv2d(3, 16, 3, 2, 1, 1, 1, False, "zeros", **HEADS)  # groups=1, padding_mode='zeros': accepted silently
    assert layer.conv.bias is None and layer.conv.stride == (2, 2) and layer.stride == (2, 2)
    assert layer(torch.randn(1, 3, 9, 9)).shape == (1, 16, 5, 5)
    with pytest.raises(TypeError):
        AAConv2d(3, 16, 3, 1, None, 1, 1, True, "zeros", 4, 4, 2)  # dk, dv, num_heads are keyword only


@pytest.mark.parametrize(
    "layer_cls,kwargs,match",
    [
        (AAConv2d, dict(groups=2), r"groups=2: AAConv2d supports groups=1 only"),
        (AAConv1d, dict(groups=3), r"groups=3: AAConv1d supports groups=1 only"),
        (AAConv2d, dict(padding_mode="mirror"), r"padding_mode='mirror': expected one of 'zeros', 'reflect'"),
        (AAConv2d, dict(padding=2), r"padding=2 is larger than 'same' along the height \(at most .* = 1\)"),
        (AAConv2d, dict(padding=(1, 2)), r"padding=\(1, 2\) is larger than 'same' along the width"),
        (AAConv1d, dict(padding=2, dilation=1), r"padding=2 is larger than 'same' along the length"),
        (AAConv2d, dict(padding="full"), r"padding='full': expected 'same', 'valid', an int or a tuple of 2 ints"),
        (AAConv2d, dict(padding=(1, 1, 1)), r"padding must be an int >= 0 or a tuple of 2 such ints"),
        (AAConv1d, dict(padding=-1), r"padding must be an int >= 0 or a tuple of 1 such ints"),
        (AAConv2d, dict(stride=0), r"stride must be a positive int or a tuple of 2 such ints, got 0"),
        (AAConv2d, dict(stride=(2, 2, 2)), r"stride must be a positive int or a tuple of 2"),
        (AAConv2d, dict(dilation=(1, 0)), r"dilation must be a positive int"),
        (AAConv2d, dict(kernel_size=(3,)), r"kernel_size must be a positive int or a tuple of 2"),
        (AAConv2d, dict(kernel_size=4, stride=2, padding="same"), r"padding='same' with stride=\(2, 2\) needs an odd footprint"),
    ],
)
def test_unsupported_arguments_are_refused_at_construction(layer_cls, kwargs, match):
    args = dict(in_channels=3, out_channels=16, kernel_size=3, **HEADS)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        layer_cls(**args)


def test_fractions_that_round_log_the_requested_and_used_depths(caplog):
    with caplog.at_level(logging.WARNING, logger="aug_attn.layers.aaconv"):
        layer = AAConv2d(8, 64, 3, dk=0.1, dv=0.25, num_heads=8)
    assert (layer.dk, layer.dv) == (8, 16)
    assert [r.getMessage() for r in caplog.records] == [
        "dk=0.1 of out_channels=64 asks for 6.4 channels; using dk=8, the nearest positive multiple of num_heads=8"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aug_attn.layers.aaconv"):
        layer = AAConv1d(4, 100, 3, dk=0.07, dv=0.14, num_heads=7)  # 0.07 * 100 is 7.000000000000001 in floats
    assert (layer.dk, layer.dv) == (7, 14)
    assert not caplog.records


def test_compiles_with_crop_and_uneven_stride():
    layer = AAConv2d(3, 16, (3, 5), stride=(2, 1), padding=0, dk=8, dv=8, num_heads=2)
    x = torch.randn(2, 3, 9, 8)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), layer(x))
