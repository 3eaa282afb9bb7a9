"""The kNN/FPS backends: the pure-torch path and PyG's ``torch_cluster`` give the same indices.

The equality tests run against the real ``torch_cluster`` where it is installed (the ``cluster``
extra, built from its sdist), and elsewhere (CI) against ``fake_torch_cluster``, a brute-force
stand-in with its calling conventions and result layout: the code that maps those results back to
dense indices is tested everywhere; the real library's own kernels only where it is installed.
"""

from __future__ import annotations

import sys

import pytest
import torch

from aug_attn.geometry import neighbors
from aug_attn.geometry.neighbors import (
    ball_query,
    farthest_point_sample,
    interpolate,
    knn,
    neighbor_backend,
    resolved_neighbor_backend,
    set_neighbor_backend,
)
from aug_attn.optional import MissingExtraError
import fake_torch_cluster

HAVE_CLUSTER = not isinstance(neighbors._torch_cluster(), MissingExtraError)  # the library's own import of it


@pytest.fixture
def cluster(monkeypatch):
    """``torch_cluster`` for the backend: the real one where installed, else the stand-in."""
    if not HAVE_CLUSTER:
        monkeypatch.setitem(sys.modules, "torch_cluster", fake_torch_cluster)
    neighbors._torch_cluster.cache_clear()
    yield
    neighbors._torch_cluster.cache_clear()


needs_cluster = pytest.mark.usefixtures("cluster")


@pytest.fixture
def blocked_cluster(monkeypatch):
    """torch_cluster made unimportable, with the backend's import cache cleared around the test."""
    monkeypatch.setitem(sys.modules, "torch_cluster", None)
    neighbors._torch_cluster.cache_clear()
    yield
    neighbors._torch_cluster.cache_clear()


def test_unknown_backend_names_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="the neighbour backend must be one of auto, torch, torch_cluster, got 'faiss'"):
        set_neighbor_backend("faiss")
    monkeypatch.setattr(neighbors._BACKEND, "_mode", None)
    monkeypatch.setenv("AUG_ATTN_NEIGHBORS", "kdtree")
    with pytest.raises(ValueError, match="AUG_ATTN_NEIGHBORS must be one of"):
        knn(torch.randn(1, 4, 3), torch.randn(1, 5, 3), 2)


def test_without_torch_cluster_auto_runs_torch_and_an_explicit_choice_names_the_extra(blocked_cluster):
    pos = torch.randn(1, 8, 3)
    with neighbor_backend("auto"):
        assert resolved_neighbor_backend(pos) == "torch"
        assert knn(pos, pos, 3)[0].shape == (1, 8, 3)
    with neighbor_backend("torch_cluster"), pytest.raises(MissingExtraError, match=r'pip install -e "\.\[cluster\]"'):
        farthest_point_sample(pos, 4)


def test_the_environment_variable_picks_the_backend(monkeypatch):
    monkeypatch.setattr(neighbors._BACKEND, "_mode", None)
    monkeypatch.setenv("AUG_ATTN_NEIGHBORS", "torch")
    assert resolved_neighbor_backend(torch.randn(1, 4, 3)) == "torch"
    with neighbor_backend("auto"):
        assert neighbors._BACKEND.current() == "auto"
    assert neighbors._BACKEND.current() == "torch"  # the context restores the previous choice


