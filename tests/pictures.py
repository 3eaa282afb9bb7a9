"""Checks that a file is a real PNG picture with content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def assert_picture(path: Path, min_side: int = 150) -> None:
    """``path`` is a PNG of at least ``min_side`` pixels a side that is not blank (pixel variance)."""
    with Image.open(path) as image:
        assert image.format == "PNG", path
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert min(pixels.shape) >= min_side, (path, pixels.shape)
    assert pixels.std() > 10, f"{path}: nearly blank (std {pixels.std():.1f})"
    assert (pixels < 128).mean() > 0.01, f"{path}: almost nothing drawn"
