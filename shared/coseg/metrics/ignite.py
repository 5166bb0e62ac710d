"""MONAI ``CumulativeIterationMetric`` wrappers, so bundles can use the metrics through ``IgniteMetricHandler``.

Bundle example (``key_val_metric`` / ``additional_metrics`` of an evaluator)::

    "val_pq": {
        "_target_": "IgniteMetricHandler",
        "metric_fn": {"_target_": "coseg.metrics.InstanceMetric", "metric": "pq", "class_index": "mean",
                      "num_classes": 4, "reduction": "pooled"},
        "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"
    }

Input conventions (batch-first tensors, or lists of channel-first tensors):

- :class:`InstanceMetric`: ``(B, 1, H, W)`` instance ids, or ``(B, 2, H, W)`` with channel 0 the instance ids and
  channel 1 the per-pixel type (needed for per-class metrics); 3D ``(B, 1|2, H, W, D)`` works the same way.
- :class:`SemanticMetric`: ``(B, 1, H, W[, D])`` class-index maps, or one-hot ``(B, num_classes, H, W[, D])``.

Each iteration buffers additive per-image statistics (not metric values), so ``aggregate()`` can give either the
per-image mean or the pooled value (see :mod:`coseg.metrics.aggregate`). ``aggregate()`` returns a 0-d float64
tensor; NaN when no image defines the metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric

from ._inputs import check_empty_value, check_num_classes, check_reduction
from .aggregate import nanmean, reduce_instance_stats
from .instance import (
    INSTANCE_METRICS,
    InstanceStats,
    _check_match_iou,
    _check_type_assignment,
    instance_stats,
    per_class_instance_stats,
)
from .semantic import SEMANTIC_METRICS, SemanticStats, semantic_stats

__all__ = ["InstanceMetric", "SemanticMetric", "MissingClassCount"]


def _check_batch(y_pred: Any, y: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(y_pred, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} needs y_pred and y as tensors, got {type(y_pred).__name__} and {type(y).__name__}.")
    if y_pred.shape != y.shape:
        shapes = f"{tuple(y_pred.shape)} and {tuple(y.shape)}"
        raise ValueError(f"{name}: y_pred and y must have the same shape, got {shapes}.")
    return y_pred, y


class InstanceMetric(CumulativeIterationMetric):
    """AJI / AJI+ / DQ / SQ / PQ / F1 / DICE1 over a dataset, class-agnostic or per class.

    Args:
        metric: one of ``"aji", "aji_plus", "dq", "sq", "pq", "f1", "dice_1"``.
        class_index: ``None`` = all objects regardless of type; ``k`` (``1 <= k < num_classes``) = objects of type
            k only; ``"mean"`` = the mean over the classes ``1 .. num_classes - 1`` (mPQ-style), NaN classes skipped.
        num_classes: number of object types including the background; required when ``class_index`` is set.
        reduction: ``"per_image_mean"`` or ``"pooled"``.
        match_iou: PQ / F1 matching threshold.
        type_assignment: ``"majority"`` or ``"pixel"`` (see :func:`coseg.metrics.per_class_instance_stats`).
        empty_value: per-image value when neither side has an object (NaN = skipped).
        skip_empty_gt: per-image mean: also skip images whose GT has no object of the class.

    Raises:
        ValueError, TypeError: on bad arguments.
    """

    def __init__(
        self,
        metric: str = "pq",
        *,
        class_index: int | str | None = None,
        num_classes: int | None = None,
        reduction: str = "per_image_mean",
        match_iou: float = 0.5,
        type_assignment: str = "majority",
        empty_value: float = math.nan,
        skip_empty_gt: bool = False,
    ) -> None:
        super().__init__()
        if metric not in INSTANCE_METRICS:
            raise ValueError(f"metric must be one of {INSTANCE_METRICS}, got {metric!r}.")
        self.metric = metric
        self.reduction = check_reduction(reduction)
        self.match_iou = _check_match_iou(match_iou)
        self.type_assignment = _check_type_assignment(type_assignment)
        self.empty_value = check_empty_value(empty_value)
        if not isinstance(skip_empty_gt, bool):
            raise TypeError(f"skip_empty_gt must be a bool, got {type(skip_empty_gt).__name__}.")
        self.skip_empty_gt = skip_empty_gt
        self.num_classes = None if num_classes is None else check_num_classes(num_classes)
        if class_index is None:
            self.classes: list[int] | None = None
        else:
            if self.num_classes is None:
                raise ValueError("num_classes is required when class_index is set.")
            if class_index == "mean":
                self.classes = list(range(1, self.num_classes))
            elif isinstance(class_index, (int, np.integer)) and not isinstance(class_index, bool):
                if not 1 <= class_index < self.num_classes:
                    raise ValueError(f"class_index must be in [1, {self.num_classes}), got {class_index}.")
                self.classes = [int(class_index)]
            else:
                raise ValueError(f"class_index must be None, an int or 'mean', got {class_index!r}.")
        self.class_index = class_index

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        """Per-image statistics.

        Args:
            y_pred: ``(B, 1|2, H, W)`` (or ``(B, 1|2, H, W, D)``) predicted instance ids (+ types).
            y: GT instance ids (+ types), same shape.

        Returns:
            ``(B, n_classes, n_stats)`` float64 tensor of :class:`InstanceStats` vectors (n_classes = 1 when
            class-agnostic).

        Raises:
            ValueError: on wrong shapes (per-class metrics need 2 channels).
        """
        y_pred, y = _check_batch(y_pred, y, "InstanceMetric")
        if y_pred.ndim not in (4, 5) or y_pred.shape[1] not in (1, 2):
            raise ValueError(f"InstanceMetric expects (B, 1 or 2, H, W[, D]) tensors, got shape {tuple(y_pred.shape)}.")
        if self.classes is not None and y_pred.shape[1] != 2:
            raise ValueError("per-class InstanceMetric needs (B, 2, H, W) inputs: channel 0 ids, channel 1 types.")
        rows = []
        for b in range(y_pred.shape[0]):
            if self.classes is None:
                vectors = [instance_stats(y[b, 0], y_pred[b, 0], match_iou=self.match_iou).to_array()]
            else:
                per = per_class_instance_stats(
                    y[b, 0],
                    y_pred[b, 0],
                    y[b, 1],
                    y_pred[b, 1],
                    num_classes=self.num_classes,
                    match_iou=self.match_iou,
                    type_assignment=self.type_assignment,
                )
                vectors = [per[k].to_array() for k in self.classes]
            rows.append(np.stack(vectors))
        return torch.from_numpy(np.stack(rows))

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        """Reduce the buffered statistics to one value (0-d float64 tensor).

        Raises:
            ValueError: when nothing was buffered.
        """
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("InstanceMetric has no data to aggregate; call it on at least one batch first.")
        arr = data.cpu().numpy()
        values = []
        for c in range(arr.shape[1]):
            stats = [InstanceStats.from_array(row) for row in arr[:, c]]
            reduced = reduce_instance_stats(
                stats, reduction=self.reduction, empty_value=self.empty_value, skip_empty_gt=self.skip_empty_gt
            )
            values.append(reduced[self.metric])
        return torch.tensor(nanmean(values), dtype=torch.float64)


class SemanticMetric(CumulativeIterationMetric):
    """Dice / IoU / HD / HD95 over a dataset for one class or the mean of the foreground classes.

    Args:
        metric: ``"dice"``, ``"iou"``, ``"hd"`` or ``"hd95"``.
        num_classes: number of classes including the background.
        class_index: ``None`` = mean over classes ``1 .. num_classes - 1`` (mean Dice, mIoU, mean HD); ``k`` = class k.
        spacing: pixel / voxel size for HD (one number or one per spatial axis); ``None`` = pixels.
        reduction: ``"per_image_mean"`` or ``"pooled"`` (pooled only for Dice / IoU).
        empty_value: per-image value of a class on neither side (NaN = skipped).
        missing_value: HD / HD95 of a class on exactly one side (default inf).

    Raises:
        ValueError, TypeError: on bad arguments.
    """

    def __init__(
        self,
        metric: str = "dice",
        *,
        num_classes: int,
        class_index: int | None = None,
        spacing: float | Sequence[float] | None = None,
        reduction: str = "per_image_mean",
        empty_value: float = math.nan,
        missing_value: float = math.inf,
    ) -> None:
        super().__init__()
        if metric not in SEMANTIC_METRICS:
            raise ValueError(f"metric must be one of {SEMANTIC_METRICS}, got {metric!r}.")
        self.metric = metric
        self.num_classes = check_num_classes(num_classes)
        if class_index is not None:
            if isinstance(class_index, bool) or not isinstance(class_index, (int, np.integer)):
                raise ValueError(f"class_index must be None or an int, got {class_index!r}.")
            if not 0 <= class_index < self.num_classes:
                raise ValueError(f"class_index must be in [0, {self.num_classes}), got {class_index}.")
        self.class_index = class_index
        self.spacing = spacing
        self.reduction = check_reduction(reduction)
        if self.reduction == "pooled" and metric in ("hd", "hd95"):
            raise ValueError(f"reduction='pooled' is defined for dice and iou only, not {metric!r}.")
        self.empty_value = check_empty_value(empty_value)
        self.missing_value = check_empty_value(missing_value, "missing_value")

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        """Per-image, per-class statistics.

        Args:
            y_pred: ``(B, 1, *spatial)`` class indices or ``(B, num_classes, *spatial)`` one-hot.
            y: the ground truth in the same layout.
            kwargs: ``spacing`` overrides the constructor's spacing for this batch.

        Returns:
            ``(B, num_classes, 4)`` float64 tensor: intersection, GT count, prediction count, distance (NaN when
            the metric is not a distance or the class is missing on a side).

        Raises:
            ValueError: on a channel count other than 1 or ``num_classes``.
        """
        y_pred, y = _check_batch(y_pred, y, "SemanticMetric")
        if y_pred.ndim not in (4, 5):
            raise ValueError(f"SemanticMetric expects (B, C, H, W[, D]) tensors, got shape {tuple(y_pred.shape)}.")
        channels = y_pred.shape[1]
        if channels == 1:
            stats = self._stats(y[:, 0], y_pred[:, 0], one_hot=False, **kwargs)
        elif channels == self.num_classes:
            stats = self._stats(y, y_pred, one_hot=True, **kwargs)
        else:
            raise ValueError(
                f"SemanticMetric expects 1 channel (class indices) or num_classes={self.num_classes} (one-hot), "
                f"got {channels}."
            )
        if self.metric in ("hd", "hd95"):
            dist = getattr(stats, self.metric)
        else:
            dist = np.full(stats.inter.shape, np.nan)
        out = np.stack([stats.inter, stats.gt_count, stats.pred_count, dist], axis=-1).astype(np.float64)
        return torch.from_numpy(out)

    def _stats(self, gt: torch.Tensor, pred: torch.Tensor, *, one_hot: bool, **kwargs: Any) -> SemanticStats:
        return semantic_stats(
            gt,
            pred,
            num_classes=self.num_classes,
            one_hot=one_hot,
            distances=self.metric in ("hd", "hd95"),
            spacing=kwargs.get("spacing", self.spacing),
        )

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        """Reduce the buffered statistics to one value (0-d float64 tensor).

        Raises:
            ValueError: when nothing was buffered.
        """
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("SemanticMetric has no data to aggregate; call it on at least one batch first.")
        arr = data.cpu().numpy()
        inter, gc, pc, dist = (arr[..., i] for i in range(4))
        classes = [self.class_index] if self.class_index is not None else list(range(1, self.num_classes))
        if self.reduction == "pooled":
            inter_sum, total = inter.sum(axis=0), (gc + pc).sum(axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                if self.metric == "dice":
                    per_class = 2.0 * inter_sum / total
                else:
                    per_class = inter_sum / (total - inter_sum)
            per_class = np.where(total > 0, per_class, self.empty_value)
        else:
            stats = SemanticStats(
                inter=inter.astype(np.int64),
                gt_count=gc.astype(np.int64),
                pred_count=pc.astype(np.int64),
                hd=dist if self.metric == "hd" else None,
                hd95=dist if self.metric == "hd95" else None,
            )
            values = stats.scores(empty_value=self.empty_value, missing_value=self.missing_value)[self.metric]
            per_class = nanmean(values, axis=0)
        return torch.tensor(nanmean(np.asarray(per_class, dtype=np.float64)[classes]), dtype=torch.float64)


class MissingClassCount(SemanticMetric):
    """How many (image, class) pairs have the class on exactly one side: in the GT but not predicted, or predicted
    but not in the GT.

    There Dice and IoU are 0 and the Hausdorff distance is undefined (no boundary to reach). The bundles' validation
    leaves such pairs out of the HD means (``missing_value=NaN``, as MONAI's reductions skip NaN) and logs this
    count beside them, so that ``mean_hd`` stays a finite distance and the missed classes stay visible.

    Args:
        num_classes: number of classes including the background.
        class_index: ``None`` = classes ``1 .. num_classes - 1``; ``k`` = class k only.
        side: ``"either"`` (default), ``"missed"`` (in the GT, not predicted) or ``"spurious"`` (predicted, not in
            the GT).

    Raises:
        ValueError: on bad arguments.
    """

    SIDES = ("either", "missed", "spurious")

    def __init__(self, *, num_classes: int, class_index: int | None = None, side: str = "either") -> None:
        super().__init__("dice", num_classes=num_classes, class_index=class_index)
        if side not in self.SIDES:
            raise ValueError(f"side must be one of {self.SIDES}, got {side!r}.")
        self.side = side

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        """The count over the buffered images (0-d float64 tensor; 0 before any image).

        Returns:
            The number of (image, class) pairs with the class on the requested side only.
        """
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            return torch.tensor(0.0, dtype=torch.float64)
        arr = data.cpu().numpy()
        classes = [self.class_index] if self.class_index is not None else list(range(1, self.num_classes))
        gc, pc = arr[..., classes, 1], arr[..., classes, 2]
        missed, spurious = (gc > 0) & (pc == 0), (gc == 0) & (pc > 0)
        hits = {"either": missed | spurious, "missed": missed, "spurious": spurious}[self.side]
        return torch.tensor(float(hits.sum()), dtype=torch.float64)
