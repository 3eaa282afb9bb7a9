"""Complete models built from the aug_attn layers."""

from aug_attn.models.resnet import (
    AttentionSpec,
    ResNet,
    WideResNet,
    aa_resnet_small,
    count_parameters,
    resnet18,
    resnet34,
    resnet50,
    wrn28_10,
)
from aug_attn.models.muslcat import MuSLCAN, MuSLCAT
from aug_attn.models.plaincnn import PlainCNN
from aug_attn.models.samplecnn import SampleCNN
from aug_attn.models.risurconv import RISurConvClassifier, RISurConvSegmenter
from aug_attn.models.pointnet2 import PointNet2Classifier, PointNet2Segmenter

__all__ = [
    "AttentionSpec",
    "ResNet",
    "WideResNet",
    "aa_resnet_small",
    "count_parameters",
    "resnet18",
    "resnet34",
    "resnet50",
    "wrn28_10",
    "MuSLCAN",
    "MuSLCAT",
    "PlainCNN",
    "SampleCNN",
    "RISurConvClassifier",
    "RISurConvSegmenter",
    "PointNet2Classifier",
    "PointNet2Segmenter",
]
