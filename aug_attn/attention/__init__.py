"""The shared multi-head attention core with relative position logits.

Bello et al., "Attention Augmented Convolutional Networks", ICCV 2019 (arXiv:1904.09925), Sec. 3.1-3.2:

.. math::
    O_h = \\mathrm{softmax}\\Big(\\frac{Q_h K_h^\\top + S^{rel}_h}{\\sqrt{d_k^h}}\\Big) V_h,
    \\qquad \\mathrm{MHA}(X) = \\mathrm{Concat}[O_1, \\dots, O_{N_h}]\\, W^O

where ``S^rel[i, j] = q_i . r(i, j)`` comes from a :class:`~aug_attn.positional.RelativePositionEncoder`
(1D offsets, 2D offsets, surface geometry); this package knows nothing about the modality.

* :mod:`.module`: :class:`RelativeMultiheadAttention`, the layer every modality uses;
* :mod:`.dispatch`: :func:`relative_attention` and the one priority list of exact paths (the table
  of paths, what each needs and its cost rule), :func:`attention_path` to ask which path a call
  takes and why the others refused;
* one module per path: :mod:`.plain`, :mod:`.flex` (CUDA), :mod:`.native` (CPU kernel, C++ in
  ``csrc/``), :mod:`.tiled`, :mod:`.factorized`, :mod:`.banded`, and :mod:`.reference`, the
  materialized logits every test compares to;
* :mod:`.common`: what the paths share (the call's inputs, the fused SDPA call, the CPU flash
  kernels with log-sum-exp and their exact merge).

Attention maps are recorded from outside, by hooks: :func:`aug_attn.attention_maps.record_attention`.
"""

from aug_attn.attention.common import (
    DEFAULT_MAX_LOGITS_ELEMENTS,
    AttentionInputs,
    AttentionPath,
    fused_attention,
    merge_heads,
    split_heads,
)
from aug_attn.attention.dispatch import PATHS, PathChoice, attention_path, disabled_paths, relative_attention
from aug_attn.attention.factorized import factorized_is_faster
from aug_attn.attention.module import RelativeMultiheadAttention, check_head_split

__all__ = [
    "DEFAULT_MAX_LOGITS_ELEMENTS",
    "PATHS",
    "AttentionInputs",
    "AttentionPath",
    "PathChoice",
    "RelativeMultiheadAttention",
    "attention_path",
    "check_head_split",
    "disabled_paths",
    "factorized_is_faster",
    "fused_attention",
    "merge_heads",
    "relative_attention",
    "split_heads",
]
