"""Point-cloud geometry: sampling and neighbour search against brute force, normals, invariant features."""

import math

import numpy as np
import pytest
import torch

from aug_attn.geometry import (
    NUM_SURFACE_FEATURES,
    ball_query,
    build_neighborhoods,
    cyclic_order,
    estimate_normals,
    farthest_point_sample,
    gather,
    interpolate,
    knn,
    safe_normalize,
    surface_features,
    to_dense,
)


def random_rotation(generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """Uniform proper rotation (det +1) from the QR of a Gaussian matrix."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return (q * torch.sign(torch.det(q))).to(dtype)


def cloud(batch=2, points=64, dtype=torch.float64, seed=0) -> torch.Tensor:
    return torch.randn(batch, points, 3, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def fps_reference(points: np.ndarray, num: int) -> list[int]:
    """Textbook FPS on one cloud, starting at the point farthest from the centroid."""
    chosen = [int(np.argmax(((points - points.mean(0)) ** 2).sum(1)))]
    dist = np.full(len(points), np.inf)
    for _ in range(num - 1):
        dist = np.minimum(dist, ((points - points[chosen[-1]]) ** 2).sum(1))
        chosen.append(int(np.argmax(dist)))
    return chosen


def test_fps_matches_reference_and_is_invariant():
    pos = cloud(3, 100)
    idx = farthest_point_sample(pos, 20)
    for b in range(3):
        assert idx[b].tolist() == fps_reference(pos[b].numpy(), 20)
    rot = random_rotation(torch.Generator().manual_seed(1))
    assert torch.equal(farthest_point_sample(pos @ rot.T + 5.0, 20), idx)


def test_fps_respects_mask_and_repeats_when_short():
    pos = cloud(2, 10)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 4:] = False
    idx = farthest_point_sample(pos, 8, mask)
    assert idx[1].max() < 4 and set(idx[1, :4].tolist()) == {0, 1, 2, 3}
    assert idx[0].unique().numel() == 8
    reference = fps_reference(pos[1, :4].numpy(), 4)
    assert idx[1].tolist() == reference + reference[:1] * 4  # all taken: the start point repeats


def knn_reference(query, pos):
    dist = ((query[:, :, None] - pos[:, None]) ** 2).sum(-1).sqrt()
    return dist.sort(dim=-1, stable=True)


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_knn_matches_bruteforce_for_any_chunk(chunk):
    pos, query = cloud(2, 80), cloud(2, 30, seed=1)
    idx, dist = knn(query, pos, 6, chunk_size=chunk)
    ref_dist, ref_idx = knn_reference(query, pos)
    assert torch.equal(idx, ref_idx[..., :6])
    torch.testing.assert_close(dist, ref_dist[..., :6], rtol=0, atol=1e-12)
    full_idx, full_dist = knn(query, pos, 6, chunk_size=10_000)
    assert torch.equal(idx, full_idx) and torch.equal(dist, full_dist)


def test_knn_mask_and_k_larger_than_cloud_repeat_nearest():
    pos = cloud(2, 6)
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    idx, dist = knn(pos, pos, 9, mask)
    assert idx.shape == (2, 6, 9) and torch.isfinite(dist).all()
    assert idx[1].max() < 3
    assert torch.equal(idx[0, :, 6:], idx[0, :, :1].expand(-1, 3))  # N < K: the nearest repeats
    assert torch.equal(idx[1, :, 3:], idx[1, :, :1].expand(-1, 6))
    assert torch.equal(idx[0, :, 0], torch.arange(6)) and torch.equal(idx[1, :3, 0], torch.arange(3))  # itself


def test_ball_query_matches_bruteforce():
    pos = cloud(2, 60)
    radius, k = 0.9, 5
    idx, dist = ball_query(pos, pos, radius, k, chunk_size=13)
    ref_dist, ref_idx = knn_reference(pos, pos)
    inside = ref_dist[..., :k] <= radius
    expected = torch.where(inside, ref_idx[..., :k], ref_idx[..., :1])
    assert torch.equal(idx, expected)
    assert (dist <= radius).all()
    assert (~inside).any() and inside[..., 1:].any()  # the test covers both cases


def test_to_dense_roundtrip_and_gather():
    batch = torch.tensor([0, 0, 0, 1, 2, 2])
    values = torch.arange(12.0).reshape(6, 2)
    (dense, none), mask = to_dense(batch, values, None)
    assert none is None and dense.shape == (3, 3, 2) and mask.sum() == 6
    assert torch.equal(dense[mask], values)
    assert torch.equal(dense[1, 1:], torch.zeros(2, 2))
    idx = torch.tensor([[[2, 0]], [[0, 0]], [[1, 0]]])
    assert torch.equal(gather(dense, idx)[0, 0], dense[0, [2, 0]])
    with pytest.raises(ValueError, match="sorted"):
        to_dense(torch.tensor([1, 0]), values[:2])


def test_to_dense_checks_the_batch_order_when_compiled_too():
    """Under torch.compile the order check cannot branch on values (a graph break, and no
    ``fullgraph``): it becomes an assertion in the graph, so an unsorted batch still fails when run."""
    values = torch.arange(8.0).reshape(4, 2)
    compiled = torch.compile(to_dense, backend="eager")
    (dense,), mask = compiled(torch.tensor([0, 0, 1, 1]), values)
    assert torch.equal(dense[mask], values)
    with pytest.raises(RuntimeError, match="sorted"):
        compiled(torch.tensor([0, 1, 1, 0]), values)


def test_interpolate_reproduces_sources_and_constants():
    source = cloud(2, 20)
    features = torch.randn(2, 20, 4, dtype=torch.float64)
    torch.testing.assert_close(interpolate(source, source, features, eps=1e-300), features)
    constant = torch.ones(2, 20, 1, dtype=torch.float64)
    torch.testing.assert_close(interpolate(cloud(2, 50, seed=3), source, constant), torch.ones(2, 50, 1, dtype=torch.float64))


def test_interpolate_weights_by_inverse_squared_distance():
    """PointNet++'s feature propagation (p = 2): a target at distances 1, 2, 4 of three sources."""
    source = torch.tensor([[[1.0, 0, 0], [-2.0, 0, 0], [0, 4.0, 0]]], dtype=torch.float64)
    features = torch.eye(3, dtype=torch.float64)[None]
    weights = torch.tensor([1.0, 1 / 4, 1 / 16], dtype=torch.float64)
    target = torch.zeros(1, 1, 3, dtype=torch.float64)
    torch.testing.assert_close(interpolate(target, source, features)[0, 0], weights / weights.sum())
    linear = torch.tensor([1.0, 1 / 2, 1 / 4], dtype=torch.float64)
    torch.testing.assert_close(interpolate(target, source, features, power=1)[0, 0], linear / linear.sum())


def test_normal_signs_of_a_ragged_batch_match_each_cloud_alone():
    """Padding sits at the origin: it must not widen an uncentred cloud's sign tolerance."""
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=generator, dtype=torch.float64) * 2 - 1
    flat = torch.cat([xy, 1e-7 * torch.randn(60, 1, generator=generator, dtype=torch.float64)], 1)
    flat = flat + torch.tensor([100.0, 0, 0], dtype=torch.float64)  # a near-flat patch far from the origin
    other = torch.randn(80, 3, generator=generator, dtype=torch.float64)
    batch = torch.cat([torch.zeros(60, dtype=torch.long), torch.ones(80, dtype=torch.long)])
    (dense,), mask = to_dense(batch, torch.cat([flat, other]))
    torch.testing.assert_close(estimate_normals(dense, mask=mask)[0, :60], estimate_normals(flat[None])[0])


