"""Semantic segmentation metrics per class: Dice, IoU, Hausdorff distance (HD) and its 95th percentile (HD95).

Inputs are batches of label maps ``(B, H, W)`` / ``(B, H, W, D)`` holding class indices in ``[0, num_classes)``
(0 = background), or with ``one_hot=True`` binary maps ``(B, num_classes, H, W[, D])``. Every result has shape
``(B, num_classes)`` with column k for class k (the background column included); mIoU and mean Dice are the means
over the foreground columns (see :mod:`coseg.metrics.aggregate`).

- Dice ``2|G&P| / (|G|+|P|)`` and IoU ``|G&P| / |G|P|``. Both equal MONAI's ``DiceMetric`` / ``MeanIoU``; they are
  counted here with ``np.bincount`` on the label maps because MONAI needs float one-hot tensors
  ``(B, num_classes, *spatial)`` (about 4 GB for one 50-class CBCT volume of 170 x 350 x 370 voxels).
- HD / HD95: MONAI's definition (``compute_hausdorff_distance``): Euclidean distances between the boundary pixels
  of the two masks (a mask touching the image border has a boundary there), the maximum (HD) or 95th percentile
  (HD95, linear interpolation) of each directed set, then the larger of the two directions. In pixels, or in
  physical units with ``spacing`` (one value per array axis). The distances come from MONAI's
  ``get_edge_surface_distance`` called once per class for both HD and HD95 (MONAI returns them in float32, so
  distances carry ~1e-7 relative rounding).

Empty masks (documented convention):

- class absent from both GT and prediction: every metric is ``empty_value`` (default NaN = undefined, skipped by
  the aggregators; MONAI's ``ignore_empty=False`` and the released Co-Seg++ evaluation use 1.0 for Dice/IoU).
- class in exactly one of them: Dice = IoU = 0; HD = HD95 = ``missing_value`` (default ``inf``: no boundary to
  reach; MONAI gives inf or NaN). The released Co-Seg++ evaluation drops such images from its HD mean, which is
  ``missing_value=float("nan")`` here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics.utils import get_edge_surface_distance

from ._inputs import ArrayLike, as_label_map, check_empty_value, check_num_classes, check_same_shape, check_spacing

__all__ = [
    "SEMANTIC_METRICS",
    "SemanticStats",
    "semantic_stats",
    "semantic_scores",
    "dice_per_class",
    "iou_per_class",
    "hausdorff_per_class",
]

SEMANTIC_METRICS = ("dice", "iou", "hd", "hd95")
_DISTANCES = ("hd", "hd95")


@dataclass(frozen=True)
class SemanticStats:
    """Per-image, per-class counts and distances; all arrays are ``(B, num_classes)``.

    Attributes:
        inter: pixels of class k in both GT and prediction.
        gt_count: pixels of class k in the GT.
        pred_count: pixels of class k in the prediction.
        hd: Hausdorff distance, NaN where the class is missing from either side (filled in by :meth:`scores`);
            ``None`` when not computed.
        hd95: 95th-percentile Hausdorff distance, same conventions.
    """

    inter: np.ndarray
    gt_count: np.ndarray
    pred_count: np.ndarray
    hd: np.ndarray | None = None
    hd95: np.ndarray | None = None

    def scores(self, *, empty_value: float = math.nan, missing_value: float = math.inf) -> dict[str, np.ndarray]:
        """Metric values with the empty-mask conventions of the module applied.

        Args:
            empty_value: value where the class is absent from both GT and prediction.
            missing_value: HD / HD95 where the class is present on exactly one side.

        Returns:
            ``{"dice", "iou"}`` and, when computed, ``{"hd", "hd95"}`` -> ``(B, num_classes)`` float64 arrays.
        """
        empty_value = check_empty_value(empty_value)
        missing_value = check_empty_value(missing_value, "missing_value")
        inter = self.inter.astype(np.float64)
        total = (self.gt_count + self.pred_count).astype(np.float64)
        both_empty = total == 0
        one_empty = ((self.gt_count == 0) | (self.pred_count == 0)) & ~both_empty
        with np.errstate(invalid="ignore", divide="ignore"):
            out = {"dice": 2.0 * inter / total, "iou": inter / (total - inter)}
        for name in _DISTANCES:
            values = getattr(self, name)
            if values is not None:
                out[name] = np.where(one_empty, missing_value, values.astype(np.float64))
        for v in out.values():
            v[both_empty] = empty_value
        return out


def _prepare(gt: ArrayLike, pred: ArrayLike, num_classes: int, one_hot: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate and return ``(gt, pred, spatial_dims)``."""
    if not isinstance(one_hot, bool):
        raise TypeError(f"one_hot must be a bool, got {type(one_hot).__name__}.")
    ndims = (4, 5) if one_hot else (3, 4)
    g = as_label_map(gt, "gt", ndims=ndims)
    p = as_label_map(pred, "pred", ndims=ndims)
    check_same_shape(g, p, "gt", "pred")
    layout = "(B, num_classes, H, W[, D])" if one_hot else "(B, H, W[, D])"
    if one_hot:
        if g.shape[1] != num_classes:
            raise ValueError(f"one-hot inputs {layout} need {num_classes} channels, got shape {g.shape}.")
        for arr, name in ((g, "gt"), (p, "pred")):
            if arr.size and int(arr.max()) > 1:
                raise ValueError(f"one-hot {name} must hold only 0 and 1, got max {int(arr.max())}.")
    else:
        for arr, name in ((g, "gt"), (p, "pred")):
            if arr.size and int(arr.max()) >= num_classes:
                raise ValueError(f"{name} has class {int(arr.max())} >= num_classes={num_classes} {layout}.")
    spatial_dims = g.ndim - (2 if one_hot else 1)
    return g, p, spatial_dims


