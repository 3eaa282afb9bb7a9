"""Wide-ResNet and ResNet image classifiers with an attention-augmentation switch.

Bello et al., "Attention Augmented Convolutional Networks", ICCV 2019 (arXiv:1904.09925):
with ``attention`` on, the **first 3x3 convolution of every residual block** (basic and wide blocks:
their first conv; bottlenecks: their only 3x3, which is the first spatial conv) becomes an
:class:`~aug_attn.layers.AAConv2d` with ``Nh = 8`` heads, ``kappa = dk / Fout = 0.2``,
``upsilon = dv / Fout = 0.1`` and at least 20 key dimensions per head
(``dk = max(round(0.2 * Fout), 20 * Nh)``, so in narrow layers the 20-dims rule overrides kappa:
WRN-28-10's 160-channel stage gets ``dk = 160``, not 32). BatchNorm follows the augmented conv
(in the pre-activation WRN block it is the block's second BN, in ResNet blocks the conv's own BN).
Strided blocks attend over the input average-pooled by the stride (see :class:`AAConv2d`).

Placement. CIFAR-100 (Sec. 4.1): "We augment the Wide-ResNet-28-10 by augmenting the first
convolution of all residual blocks with relative attention using Nh=8 heads and kappa=2 upsilon=0.2
and a minimum of 20 dimensions per head for the keys" (the default here). ImageNet ResNets: our
reading of Sec. 4.2 is that only the blocks of the last three stages (28x28, 14x14, 7x7 maps) are
augmented, i.e. ``attention_stages=(2, 3, 4)``; the parameter count supports it (AA-ResNet-50:
25.83M with stages 2-4 vs the paper's 25.8M; 25.90M with all stages).

Architectures follow the originals: WRN-d-k is Zagoruyko & Komodakis 2016 (pre-activation wide
basic blocks, 1x1 projection shortcuts where the shape changes); ResNet-18/34/50 follow He et al.
2016 with the stride on the 3x3 conv of the bottleneck ("v1.5", as torchvision), plus a CIFAR stem
(3x3 conv, no max-pool) for 32x32 inputs. Plain parameter counts equal the published ones
(see ``tests/test_images.py`` and the table in ``docs/images.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from aug_attn.layers import AAConv2d

__all__ = [
    "AttentionSpec",
    "WideResNet",
    "ResNet",
    "BasicBlock",
    "Bottleneck",
    "WideBasicBlock",
    "wrn28_10",
    "resnet18",
    "resnet34",
    "resnet50",
    "aa_resnet_small",
    "count_parameters",
]


@dataclass(frozen=True)
class AttentionSpec:
    """How a 3x3 convolution is attention-augmented (defaults: the paper's setting).

    Args:
        num_heads: ``Nh``.
        kappa: ``dk / out_channels``.
        upsilon: ``dv / out_channels``.
        min_key_dim: lower bound on the key depth per head (overrides ``kappa`` in narrow layers).
        relative: relative position logits (otherwise content-only attention).
    """

    num_heads: int = 8
    kappa: float = 0.2
    upsilon: float = 0.1
    min_key_dim: int = 20
    relative: bool = True

    def depths(self, out_channels: int) -> tuple[int, int]:
        """``(dk, dv)`` for a layer with ``out_channels``, both multiples of ``num_heads``."""
        heads = self.num_heads
        dk = max(round(self.kappa * out_channels / heads), self.min_key_dim, 1) * heads
        dv = max(round(self.upsilon * out_channels / heads), 1) * heads
        if dv >= out_channels:
            raise ValueError(
                f"upsilon={self.upsilon} with num_heads={heads} leaves no conv channels in a {out_channels}-channel "
                "layer; use fewer heads or a wider layer"
            )
        return dk, dv

    def conv3x3(self, in_channels: int, out_channels: int, stride: int) -> AAConv2d:
        dk, dv = self.depths(out_channels)
        return AAConv2d(
            in_channels, out_channels, 3, stride, 1, bias=False, dk=dk, dv=dv, num_heads=self.num_heads, relative=self.relative
        )


def _spec(attention: bool | AttentionSpec) -> AttentionSpec | None:
    if isinstance(attention, AttentionSpec):
        return attention
    if not isinstance(attention, bool):
        raise TypeError(f"attention must be a bool or an AttentionSpec, got {attention!r}")
    return AttentionSpec() if attention else None


def _conv3x3(in_channels: int, out_channels: int, stride: int, attention: AttentionSpec | None) -> nn.Module:
    """A bias-free 3x3 conv (BN follows), attention-augmented when ``attention`` is given."""
    if attention is not None:
        return attention.conv3x3(in_channels, out_channels, stride)
    return nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)


def _init_weights(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class WideBasicBlock(nn.Module):
    """Pre-activation wide block: ``BN-ReLU-conv3x3(stride)-BN-ReLU-dropout-conv3x3`` + shortcut.

    Shapes: ``(B, in_channels, H, W)`` -> ``(B, out_channels, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, dropout: float = 0.0, attention: AttentionSpec | None = None
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv3x3(in_channels, out_channels, stride, attention)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        reshape = stride != 1 or in_channels != out_channels
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False) if reshape else None

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        # Zagoruyko: a projection shortcut takes the pre-activated input, an identity the raw one.
        skip = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv2(self.dropout(F.relu(self.bn2(self.conv1(pre)))))
        return out + skip


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor`` for small images (Zagoruyko & Komodakis 2016).

    ``(depth - 4) / 6`` blocks per group, group widths ``16k, 32k, 64k``, strides 1, 2, 2.

    Args:
        depth: ``6n + 4`` (28 for WRN-28-10, 16 for the WRN-16-k demos).
        widen_factor: ``k``.
        num_classes: classifier outputs.
        dropout: dropout between the two convs of a block (the paper's 0.3 variant; default off).
        attention: augment the first conv of each block (True = paper setting, or an :class:`AttentionSpec`).
        attention_groups: 1-based groups whose blocks are augmented (default all).
        in_channels: input channels.

    Shapes: ``(B, in_channels, H, W)`` -> ``(B, num_classes)`` logits; any ``H, W >= 1``.
    """

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        num_classes: int = 10,
        dropout: float = 0.0,
        attention: bool | AttentionSpec = False,
        attention_groups: Sequence[int] | None = None,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth={depth} must be 6n + 4 with n >= 1 (e.g. 16, 28, 40)")
        blocks = (depth - 4) // 6
        widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        spec = _spec(attention)
        groups = _check_stages(attention_groups, 3, "attention_groups")
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        layers: list[nn.Module] = []
        channels = 16
        for index, (width, stride) in enumerate(zip(widths, (1, 2, 2)), start=1):
            block_spec = spec if index in groups else None
            for b in range(blocks):
                layers.append(WideBasicBlock(channels, width, stride if b == 0 else 1, dropout, block_spec))
                channels = width
        self.blocks = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.conv1(x))  # (B, 64k, H/4, W/4)
        x = F.relu(self.bn(x)).mean(dim=(2, 3))  # (B, 64k)
        return self.fc(x)  # (B, num_classes)


class BasicBlock(nn.Module):
    """ResNet basic block: ``conv3x3(stride)-BN-ReLU-conv3x3-BN`` + shortcut, ReLU.

    Shapes: ``(B, in_channels, H, W)`` -> ``(B, width, ceil(H / stride), ceil(W / stride))``.
    """

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int, attention: AttentionSpec | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, width, stride, attention)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.shortcut = _projection(in_channels, width, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class Bottleneck(nn.Module):
    """ResNet bottleneck: ``conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1(4x)-BN`` + shortcut, ReLU.

    The augmented conv is the 3x3 (the 1x1s have no spatial extent to attend over).
    Shapes: ``(B, in_channels, H, W)`` -> ``(B, 4 * width, ceil(H / stride), ceil(W / stride))``.
    """

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int, attention: AttentionSpec | None = None) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride, attention)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = _projection(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))


def _check_stages(stages: Sequence[int] | None, count: int, name: str) -> set[int]:
    if stages is None:
        return set(range(1, count + 1))
    chosen = set(stages)
    if not chosen <= set(range(1, count + 1)):
        raise ValueError(f"{name}={list(stages)} must be 1-based stage indices in 1..{count}")
    return chosen


class ResNet(nn.Module):
    """ResNet (He et al. 2016) with the stride on the 3x3 conv, optionally attention-augmented.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        num_classes: classifier outputs.
        widths: per-stage base widths (``(64, 128, 256, 512)``; narrow demos use smaller ones).
        stem: ``"imagenet"`` (7x7 stride-2 conv + 3x3 stride-2 max-pool) or ``"cifar"`` (3x3 conv).
        attention: augment the first 3x3 conv of each block (True = paper setting, or an :class:`AttentionSpec`).
        attention_stages: 1-based stages whose blocks are augmented (default all; the paper's
            ImageNet ResNets use ``(2, 3, 4)``).
        in_channels: input channels.

    Shapes: ``(B, in_channels, H, W)`` -> ``(B, num_classes)`` logits; any ``H, W >= 1``.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        num_classes: int = 1000,
        widths: Sequence[int] = (64, 128, 256, 512),
        stem: str = "imagenet",
        attention: bool | AttentionSpec = False,
        attention_stages: Sequence[int] | None = None,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if len(layers) != len(widths) or not layers:
            raise ValueError(f"layers={list(layers)} and widths={list(widths)} must be non-empty and of equal length")
        spec = _spec(attention)
        stages = _check_stages(attention_stages, len(layers), "attention_stages")
        if stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False),
                nn.BatchNorm2d(widths[0]),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        elif stem == "cifar":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
            )
        else:
            raise ValueError(f"stem={stem!r}: expected 'imagenet' or 'cifar'")
        channels = widths[0]
        stage_modules = []
        for index, (count, width) in enumerate(zip(layers, widths), start=1):
            block_spec = spec if index in stages else None
            blocks = []
            for b in range(count):
                blocks.append(block(channels, width, 2 if b == 0 and index > 1 else 1, block_spec))
                channels = width * block.expansion
            stage_modules.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stage_modules)
        self.fc = nn.Linear(channels, num_classes)
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(self.stem(x))  # (B, C_last, H', W')
        return self.fc(x.mean(dim=(2, 3)))  # (B, num_classes)


