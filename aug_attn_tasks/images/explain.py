"""``aug-attn explain`` for image classifiers: where chosen query pixels attend.

The image is prepared as ``aug-attn classify`` prepares it and runs with
:class:`~aug_attn.attention_maps.record_attention`. The map drawn is that of the attention layer with
the finest grid (the deepest of those when several share it); a query pixel ``(y, x)`` of the image is
the grid cell that covers it, and its attention (mean over heads) over the grid is drawn as a heat
map over the image, the query marked; a colour bar gives the weights' scale (one for all maps).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from aug_attn.attention_maps import record_attention
from aug_attn_tasks.images.predict import ImagePredictor
from aug_attn_tasks.images.recipe import ImageClassifier
from aug_attn_tasks.viz import pyplot, ranked_text, save_figure, top_classes

__all__ = ["query_attention", "explain_figure", "explain"]

# what the heat maps and their colour bar show (see query_attention)
ATTENTION_LABEL = "attention weight of the query\n(softmax, mean over heads)"


def default_queries(size: int) -> list[tuple[int, int]]:
    """Four query pixels ``(y, x)``: the centres of the image's quarters."""
    low, high = size // 4, (3 * size) // 4
    return [(low, low), (low, high), (high, low), (high, high)]


def query_attention(
    module: ImageClassifier, image: torch.Tensor, queries: Sequence[tuple[int, int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention maps ``(Q, S, S)`` of the query pixels ``(y, x)`` of the uint8 image ``(3, S, S)``,
    upsampled to the image (bilinear), and the class probabilities ``(classes,)``."""
    size = image.shape[-1]
    for y, x in queries:
        if not (0 <= y < size and 0 <= x < size):
            raise ValueError(f"--query {y} {x} is outside the {size}x{size} image the model reads")
    with torch.inference_mode(), record_attention(module.model) as records:
        probs = torch.softmax(module(module.normalize(image[None])).float(), dim=-1)[0]  # (classes,)
    if not records:
        raise ValueError(f"{type(module.model).__name__} has no attention layer: nothing to explain")
    record = max(reversed(records), key=lambda r: r.pos[0] * r.pos[1])  # the finest grid, deepest first
    height, width = record.pos
    cells = [(y * height // size) * width + x * width // size for y, x in queries]
    maps = record.weights[0, :, cells].mean(dim=0).reshape(len(cells), 1, height, width)  # (Q, 1, H, W)
    return F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)[:, 0], probs


def explain_figure(
    module: ImageClassifier, config: dict[str, Any], path: Path, top: int = 3,
    queries: Sequence[tuple[int, int]] | None = None,
) -> Any:  # fmt: skip
    """The matplotlib Figure :func:`explain` saves: the input, then one panel per query pixel (default
    :func:`default_queries`) with its attention heat map, on one colour scale from 0 to the largest
    weight of the maps, shown by the colour bar; titled with the top classes."""
    plt = pyplot()
    predictor = ImagePredictor(module, config)
    image = predictor.load(path)  # (3, S, S) uint8
    queries = list(queries or default_queries(image.shape[-1]))
    maps, probs = query_attention(module, image, queries)
    ranked = top_classes(module.class_names, probs, top)
    fig, axes = plt.subplots(1, 1 + len(queries), figsize=(2.4 * (1 + len(queries)) + 0.8, 2.8), squeeze=False)
    picture = image.permute(1, 2, 0).numpy()
    axes[0, 0].imshow(picture)
    axes[0, 0].set_title("input", fontsize=9)
    top_weight = max(float(maps.max()), 1e-12)  # one scale for every map, so that panels compare
    for ax, (y, x), heat in zip(axes[0, 1:], queries, maps):
        ax.imshow(picture)
        ax.imshow(heat.numpy(), cmap="inferno", alpha=0.6, vmin=0, vmax=top_weight)
        ax.scatter([x], [y], marker="x", color="cyan", s=40)
        ax.set_title(f"query ({y}, {x})", fontsize=9)
    for ax in axes[0]:
        ax.axis("off")
    scale = plt.cm.ScalarMappable(norm=plt.Normalize(0, top_weight), cmap="inferno")  # opaque: the map, not its blend
    colorbar = fig.colorbar(scale, ax=list(axes[0]), shrink=0.8, pad=0.02)
    colorbar.set_label(ATTENTION_LABEL, fontsize=8)
    colorbar.ax.tick_params(labelsize=7)
    fig.suptitle(f"{path.name}: {ranked_text(ranked)}", fontsize=10)
    return fig


def explain(
    module: ImageClassifier, config: dict[str, Any], path: Path, out: Path, top: int = 3,
    queries: Sequence[tuple[int, int]] | None = None,
) -> Path:  # fmt: skip
    """Draw the image with the attention heat maps of ``queries`` (default :func:`default_queries`)
    and the top classes into ``out`` (PNG): :func:`explain_figure`, saved."""
    return save_figure(explain_figure(module, config, path, top, queries), out)
