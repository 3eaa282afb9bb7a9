"""AAConv1d / AAConv2d and the shared attention core against a naive float64 reference."""

import pytest
import torch
import torch.nn.functional as F

from aug_attn import AAConv1d, AAConv2d, RelativeMultiheadAttention, RelativePositionEncoder1d

D = torch.float64


def naive_attention(attn, tokens, offsets_fn, mask=None):
    """softmax((q.k + q.r(i, j)) / sqrt(d)) v, written out per head with explicit offset lookup."""
    q, k, v = attn.qkv(tokens).split([attn.dk, attn.dk, attn.dv], dim=-1)
    heads = attn.num_heads
    dkh, dvh = attn.dk // heads, attn.dv // heads
    n = tokens.shape[1]
    outs = []
    for h in range(heads):
        qh, kh, vh = q[..., h * dkh : (h + 1) * dkh], k[..., h * dkh : (h + 1) * dkh], v[..., h * dvh : (h + 1) * dvh]
        logits = qh @ kh.transpose(1, 2)  # (B, N, N)
        if attn.encoder is not None:
            rel = torch.stack([torch.stack([offsets_fn(attn.encoder, h, i, j) for j in range(n)]) for i in range(n)])
            logits = logits + torch.einsum("bid,ijd->bij", qh, rel)
        logits = logits / dkh**0.5
        if mask is not None:
            logits = logits.masked_fill(mask[:, None, :], float("-inf"))
        outs.append(logits.softmax(-1) @ vh)
    return attn.proj(torch.cat(outs, dim=-1))


def offset_1d(encoder, head, i, j):
    d = encoder.max_distance
    row = max(-d, min(d, j - i)) + d
    return encoder.rel[row] if encoder.rel.dim() == 2 else encoder.rel[head, row]


def offset_2d(width):
    def fn(encoder, head, i, j):
        d = encoder.max_distance
        (yi, xi), (yj, xj) = divmod(i, width), divmod(j, width)
        pick = lambda table, off: table[max(-d, min(d, off)) + d] if table.dim() == 2 else table[head, max(-d, min(d, off)) + d]
        return pick(encoder.rel_h, yj - yi) + pick(encoder.rel_w, xj - xi)

    return fn


@pytest.mark.parametrize("shared_heads", [True, False])
@pytest.mark.parametrize("length,max_distance", [(7, 16), (11, 3)])
def test_aaconv1d_matches_naive(shared_heads, length, max_distance):
    layer = AAConv1d(5, 12, 3, dk=8, dv=4, num_heads=2, max_distance=max_distance, shared_heads=shared_heads).to(D)
    x = torch.randn(3, 5, length, dtype=D)
    out = layer(x)
    torch.testing.assert_close(out[:, :8], F.conv1d(x, layer.conv.weight, layer.conv.bias, padding=1))
    ref = naive_attention(layer.attn, x.transpose(1, 2), offset_1d).transpose(1, 2)
    torch.testing.assert_close(out[:, 8:], ref)


@pytest.mark.parametrize("size,max_distance", [((5, 7), 64), ((4, 6), 2), ((1, 3), 8)])
def test_aaconv2d_matches_naive(size, max_distance):
    layer = AAConv2d(4, 10, 3, dk=6, dv=4, num_heads=2, max_distance=max_distance, shared_heads=False).to(D)
    x = torch.randn(2, 4, *size, dtype=D)
    out = layer(x)
    torch.testing.assert_close(out[:, :6], F.conv2d(x, layer.conv.weight, layer.conv.bias, padding=1))
    ref = naive_attention(layer.attn, x.flatten(2).transpose(1, 2), offset_2d(size[1]))
    torch.testing.assert_close(out[:, 6:], ref.transpose(1, 2).reshape(2, 4, *size))


def test_unrelative_layer_is_plain_mha():
    layer = AAConv2d(3, 8, 3, dk=4, dv=4, num_heads=2, relative=False).to(D)
    assert layer.attn.encoder is None
    x = torch.randn(2, 3, 4, 5, dtype=D)
    ref = naive_attention(layer.attn, x.flatten(2).transpose(1, 2), None)
    torch.testing.assert_close(layer(x)[:, 4:], ref.transpose(1, 2).reshape(2, 4, 4, 5))


def test_chunked_equals_unchunked_values_and_grads():
    torch.manual_seed(1)
    big = AAConv2d(4, 12, 3, dk=8, dv=8, num_heads=2).to(D)
    small = AAConv2d(4, 12, 3, dk=8, dv=8, num_heads=2, max_logits_elements=2 * 2 * 35 * 5).to(D)
    small.load_state_dict(big.state_dict())
    x = torch.randn(2, 4, 5, 7, dtype=D)
    outs, grads = [], []
    for layer in (big, small):
        out = layer(x)
        out.pow(2).sum().backward()
        outs.append(out)
        grads.append({name: p.grad.clone() for name, p in layer.named_parameters()})
    torch.testing.assert_close(outs[0], outs[1])
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)


