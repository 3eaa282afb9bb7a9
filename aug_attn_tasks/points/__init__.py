"""Point cloud data: file readers, datasets in the real layouts, synthetic shapes, rotation protocols."""

from aug_attn_tasks.points.datasets import (
    ModelNetH5,
    ModelNetMesh,
    ModelNetResampled,
    PointCloudDataset,
    PointFolder,
    ScanObjectNN,
    ShapeNetPart,
    SyntheticShapes,
)
from aug_attn_tasks.points.io import load_point_cloud, read_obj, read_off, read_ply, read_stl, sample_surface
from aug_attn_tasks.points.synthetic import SHAPES
from aug_attn_tasks.points.transforms import (
    Compose,
    Jitter,
    RandomRotation,
    RandomScale,
    ToData,
    rotation_protocol,
    rotation_transforms,
)

__all__ = [
    "SHAPES",
    "Compose",
    "Jitter",
    "ModelNetH5",
    "ModelNetMesh",
    "ModelNetResampled",
    "PointCloudDataset",
    "PointFolder",
    "RandomRotation",
    "RandomScale",
    "ScanObjectNN",
    "ShapeNetPart",
    "SyntheticShapes",
    "ToData",
    "load_point_cloud",
    "read_obj",
    "read_off",
    "read_ply",
    "read_stl",
    "rotation_protocol",
    "rotation_transforms",
    "sample_surface",
]