def _counts(g: np.ndarray, p: np.ndarray, num_classes: int, one_hot: bool) -> tuple[np.ndarray, ...]:
    b = g.shape[0]
    if one_hot:
        gf = g.reshape(b, num_classes, -1).astype(bool)
        pf = p.reshape(b, num_classes, -1).astype(bool)
        return (gf & pf).sum(-1), gf.sum(-1), pf.sum(-1)
    inter = np.zeros((b, num_classes), dtype=np.int64)
    gc = np.zeros_like(inter)
    pc = np.zeros_like(inter)
    for i in range(b):
        gi, pi = g[i].reshape(-1), p[i].reshape(-1)
        inter[i] = np.bincount(gi[gi == pi], minlength=num_classes)
        gc[i] = np.bincount(gi, minlength=num_classes)
        pc[i] = np.bincount(pi, minlength=num_classes)
    return inter, gc, pc


def _boundary_distances(
    gmask: np.ndarray, pmask: np.ndarray, spacing: list[float] | None, percentiles: Sequence[float | None]
) -> list[float]:
    """MONAI boundary distances of two non-empty masks, reduced once per requested percentile (None = max)."""
    with warnings.catch_warnings():
        # MONAI 1.5-1.6 passes its own deprecated always_return_as_numpy argument internally: not our call's issue
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        _, distances, _ = get_edge_surface_distance(
            torch.from_numpy(pmask), torch.from_numpy(gmask), spacing=spacing, symmetric=True, warn_empty=False
        )
    out = []
    for q in percentiles:
        per_direction = [d.max() if q is None else torch.quantile(d, q / 100.0) for d in distances if d.numel() > 0]
        out.append(float(torch.stack(per_direction).max()))
    return out


def _distance_table(
    g: np.ndarray,
    p: np.ndarray,
    gc: np.ndarray,
    pc: np.ndarray,
    num_classes: int,
    one_hot: bool,
    spacing: list[float] | None,
    percentiles: Sequence[float | None],
) -> list[np.ndarray]:
    b = g.shape[0]
    tables = [np.full((b, num_classes), np.nan, dtype=np.float64) for _ in percentiles]
    for i in range(b):
        for k in range(num_classes):
            if gc[i, k] == 0 or pc[i, k] == 0:
                continue
            gm = g[i, k].astype(bool) if one_hot else g[i] == k
            pm = p[i, k].astype(bool) if one_hot else p[i] == k
            for table, value in zip(tables, _boundary_distances(gm, pm, spacing, percentiles)):
                table[i, k] = value
    return tables


def semantic_stats(
    gt: ArrayLike,
    pred: ArrayLike,
    *,
    num_classes: int,
    one_hot: bool = False,
    distances: bool = True,
    spacing: float | Sequence[float] | None = None,
) -> SemanticStats:
    """Counts (for Dice / IoU) and, optionally, HD and HD95 of every class of every image.

    Args:
        gt: ``(B, H, W[, D])`` class indices in ``[0, num_classes)`` (numpy or torch), or with ``one_hot=True``
            binary ``(B, num_classes, H, W[, D])``.
        pred: the prediction, same layout and shape.
        num_classes: number of classes including the background (>= 2).
        one_hot: read the inputs as one-hot maps.
        distances: also compute HD and HD95 (slower: one distance query per class present on both sides).
        spacing: pixel / voxel size, one number or one per spatial axis (array order); ``None`` = pixels.

    Returns:
        :class:`SemanticStats` with ``(B, num_classes)`` arrays.

    Raises:
        TypeError: on non-array inputs, non-numeric dtypes or a bad ``spacing`` type.
        ValueError: on shape mismatch, wrong number of dimensions or channels, negative / non-integer / too large
            class values, or a bad ``spacing``.
    """
    num_classes = check_num_classes(num_classes)
    g, p, spatial_dims = _prepare(gt, pred, num_classes, one_hot)
    spacing_list = check_spacing(spacing, spatial_dims)
    inter, gc, pc = _counts(g, p, num_classes, one_hot)
    hd = hd95 = None
    if distances:
        hd, hd95 = _distance_table(g, p, gc, pc, num_classes, one_hot, spacing_list, (None, 95.0))
    return SemanticStats(inter=inter, gt_count=gc, pred_count=pc, hd=hd, hd95=hd95)