def clouds(dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three clouds of 300 slots: full, 200 valid points and 7 valid points (fewer than k and M)."""
    gen = torch.Generator().manual_seed(seed)
    pos = torch.randn(3, 300, 3, generator=gen, dtype=dtype)
    mask = torch.ones(3, 300, dtype=torch.bool)
    mask[1, 200:] = False
    mask[2, 7:] = False
    pos = pos.masked_fill(~mask[..., None], 1e6)  # padding far away: it must never be picked
    return pos, mask


def both(fn, *args, **kwargs):
    with neighbor_backend("torch"):
        expected = fn(*args, **kwargs)
    with neighbor_backend("torch_cluster"):
        assert resolved_neighbor_backend(args[0]) == "torch_cluster"
        got = fn(*args, **kwargs)
    return expected, got


@needs_cluster
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 16, 40])
def test_knn_gives_the_same_neighbours(dtype, k):
    pos, mask = clouds(dtype)
    query = torch.randn(3, 50, 3, generator=torch.Generator().manual_seed(1), dtype=dtype)
    (idx, dist), (idx_c, dist_c) = both(knn, query, pos, k, mask)
    assert torch.equal(idx_c, idx)
    torch.testing.assert_close(dist_c, dist, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=0)
    assert idx[2].max() < 7 and torch.equal(idx_c[2, :, 7:], idx_c[2, :, :1].expand(-1, k - 7) if k > 7 else idx_c[2, :, 7:])


@needs_cluster
def test_ball_query_and_interpolation_follow():
    pos, mask = clouds(torch.float64)
    (idx, dist), (idx_c, dist_c) = both(ball_query, pos, pos, 0.4, 12, mask)
    assert torch.equal(idx_c, idx)
    features = torch.randn(3, 300, 5, dtype=torch.float64)
    target = torch.randn(3, 40, 3, dtype=torch.float64)
    expected, got = both(interpolate, target, pos, features, 3, mask)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)


@needs_cluster
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("num_samples", [1, 64, 250])
def test_fps_gives_the_same_samples(dtype, num_samples):
    pos, mask = clouds(dtype)
    expected, got = both(farthest_point_sample, pos, num_samples, mask)
    assert torch.equal(got, expected)
    assert mask.gather(1, got).all()  # never padding, even past the 7 points of the last cloud


@needs_cluster
def test_fps_ties_on_duplicate_points_agree():
    base = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    pos = base.repeat(1, 4, 1)  # 20 points, 5 distinct: after 5 samples every distance is zero
    expected, got = both(farthest_point_sample, pos, 9)
    assert torch.equal(got, expected)
    assert torch.equal(got[:, 5:], got[:, :1].expand(-1, 4))  # the start point repeats


@needs_cluster
def test_a_point_model_gives_the_same_logits():
    from aug_attn.models import RISurConvClassifier

    torch.manual_seed(0)
    model = RISurConvClassifier(
        4, samples=(64, 32), neighbors=(8, 16), channels=(16, 32), global_channels=32, transformer_layers=1,
        transformer_heads=2, head_channels=(16,), num_heads=2, feature_channels=(8, 16), global_context=True,
    ).double().eval()  # fmt: skip
    pos = torch.randn(2, 256, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)  # normals estimated
    expected, got = both(model, pos)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_compiling_runs_the_torch_path(monkeypatch):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    with neighbor_backend("torch_cluster"):  # even when asked, and whether or not it is installed
        assert resolved_neighbor_backend(torch.randn(1, 4, 3)) == "torch"


@pytest.mark.parametrize("backend", ["torch", "torch_cluster"])
def test_equal_distances_come_in_index_order(backend, request):
    """The integer lattice around the origin, shuffled: shells of exactly equal distances (6 at 1, 12
    at sqrt 2, 8 at sqrt 3, ...), which ``topk`` alone returns out of index order."""
    if backend == "torch_cluster":
        request.getfixturevalue("cluster")
    lattice = torch.stack(torch.meshgrid(*[torch.arange(-4, 5.0)] * 3, indexing="ij"), -1).reshape(-1, 3).double()
    pos = lattice[torch.randperm(len(lattice), generator=torch.Generator().manual_seed(0))][None]  # (1, 729, 3)
    with neighbor_backend(backend):
        idx, dist = knn(torch.zeros(1, 1, 3, dtype=torch.float64), pos, 40)
    idx, dist = idx[0, 0], dist[0, 0]
    torch.testing.assert_close(dist, pos[0, idx].norm(dim=-1), rtol=1e-12, atol=0)
    assert (dist[1:] >= dist[:-1]).all() and (dist[1:] == dist[:-1]).sum() > 20  # many ties
    tied = dist[1:] == dist[:-1]
    assert (idx[1:][tied] > idx[:-1][tied]).all()
