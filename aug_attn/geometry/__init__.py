"""Point-cloud geometry in pure torch: sampling, neighbour search, normals, rotation-invariant features."""

from aug_attn.geometry.frame import NUM_GLOBAL_FEATURES, PrincipalFrame, frame_features, principal_frame
from aug_attn.geometry.neighbors import (
    NEIGHBOR_BACKENDS,
    ball_query,
    farthest_point_sample,
    gather,
    interpolate,
    knn,
    masked_centroid,
    neighbor_backend,
    point_inputs,
    resolved_neighbor_backend,
    set_neighbor_backend,
    to_dense,
)
from aug_attn.geometry.normals import estimate_normals
from aug_attn.geometry.surface import (
    NUM_PAIR_FEATURES,
    NUM_SURFACE_FEATURES,
    Neighborhoods,
    build_neighborhoods,
    cyclic_order,
    pair_features,
    safe_normalize,
    surface_features,
)

__all__ = [
    "NEIGHBOR_BACKENDS",
    "NUM_GLOBAL_FEATURES",
    "NUM_PAIR_FEATURES",
    "NUM_SURFACE_FEATURES",
    "Neighborhoods",
    "PrincipalFrame",
    "ball_query",
    "build_neighborhoods",
    "cyclic_order",
    "estimate_normals",
    "farthest_point_sample",
    "frame_features",
    "gather",
    "interpolate",
    "knn",
    "masked_centroid",
    "neighbor_backend",
    "pair_features",
    "point_inputs",
    "principal_frame",
    "resolved_neighbor_backend",
    "safe_normalize",
    "set_neighbor_backend",
    "surface_features",
]
