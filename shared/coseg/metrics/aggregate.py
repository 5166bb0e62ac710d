"""Dataset-level reduction of per-image metric statistics, stated in every result.

Two reductions (``"reduction"`` key of every result dict):

- ``"per_image_mean"`` (HoVer-Net / PanNuke style): the metric of each image, then the mean over images. Images
  where the metric is undefined (NaN: the class is on neither side, or the GT lacks it with ``skip_empty_gt``)
  are skipped explicitly; a mean over no image is NaN. With several classes: per class over images first, then
  the mean over classes (NaN classes skipped).
- ``"pooled"`` (CoNIC style): the additive statistics are summed over images first (PQ: TP, FP, FN and the IoU
  sum; AJI / AJI+: intersections and unions; DICE1 / Dice / IoU: intersections and totals) and the metric is
  computed once. The same formulas as per image are used (CoNIC adds a further 1e-6 to DQ's denominator: a
  difference below 1e-6 relative). Distances (HD, HD95) have no pooled form and are always per-image means.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._inputs import check_empty_value, check_reduction
from .instance import INSTANCE_METRICS, InstanceStats
from .semantic import SemanticStats

__all__ = [
    "pct",
    "nanmean",
    "reduce_instance_stats",
    "InstanceAccumulator",
    "SemanticAccumulator",
]


def nanmean(values: Sequence[float] | np.ndarray, axis: int | None = None) -> Any:
    """Mean over the non-NaN values (NaN when there is none, without a warning); ``inf`` propagates.

    Args:
        values: numbers.
        axis: axis to reduce (``None`` = all).

    Returns:
        float (``axis=None``) or array of means.
    """
    arr = np.asarray(values, dtype=np.float64)
    valid = ~np.isnan(arr)
    count = valid.sum(axis=axis)
    total = np.where(valid, arr, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return float(mean) if np.ndim(mean) == 0 else mean


def reduce_instance_stats(
    per_image: Sequence[InstanceStats],
    *,
    reduction: str = "per_image_mean",
    empty_value: float = math.nan,
    skip_empty_gt: bool = False,
) -> dict[str, float]:
    """Reduce per-image :class:`InstanceStats` to one value per metric.

    Args:
        per_image: one :class:`InstanceStats` per image.
        reduction: ``"per_image_mean"`` or ``"pooled"``.
        empty_value: per-image value when an image has no object on either side (NaN = skipped); pooled: the result
            when the whole dataset has none.
        skip_empty_gt: per-image mean only: also skip images whose GT has no object (PanNuke convention).

    Returns:
        ``{metric: value}`` for :data:`coseg.metrics.instance.INSTANCE_METRICS`.

    Raises:
        ValueError: on an unknown reduction.
        TypeError: when an item is not an :class:`InstanceStats`.
    """
    reduction = check_reduction(reduction)
    empty_value = check_empty_value(empty_value)
    items = list(per_image)
    for s in items:
        if not isinstance(s, InstanceStats):
            raise TypeError(f"per_image items must be InstanceStats, got {type(s).__name__}.")
    if reduction == "pooled":
        return sum(items, InstanceStats()).scores(empty_value=empty_value)
    if not items:
        return dict.fromkeys(INSTANCE_METRICS, math.nan)
    table = [s.scores(empty_value=empty_value, skip_empty_gt=skip_empty_gt) for s in items]
    return {m: nanmean([row[m] for row in table]) for m in INSTANCE_METRICS}


class InstanceAccumulator:
    """Collects per-image instance statistics and reduces them both ways.

    Example::

        acc = InstanceAccumulator()
        for gt, pred, gt_type, pred_type in data:
            acc.add(
                overall=instance_stats(gt, pred),
                per_class=per_class_instance_stats(gt, pred, gt_type, pred_type, num_classes=4),
            )
        acc.compute("pooled")  # {"reduction": "pooled", "num_images": n, "overall": {...}, "per_class": {...}, ...}

    Args:
        empty_value: see :func:`reduce_instance_stats`.
        skip_empty_gt: see :func:`reduce_instance_stats`.
    """

    def __init__(self, *, empty_value: float = math.nan, skip_empty_gt: bool = False) -> None:
        self.empty_value = check_empty_value(empty_value)
        if not isinstance(skip_empty_gt, bool):
            raise TypeError(f"skip_empty_gt must be a bool, got {type(skip_empty_gt).__name__}.")
        self.skip_empty_gt = skip_empty_gt
        self.reset()

    def reset(self) -> None:
        """Forget every image."""
        self._overall: list[InstanceStats] = []
        self._per_class: dict[int, list[InstanceStats]] = {}
        self._num_images = 0

    def __len__(self) -> int:
        return self._num_images

    def add(self, overall: InstanceStats | None = None, per_class: Mapping[int, InstanceStats] | None = None) -> None:
        """Add one image.

        Args:
            overall: class-agnostic statistics of the image.
            per_class: ``{class index: statistics}`` of the image.

        Raises:
            ValueError: when both are ``None``.
            TypeError: on wrong types.
        """
        if overall is None and per_class is None:
            raise ValueError("add() needs overall and/or per_class statistics.")
        if overall is not None:
            if not isinstance(overall, InstanceStats):
                raise TypeError(f"overall must be InstanceStats, got {type(overall).__name__}.")
            self._overall.append(overall)
        if per_class is not None:
            if not isinstance(per_class, Mapping):
                raise TypeError(f"per_class must be a mapping class -> InstanceStats, got {type(per_class).__name__}.")
            for k, s in per_class.items():
                if not isinstance(s, InstanceStats):
                    raise TypeError(f"per_class[{k!r}] must be InstanceStats, got {type(s).__name__}.")
                self._per_class.setdefault(int(k), []).append(s)
        self._num_images += 1

    def compute(self, reduction: str = "per_image_mean") -> dict[str, Any]:
        """Reduce what was added.

        Args:
            reduction: ``"per_image_mean"`` or ``"pooled"``.

        Returns:
            ``{"reduction", "num_images", "overall" (metric dict or None), "per_class" ({k: metric dict}),
            "class_mean" (mean over classes of the per-class values, NaN skipped; None without classes)}``.
        """
        reduction = check_reduction(reduction)
        kw = {"reduction": reduction, "empty_value": self.empty_value, "skip_empty_gt": self.skip_empty_gt}
        overall = reduce_instance_stats(self._overall, **kw) if self._overall else None
        per_class = {k: reduce_instance_stats(v, **kw) for k, v in sorted(self._per_class.items())}
        class_mean = {m: nanmean([d[m] for d in per_class.values()]) for m in INSTANCE_METRICS} if per_class else None
        return {
            "reduction": reduction,
            "num_images": self._num_images,
            "overall": overall,
            "per_class": per_class,
            "class_mean": class_mean,
        }

    def compute_all(self) -> dict[str, dict[str, Any]]:
        """Both reductions: ``{"per_image_mean": ..., "pooled": ...}``."""
        return {r: self.compute(r) for r in ("per_image_mean", "pooled")}


class SemanticAccumulator:
    """Collects :class:`SemanticStats` of batches and reduces Dice / IoU / HD / HD95 per class.

    Args:
        empty_value: value where a class is on neither side of an image (NaN = skipped).
        missing_value: HD / HD95 where a class is on exactly one side (default inf; NaN = skip such images, as the
            released Co-Seg++ evaluation does).
        include_background: include class 0 in the class mean (default: foreground classes only, as mIoU).
    """

    def __init__(
        self, *, empty_value: float = math.nan, missing_value: float = math.inf, include_background: bool = False
    ) -> None:
        self.empty_value = check_empty_value(empty_value)
        self.missing_value = check_empty_value(missing_value, "missing_value")
        if not isinstance(include_background, bool):
            raise TypeError(f"include_background must be a bool, got {type(include_background).__name__}.")
        self.include_background = include_background
        self.reset()

    def reset(self) -> None:
        """Forget every image."""
        self._batches: list[SemanticStats] = []

    def __len__(self) -> int:
        return sum(b.inter.shape[0] for b in self._batches)

    def add(self, stats: SemanticStats) -> None:
        """Add a batch of images.

        Raises:
            TypeError: when ``stats`` is not :class:`SemanticStats`.
            ValueError: when its number of classes differs from earlier batches.
        """
        if not isinstance(stats, SemanticStats):
            raise TypeError(f"stats must be SemanticStats, got {type(stats).__name__}.")
        if self._batches and stats.inter.shape[1] != self._batches[0].inter.shape[1]:
            raise ValueError(
                f"all batches need the same number of classes, got {stats.inter.shape[1]} after "
                f"{self._batches[0].inter.shape[1]}."
            )
        self._batches.append(stats)

    def compute(self, reduction: str = "per_image_mean") -> dict[str, Any]:
        """Reduce what was added.

        Args:
            reduction: ``"per_image_mean"`` or ``"pooled"`` (pooled applies to Dice and IoU; distances stay
                per-image means).

        Returns:
            ``{"reduction", "num_images", "per_class": {metric: list over classes}, "mean": {metric: mean over the
            (foreground) classes}, "distance_reduction": "per_image_mean"}``.
        """
        reduction = check_reduction(reduction)
        if not self._batches:
            return {"reduction": reduction, "num_images": 0, "per_class": {}, "mean": {}, "distance_reduction": None}
        scores = [b.scores(empty_value=self.empty_value, missing_value=self.missing_value) for b in self._batches]
        names = list(scores[0])
        per_class: dict[str, np.ndarray] = {}
        for m in names:
            if not all(m in s for s in scores):
                continue
            per_class[m] = nanmean(np.concatenate([s[m] for s in scores], axis=0), axis=0)
        if reduction == "pooled":
            inter = sum(b.inter.sum(axis=0) for b in self._batches).astype(np.float64)
            total = sum((b.gt_count + b.pred_count).sum(axis=0) for b in self._batches).astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                dice = np.where(total > 0, 2.0 * inter / total, self.empty_value)
                iou = np.where(total > 0, inter / (total - inter), self.empty_value)
            per_class["dice"], per_class["iou"] = dice, iou
        start = 0 if self.include_background else 1
        return {
            "reduction": reduction,
            "num_images": len(self),
            "per_class": {m: [float(v) for v in vals] for m, vals in per_class.items()},
            "mean": {m: nanmean(vals[start:]) for m, vals in per_class.items()},
            "distance_reduction": "per_image_mean" if any(m in ("hd", "hd95") for m in per_class) else None,
        }

    def compute_all(self) -> dict[str, dict[str, Any]]:
        """Both reductions: ``{"per_image_mean": ..., "pooled": ...}``."""
        return {r: self.compute(r) for r in ("per_image_mean", "pooled")}


def pct(v: Any) -> float | None:
    """A fraction as a rounded percentage; ``None`` for undefined values."""
    return None if v is None or not math.isfinite(float(v)) else round(100.0 * float(v), 2)
