"""aug-attn: attention-augmented convolution with one relative attention core for 1D, 2D and 3D data."""

from aug_attn import attention_maps, functional, geometry
from aug_attn.attention import RelativeMultiheadAttention, relative_attention
from aug_attn.layers import AAConv1d, AAConv2d, RISurConv
from aug_attn.positional import (
    RelativePositionEncoder,
    RelativePositionEncoder1d,
    RelativePositionEncoder2d,
    SurfacePositionEncoder,
)

__version__ = "0.1.0"

__all__ = [
    "AAConv1d",
    "AAConv2d",
    "RISurConv",
    "RelativeMultiheadAttention",
    "RelativePositionEncoder",
    "RelativePositionEncoder1d",
    "RelativePositionEncoder2d",
    "SurfacePositionEncoder",
    "attention_maps",
    "functional",
    "geometry",
    "relative_attention",
]