def sphere(points=400, seed=0, dtype=torch.float64):
    return safe_normalize(cloud(1, points, dtype, seed))


def test_normals_on_sphere_point_outward():
    pos = sphere()
    normal = estimate_normals(pos, k=12)
    cosine = (normal * pos).sum(-1)
    assert cosine.min() > 0.95


def test_normals_are_rotation_equivariant():
    pos = cloud(2, 200) * torch.tensor([1.0, 0.5, 0.2], dtype=torch.float64)  # a flattened blob
    rot = random_rotation(torch.Generator().manual_seed(2))
    normal = estimate_normals(pos, k=10)
    torch.testing.assert_close(estimate_normals(pos @ rot.T + 1.0, k=10), normal @ rot.T, rtol=0, atol=1e-8)


def test_cyclic_order_is_counter_clockwise_from_longest():
    angles = torch.tensor([0.3, 2.0, -1.0, 4.0, 1.0], dtype=torch.float64)
    radii = torch.tensor([1.0, 1.0, 1.0, 1.0, 2.0], dtype=torch.float64)  # the longest: the reference
    rel = torch.stack([radii * angles.cos(), radii * angles.sin(), torch.zeros(5, dtype=torch.float64)], -1)
    rel = torch.cat([torch.zeros(1, 3, dtype=torch.float64), rel])  # the centre itself comes first
    order = cyclic_order(rel, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    # centre, then angles from the reference at 1.0 rad: 2.0, 4.0, -1.0 (+2 pi), 0.3 (+2 pi)
    assert order.tolist() == [0, 5, 2, 4, 3, 1]
    flipped = cyclic_order(rel, torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64))
    assert flipped.tolist() == [0, 5, 1, 3, 4, 2]  # the other normal sense reverses the cycle


