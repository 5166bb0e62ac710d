"""Region ("stuff") metrics: tissue panoptic quality, and the GlaS object-level Dice and Hausdorff distance.

Tissue PQ (the paper's PQ for tissue / gland classes, as in the released Co-Seg++ evaluation): for every semantic
class k the "instances" are the connected components (8-connectivity in 2D, 26 in 3D) of the class mask; predicted
components smaller than ``min_area`` pixels are removed and a ``closing_size`` x ``closing_size`` grey closing is
applied to the predicted component map (released defaults: 200 pixels and 5 x 5; the GT components are used as
they are); then PQ per class as :func:`coseg.metrics.instance.panoptic_quality`. Unlike the released code, component
ids are not stored in 8 bits, so images with more than 255 components keep all of them.

GlaS object metrics (Sirinukunwattana et al., "Gland segmentation in colon histology images: The GlaS challenge
contest", MedIA 2017): each object is compared with the object of the other map that overlaps it most (ties: the
smallest id), weighted by its area within its own map, and the two directions are averaged:
``0.5 * (sum_i |G_i|/|G| D(G_i, S*(G_i)) + sum_j |S_j|/|S| D(G*(S_j), S_j))``.

- Object Dice: an object overlapping nothing scores 0.
- Object Hausdorff: Hausdorff distance between the two objects' pixel sets (all pixels, as the official MATLAB code);
  an object overlapping nothing is compared with the object of the other map at the smallest Hausdorff distance.

Empty maps: both empty -> ``empty_value`` (default NaN); exactly one empty -> object Dice 0 and object Hausdorff
``missing_value`` (default inf).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
from scipy import ndimage

from ._inputs import ArrayLike, as_label_map, check_empty_value, check_num_classes, check_same_shape, check_spacing
from .instance import InstanceStats, _build_table, _check_match_iou, _stats_from_table, _Table

__all__ = [
    "tissue_instances",
    "tissue_panoptic_stats",
    "tissue_panoptic_quality",
    "object_dice",
    "object_hausdorff",
]

RELEASED_MIN_AREA = 200
RELEASED_CLOSING_SIZE = 5


def _check_non_negative_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}.")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}.")
    return int(value)


def tissue_instances(mask: ArrayLike, *, min_area: int = 0, closing_size: int = 0) -> np.ndarray:
    """Label the connected components of a binary region mask as the released Co-Seg++ code does.

    Steps: components with full connectivity (8 in 2D, labelled by OpenCV; 26 in 3D, by scipy), removal of the
    components with fewer than ``min_area`` pixels, then a grey closing of the component map with a
    ``closing_size`` square (0 or 1 = none), which fills gaps and holes narrower than the square with a neighbouring
    component's id (max-then-min filter, image border ignored, as OpenCV's ``morphologyEx(MORPH_CLOSE)``; a
    component less than half the square from the border therefore grows up to the border).

    Args:
        mask: ``(H, W)`` or ``(H, W, D)`` binary mask (numpy or torch; any non-zero value is foreground).
        min_area: smallest component kept, in pixels.
        closing_size: side of the square structuring element (odd, or 0 / 1 for no closing).

    Returns:
        ``int64`` component map of the mask's shape, ids ``1..n`` (gaps where components were removed).

    Raises:
        TypeError, ValueError: on a bad mask or negative / even sizes.
    """
    min_area = _check_non_negative_int(min_area, "min_area")
    closing_size = _check_non_negative_int(closing_size, "closing_size")
    if closing_size > 1 and closing_size % 2 == 0:
        raise ValueError(f"closing_size must be odd (centred square) or 0/1 for none, got {closing_size}.")
    m = as_label_map(mask, "mask") > 0
    if m.ndim == 2:
        # OpenCV as the released code: its labelling order differs from scipy's, and the closing of a label map
        # depends on the order of the ids of neighbouring components.
        n, labels, _, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
        n -= 1
    else:
        labels, n = ndimage.label(m, structure=np.ones((3,) * m.ndim, dtype=bool))
    labels = labels.astype(np.int64)
    if min_area > 0 and n > 0:
        area = np.bincount(labels.reshape(-1), minlength=n + 1)
        small = area < min_area
        small[0] = False
        labels[small[labels]] = 0
    if closing_size > 1:
        # mode="nearest" makes the padded border a copy of pixels already inside every window: border ignored.
        labels = ndimage.grey_closing(labels, size=(closing_size,) * m.ndim, mode="nearest")
    return labels


def tissue_panoptic_stats(
    gt: ArrayLike,
    pred: ArrayLike,
    *,
    num_classes: int,
    min_area: int = RELEASED_MIN_AREA,
    closing_size: int = RELEASED_CLOSING_SIZE,
    match_iou: float = 0.5,
) -> dict[int, InstanceStats]:
    """Per-class tissue panoptic statistics of one semantic map pair.

    Args:
        gt: ``(H, W)`` (or ``(H, W, D)``) GT class indices in ``[0, num_classes)``; 0 = background.
        pred: predicted class indices, same shape.
        num_classes: number of classes including the background.
        min_area: predicted components below this many pixels are dropped (released code: 200).
        closing_size: closing square applied to the predicted component map (released code: 5).
        match_iou: PQ matching threshold.

    Returns:
        ``{k: InstanceStats}`` for ``k = 1 .. num_classes - 1`` (``.scores()`` gives DQ / SQ / PQ).

    Raises:
        TypeError, ValueError: on bad maps or arguments.
    """
    num_classes = check_num_classes(num_classes)
    match_iou = _check_match_iou(match_iou)
    g = as_label_map(gt, "gt")
    p = as_label_map(pred, "pred")
    check_same_shape(g, p, "gt", "pred")
    for arr, name in ((g, "gt"), (p, "pred")):
        if arr.size and int(arr.max()) >= num_classes:
            raise ValueError(f"{name} has class {int(arr.max())} >= num_classes={num_classes}.")
    out = {}
    for k in range(1, num_classes):
        gt_inst = tissue_instances(g == k)
        pred_inst = tissue_instances(p == k, min_area=min_area, closing_size=closing_size)
        out[k] = _stats_from_table(_build_table(gt_inst, pred_inst), match_iou=match_iou)
    return out


def tissue_panoptic_quality(
    gt: ArrayLike,
    pred: ArrayLike,
    *,
    num_classes: int,
    min_area: int = RELEASED_MIN_AREA,
    closing_size: int = RELEASED_CLOSING_SIZE,
    match_iou: float = 0.5,
    empty_value: float = math.nan,
    skip_empty_gt: bool = False,
) -> dict[int, dict[str, float]]:
    """Tissue PQ per class (see :func:`tissue_panoptic_stats`).

    Args:
        gt, pred, num_classes, min_area, closing_size, match_iou: see :func:`tissue_panoptic_stats`.
        empty_value: value when class k is on neither side.
        skip_empty_gt: give ``empty_value`` whenever the GT lacks class k (the released evaluation's rule);
            by default a class predicted but absent from the GT scores 0.

    Returns:
        ``{k: {"dq": ..., "sq": ..., "pq": ...}}`` for ``k = 1 .. num_classes - 1``.
    """
    stats = tissue_panoptic_stats(
        gt, pred, num_classes=num_classes, min_area=min_area, closing_size=closing_size, match_iou=match_iou
    )
    out = {}
    for k, s in stats.items():
        scores = s.scores(empty_value=empty_value, skip_empty_gt=skip_empty_gt)
        out[k] = {"dq": scores["dq"], "sq": scores["sq"], "pq": scores["pq"]}
    return out


def _best_partners(rows: np.ndarray, cols: np.ndarray, inter: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For each row index < n: the column of largest overlap (ties: smallest column; -1 without overlap), and
    that overlap (0 without)."""
    partner = np.full(n, -1, dtype=np.int64)
    overlap = np.zeros(n, dtype=np.int64)
    if len(rows):
        order = np.lexsort((cols, -inter, rows))
        rs = rows[order]
        first = np.ones(len(rs), dtype=bool)
        first[1:] = rs[1:] != rs[:-1]
        partner[rs[first]] = cols[order][first]
        overlap[rs[first]] = inter[order][first]
    return partner, overlap


def _prepare_objects(gt: ArrayLike, pred: ArrayLike) -> tuple[np.ndarray, np.ndarray, _Table, int, int]:
    """Validated maps, their contingency table and the numbers of GT and predicted objects."""
    g = as_label_map(gt, "gt")
    p = as_label_map(pred, "pred")
    check_same_shape(g, p, "gt", "pred")
    table = _build_table(g, p)
    n_g = int((table.gt_area[1:] > 0).sum())
    n_p = int((table.pred_area[1:] > 0).sum())
    return g, p, table, n_g, n_p


def object_dice(gt: ArrayLike, pred: ArrayLike, *, empty_value: float = math.nan) -> float:
    """GlaS object-level Dice, computed from the contingency table.

    Args:
        gt: ``(H, W)`` GT object ids (0 = background), numpy or torch.
        pred: ``(H, W)`` predicted object ids.
        empty_value: result when neither map has an object.

    Returns:
        Object Dice in ``[0, 1]`` (0 when exactly one map is empty).

    Raises:
        TypeError, ValueError: on bad maps.
    """
    empty_value = check_empty_value(empty_value)
    _, _, t, n_g, n_p = _prepare_objects(gt, pred)
    if n_g == 0 and n_p == 0:
        return empty_value
    if n_g == 0 or n_p == 0:
        return 0.0

    def one_way(rows, cols, inter, area_a, area_b) -> float:
        partner, overlap = _best_partners(rows, cols, inter, len(area_a))
        idx = np.flatnonzero(partner > 0)
        dice = 2.0 * overlap[idx] / (area_a[idx] + area_b[partner[idx]])
        return float((area_a[idx] / area_a[1:].sum() * dice).sum())

    a = one_way(t.rows, t.cols, t.inter, t.gt_area, t.pred_area)
    b = one_way(t.cols, t.rows, t.inter, t.pred_area, t.gt_area)
    return 0.5 * (a + b)


def _hausdorff(a: np.ndarray, b: np.ndarray, sampling: list[float] | None) -> float:
    """Symmetric Hausdorff distance between two non-empty pixel sets given as boolean masks of one shape."""
    to_b = ndimage.distance_transform_edt(~b, sampling=sampling)
    to_a = ndimage.distance_transform_edt(~a, sampling=sampling)
    return float(max(to_b[a].max(), to_a[b].max()))


def _object_distance(
    idx_a: np.ndarray,
    i: int,
    box_a: tuple[slice, ...],
    idx_b: np.ndarray,
    j: int,
    box_b: tuple[slice, ...],
    sampling: list[float] | None,
) -> float:
    """Hausdorff distance between object ``i`` of index map ``idx_a`` and object ``j`` of ``idx_b``.

    Works on the union of the two bounding boxes: it holds both sets, so every nearest point lies inside it.
    """
    box = tuple(slice(min(sa.start, sb.start), max(sa.stop, sb.stop)) for sa, sb in zip(box_a, box_b))
    return _hausdorff(idx_a[box] == i, idx_b[box] == j, sampling)


def object_hausdorff(
    gt: ArrayLike,
    pred: ArrayLike,
    *,
    spacing: float | Sequence[float] | None = None,
    empty_value: float = math.nan,
    missing_value: float = math.inf,
) -> float:
    """GlaS object-level Hausdorff distance.

    Args:
        gt: ``(H, W)`` GT object ids (0 = background), numpy or torch.
        pred: ``(H, W)`` predicted object ids.
        spacing: pixel size (one number or one per axis); ``None`` = pixels.
        empty_value: result when neither map has an object.
        missing_value: result when exactly one map has objects.

    Returns:
        Object Hausdorff distance (pixels or the units of ``spacing``).

    Raises:
        TypeError, ValueError: on bad maps or spacing.
    """
    empty_value = check_empty_value(empty_value)
    missing_value = check_empty_value(missing_value, "missing_value")
    g, p, t, n_g, n_p = _prepare_objects(gt, pred)
    sampling = check_spacing(spacing, g.ndim)
    if n_g == 0 and n_p == 0:
        return empty_value
    if n_g == 0 or n_p == 0:
        return missing_value
    gi = t.gt_index.reshape(g.shape)
    pi = t.pred_index.reshape(p.shape)
    gt_boxes = ndimage.find_objects(gi)  # entry i - 1 is the bounding box of index i
    pred_boxes = ndimage.find_objects(pi)

    def one_way(rows, cols, inter, area_a, area_b, idx_a, idx_b, boxes_a, boxes_b) -> float:
        partner, _ = _best_partners(rows, cols, inter, len(area_a))
        others = [j for j in range(1, len(area_b)) if area_b[j] > 0]
        total_area = area_a[1:].sum()
        total = 0.0
        for i in range(1, len(area_a)):
            if area_a[i] == 0:
                continue
            box = boxes_a[i - 1]
            if partner[i] > 0:
                j = int(partner[i])
                dist = _object_distance(idx_a, i, box, idx_b, j, boxes_b[j - 1], sampling)
            else:
                dist = min(_object_distance(idx_a, i, box, idx_b, j, boxes_b[j - 1], sampling) for j in others)
            total += area_a[i] / total_area * dist
        return total

    a = one_way(t.rows, t.cols, t.inter, t.gt_area, t.pred_area, gi, pi, gt_boxes, pred_boxes)
    b = one_way(t.cols, t.rows, t.inter, t.pred_area, t.gt_area, pi, gi, pred_boxes, gt_boxes)
    return 0.5 * (a + b)
