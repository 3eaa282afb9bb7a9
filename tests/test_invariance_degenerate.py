"""Exact rotation invariance where the geometry is degenerate (planar clouds, flat meshes, lines,
duplicate points), the canonical global frame, and the global-context RISurConv built on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aug_attn.geometry import NUM_GLOBAL_FEATURES, estimate_normals, frame_features, principal_frame
from aug_attn.models import risurconv
from aug_attn_tasks.points.io import sample_surface
from test_surface import blobs, random_rotation, tiny_classifier, tiny_segmenter

SHIFT = torch.tensor([0.3, -2.0, 5.0], dtype=torch.float64)


def flat_mesh(seed: int) -> torch.Tensor:
    """A flat quadrilateral mesh (two triangles), sampled by area as a mesh file would be: (1, 256, 3)."""
    vertices = np.array([[0.0, 0, 0], [2, 0, 0], [2, 1, 0], [0, 1.5, 0]])
    pos, _ = sample_surface(vertices, np.array([[0, 1, 2], [0, 2, 3]]), 256, seed)
    return torch.from_numpy(pos)[None]


def degenerate(kind: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    rand = lambda *shape: torch.rand(*shape, generator=gen, dtype=torch.float64)  # noqa: E731
    if kind == "plane":
        return torch.cat([rand(1, 200, 2), torch.zeros(1, 200, 1, dtype=torch.float64)], -1) @ random_rotation(gen).T
    if kind == "nearly_planar":
        return torch.cat([rand(1, 200, 2), 1e-6 * (rand(1, 200, 1) - 0.5)], -1)
    if kind == "flat_mesh":
        return flat_mesh(0)
    if kind == "triangle":
        vertices = np.array([[0.0, 0, 0], [2, 0, 0], [0.3, 1, 0]])
        return torch.from_numpy(sample_surface(vertices, np.array([[0, 1, 2]]), 200, 1)[0])[None]
    if kind == "line":
        return rand(1, 100, 1) * torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    if kind == "duplicates":
        return torch.randn(1, 20, 3, generator=gen, dtype=torch.float64).repeat(1, 5, 1)
    raise ValueError(kind)


def relative_change(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())  # relative to the logits' scale


@pytest.mark.parametrize("global_context", [False, True])
@pytest.mark.parametrize("kind", ["plane", "nearly_planar", "flat_mesh", "triangle", "line", "duplicates"])
def test_logits_are_invariant_on_degenerate_clouds_with_estimated_normals(kind: str, global_context: bool) -> None:
    torch.manual_seed(0)
    model = tiny_classifier(global_context=global_context).double().eval()
    pos = degenerate(kind)
    with torch.no_grad():
        logits = model(pos)  # no normals: estimated, where the sign rules have no centroid offset to use
        for seed in range(2):
            rotation = random_rotation(torch.Generator().manual_seed(100 + seed))
            assert relative_change(model(pos @ rotation.T + SHIFT), logits) < 1e-9, (kind, seed)


def test_planar_normals_are_equivariant_and_consistent() -> None:
    pos = flat_mesh(1)
    normal = estimate_normals(pos)
    assert torch.allclose(normal, normal[:, :1].expand_as(normal))  # one side of the plane for every point
    for seed in range(3):
        rotation = random_rotation(torch.Generator().manual_seed(seed))
        torch.testing.assert_close(estimate_normals(pos @ rotation.T + SHIFT), normal @ rotation.T, rtol=0, atol=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_normals_are_equivariant_with_fewer_points_than_k_and_many_copies(weighted: bool) -> None:
    """12 points for k = 16 (the last neighbour slots repeat the point itself), and 17 distinct
    points repeated up to 24 times, as a short file padded to ``num_points`` is: neighbourhoods
    of one repeated point have no spread at all."""
    gen = torch.Generator().manual_seed(5)
    sheet = torch.rand(1, 12, 2, generator=gen, dtype=torch.float64)
    few = torch.cat([sheet, 0.1 * sheet[..., :1].square()], -1)  # a gently curved sheet
    copies = torch.randn(1, 17, 3, generator=gen, dtype=torch.float64)[:, torch.arange(256) % 17]
    for pos in (few, copies):
        normal = estimate_normals(pos, k=16, weighted=weighted)
        assert torch.isfinite(normal).all()
        for seed in range(3):
            rotation = random_rotation(torch.Generator().manual_seed(seed))
            moved = estimate_normals(pos @ rotation.T + SHIFT, k=16, weighted=weighted)
            torch.testing.assert_close(moved, normal @ rotation.T, rtol=0, atol=1e-9)
    # the weighted normals of the curved sheet are its normals, not a zero covariance's basis vector
    assert estimate_normals(few, k=16, weighted=True)[..., 2].abs().min() > 0.9


def test_weighted_normals_are_equivariant_and_better_across_a_thin_gap() -> None:
    """Two parallel sheets 0.2 apart (a thin plate), points unevenly spaced: with k = 32 plain PCA
    mixes both sheets where they are sparse, distance weights keep each point on its own sheet."""
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(2, 300, 2, generator=gen, dtype=torch.float64) ** 2  # denser towards one corner
    sheets = torch.cat([torch.cat([xy[0], torch.zeros(300, 1, dtype=torch.float64)], 1),
                        torch.cat([xy[1], torch.full((300, 1), 0.2, dtype=torch.float64)], 1)])[None]  # fmt: skip
    rotation = random_rotation(torch.Generator().manual_seed(5))
    weighted = estimate_normals(sheets, k=32, weighted=True)
    moved = estimate_normals(sheets @ rotation.T, k=32, weighted=True)
    torch.testing.assert_close(moved, weighted @ rotation.T, rtol=0, atol=1e-9)
    error = {w: (1 - estimate_normals(sheets, k=32, weighted=w)[..., 2].abs()).mean() for w in (False, True)}
    assert error[True] < 0.5 * error[False]


def test_principal_frame_is_equivariant_proper_and_fades_out_when_degenerate() -> None:
    gen = torch.Generator().manual_seed(1)
    pos = torch.randn(3, 300, 3, generator=gen, dtype=torch.float64) * torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    pos = pos + 0.8 * pos.square() * torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)  # skewed: signs are defined
    frame = principal_frame(pos)
    torch.testing.assert_close(torch.linalg.det(frame.axes), torch.ones(3, dtype=torch.float64))
    assert (frame.confidence > 0.3).all()
    rotation = random_rotation(torch.Generator().manual_seed(2))
    moved = principal_frame(pos @ rotation.T + SHIFT)
    torch.testing.assert_close(moved.axes, frame.axes @ rotation.T)
    torch.testing.assert_close(moved.centre, frame.centre @ rotation.T + SHIFT)
    features = frame_features(pos, frame)
    assert features.shape == (3, 300, NUM_GLOBAL_FEATURES)
    torch.testing.assert_close(frame_features(pos @ rotation.T + SHIFT, moved), features, rtol=0, atol=1e-12)
    torch.testing.assert_close(frame_features(2.5 * pos, principal_frame(2.5 * pos)), features)  # scale-free
    # the signed coordinates are where the information is: mirroring a skewed cloud changes them
    assert (frame_features(-pos, principal_frame(-pos))[..., 1:4] - features[..., 1:4]).abs().max() > 0.1
    # a line, a point and an isotropic box have no frame: its coordinates fade out, the radius stays
    line = torch.linspace(0, 1, 50, dtype=torch.float64)[None, :, None] * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    box = torch.tensor([[x, y, z] for x in (-1.0, 1) for y in (-1.0, 1) for z in (-1.0, 1)], dtype=torch.float64)[None]
    for cloud in (line, torch.ones(1, 4, 3, dtype=torch.float64), box):
        assert principal_frame(cloud).confidence.item() < 1e-6
        assert torch.isfinite(frame_features(cloud, principal_frame(cloud))).all()


def test_global_context_is_used_invariant_and_works_on_pyg_batches_and_segmenters(monkeypatch) -> None:
    torch.manual_seed(0)
    pos, normal = blobs(2, 48)
    pos = pos + 0.5 * pos.square()  # skewed: a well-defined frame
    with_context = tiny_classifier(global_context=True).double().eval()
    logits = with_context(pos, normal)
    rotation = random_rotation(torch.Generator().manual_seed(9))
    torch.testing.assert_close(with_context(pos @ rotation.T + SHIFT, normal @ rotation.T), logits, rtol=0, atol=1e-9)
    # the context reaches the logits: the same model with the frame features zeroed answers otherwise
    with monkeypatch.context() as patch:
        patch.setattr(risurconv, "frame_features", lambda *args, **kwargs: torch.zeros_like(frame_features(*args, **kwargs)))
        assert (with_context(pos, normal) - logits).abs().max() > 1e-6
    segmenter = tiny_segmenter(num_categories=2, global_context=True).double().eval()
    category = torch.tensor([0, 1])
    parts = segmenter(pos, normal, category=category)
    torch.testing.assert_close(segmenter(pos @ rotation.T, normal @ rotation.T, category=category), parts, rtol=0, atol=1e-9)
    from torch_geometric.data import Batch, Data

    data = Batch.from_data_list([Data(pos=pos[0, :40], normal=normal[0, :40]), Data(pos=pos[1], normal=normal[1])])
    ragged = with_context(data.pos, data.normal, data.batch)
    torch.testing.assert_close(ragged[0], with_context(pos[:1, :40], normal[:1, :40])[0])
    torch.testing.assert_close(ragged[1], logits[1])
