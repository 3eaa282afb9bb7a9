"""Pure functions for relative-position attention logits.

These are the reference semantics of the toolkit (Bello et al., "Attention Augmented Convolutional
Networks", ICCV 2019, arXiv:1904.09925, appendix A.3: ``rel_to_abs`` and ``relative_logits_1d``).
Layers call the same functions on query chunks, so what the tests check here is what runs.

Index convention: a relative table ``rel`` of length ``2L-1`` holds the embedding of offset
``j - i`` at row ``j - i + L - 1``. Offsets are always *key minus query*.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "skew",
    "rel_to_abs",
    "relative_offsets",
    "relative_table",
    "relative_logits_1d",
    "skewed_logits",
    "relative_logits_2d",
    "relative_logits_2d_rows",
    "relative_logits_2d_factors",
    "grid_one_hot",
]


def skew(x: Tensor, num_keys: int) -> Tensor:
    """Realign relative-indexed logits of a block of consecutive queries to absolute key positions.

    ``x[..., i, m]`` holds the logit of query ``i`` (``0 <= i < c``, the ``c`` queries being
    consecutive) for relative column ``m``, where column ``m`` of row ``i`` belongs to key
    ``j = m - (c - 1 - i)``. Returns ``out[..., i, j] = x[..., i, j + c - 1 - i]``.

    Implemented with the pad-flatten-reshape trick of the paper (no gather, no index tensor).

    Args:
        x: ``(..., c, num_keys + c - 1)``.
        num_keys: number of keys ``L``.

    Returns:
        ``(..., c, num_keys)``.
    """
    *lead, c, m = x.shape
    if m != num_keys + c - 1:
        raise ValueError(
            f"skew: expected last dim num_keys + c - 1 = {num_keys + c - 1}, got x of shape {tuple(x.shape)}"
        )
    # A zero column makes the row stride m + 1, so row i starts one column further left per row.
    x = F.pad(x, (0, 1)).reshape(*lead, c * (m + 1))  # (..., c*(m+1))
    x = x[..., c - 1 : c - 1 + c * m].reshape(*lead, c, m)  # (..., c, m)
    return x[..., :num_keys]  # (..., c, L)


def rel_to_abs(x: Tensor) -> Tensor:
    """Convert relative-indexed logits to absolute-indexed logits (Bello et al., appendix).

    Args:
        x: ``(..., L, 2L-1)`` with ``x[..., i, m]`` the logit of offset ``m - (L - 1)``.

    Returns:
        ``(..., L, L)`` with ``out[..., i, j] = x[..., i, j - i + L - 1]``.
    """
    length = x.shape[-2]
    if x.shape[-1] != 2 * length - 1:
        raise ValueError(f"rel_to_abs: expected (..., L, 2L-1), got {tuple(x.shape)}")
    return skew(x, length)


def relative_offsets(
    query_start: int,
    query_end: int,
    num_keys: int,
    max_distance: int | None,
    device: torch.device | None = None,
    key_start: int = 0,
) -> Tensor:
    """Table rows for the offsets seen by queries ``[query_start, query_end)`` over keys ``[key_start, num_keys)``.

    The offsets ``j - i`` run from ``key_start - (query_end - 1)`` to ``num_keys - 1 - query_start``;
    each is clipped to ``[-max_distance, max_distance]`` and shifted to a row index of a table with
    ``2 * max_distance + 1`` rows (``max_distance=None``: no clipping, table of ``2 * num_keys - 1``
    for keys from 0). Keys may lie outside the sequence (a window around a block of queries): only
    their offsets matter.

    Returns:
        ``(num_keys - key_start + c - 1,)`` long tensor, ordered by increasing offset (``c = query_end - query_start``).
    """
    offsets = torch.arange(key_start - (query_end - 1), num_keys - query_start, device=device)
    if max_distance is None:
        return offsets + (num_keys - 1)
    return offsets.clamp(-max_distance, max_distance) + max_distance


def relative_table(rel: Tensor, rows: Tensor) -> Tensor:
    """Select rows of a shared ``(R, d)`` or per-head ``(h, R, d)`` table: ``(n, d)`` or ``(h, n, d)``."""
    return rel.index_select(-2, rows)


def skewed_logits(q: Tensor, table: Tensor, num_keys: int) -> Tensor:
    """Skewed logits of consecutive queries against a relative table.

    Args:
        q: ``(B, h, *mid, c, d)``: ``c`` consecutive queries (any extra ``mid`` dims).
        table: ``(L + c - 1, d)`` shared or ``(h, L + c - 1, d)`` per head, by increasing offset.

    Returns:
        ``(B, h, *mid, c, L)``.
    """
    if table.dim() == 2:
        logits = torch.matmul(q, table.transpose(0, 1))  # (B, h, *mid, c, L + c - 1)
    elif table.dim() == 3:
        if table.shape[0] != q.shape[1]:
            raise ValueError(f"per-head table has {table.shape[0]} heads, queries have {q.shape[1]}")
        heads, rows, dim = table.shape
        table_t = table.transpose(1, 2).reshape(heads, *([1] * (q.dim() - 4)), dim, rows)
        logits = torch.matmul(q, table_t)  # (B, h, *mid, c, L + c - 1)
    else:
        raise ValueError(f"relative table must be (R, d) or (h, R, d), got {tuple(table.shape)}")
    return skew(logits, num_keys)  # (B, h, *mid, c, L)


def _check_table(rel: Tensor, rows: int, name: str) -> None:
    if rel.dim() not in (2, 3) or rel.shape[-2] != rows:
        raise ValueError(f"{name} must be ({rows}, d) or (h, {rows}, d), got {tuple(rel.shape)}")


def relative_logits_1d(q: Tensor, rel: Tensor) -> Tensor:
    """Relative logits of a 1D sequence.

    Args:
        q: ``(B, h, L, d)`` queries.
        rel: ``(2L-1, d)`` shared by heads, or ``(h, 2L-1, d)`` per head; row ``j - i + L - 1``
            embeds offset ``j - i``.

    Returns:
        ``(B, h, L, L)`` with ``out[b, h, i, j] = q[b, h, i] . rel[(h,) j - i + L - 1]``.
    """
    length = q.shape[-2]
    _check_table(rel, 2 * length - 1, "rel")
    return skewed_logits(q, rel, length)


def relative_logits_2d(q: Tensor, rel_h: Tensor, rel_w: Tensor, height: int, width: int) -> Tensor:
    """Relative logits of a 2D grid, the sum of a height and a width term (Bello's ``r^H + r^W``).

    Args:
        q: ``(B, h, H*W, d)`` queries in row-major ``(y, x)`` order.
        rel_h: ``(2H-1, d)`` or ``(h, 2H-1, d)``; row ``dy + H - 1`` embeds ``dy = y_j - y_i``.
        rel_w: ``(2W-1, d)`` or ``(h, 2W-1, d)``; row ``dx + W - 1`` embeds ``dx = x_j - x_i``.
        height, width: grid size ``H, W``.

    Returns:
        ``(B, h, H*W, H*W)`` with
        ``out[b, h, i, j] = q_i . rel_h[y_j - y_i + H - 1] + q_i . rel_w[x_j - x_i + W - 1]``.
    """
    if q.shape[-2] != height * width:
        raise ValueError(f"q has {q.shape[-2]} tokens, expected height*width = {height * width}")
    _check_table(rel_h, 2 * height - 1, "rel_h")
    _check_table(rel_w, 2 * width - 1, "rel_w")
    return relative_logits_2d_rows(q, rel_h, rel_w, height, width, 0, None)


def relative_logits_2d_factors(
    q: Tensor,
    rel_h: Tensor,
    rel_w: Tensor,
    height: int,
    width: int,
    row_start: int,
    max_distance: int | None,
) -> tuple[Tensor, Tensor]:
    """The two factors of the 2D relative logits of the queries of image rows ``[row_start, row_start + c_y)``.

    Bello's logits only depend on the key's row through the height term and on its column through
    the width term: ``logits[i, j] = qh[i, y_j] + qw[i, x_j]`` with
    ``qh[i, y] = q_i . rel_h[clip(y - y_i)]`` and ``qw[i, x] = q_i . rel_w[clip(x - x_i)]``.

    Args:
        q: ``(B, h, c_y*W, d)`` queries of those rows, row-major.
        rel_h, rel_w: tables with ``2*max_distance+1`` rows (or ``2H-1`` / ``2W-1`` when
            ``max_distance`` is None); offsets beyond ``max_distance`` are clipped.

    Returns:
        ``qh (B, h, c_y*W, H)`` and ``qw (B, h, c_y*W, W)``.
    """
    batch, heads, tokens, dim = q.shape
    if tokens % width:
        raise ValueError(f"{tokens} query tokens are not whole rows of width {width}")
    rows = tokens // width
    q = q.reshape(batch, heads, rows, width, dim)  # (B, h, cy, W, d)
    # x-term: each query row against the W key columns of any row, offsets x_j - x_i.
    table_w = relative_table(rel_w, relative_offsets(0, width, width, max_distance, q.device))
    logits_w = skewed_logits(q, table_w, width)  # (B, h, cy, W_i, W_j)
    # y-term: query rows [row_start, row_start + cy) against all H key rows, offsets y_j - y_i.
    table_h = relative_table(rel_h, relative_offsets(row_start, row_start + rows, height, max_distance, q.device))
    logits_h = skewed_logits(q.transpose(2, 3), table_h, height)  # (B, h, W_i, cy, H_j)
    logits_h = logits_h.transpose(2, 3)  # (B, h, cy, W_i, H_j)
    return logits_h.reshape(batch, heads, tokens, height), logits_w.reshape(batch, heads, tokens, width)


def grid_one_hot(height: int, width: int, dtype: torch.dtype | None = None, device: torch.device | None = None) -> Tensor:
    """Row and column indicators of the ``H*W`` pixels of a grid, the keys' half of the factorized 2D logits.

    ``[qh_i, qw_i] . grid_one_hot[j] = qh[i, y_j] + qw[i, x_j]`` (see :func:`relative_logits_2d_factors`).

    Returns:
        ``(H*W, H + W)``, row-major pixels: ones at column ``y_j`` and at column ``H + x_j``.
    """
    rows = torch.eye(height, dtype=dtype, device=device).repeat_interleave(width, dim=0)  # (H*W, H)
    cols = torch.eye(width, dtype=dtype, device=device).repeat(height, 1)  # (H*W, W)
    return torch.cat([rows, cols], dim=1)


def relative_logits_2d_rows(
    q: Tensor,
    rel_h: Tensor,
    rel_w: Tensor,
    height: int,
    width: int,
    row_start: int,
    max_distance: int | None,
) -> Tensor:
    """2D relative logits for the queries of image rows ``[row_start, row_start + c_y)``, the
    broadcast sum of the factors of :func:`relative_logits_2d_factors` (same arguments).

    Returns:
        ``(B, h, c_y*W, H*W)``.
    """
    logits_h, logits_w = relative_logits_2d_factors(q, rel_h, rel_w, height, width, row_start, max_distance)
    logits = logits_h.unsqueeze(-1) + logits_w.unsqueeze(-2)  # (B, h, c_y*W, H_j, W_j)
    return logits.flatten(-2)
