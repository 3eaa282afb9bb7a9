"""Headless plotting for ``aug-attn explain`` and ``aug-attn plot``: matplotlib (the ``[viz]`` extra)
imported only here, only when a picture is drawn, with the Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["VizUnavailable", "pyplot", "save_figure", "ranked_text"]


class VizUnavailable(RuntimeError):
    """matplotlib is not installed; the message says how to install it."""


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, or :class:`VizUnavailable` naming the extra to install."""
    try:
        import matplotlib
    except ImportError as error:
        raise VizUnavailable('pictures need matplotlib: pip install -e ".[viz]" (or pip install matplotlib)') from error
    matplotlib.use("Agg")  # headless: pictures go to files, never to a window
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as PNG to ``path`` (folders created) and close it; returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: pictures are written as .png files")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return path


def ranked_text(top: list[tuple[str, float]]) -> str:
    """``"label 0.93, other 0.05"`` for ``[(label, probability)]``."""
    return ", ".join(f"{label} {prob:.2f}" for label, prob in top)
