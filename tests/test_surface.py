"""Surface encoder, RISurConv layer and the point networks: invariance, PyG inputs, batch independence."""

import pytest
import torch
from torch_geometric.data import Batch, Data

from aug_attn.attention import RelativeMultiheadAttention, relative_attention
from aug_attn.geometry import safe_normalize
from aug_attn.layers import RISurConv
from aug_attn.models.risurconv import RISurConvClassifier, RISurConvSegmenter
from aug_attn.positional import SurfacePositionEncoder


def random_rotation(generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """Uniform proper rotation (det +1) from the QR of a Gaussian matrix."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return (q * torch.sign(torch.det(q))).to(dtype)


def blobs(batch=3, points=48, dtype=torch.float64, seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy ellipsoid surfaces with their outward normals."""
    gen = torch.Generator().manual_seed(seed)
    axes = torch.tensor([1.0, 0.7, 0.4], dtype=dtype)
    unit = safe_normalize(torch.randn(batch, points, 3, generator=gen, dtype=dtype))
    return unit * axes, safe_normalize(unit / axes)


def tiny_classifier(transformer_layers=1, **kwargs) -> RISurConvClassifier:
    return RISurConvClassifier(
        5, samples=(24, 8), neighbors=(6, 8), channels=(16, 24), global_channels=16,
        transformer_layers=transformer_layers, transformer_heads=2, head_channels=(16,),
        num_heads=2, feature_channels=(8, 16), pair_hidden=8, **kwargs,
    )  # fmt: skip


def tiny_segmenter(**kwargs) -> RISurConvSegmenter:
    return RISurConvSegmenter(
        4, samples=(24, 8), neighbors=(6, 8), channels=(16, 24), decoder_channels=(16, 16),
        head_channels=16, num_heads=2, feature_channels=(8, 16), pair_hidden=8, **kwargs,
    )  # fmt: skip


def rotated(pos, normal, seed, shift=1.5):
    rot = random_rotation(torch.Generator().manual_seed(seed), pos.dtype)
    return pos @ rot.T + shift, normal @ rot.T


def test_encoder_logits_shape_invariance_and_blocks():
    pos, normal = blobs(2, 10)
    encoder = SurfacePositionEncoder(head_dim=4, num_heads=3).double()
    q = torch.randn(2, 3, 10, 4, dtype=torch.float64)
    logits = encoder(q, (pos, normal), 0, 10)
    assert logits.shape == (2, 3, 10, 10)
    torch.testing.assert_close(encoder(q, rotated(pos, normal, 0), 0, 10), logits, rtol=0, atol=1e-10)
    torch.testing.assert_close(encoder(q[:, :, 3:7], (pos, normal), 3, 7), logits[:, :, 3:7])
    assert logits.std(-1).min() > 0  # the logits depend on the geometry, not only on q
    # Chunked through the core (query blocks of 1 row) gives the unchunked attention.
    k, v = torch.randn(2, 2, 3, 10, 4, dtype=torch.float64)
    full = relative_attention(q, k, v, encoder, (pos, normal))
    blocked = relative_attention(q, k, v, encoder, (pos, normal), max_logits_elements=1)
    torch.testing.assert_close(blocked, full)


def test_layer_attention_branch_is_the_shared_core():
    layer = RISurConv(0, 16, 8, 6, feature_channels=(8, 16), num_heads=2)
    assert type(layer.attn) is RelativeMultiheadAttention and isinstance(layer.attn.encoder, SurfacePositionEncoder)
    assert layer.dv == 4 and layer.dk == 8


@pytest.mark.parametrize("given_normals", [True, False])
@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-8), (torch.float32, 1e-3)])
def test_layer_is_rotation_and_translation_invariant(given_normals, dtype, atol):
    pos, normal = blobs(2, 40, dtype)
    x = torch.randn(2, 40, 5, generator=torch.Generator().manual_seed(3), dtype=dtype)
    layer = RISurConv(5, 16, 12, 8, feature_channels=(8, 16), num_heads=2, dtype=dtype).eval()
    out, centres, centre_normals, none = layer(x, pos, normal if given_normals else None)
    assert out.shape == (2, 12, 16) and centres.shape == (2, 12, 3) and none is None
    for seed in range(2):
        pos_r, normal_r = rotated(pos, normal, seed)
        out_r, centres_r, _, _ = layer(x, pos_r, normal_r if given_normals else None)
        torch.testing.assert_close(out_r, out, rtol=0, atol=atol)
        rot = random_rotation(torch.Generator().manual_seed(seed), dtype)
        torch.testing.assert_close(centres_r, centres @ rot.T + 1.5)  # centres move with the cloud