def test_chunked_1d_with_padding_mask_matches_unchunked():
    big = AAConv1d(3, 8, 3, dk=4, dv=4, num_heads=2).to(D)
    small = AAConv1d(3, 8, 3, dk=4, dv=4, num_heads=2, max_logits_elements=40).to(D)
    small.load_state_dict(big.state_dict())
    x = torch.randn(2, 3, 13, dtype=D)
    mask = torch.zeros(2, 13, dtype=torch.bool)
    mask[1, 9:] = True
    torch.testing.assert_close(big(x, key_padding_mask=mask), small(x, key_padding_mask=mask))


def test_gradients_reach_tables_and_projections():
    layer = AAConv2d(3, 16, 3, dk=8, dv=8, num_heads=2, shared_heads=False)
    layer(torch.randn(2, 3, 6, 5)).square().mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert {"attn.encoder.rel_h", "attn.encoder.rel_w", "attn.qkv.weight", "attn.proj.weight"} <= {
        n for n, _ in layer.named_parameters()
    }


def test_gradcheck_layer():
    layer = AAConv1d(2, 4, 3, dk=2, dv=2, num_heads=1, max_distance=2).to(D)
    x = torch.randn(1, 2, 5, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
    layer2 = AAConv2d(2, 4, 3, dk=2, dv=2, num_heads=2, max_logits_elements=4).to(D)  # chunked + recomputed
    x2 = torch.randn(1, 2, 3, 2, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(layer2, (x2,))


def test_batch_independence():
    layer = AAConv2d(3, 16, 3, dk=8, dv=8, num_heads=2).to(D).eval()
    x = torch.randn(4, 3, 5, 6, dtype=D)
    full = layer(x)
    for b in range(4):
        torch.testing.assert_close(layer(x[b : b + 1]), full[b : b + 1])


def test_key_padding_mask_excludes_padded_keys():
    layer = AAConv1d(3, 8, 3, dk=4, dv=4, num_heads=2).to(D)
    x = torch.randn(1, 3, 10, dtype=D)
    mask = torch.zeros(1, 10, dtype=torch.bool)
    mask[0, 7:] = True
    out = layer(x, key_padding_mask=mask)[:, 4:]
    # Attention outputs of the unpadded queries equal attention over the first 7 tokens alone
    # (minus the conv branch, whose padding differs), whatever the padded keys hold.
    x2 = x.clone()
    x2[..., 7:] = 1e3 * torch.randn(3, 3, dtype=D)
    out2 = layer(x2, key_padding_mask=mask)[:, 4:]
    torch.testing.assert_close(out[..., :7], out2[..., :7])
    alone = layer.attn(x[..., :7].transpose(1, 2), 7).transpose(1, 2)
    torch.testing.assert_close(out[..., :7], alone)


def test_mask_errors():
    layer = AAConv1d(3, 8, 3, dk=4, dv=4, num_heads=2)
    with pytest.raises(ValueError, match="every key"):
        layer(torch.randn(1, 3, 5), key_padding_mask=torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"key_padding_mask must be \(B, L\) = \(1, 5\)"):
        layer(torch.randn(1, 3, 5), key_padding_mask=torch.ones(1, 4, dtype=torch.bool))
    strided = AAConv1d(3, 8, 3, stride=2, padding=1, dk=4, dv=4, num_heads=2)
    for length in (9, 13):  # pooled to the output length, a wrong mask length used to pass unnoticed
        with pytest.raises(ValueError, match=r"key_padding_mask must be \(B, L\) = \(1, 10\)"):
            strided(torch.randn(1, 3, 10), key_padding_mask=torch.zeros(1, length, dtype=torch.bool))


def test_positions_of_another_token_count_are_an_error():
    """An encoder told about another number of tokens (pos) must not broadcast over the keys."""
    attention = RelativeMultiheadAttention(8, 8, 8, 2, RelativePositionEncoder1d(4, 2, 8))
    attention(torch.randn(1, 5, 8), 5)
    for pos in (1, 3, 7):
        with pytest.raises(ValueError, match=f"for pos={pos}"):
            attention(torch.randn(1, 5, 8), pos)


def test_translation_shifts_attention_output():
    """Shifting a signal (support away from the borders, the rest masked as padding) shifts the
    attention output: logits depend on key-minus-query offsets only, never on absolute position."""
    layer = AAConv1d(2, 8, 3, dk=4, dv=4, num_heads=2, max_distance=4).to(D)
    x = torch.zeros(1, 2, 40, dtype=D)
    x[..., 10:18] = torch.randn(2, 8, dtype=D)
    mask = torch.ones(1, 40, dtype=torch.bool)
    mask[:, 10:18] = False
    shift = 9
    out = layer(x, key_padding_mask=mask)[:, 4:]
    out_shifted = layer(torch.roll(x, shift, -1), key_padding_mask=torch.roll(mask, shift, -1))[:, 4:]
    torch.testing.assert_close(out_shifted[..., 10 + shift : 18 + shift], out[..., 10:18])
    # The relative term matters: the outputs are not those of the same layer without it.
    layer.attn.encoder.rel.data.zero_()
    assert not torch.allclose(layer(x, key_padding_mask=mask)[:, 4:, 10:18], out[..., 10:18])


def test_any_size_same_module_and_stride():
    layer = AAConv2d(3, 32, 3, num_heads=4, dk=16, dv=8)
    assert layer(torch.randn(1, 3, 5, 7)).shape == (1, 32, 5, 7)
    assert layer(torch.randn(2, 3, 70, 3)).shape == (2, 32, 70, 3)  # beyond max_distance: clipped
    strided = AAConv2d(3, 32, 3, stride=2, num_heads=4, dk=16, dv=8)
    assert strided(torch.randn(1, 3, 9, 14)).shape == (1, 32, 5, 7)
    assert strided(torch.randn(1, 3, 8, 8)).shape == (1, 32, 4, 4)
    conv1d = AAConv1d(3, 16, 3, stride=2, dk=8, dv=8, num_heads=2)
    assert conv1d(torch.randn(1, 3, 11)).shape == (1, 16, 6)
    sample_level = AAConv1d(1, 16, 3, stride=3, padding=0, dk=8, dv=8, num_heads=2)
    assert sample_level(torch.randn(2, 1, 59)).shape == (2, 16, 19)


def test_stride_attention_uses_average_pooled_input():
    layer = AAConv1d(2, 8, 3, stride=2, dk=4, dv=4, num_heads=2).to(D)
    x = torch.randn(1, 2, 10, dtype=D)
    pooled = F.avg_pool1d(x, 2, 2)
    torch.testing.assert_close(layer(x)[:, 4:], layer.attn(pooled.transpose(1, 2), 5).transpose(1, 2))


def test_fractions_and_full_attention():
    layer = AAConv2d(8, 40, 3, dk=0.2, dv=0.1, num_heads=4)
    assert (layer.dk, layer.dv) == (8, 4)
    assert layer.conv.out_channels == 36
    full = AAConv1d(4, 8, 3, dk=8, dv=8, num_heads=2)
    assert full.conv is None and full(torch.randn(1, 4, 6)).shape == (1, 8, 6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(dk=10, dv=4, num_heads=4), "dk=10 must be a positive multiple of num_heads=4"),
        (dict(dk=8, dv=6, num_heads=4), "dv=6"),
        (dict(dk=8, dv=40, num_heads=4), "dv=40 exceeds out_channels=32"),
        (dict(dk=1.5), "fraction"),
        (dict(kernel_size=4), "even"),
        (dict(num_heads=0, dk=4, dv=4), "num_heads"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = dict(in_channels=3, out_channels=32, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        AAConv2d(**args)


def test_bad_inputs():
    layer = AAConv2d(3, 16, 3, dk=8, dv=8, num_heads=2)
    with pytest.raises(ValueError, match=r"expects \(B, C, H, W\) with C=3, got \(3, 5, 5\)"):
        layer(torch.randn(3, 5, 5))
    with pytest.raises(ValueError, match="C=3"):
        layer(torch.randn(1, 4, 5, 5))
    valid = AAConv1d(3, 16, 3, padding=0, dk=8, dv=8, num_heads=2)
    with pytest.raises(ValueError, match=r"input 2 is too small for kernel_size=\(3,\)"):
        valid(torch.randn(1, 3, 2))


def test_core_module_standalone():
    attn = RelativeMultiheadAttention(6, 8, 4, 2, RelativePositionEncoder1d(4, 2, max_distance=5))
    assert attn(torch.randn(2, 9, 6), 9).shape == (2, 9, 4)
    with pytest.raises(ValueError, match="tokens"):
        attn(torch.randn(2, 6, 9), 6)


def test_torch_compile_fullgraph():
    """Dynamo traces the layer, forward and backward, without graph breaks (aot_eager: no C++ build)."""
    layer = AAConv2d(3, 16, 3, dk=8, dv=8, num_heads=2)
    x = torch.randn(2, 3, 6, 5, requires_grad=True)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    out.sum().backward()
    torch.testing.assert_close(out, layer(x))
    assert x.grad is not None
