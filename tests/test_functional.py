"""Relative-logit functions against a naive gather reference."""

import pytest
import torch

from aug_attn.functional import (
    rel_to_abs,
    relative_logits_1d,
    relative_logits_2d,
    relative_logits_2d_rows,
    relative_offsets,
    relative_table,
    skew,
    skewed_logits,
)

D = torch.float64


def naive_1d(q, rel):
    batch, heads, length, _ = q.shape
    out = torch.empty(batch, heads, length, length, dtype=q.dtype)
    for i in range(length):
        for j in range(length):
            r = rel[j - i + length - 1] if rel.dim() == 2 else rel[:, j - i + length - 1]
            out[:, :, i, j] = (q[:, :, i] * r).sum(-1)
    return out


def naive_2d(q, rel_h, rel_w, height, width, clip=None):
    batch, heads, tokens, _ = q.shape
    out = torch.empty(batch, heads, tokens, tokens, dtype=q.dtype)

    def row(table, offset, size):
        index = offset + size - 1 if clip is None else max(-clip, min(clip, offset)) + clip
        return table[index] if table.dim() == 2 else table[:, index]

    for i in range(tokens):
        yi, xi = divmod(i, width)
        for j in range(tokens):
            yj, xj = divmod(j, width)
            rh, rw = row(rel_h, yj - yi, height), row(rel_w, xj - xi, width)
            out[:, :, i, j] = (q[:, :, i] * rh).sum(-1) + (q[:, :, i] * rw).sum(-1)
    return out


def test_rel_to_abs_matches_gather():
    length = 6
    x = torch.randn(2, 3, length, 2 * length - 1, dtype=D)
    expected = torch.empty(2, 3, length, length, dtype=D)
    for i in range(length):
        for j in range(length):
            expected[..., i, j] = x[..., i, j - i + length - 1]
    torch.testing.assert_close(rel_to_abs(x), expected, rtol=0, atol=0)


def test_skew_of_query_block_matches_gather():
    num_keys, c = 7, 3
    x = torch.randn(4, c, num_keys + c - 1, dtype=D)
    out = skew(x, num_keys)
    for i in range(c):
        for j in range(num_keys):
            assert out[:, i, j].equal(x[:, i, j + c - 1 - i])


@pytest.mark.parametrize("length", [1, 2, 5, 8])
@pytest.mark.parametrize("per_head", [False, True])
def test_relative_logits_1d(length, per_head):
    q = torch.randn(2, 3, length, 4, dtype=D)
    rel = torch.randn(*((3,) if per_head else ()), 2 * length - 1, 4, dtype=D)
    torch.testing.assert_close(relative_logits_1d(q, rel), naive_1d(q, rel))


@pytest.mark.parametrize("size", [(5, 7), (1, 4), (3, 1), (4, 4)])
@pytest.mark.parametrize("per_head", [False, True])
def test_relative_logits_2d(size, per_head):
    height, width = size
    heads = (2,) if per_head else ()
    q = torch.randn(2, 2, height * width, 3, dtype=D)
    rel_h = torch.randn(*heads, 2 * height - 1, 3, dtype=D)
    rel_w = torch.randn(2 * width - 1, 3, dtype=D)  # mixed: shared width table, maybe per-head height table
    torch.testing.assert_close(relative_logits_2d(q, rel_h, rel_w, height, width), naive_2d(q, rel_h, rel_w, height, width))


def test_relative_logits_2d_row_blocks_and_clipping():
    height, width, clip = 6, 5, 2
    q = torch.randn(1, 2, height * width, 3, dtype=D)
    rel_h, rel_w = torch.randn(2, 2 * clip + 1, 3, dtype=D), torch.randn(2 * clip + 1, 3, dtype=D)
    expected = naive_2d(q, rel_h, rel_w, height, width, clip=clip)
    blocks = [
        relative_logits_2d_rows(q[:, :, r0 * width : r1 * width], rel_h, rel_w, height, width, r0, clip)
        for r0, r1 in [(0, 1), (1, 4), (4, 6)]
    ]
    torch.testing.assert_close(torch.cat(blocks, dim=2), expected)


def test_clipped_offsets_1d_blocks():
    length, clip = 9, 3
    q = torch.randn(2, 2, length, 4, dtype=D)
    rel = torch.randn(2 * clip + 1, 4, dtype=D)
    full = rel[torch.arange(-(length - 1), length).clamp(-clip, clip) + clip]  # (2L-1, d) equivalent table
    expected = naive_1d(q, full)
    blocks = [
        skewed_logits(q[:, :, s:e], relative_table(rel, relative_offsets(s, e, length, clip)), length)
        for s, e in [(0, 4), (4, 5), (5, 9)]
    ]
    torch.testing.assert_close(torch.cat(blocks, dim=2), expected)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="2L-1"):
        rel_to_abs(torch.randn(3, 4))
    with pytest.raises(ValueError, match="rel must be"):
        relative_logits_1d(torch.randn(1, 1, 4, 2), torch.randn(6, 2))
    with pytest.raises(ValueError, match="height\\*width"):
        relative_logits_2d(torch.randn(1, 1, 5, 2), torch.randn(3, 2), torch.randn(3, 2), 2, 2)
    with pytest.raises(ValueError, match="heads"):
        relative_logits_1d(torch.randn(1, 2, 3, 2), torch.randn(3, 5, 2))


def test_gradcheck_relative_logits():
    q = torch.randn(1, 2, 6, 3, dtype=D, requires_grad=True)
    rel_h = torch.randn(3, 3, dtype=D, requires_grad=True)
    rel_w = torch.randn(2, 5, 3, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: relative_logits_2d(a, b, c, 2, 3), (q, rel_h, rel_w))
