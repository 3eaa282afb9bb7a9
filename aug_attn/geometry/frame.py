"""A canonical global frame of a cloud, rotation-equivariant with signs fixed by third moments.

Local rotation-invariant features (distances and angles within a neighbourhood) cannot tell apart
parts that look alike locally but sit in different places of the shape: the two ends of a
symmetric-looking object, the top and bottom of a table. Pose-aware RI methods add a global
reference, often a PCA frame (Li et al., "A Closer Look at Rotation-Invariant Deep Point Cloud
Analysis", ICCV 2021, pools over its 24 sign/order ambiguities); this module fixes the ambiguity
instead, by an equivariant rule, so one frame per cloud suffices.

**Frame.** The principal axes ``a_1, a_2, a_3`` of the cloud's covariance about its centroid ``c``
(eigenvalues ``l_1 >= l_2 >= l_3``) rotate with the cloud, but each only up to sign. The sign of
``a_i`` is fixed by the third moment of the cloud along it, ``s_i = sign(mean((x - c) . a_i)^3)``,
which flips with ``a_i``: ``e_i = s_i a_i`` (``i = 1, 2``) is then equivariant, and
``e_3 = e_1 x e_2`` makes a right-handed frame (a reflection of the cloud is not a rotation, so
``e_3`` need not follow a third skewness). Every step commutes with a rotation ``R``:
``frame(x R^T + t) = frame(x) R^T``.

**Degenerate spectra.** The frame is ill-defined when two eigenvalues meet (a sphere, a disc, a
cylinder's cross-section) or when a skewness vanishes (a box, an ellipsoid): there the axes or their
signs are decided by rounding. Instead of a hard fallback, a **confidence**

.. math::
    w = \\prod_{g} \\frac{g}{g + \\tau}, \\quad g \\in \\Big\\{\\frac{l_1 - l_2}{l_1}, \\frac{l_2 - l_3}{l_1},
        \\frac{|m_3(e_1)|}{m_{|3|}(e_1)}, \\frac{|m_3(e_2)|}{m_{|3|}(e_2)}\\Big\\}

goes continuously to 0 as any of them does, and the coordinates are multiplied by it: features are
continuous in the input, and whatever rounding decides at a degenerate spectrum is scaled by a
weight of the size of that rounding. Exactly degenerate clouds (a line, a point) get ``w = 0``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from aug_attn.geometry.neighbors import _valid

__all__ = ["NUM_GLOBAL_FEATURES", "PrincipalFrame", "principal_frame", "frame_features"]

NUM_GLOBAL_FEATURES = 5


class PrincipalFrame(NamedTuple):
    """The canonical frame of ``B`` clouds.

    Attributes:
        centre: ``(B, 3)`` centroid ``c``.
        axes: ``(B, 3, 3)``, rows ``e_1, e_2, e_3`` (a proper rotation per cloud).
        scale: ``(B,)`` RMS distance of the points from ``c`` (a length that scales with the cloud).
        confidence: ``(B,)`` in ``[0, 1)``, the weight ``w`` of the module docstring.
    """

    centre: Tensor
    axes: Tensor
    scale: Tensor
    confidence: Tensor


def principal_frame(pos: Tensor, mask: Tensor | None = None, tol: float = 0.05) -> PrincipalFrame:
    """The rotation-equivariant principal frame of each cloud (module docstring).

    Args:
        pos: ``(B, N, 3)``.
        mask: ``(B, N)`` bool, True at real points.
        tol: ``tau``, the relative eigengap or skewness at which the confidence is one half.

    Returns:
        :class:`PrincipalFrame`; ``axes`` satisfy ``axes(pos R^T + t) = axes(pos) R^T``.
    """
    # Autocast off throughout: in bfloat16 the axes tilt by degrees and the moments lose their sign.
    with torch.autocast(pos.device.type, enabled=False):
        weight = _valid(pos, mask).to(pos.dtype).unsqueeze(-1)  # (B, N, 1)
        count = weight.sum(1)  # (B, 1)
        centre = (pos * weight).sum(1) / count  # (B, 3)
        spread = (pos - centre.unsqueeze(1)) * weight  # (B, N, 3), zero at padding
        values, vectors = torch.linalg.eigh(spread.transpose(1, 2) @ spread / count.unsqueeze(-1))  # ascending
        principal = vectors.flip(-1)[..., :2].transpose(1, 2)  # (B, 2, 3): rows a_1, a_2
        along = spread @ principal.transpose(1, 2)  # (B, N, 2): (x - c) . a_i
    values = values.flip(-1).clamp_min(0.0)  # (B, 3): l_1 >= l_2 >= l_3
    third = (along**3 * weight).sum(1) / count  # (B, 2)
    absolute = (along.abs() ** 3 * weight).sum(1) / count  # (B, 2)
    sign = torch.where(third < 0, -1.0, 1.0).to(pos.dtype)  # a zero third moment keeps eigh's sign (w = 0)
    e12 = principal * sign.unsqueeze(-1)  # (B, 2, 3)
    axes = torch.cat([e12, torch.linalg.cross(e12[:, 0], e12[:, 1]).unsqueeze(1)], 1)  # (B, 3, 3)
    top = values[:, :1].clamp_min(torch.finfo(pos.dtype).tiny)
    ratios = torch.cat(
        [(values[:, :2] - values[:, 1:]) / top, third.abs() / absolute.clamp_min(torch.finfo(pos.dtype).tiny)], 1
    )  # (B, 4): two relative eigengaps, two skewnesses, each in [0, 1]
    confidence = (ratios / (ratios + tol)).prod(1)  # (B,)
    return PrincipalFrame(centre, axes, values.sum(1).sqrt(), confidence)


def frame_features(points: Tensor, frame: PrincipalFrame) -> Tensor:
    """Rotation-invariant global features of ``points (B, M, 3)`` (the cloud's own points or its
    sampled centres) in the cloud's frame: ``[r, w u_1, w u_2, w u_3, w]`` with ``r = |x - c| / s``,
    ``u_i = (x - c) . e_i / s`` (``s``: the frame's scale, ``w``: its confidence).

    ``r`` needs no frame (the distance from the centroid, invariant for every cloud); the signed
    coordinates tell parts apart where the frame is well defined and fade out where it is not.

    Returns:
        ``(B, M, 5)``, invariant to rotations and translations of the cloud, and to its scale.
    """
    scale = frame.scale.clamp_min(torch.finfo(points.dtype).tiny)[:, None, None]  # (B, 1, 1)
    offset = (points - frame.centre.unsqueeze(1)) / scale  # (B, M, 3)
    weight = frame.confidence[:, None, None].expand(*points.shape[:2], 1)  # (B, M, 1)
    coords = offset @ frame.axes.transpose(1, 2)  # (B, M, 3): u_i
    return torch.cat([offset.norm(dim=-1, keepdim=True), weight * coords, weight], dim=-1)
