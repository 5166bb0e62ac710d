"""Straightforward per-object-mask re-implementations of the reference metrics (test oracle and benchmark baseline).

They follow the published definitions step by step (HoVer-Net ``metrics/stats_utils.py`` for AJI / AJI+ / PQ /
DICE1; the GlaS challenge for object Dice) with one full-image boolean mask per object, i.e. the slow
O(n_objects x H x W) way that :mod:`coseg.metrics` avoids. Not part of the library. Also random map generators
shared by the metric tests.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linear_sum_assignment
from skimage.segmentation import expand_labels


def _relabel(label: np.ndarray) -> np.ndarray:
    """Contiguous ids 1..n in the order of the original ids (0 stays background)."""
    out = np.zeros(label.shape, dtype=np.int64)
    for new_id, old_id in enumerate(v for v in np.unique(label) if v != 0):
        out[label == old_id] = new_id + 1
    return out


def _pairwise(gt: np.ndarray, pred: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
    gt = _relabel(gt)
    pred = _relabel(pred)
    gt_masks = [gt == i for i in range(1, int(gt.max()) + 1)]
    pred_masks = [pred == i for i in range(1, int(pred.max()) + 1)]
    inter = np.zeros((len(gt_masks), len(pred_masks)), dtype=np.float64)
    union = np.zeros_like(inter)
    for i, gm in enumerate(gt_masks):
        for j in np.unique(pred[gm]):
            if j == 0:
                continue
            pm = pred_masks[j - 1]
            both = np.logical_and(gm, pm).sum()
            inter[i, j - 1] = both
            union[i, j - 1] = gm.sum() + pm.sum() - both
    return gt_masks, pred_masks, inter, union


def oracle_aji(gt: np.ndarray, pred: np.ndarray) -> float:
    """AJI; 0 when exactly one side is empty, NaN when both are."""
    gt_masks, pred_masks, inter, union = _pairwise(gt, pred)
    if not gt_masks and not pred_masks:
        return math.nan
    if not gt_masks or not pred_masks:
        return 0.0
    score = inter / (union + 1.0e-6)
    best = np.argmax(score, axis=1)
    has = score.max(axis=1) > 0
    total_inter = 0.0
    total_union = 0.0
    used_pred = set()
    for i in range(len(gt_masks)):
        if has[i]:
            total_inter += inter[i, best[i]]
            total_union += union[i, best[i]]
            used_pred.add(int(best[i]))
        else:
            total_union += gt_masks[i].sum()
    for j, pm in enumerate(pred_masks):
        if j not in used_pred:
            total_union += pm.sum()
    return total_inter / total_union


def oracle_aji_plus(gt: np.ndarray, pred: np.ndarray) -> float:
    """AJI+ with one dense Munkres assignment."""
    gt_masks, pred_masks, inter, union = _pairwise(gt, pred)
    if not gt_masks and not pred_masks:
        return math.nan
    if not gt_masks or not pred_masks:
        return 0.0
    score = inter / (union + 1.0e-6)
    rows, cols = linear_sum_assignment(-score)
    keep = score[rows, cols] > 0
    rows, cols = rows[keep], cols[keep]
    total_inter = inter[rows, cols].sum()
    total_union = union[rows, cols].sum()
    total_union += sum(m.sum() for i, m in enumerate(gt_masks) if i not in set(rows.tolist()))
    total_union += sum(m.sum() for j, m in enumerate(pred_masks) if j not in set(cols.tolist()))
    return total_inter / total_union


def oracle_pq(gt: np.ndarray, pred: np.ndarray, match_iou: float = 0.5) -> tuple[float, float, float]:
    """(DQ, SQ, PQ) as HoVer-Net's get_fast_pq; NaN triple when both sides are empty."""
    gt_masks, pred_masks, inter, union = _pairwise(gt, pred)
    if not gt_masks and not pred_masks:
        return math.nan, math.nan, math.nan
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    if match_iou >= 0.5:
        rows, cols = np.nonzero(iou > match_iou)
    else:
        rows, cols = linear_sum_assignment(-iou) if iou.size else (np.zeros(0, int), np.zeros(0, int))
        keep = iou[rows, cols] > match_iou
        rows, cols = rows[keep], cols[keep]
    tp = len(rows)
    fp = len(pred_masks) - tp
    fn = len(gt_masks) - tp
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    sq = iou[rows, cols].sum() / (tp + 1.0e-6)
    return dq, sq, dq * sq


