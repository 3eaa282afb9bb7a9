"""Modality-specific relative position encoders for the shared attention core."""

from aug_attn.positional.base import RelativePositionEncoder
from aug_attn.positional.grid import RelativePositionEncoder1d, RelativePositionEncoder2d
from aug_attn.positional.surface import SurfacePositionEncoder

__all__ = ["RelativePositionEncoder", "RelativePositionEncoder1d", "RelativePositionEncoder2d", "SurfacePositionEncoder"]
