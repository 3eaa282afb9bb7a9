"""Headless plotting for ``aug-attn explain`` and ``aug-attn plot``: matplotlib (the ``[viz]`` extra)
imported only here, only when a picture is drawn, with the Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aug_attn.optional import import_extra

__all__ = ["pyplot", "save_figure", "legend_outside", "ranked_text"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, or :class:`~aug_attn.optional.MissingExtraError`
    naming the extra to install."""
    import_extra("matplotlib", "viz", "drawing pictures").use("Agg")  # headless: files, never a window
    return import_extra("matplotlib.pyplot", "viz", "drawing pictures")


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as PNG to ``path`` (folders created) and close it; returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: pictures are written as .png files")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return path


def legend_outside(ax: Any) -> Any:
    """The legend of ``ax`` right of the axes, top-aligned, where it covers no bar (save with
    ``bbox_inches="tight"``, as :func:`save_figure` does, so that it is kept)."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)


def top_classes(labels: list[str], probs: Any, top: int) -> list[tuple[str, float]]:
    """The ``top`` most probable ``(label, probability)`` pairs, highest first (ties in label order);
    ``probs`` a 1D tensor or sequence aligned with ``labels``."""
    values = probs.tolist() if hasattr(probs, "tolist") else list(probs)
    return sorted(zip(labels, values), key=lambda pair: -pair[1])[:top]


def ranked_text(top: list[tuple[str, float]]) -> str:
    """``"label 0.93, other 0.05"`` for ``[(label, probability)]``."""
    return ", ".join(f"{label} {prob:.2f}" for label, prob in top)