def features_of(pos, normal, samples=12, k=8):
    return build_neighborhoods(pos, normal, samples, k)


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-8), (torch.float32, 2e-3)])
def test_surface_features_rotation_translation_invariant(dtype, atol):
    pos = sphere(300, dtype=dtype) * 0.8 + 0.05 * cloud(1, 300, dtype, seed=4)
    normal = estimate_normals(pos, k=10)
    hood = features_of(pos, normal)
    assert hood.features.shape == (1, 12, 8, NUM_SURFACE_FEATURES)
    for seed in range(3):
        rot = random_rotation(torch.Generator().manual_seed(seed), dtype)
        moved = features_of(pos @ rot.T + 2.0, normal @ rot.T)
        assert torch.equal(moved.idx, hood.idx)
        torch.testing.assert_close(moved.features, hood.features, rtol=0, atol=atol)


def test_surface_features_scale_and_sensitivity():
    pos = cloud(1, 80)
    normal = estimate_normals(pos, k=8)
    hood = features_of(pos, normal)
    scaled = features_of(3.0 * pos, normal)
    torch.testing.assert_close(scaled.features[..., 0], 3.0 * hood.features[..., 0])
    torch.testing.assert_close(scaled.features[..., 1:], hood.features[..., 1:])
    # Flipping normals (a wrong sign rule) must change the features: they really use the normals.
    assert (features_of(pos, -normal).features - hood.features).abs().max() > 0.5
    assert hood.features[..., 1:].abs().max() <= 1 + 1e-12  # every other feature is a cosine


@pytest.mark.parametrize(
    "kind", ["duplicates", "line", "plane", "fewer_than_k", "single_point"],
)
def test_degenerate_inputs_are_finite(kind):
    gen = torch.Generator().manual_seed(5)
    t = torch.rand(1, 30, 1, generator=gen, dtype=torch.float64)
    pos = {
        "duplicates": torch.randn(1, 5, 3, generator=gen, dtype=torch.float64).repeat(1, 6, 1),
        "line": t * torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64),
        "plane": torch.cat([torch.rand(1, 30, 2, generator=gen, dtype=torch.float64), torch.zeros(1, 30, 1, dtype=torch.float64)], -1),
        "fewer_than_k": torch.randn(1, 4, 3, generator=gen, dtype=torch.float64),
        "single_point": torch.ones(1, 1, 3, dtype=torch.float64),
    }[kind].requires_grad_(True)
    normal = estimate_normals(pos.detach(), k=8)
    assert torch.isfinite(normal).all()
    torch.testing.assert_close(normal.norm(dim=-1), torch.ones(normal.shape[:2], dtype=torch.float64))
    hood = features_of(pos, normal, samples=6, k=8)
    assert hood.features.shape == (1, 6, 8, NUM_SURFACE_FEATURES)
    assert torch.isfinite(hood.features).all()
    hood.features.sum().backward()
    assert torch.isfinite(pos.grad).all()


def test_surface_features_on_a_known_square():
    """Centre at the origin, normal +z, neighbours at the corners of a unit square's diamond."""
    rel = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [-1.0, 0, 0], [0, -1.0, 0]], dtype=torch.float64)
    normal = torch.tensor([0.0, 0, 1.0], dtype=torch.float64).expand(4, 3)
    f = surface_features(rel, normal, normal[0])
    expected = torch.tensor(
        [1.0, 0.0, math.sqrt(0.5), 0.0, math.sqrt(0.5), 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0],
        dtype=torch.float64,
    )
    torch.testing.assert_close(f, expected.expand(4, -1))
