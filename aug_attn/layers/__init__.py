"""Attention-augmented layers built on the shared attention core."""

from aug_attn.layers.aaconv import AAConv1d, AAConv2d
from aug_attn.layers.surface import RISurConv

__all__ = ["AAConv1d", "AAConv2d", "RISurConv"]
