"""``aug-attn explain`` for point cloud classifiers: the cloud from three viewpoints, coloured by a
gradient saliency of the top class.

Saliency of point ``n`` = ``|d logit_c / d pos_n|`` (the Euclidean norm over x, y, z) for the most
probable class ``c`` (Simonyan et al. 2014, "Deep Inside Convolutional Networks", applied to point
coordinates): how much moving the point changes the evidence for the prediction. Through the
discrete sampling and neighbour choices the gradient is taken with those choices held fixed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from aug_attn_tasks.points.predict import PointPredictor
from aug_attn_tasks.points.recipe import PointCloudModule
from aug_attn_tasks.viz import pyplot, ranked_text, save_figure, top_classes

__all__ = ["gradient_saliency", "explain"]

VIEWS = ((20, -60), (20, 30), (80, -90))  # (elevation, azimuth) in degrees


def gradient_saliency(module: PointCloudModule, pos: torch.Tensor, normal: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Saliency ``(N,)`` of the points ``pos (N, 3)`` for the top class, and the probabilities ``(classes,)``."""
    pos = pos.clone().requires_grad_(True)
    with torch.enable_grad():
        logits = module(pos[None], None if normal is None else normal[None])[0]  # (classes,)
        logits[logits.argmax()].backward()
    return pos.grad.norm(dim=-1), torch.softmax(logits.detach().float(), dim=-1)


def explain(module: PointCloudModule, config: dict[str, Any], path: Path, out: Path, top: int = 3) -> Path:
    """Draw ``path``'s cloud (prepared as ``aug-attn classify`` prepares it) from three viewpoints,
    coloured by :func:`gradient_saliency`, with the top classes, into ``out`` (PNG)."""
    plt = pyplot()
    predictor = PointPredictor(module, config)
    pos, normal = predictor.load(path)
    saliency, probs = gradient_saliency(module, pos, normal)
    ranked = top_classes(module.class_names, probs, top)
    fig = plt.figure(figsize=(10, 3.6))
    xyz = pos.numpy()
    for i, (elevation, azimuth) in enumerate(VIEWS):
        ax = fig.add_subplot(1, len(VIEWS), i + 1, projection="3d")
        points = ax.scatter(xyz[:, 0], xyz[:, 1], xyz[:, 2], c=saliency.numpy(), cmap="viridis", s=6, depthshade=False)
        ax.view_init(elev=elevation, azim=azimuth)
        ax.set_box_aspect((1, 1, 1))
        ax.set_axis_off()
        ax.set_title(f"elevation {elevation}, azimuth {azimuth}", fontsize=8)
    fig.colorbar(points, ax=fig.axes, shrink=0.6, label="saliency |d logit / d pos|")
    fig.suptitle(f"{path.name}: {ranked_text(ranked)}", fontsize=10)
    return save_figure(fig, out)