def test_layer_dense_equals_pyg_batch_with_ragged_sizes():
    layer = RISurConv(3, 16, 10, 8, feature_channels=(8, 16), num_heads=2).double().eval()
    clouds = [blobs(1, n, seed=n) for n in (30, 17, 6)]  # the last has fewer points than K and M
    feats = [torch.randn(pos.shape[1], 3, dtype=torch.float64) for pos, _ in clouds]
    data = Batch.from_data_list([Data(pos=p[0], normal=n[0], x=f) for (p, n), f in zip(clouds, feats)])
    out, pos_out, normal_out, batch_out = layer(data.x, data.pos, data.normal, data.batch)
    assert out.shape == (30, 16) and torch.equal(batch_out, torch.arange(3).repeat_interleave(10))
    for b, ((pos, normal), f) in enumerate(zip(clouds, feats)):
        dense, dense_pos, _, _ = layer(f[None], pos, normal)
        torch.testing.assert_close(out[batch_out == b], dense[0])
        torch.testing.assert_close(pos_out[batch_out == b], dense_pos[0])


def test_gradients_reach_every_parameter():
    pos, normal = blobs(2, 40)
    models = [tiny_classifier(transformer_layers=1).double(), tiny_segmenter(num_categories=3).double()]
    losses = [models[0](pos, normal).square().sum(), models[1](pos, normal, category=torch.tensor([0, 2])).square().sum()]
    for model, loss in zip(models, losses):
        loss.backward()
        for name, param in model.named_parameters():
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
            assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-8), (torch.float32, 1e-3)])
def test_classifier_and_segmenter_are_rotation_invariant(dtype, atol):
    pos, normal = blobs(2, 48, dtype)
    classifier = tiny_classifier(dtype=dtype).eval()
    segmenter = tiny_segmenter(num_categories=3, dtype=dtype).eval()
    category = torch.tensor([1, 2])
    logits, parts = classifier(pos, normal), segmenter(pos, normal, category=category)
    assert logits.shape == (2, 5) and parts.shape == (2, 48, 4)
    for seed in range(2):
        pos_r, normal_r = rotated(pos, normal, seed + 10)
        torch.testing.assert_close(classifier(pos_r, normal_r), logits, rtol=0, atol=atol)
        torch.testing.assert_close(segmenter(pos_r, normal_r, category=category), parts, rtol=0, atol=atol)
    # Estimated normals (no normals given) keep the invariance.
    torch.testing.assert_close(classifier(pos_r), classifier(pos), rtol=0, atol=atol)


def test_models_see_a_non_invariant_change():
    """The invariance tests could pass with constant outputs; a shape change must move the logits."""
    pos, normal = blobs(1, 48)
    classifier = tiny_classifier().double().eval()
    squashed = pos * torch.tensor([1.0, 1.0, 0.3], dtype=torch.float64)
    assert (classifier(squashed, normal) - classifier(pos, normal)).abs().max() > 1e-4


