"""aug-attn: attention-augmented convolution with one relative attention core for 1D, 2D and 3D data."""

import sys

from aug_attn import attention_maps, functional, geometry
from aug_attn.attention import RelativeMultiheadAttention, relative_attention
from aug_attn.attention import banded as _banded
from aug_attn.attention import flex as _flex
from aug_attn.attention import native as _native
from aug_attn.attention import tiled as _tiled
from aug_attn.layers import AAConv1d, AAConv2d, RISurConv
from aug_attn.positional import (
    RelativePositionEncoder,
    RelativePositionEncoder1d,
    RelativePositionEncoder2d,
    SurfacePositionEncoder,
)

__version__ = "0.1.0"

# The paths' modules before they moved into aug_attn.attention: ``import aug_attn.native`` and
# ``from aug_attn.native import set_native_kernels`` keep working (the same module objects).
for _name, _module in (("native", _native), ("flex", _flex), ("banded", _banded), ("tiled", _tiled)):
    sys.modules[f"{__name__}.{_name}"] = _module
    globals()[_name] = _module

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