def oracle_all(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """AJI, AJI+, DQ, SQ, PQ and DICE1 from ONE per-mask pairwise table (the fair baseline for timing)."""
    gt_masks, pred_masks, inter, union = _pairwise(gt, pred)
    if not gt_masks or not pred_masks:
        raise ValueError("oracle_all needs objects on both sides")
    out = {}
    score = inter / (union + 1.0e-6)
    best = np.argmax(score, axis=1)
    has = score.max(axis=1) > 0
    used = set(best[has].tolist())
    total_union = union[has, best[has]].sum() + sum(m.sum() for i, m in enumerate(gt_masks) if not has[i])
    total_union += sum(m.sum() for j, m in enumerate(pred_masks) if j not in used)
    out["aji"] = inter[has, best[has]].sum() / total_union
    rows, cols = linear_sum_assignment(-score)
    keep = score[rows, cols] > 0
    rows, cols = rows[keep], cols[keep]
    total_union = union[rows, cols].sum()
    total_union += sum(m.sum() for i, m in enumerate(gt_masks) if i not in set(rows.tolist()))
    total_union += sum(m.sum() for j, m in enumerate(pred_masks) if j not in set(cols.tolist()))
    out["aji_plus"] = inter[rows, cols].sum() / total_union
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    rows, cols = np.nonzero(iou > 0.5)
    tp, fp, fn = len(rows), len(pred_masks) - len(rows), len(gt_masks) - len(rows)
    out["dq"] = tp / (tp + 0.5 * fp + 0.5 * fn)
    out["sq"] = iou[rows, cols].sum() / (tp + 1.0e-6)
    out["pq"] = out["dq"] * out["sq"]
    out["dice_1"] = oracle_dice_1(gt, pred)
    return out


def oracle_dice_1(gt: np.ndarray, pred: np.ndarray) -> float:
    g, p = gt > 0, pred > 0
    total = g.sum() + p.sum()
    return math.nan if total == 0 else 2.0 * np.logical_and(g, p).sum() / total


def oracle_object_dice(gt: np.ndarray, pred: np.ndarray) -> float:
    """GlaS object-level Dice with one mask per object; NaN when both are empty, 0 when one is."""
    gt_ids = [v for v in np.unique(gt) if v != 0]
    pred_ids = [v for v in np.unique(pred) if v != 0]
    if not gt_ids and not pred_ids:
        return math.nan
    if not gt_ids or not pred_ids:
        return 0.0

    def one_way(a: np.ndarray, a_ids: list, b: np.ndarray) -> float:
        total = (a > 0).sum()
        acc = 0.0
        for i in a_ids:
            obj = a == i
            hits = b[obj]
            hits = hits[hits > 0]
            if hits.size == 0:
                continue
            vals, counts = np.unique(hits, return_counts=True)
            partner = b == vals[np.argmax(counts)]
            dice = 2.0 * np.logical_and(obj, partner).sum() / (obj.sum() + partner.sum())
            acc += obj.sum() / total * dice
        return acc

    return 0.5 * (one_way(gt, gt_ids, pred) + one_way(pred, pred_ids, gt))


def random_instances(rng: np.random.Generator, shape: tuple[int, int], n: int, *, max_id: int = 50) -> np.ndarray:
    """Blob-shaped objects with arbitrary, non-contiguous ids."""
    lab = np.zeros(shape, dtype=np.int64)
    ids = rng.choice(np.arange(1, max_id * n + 1), size=n, replace=False)
    lab[rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)] = ids
    lab = expand_labels(lab, distance=int(rng.integers(2, 6)))
    return lab * (rng.random(shape) > 0.05)


def perturbed(rng: np.random.Generator, gt: np.ndarray) -> np.ndarray:
    shifted = np.roll(gt, int(rng.integers(-3, 4)), axis=int(rng.integers(0, 2)))
    return shifted * (rng.random(gt.shape) > 0.15)
