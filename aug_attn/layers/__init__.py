"""Attention-augmented layers built on the shared attention core."""

from aug_attn.layers.aaconv import AAConv1d, AAConv2d

__all__ = ["AAConv1d", "AAConv2d"]
