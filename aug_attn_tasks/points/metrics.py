"""Point cloud metrics as torchmetrics objects (their states are sums, so they reduce correctly under DDP).

- :class:`ClassAccuracy`: overall accuracy (OA, correct / shapes) and mean class accuracy (mAcc, the
  mean over the classes present in the targets of each class's recall), as point cloud papers
  report them. torchmetrics' ``MulticlassAccuracy(average="macro")`` differs: it counts a class that
  is predicted but absent from the targets as 0 recall.
- :class:`PartIoU`: ShapeNet part instance mIoU (mean over shapes) and class mIoU (mean over
  categories of their shapes' mean), with the PointNet++ / DGCNN convention: a shape's IoU is the
  mean over the parts of **its category**, predictions are restricted to those parts, and a part
  absent from both prediction and ground truth has IoU 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

__all__ = ["ClassAccuracy", "PartIoU", "part_mask", "shape_part_iou"]


class ClassAccuracy(Metric):
    """OA and mAcc over ``num_classes``; :meth:`compute` returns ``{"oa": (), "macc": ()}`` (NaN when empty).

    :meth:`update` takes ``preds``: logits ``(B, C)`` or labels ``(B,)``, and ``target (B,)``. The state
    is the confusion matrix ``confusion (C, C)`` (rows = true class, columns = predicted).
    """

    full_state_update = False

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.add_state("confusion", torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        if preds.dim() == 2:
            preds = preds.argmax(-1)
        if preds.shape != target.shape:
            raise ValueError(f"ClassAccuracy: preds {tuple(preds.shape)} and target {tuple(target.shape)} differ")
        pairs = target * self.num_classes + preds  # (B,) flat (true, predicted) index
        self.confusion += torch.bincount(pairs, minlength=self.num_classes**2).view(self.num_classes, self.num_classes)

    def compute(self) -> dict[str, Tensor]:
        correct, total = self.confusion.diagonal(), self.confusion.sum(dim=1)
        seen = total > 0
        oa = correct.sum().double() / total.sum()
        macc = (correct[seen].double() / total[seen]).mean()
        return {"oa": oa.float(), "macc": macc.float()}


def part_mask(category_parts: list[tuple[int, ...]] | tuple[tuple[int, ...], ...], num_parts: int) -> Tensor:
    """``(num_categories, num_parts)`` bool: which global part ids belong to each category."""
    mask = torch.zeros(len(category_parts), num_parts, dtype=torch.bool)
    for category, parts in enumerate(category_parts):
        mask[category, list(parts)] = True
    return mask


def shape_part_iou(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Per-shape mIoU over the parts of its category.

    Args:
        pred, target: ``(B, N)`` int64 part ids.
        valid: ``(B, P)`` bool, the parts of each shape's category.

    Returns:
        ``(B,)``: ``mean_{p valid} |pred=p & target=p| / |pred=p | target=p|``, a part with an
        empty union counting 1.
    """
    num_parts = valid.shape[1]
    pred_1h, target_1h = F.one_hot(pred, num_parts).bool(), F.one_hot(target, num_parts).bool()  # (B, N, P)
    inter = (pred_1h & target_1h).sum(1)  # (B, P)
    union = (pred_1h | target_1h).sum(1)
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union, dtype=torch.float))
    return (iou * valid).sum(1) / valid.sum(1)


class PartIoU(Metric):
    """Instance and class mIoU; :meth:`compute` returns ``{"instance_miou": (), "class_miou": ()}``.

    Args:
        category_parts: the global part ids of each category (e.g. ``SHAPENET_PARTS.values()``).
        num_parts: total part ids ``P``.

    :meth:`update` takes ``preds``: logits ``(B, N, P)`` (the argmax is taken over the shape's
    category's parts only) or part ids ``(B, N)``, ``target (B, N)``, ``category (B,)``.
    """

    full_state_update = False

    def __init__(self, category_parts: list[tuple[int, ...]] | tuple[tuple[int, ...], ...], num_parts: int) -> None:
        super().__init__()
        self.register_buffer("mask", part_mask(category_parts, num_parts), persistent=False)
        num_categories = len(category_parts)
        self.add_state("iou_sum", torch.zeros(num_categories, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(num_categories, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, category: Tensor) -> None:
        valid = self.mask[category]  # (B, P)
        if preds.is_floating_point():
            preds = preds.masked_fill(~valid.unsqueeze(1), float("-inf")).argmax(-1)  # (B, N)
        if preds.shape != target.shape or category.shape != preds.shape[:1]:
            raise ValueError(
                f"PartIoU: preds {tuple(preds.shape)}, target {tuple(target.shape)}, category {tuple(category.shape)}"
            )
        ious = shape_part_iou(preds, target, valid).double()  # (B,)
        self.iou_sum.index_add_(0, category, ious)
        self.count += torch.bincount(category, minlength=self.count.numel())

    def compute(self) -> dict[str, Tensor]:
        seen = self.count > 0
        instance = self.iou_sum.sum() / self.count.sum()
        per_class = self.iou_sum[seen] / self.count[seen]
        return {"instance_miou": instance.float(), "class_miou": per_class.mean().float()}