def semantic_scores(
    gt: ArrayLike,
    pred: ArrayLike,
    *,
    num_classes: int,
    metrics: Sequence[str] = SEMANTIC_METRICS,
    one_hot: bool = False,
    spacing: float | Sequence[float] | None = None,
    empty_value: float = math.nan,
    missing_value: float = math.inf,
) -> dict[str, np.ndarray]:
    """Per-image, per-class Dice / IoU / HD / HD95.

    Args:
        gt, pred, num_classes, one_hot, spacing: see :func:`semantic_stats`.
        metrics: any of ``"dice"``, ``"iou"``, ``"hd"``, ``"hd95"``.
        empty_value: value where a class is absent from both sides (default NaN).
        missing_value: HD / HD95 where a class is on exactly one side (default inf).

    Returns:
        ``{metric: (B, num_classes) float64 array}`` for the requested metrics.

    Raises:
        ValueError: on an unknown metric name, plus the errors of :func:`semantic_stats`.
    """
    if isinstance(metrics, str):
        metrics = (metrics,)
    unknown = [m for m in metrics if m not in SEMANTIC_METRICS]
    if unknown or not metrics:
        raise ValueError(f"metrics must be a non-empty subset of {SEMANTIC_METRICS}, got {tuple(metrics)}.")
    stats = semantic_stats(
        gt,
        pred,
        num_classes=num_classes,
        one_hot=one_hot,
        distances=any(m in _DISTANCES for m in metrics),
        spacing=spacing,
    )
    scores = stats.scores(empty_value=empty_value, missing_value=missing_value)
    return {m: scores[m] for m in metrics}


def dice_per_class(
    gt: ArrayLike, pred: ArrayLike, *, num_classes: int, one_hot: bool = False, empty_value: float = math.nan
) -> np.ndarray:
    """Dice of every class of every image.

    Args:
        gt: ``(B, H, W[, D])`` class indices in ``[0, num_classes)``, or one-hot ``(B, num_classes, H, W[, D])``.
        pred: the prediction, same layout.
        num_classes: number of classes including the background.
        one_hot: read the inputs as one-hot maps.
        empty_value: value where the class is on neither side.

    Returns:
        ``(B, num_classes)`` float64; ``empty_value`` where the class is on neither side, 0 where on one side.

    Raises:
        TypeError, ValueError: see :func:`semantic_stats`.
    """
    scores = semantic_scores(
        gt, pred, num_classes=num_classes, metrics=("dice",), one_hot=one_hot, empty_value=empty_value
    )
    return scores["dice"]


def iou_per_class(
    gt: ArrayLike, pred: ArrayLike, *, num_classes: int, one_hot: bool = False, empty_value: float = math.nan
) -> np.ndarray:
    """IoU (Jaccard) of every class of every image, with the arguments, layout and errors of :func:`dice_per_class`;
    mIoU is the mean of the foreground columns."""
    scores = semantic_scores(
        gt, pred, num_classes=num_classes, metrics=("iou",), one_hot=one_hot, empty_value=empty_value
    )
    return scores["iou"]


def hausdorff_per_class(
    gt: ArrayLike,
    pred: ArrayLike,
    *,
    num_classes: int,
    percentile: float | None = None,
    spacing: float | Sequence[float] | None = None,
    one_hot: bool = False,
    empty_value: float = math.nan,
    missing_value: float = math.inf,
) -> np.ndarray:
    """Hausdorff distance (``percentile=None``) or its percentile version (95 for HD95) per class and image.

    Args:
        gt, pred, num_classes, one_hot, spacing: see :func:`semantic_stats`.
        percentile: ``None`` for the full HD (the paper's HD), else a value in ``[0, 100]``.
        empty_value: value where the class is on neither side.
        missing_value: value where the class is on exactly one side.

    Returns:
        ``(B, num_classes)`` float64 distances in pixels, or in the units of ``spacing``.

    Raises:
        ValueError: when ``percentile`` is outside ``[0, 100]``, plus the errors of :func:`semantic_stats`.
    """
    if percentile is not None:
        if isinstance(percentile, bool) or not isinstance(percentile, (int, float, np.integer, np.floating)):
            raise TypeError(f"percentile must be None or a number, got {type(percentile).__name__}.")
        if not 0.0 <= float(percentile) <= 100.0:
            raise ValueError(f"percentile must be in [0, 100], got {percentile}.")
        percentile = float(percentile)
    empty_value = check_empty_value(empty_value)
    missing_value = check_empty_value(missing_value, "missing_value")
    num_classes = check_num_classes(num_classes)
    g, p, spatial_dims = _prepare(gt, pred, num_classes, one_hot)
    spacing_list = check_spacing(spacing, spatial_dims)
    _, gc, pc = _counts(g, p, num_classes, one_hot)
    (table,) = _distance_table(g, p, gc, pc, num_classes, one_hot, spacing_list, (percentile,))
    both_empty = (gc == 0) & (pc == 0)
    one_empty = ((gc == 0) | (pc == 0)) & ~both_empty
    table[one_empty] = missing_value
    table[both_empty] = empty_value
    return table