def test_batch_independence_and_pyg_batches():
    pos, normal = blobs(3, 40)
    classifier = tiny_classifier().double().eval()
    segmenter = tiny_segmenter(num_categories=3).double().eval()
    category = torch.tensor([0, 1, 2])
    logits, parts = classifier(pos, normal), segmenter(pos, normal, category=category)
    for b in range(3):
        torch.testing.assert_close(classifier(pos[b : b + 1], normal[b : b + 1]), logits[b : b + 1])
        torch.testing.assert_close(segmenter(pos[b : b + 1], normal[b : b + 1], category=category[b : b + 1]), parts[b : b + 1])
    # Shuffling the other clouds does not change a cloud's logits.
    perm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(classifier(pos[perm], normal[perm]), logits[perm])
    # A PyG batch of clouds of different sizes equals each cloud on its own.
    sizes = (40, 25, 9)
    data = Batch.from_data_list([Data(pos=pos[b, :n], normal=normal[b, :n]) for b, n in enumerate(sizes)])
    ragged_logits = classifier(data.pos, data.normal, data.batch)
    ragged_parts = segmenter(data.pos, data.normal, data.batch, category=category)
    assert ragged_parts.shape == (sum(sizes), 4)
    for b, n in enumerate(sizes):
        torch.testing.assert_close(ragged_logits[b], classifier(pos[b : b + 1, :n], normal[b : b + 1, :n])[0])
        torch.testing.assert_close(
            ragged_parts[data.batch == b], segmenter(pos[b : b + 1, :n], normal[b : b + 1, :n], category=category[b : b + 1])[0]
        )


@pytest.mark.parametrize("kind", ["duplicates", "line", "plane", "fewer_than_k"])
def test_models_give_finite_outputs_on_degenerate_clouds(kind):
    gen = torch.Generator().manual_seed(7)
    t = torch.rand(2, 30, 1, generator=gen)
    pos = {
        "duplicates": torch.randn(2, 3, 3, generator=gen).repeat(1, 10, 1),
        "line": t * torch.tensor([1.0, -2.0, 0.5]),
        "plane": torch.cat([torch.rand(2, 30, 2, generator=gen), torch.zeros(2, 30, 1)], -1),
        "fewer_than_k": torch.randn(2, 5, 3, generator=gen),
    }[kind]
    classifier, segmenter = tiny_classifier().train(), tiny_segmenter().train()
    logits, parts = classifier(pos), segmenter(pos)
    (logits.sum() + parts.sum()).backward()
    assert torch.isfinite(logits).all() and torch.isfinite(parts).all()
    assert all(torch.isfinite(p.grad).all() for m in (classifier, segmenter) for p in m.parameters())


def test_errors_name_the_problem():
    layer = RISurConv(3, 16, 8, 6, feature_channels=(8, 16), num_heads=2)
    pos, normal = blobs(1, 20, torch.float32)
    with pytest.raises(ValueError, match="3 channels"):
        layer(None, pos, normal)
    with pytest.raises(ValueError, match="pos must be"):
        layer(torch.randn(1, 20, 3), pos[0], normal[0])
    with pytest.raises(ValueError, match="category"):
        tiny_segmenter(num_categories=3)(pos, normal)
    with pytest.raises(ValueError, match="dv=16"):
        RISurConv(0, 16, 8, 6, dv=16, num_heads=2)


def test_classifier_without_transformer_and_with_invariant_input_features():
    pos, normal = blobs(2, 40)
    x = torch.rand(2, 40, 2, dtype=torch.float64)  # e.g. per-point curvature, intensity
    classifier = tiny_classifier(transformer_layers=0, in_channels=2).double().eval()
    assert len(classifier.transformer) == 0
    logits = classifier(pos, normal, x=x)
    pos_r, normal_r = rotated(pos, normal, 3)
    torch.testing.assert_close(classifier(pos_r, normal_r, x=x), logits, rtol=0, atol=1e-8)
    assert (classifier(pos, normal, x=x.flip(1)) - logits).abs().max() > 1e-6  # the features are used
