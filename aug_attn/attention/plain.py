"""The plain path: no relative logits, PyTorch's fused SDPA (with a padding mask and dropout)."""

from __future__ import annotations

from torch import Tensor

from aug_attn.attention.common import AttentionInputs, AttentionPath, fused_attention

__all__ = ["PATH", "supported", "run"]



def supported(inputs: AttentionInputs) -> list[str]:
    """Calls without an encoder."""
    return [] if inputs.encoder is None else [f"relative logits from {type(inputs.encoder).__name__}"]


def run(inputs: AttentionInputs) -> Tensor:
    """``(B, h, N, d_v)`` by :func:`~aug_attn.attention.common.fused_attention`."""
    return fused_attention(inputs.scaled_q(), inputs.k, inputs.v, inputs.allowed(), inputs.dropout_p)


PATH = AttentionPath("plain", supported, run)