def wrn28_10(num_classes: int = 100, attention: bool | AttentionSpec = False, dropout: float = 0.0) -> WideResNet:
    """WRN-28-10, the paper's CIFAR-100 model (36.5M plain parameters for 100 classes)."""
    return WideResNet(28, 10, num_classes, dropout, attention)


def resnet18(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-18 (11.7M plain parameters for 1000 classes); ``kwargs`` as :class:`ResNet`."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, **kwargs)


def resnet34(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-34 (21.8M plain parameters for 1000 classes); ``kwargs`` as :class:`ResNet`."""
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, **kwargs)


def resnet50(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-50 (25.6M plain parameters for 1000 classes); ``kwargs`` as :class:`ResNet`."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, **kwargs)


def aa_resnet_small(
    num_classes: int = 10, attention: bool | AttentionSpec = True, attention_stages: Sequence[int] | None = (3, 4)
) -> ResNet:
    """The small AA-ResNet demo classifier (issue 2, item 5): a narrow ResNet-10 (one basic block per
    stage, widths 16/32/64/128, CIFAR stem, 0.34M parameters) with the paper's attention setting
    (Nh=8, kappa=2*upsilon=0.2, >= 20 key dims per head) in the blocks of stages 3-4 (8x8 and 4x4
    maps for 32x32 inputs). Like the paper's ImageNet models it leaves the high-resolution stages
    plain: on CPU, attention over the 16x16 maps of stage 2 alone costs about 4x the rest of the net."""
    return ResNet(BasicBlock, (1, 1, 1, 1), num_classes, (16, 32, 64, 128), "cifar", attention, attention_stages)
