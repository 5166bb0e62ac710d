"""Instance segmentation metrics from one contingency table: AJI, AJI+, PQ (DQ, SQ), detection F1 and DICE1.

Definitions follow HoVer-Net's ``metrics/stats_utils.py`` (``get_fast_aji``, ``get_fast_aji_plus``,
``get_fast_pq``, ``get_dice_1``) value for value, including its epsilons:

- AJI: every ground-truth (GT) object is paired with the predicted object of highest
  ``inter / (union + 1e-6)`` (ties: the smallest predicted id; a prediction may serve several GT objects); GT
  objects without any overlap and predictions never chosen add their area to the union.
- AJI+: the same, with a one-to-one (Munkres) pairing that maximises the summed ``inter / (union + 1e-6)``.
- PQ: pairs with ``IoU > match_iou``; for ``match_iou >= 0.5`` these pairs are unique, below 0.5 a Munkres
  pairing on the IoU is taken first. ``DQ = TP / (TP + FP/2 + FN/2)`` (the paper's detection "F1" at 0.5),
  ``SQ = sum(IoU of pairs) / (TP + 1e-6)``, ``PQ = DQ * SQ``.
- DICE1: binary Dice of the foregrounds, ``2 |G & P| / (|G| + |P|)``.

Ids are arbitrary non-negative integers (0 = background); they need not be contiguous. Maps are 2D (or 3D).

Empty inputs (documented convention): when exactly one of GT and prediction has no object every metric is 0
(the reference gives 0 as well); when both are empty every metric is ``empty_value`` (default NaN, meaning
"undefined"); the aggregators in :mod:`coseg.metrics.aggregate` skip NaN explicitly.

Speed: instead of one full-image mask per object (the reference's O(n_objects x H x W)), ids are mapped to
indices (a bincount look-up table, or ``np.unique`` over the runs of equal ids when ids are very large) and all
(GT, prediction) pixel counts come from one ``np.bincount`` over ``gt_index * n_pred + pred_index`` (or
``np.unique`` of those keys when the dense table would be larger than the image). The one-to-one pairings are
solved per connected component of the overlap graph (sparse for very large components), which gives the same
optimum as one large dense assignment (when several pairings tie for the optimum, which one is taken may differ
from the reference's choice).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Literal

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components, min_weight_full_bipartite_matching

from ._inputs import ArrayLike, as_label_map, check_empty_value, check_num_classes, check_same_shape

__all__ = [
    "INSTANCE_METRICS",
    "InstanceStats",
    "instance_stats",
    "instance_scores",
    "aji",
    "aji_plus",
    "panoptic_quality",
    "detection_f1",
    "dice_1",
    "instance_types",
    "per_class_instance_stats",
    "per_class_instance_scores",
]

INSTANCE_METRICS = ("aji", "aji_plus", "dq", "sq", "pq", "f1", "dice_1")

# Reference epsilons (HoVer-Net stats_utils): AJI/AJI+ rank pairs by inter / (union + 1e-6); SQ divides by TP + 1e-6.
_AJI_EPS = 1.0e-6
_SQ_EPS = 1.0e-6


@dataclass(frozen=True)
class InstanceStats:
    """Additive per-image counts from which every instance metric is computed.

    Summing the stats of several images (``a + b``) gives the pooled (CoNIC-style) statistics.

    Attributes:
        n_gt: number of ground-truth objects.
        n_pred: number of predicted objects.
        tp: matched pairs for PQ/DQ (``IoU > match_iou``).
        iou_sum: summed IoU of those pairs.
        aji_inter: AJI summed intersection of the pairs.
        aji_union: AJI summed union, including the areas of unpaired objects.
        aji_plus_inter: the same for AJI+ (one-to-one pairing).
        aji_plus_union: the same for AJI+.
        fg_inter: pixels in the foreground of both maps (for DICE1).
        fg_total: foreground pixels of the GT plus those of the prediction (for DICE1).
    """

    n_gt: int = 0
    n_pred: int = 0
    tp: int = 0
    iou_sum: float = 0.0
    aji_inter: int = 0
    aji_union: int = 0
    aji_plus_inter: int = 0
    aji_plus_union: int = 0
    fg_inter: int = 0
    fg_total: int = 0

    @property
    def fp(self) -> int:
        """Unmatched predictions."""
        return self.n_pred - self.tp

    @property
    def fn(self) -> int:
        """Unmatched ground-truth objects."""
        return self.n_gt - self.tp

    def __add__(self, other: InstanceStats) -> InstanceStats:
        if not isinstance(other, InstanceStats):
            return NotImplemented
        return InstanceStats(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of the fields, in the order of :meth:`to_array`."""
        return tuple(f.name for f in fields(cls))

    def to_array(self) -> np.ndarray:
        """Return the fields as a ``float64`` vector of shape ``(len(field_names()),)``."""
        return np.array([float(v) for v in asdict(self).values()], dtype=np.float64)

    @classmethod
    def from_array(cls, values: ArrayLike) -> InstanceStats:
        """Inverse of :meth:`to_array`.

        Raises:
            ValueError: when ``values`` does not have one entry per field.
        """
        arr = np.asarray(values.detach().cpu().numpy() if hasattr(values, "detach") else values, dtype=np.float64)
        names = cls.field_names()
        if arr.shape != (len(names),):
            raise ValueError(f"expected a vector of {len(names)} stats {names}, got shape {arr.shape}.")
        kwargs: dict[str, float | int] = {}
        for name, v in zip(names, arr):
            kwargs[name] = float(v) if name == "iou_sum" else int(round(float(v)))
        return cls(**kwargs)

    def scores(self, *, empty_value: float = math.nan, skip_empty_gt: bool = False) -> dict[str, float]:
        """Compute every metric of :data:`INSTANCE_METRICS` from these counts.

        Args:
            empty_value: value of every metric when neither side has an object (default NaN = undefined).
            skip_empty_gt: when True, also give ``empty_value`` when the ground truth has no object but the
                prediction has some (the PanNuke / CellViT / released Co-Seg++ per-class convention, where such an
                image does not count for the class). When False (default) such an image scores 0.

        Returns:
            ``{"aji", "aji_plus", "dq", "sq", "pq", "f1", "dice_1"}`` -> float (``f1`` equals ``dq``).
        """
        empty_value = check_empty_value(empty_value)
        if self.n_gt == 0 and (self.n_pred == 0 or skip_empty_gt):
            return dict.fromkeys(INSTANCE_METRICS, empty_value)
        tp, fp, fn = self.tp, self.fp, self.fn
        dq = tp / (tp + 0.5 * fp + 0.5 * fn)
        sq = self.iou_sum / (tp + _SQ_EPS)
        return {
            "aji": self.aji_inter / self.aji_union if self.aji_union > 0 else 0.0,
            "aji_plus": self.aji_plus_inter / self.aji_plus_union if self.aji_plus_union > 0 else 0.0,
            "dq": dq,
            "sq": sq,
            "pq": dq * sq,
            "f1": dq,
            "dice_1": 2.0 * self.fg_inter / self.fg_total if self.fg_total > 0 else 0.0,
        }


@dataclass(frozen=True)
class _Table:
    """Contingency table of two id maps; index 0 of both id lists is the background (id 0)."""

    gt_ids: np.ndarray  # (n_g,) sorted ids, gt_ids[0] == 0
    pred_ids: np.ndarray  # (n_p,)
    gt_area: np.ndarray  # (n_g,) pixels per id
    pred_area: np.ndarray  # (n_p,)
    rows: np.ndarray  # (nnz,) GT index >= 1 of each overlapping foreground pair, row-major order
    cols: np.ndarray  # (nnz,) prediction index >= 1
    inter: np.ndarray  # (nnz,) overlapping pixels
    gt_index: np.ndarray  # (N,) index of every pixel's GT id
    pred_index: np.ndarray  # (N,)


def _index_ids(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map ids to dense indices with the background at index 0 (present or not).

    Returns:
        ``(ids, index)``: sorted ids (``ids[0] == 0``) and the index of each element of ``flat``.
    """
    if flat.size == 0:
        return np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    top = int(flat.max())
    if top <= max(4 * flat.size, 1 << 16):
        # A look-up table is O(N + max id) and several times faster than the sort inside np.unique.
        present = np.bincount(flat, minlength=1) > 0
        present[0] = True
        ids = np.flatnonzero(present)
        lut = np.cumsum(present) - 1
        return ids.astype(np.int64), lut[flat]
    # Large ids: sort only the values of the runs of equal ids (label maps have few runs per row), not every pixel.
    starts = np.flatnonzero(np.concatenate(([True], flat[1:] != flat[:-1])))
    run_ids, run_index = np.unique(flat[starts], return_inverse=True)
    index = np.repeat(run_index.reshape(-1), np.diff(np.append(starts, flat.size)))
    if run_ids[0] != 0:
        run_ids = np.concatenate([np.zeros(1, dtype=run_ids.dtype), run_ids])
        index = index + 1
    return run_ids.astype(np.int64), index.astype(np.int64)


def _build_table(gt: np.ndarray, pred: np.ndarray) -> _Table:
    g = gt.reshape(-1)
    p = pred.reshape(-1)
    gt_ids, gi = _index_ids(g)
    pred_ids, pi = _index_ids(p)
    n_g, n_p = len(gt_ids), len(pred_ids)
    gt_area = np.bincount(gi, minlength=n_g).astype(np.int64)
    pred_area = np.bincount(pi, minlength=n_p).astype(np.int64)
    joint = gi * n_p + pi
    if n_g * n_p <= max(4 * g.size, 1 << 20):
        counts = np.bincount(joint, minlength=n_g * n_p).reshape(n_g, n_p)
        fg = counts[1:, 1:]
        rows, cols = np.nonzero(fg)
        inter = fg[rows, cols].astype(np.int64)
        rows = rows + 1
        cols = cols + 1
    else:
        # Many objects: a dense n_g x n_p table would be larger than the image; keep only the pairs that occur.
        keys, key_counts = np.unique(joint, return_counts=True)
        rows, cols = np.divmod(keys, n_p)
        keep = (rows > 0) & (cols > 0)
        rows, cols, inter = rows[keep], cols[keep], key_counts[keep].astype(np.int64)
    return _Table(gt_ids, pred_ids, gt_area, pred_area, rows.astype(np.int64), cols.astype(np.int64), inter, gi, pi)


# Components whose dense assignment matrix has more cells than this are solved as one sparse problem.
_DENSE_COMPONENT_CELLS = 4096


def _sparse_max_weight(ri: np.ndarray, ci: np.ndarray, weight: np.ndarray, n_r: int, n_c: int) -> np.ndarray:
    """Maximum-weight (not necessarily perfect) matching on a sparse bipartite graph, as a full matching.

    Scipy's sparse solver (LAPJVsp) needs a full matching, so every row r gets a dummy partner r' and every column c a
    dummy partner c' (cost 2: "unmatched"), real edges cost ``2 - w`` (> 0, as the solver ignores zero entries) and
    every real edge (r, c) has a mirror edge (c', r') of cost 2 that pairs the dummies of a matched pair. Any
    matching M then costs ``2 (n_r + n_c) - sum_M w``: the minimum is the maximum-weight matching.

    Returns:
        ``(E,)`` boolean mask of the edges in the matching.
    """
    n_e = len(ri)
    # blocks: real edges (r, c); (r, r') "r unmatched"; (c', c) "c unmatched"; mirrors (c', r')
    rows = np.concatenate([ri, np.arange(n_r), n_r + np.arange(n_c), n_r + ci])
    cols = np.concatenate([ci, n_c + np.arange(n_r), np.arange(n_c), n_c + ri])
    cost = np.concatenate([2.0 - weight, np.full(n_r + n_c + n_e, 2.0)])
    # duplicate (row, col) entries cannot occur: real edges are unique and the four blocks are disjoint
    graph = csr_matrix((cost, (rows, cols)), shape=(n_r + n_c, n_c + n_r))
    row_ind, col_ind = min_weight_full_bipartite_matching(graph)
    partner = np.full(n_r + n_c, -1, dtype=np.int64)
    partner[row_ind] = col_ind
    return partner[ri] == ci


def _max_weight_pairs(rows: np.ndarray, cols: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """One-to-one pairing of maximal total weight on a sparse bipartite graph.

    The reference solves one dense n_gt x n_pred problem with scipy's ``linear_sum_assignment``; the optimum is the
    same when each connected component of the overlap graph is solved on its own: small components with the same
    dense solver (rows and columns in id order), large ones (thousands of touching objects) together with the sparse
    solver, where a dense matrix would not fit in memory.

    Args:
        rows, cols: ``(E,)`` node indices of the edges (each (row, col) at most once), in row-major order.
        weight: ``(E,)`` positive weights.

    Returns:
        ``(E,)`` boolean mask of the edges in the pairing.
    """
    chosen = np.zeros(len(rows), dtype=bool)
    if len(rows) == 0:
        return chosen
    ur, ri = np.unique(rows, return_inverse=True)
    uc, ci = np.unique(cols, return_inverse=True)
    n_r, n_c = len(ur), len(uc)
    graph = coo_matrix((np.ones(len(rows)), (ri, n_r + ci)), shape=(n_r + n_c, n_r + n_c))
    _, node_comp = connected_components(graph, directed=False)
    edge_comp = node_comp[ri]
    edges_per_comp = np.bincount(edge_comp)
    single = edges_per_comp[edge_comp] == 1
    chosen[single] = True
    multi = np.flatnonzero(~single)
    if len(multi) == 0:
        return chosen
    rows_per_comp = np.bincount(node_comp[:n_r], minlength=len(edges_per_comp))
    cols_per_comp = np.bincount(node_comp[n_r:], minlength=len(edges_per_comp))
    large = (rows_per_comp * cols_per_comp)[edge_comp[multi]] > _DENSE_COMPONENT_CELLS
    big = multi[large]
    if len(big):
        br, bri = np.unique(ri[big], return_inverse=True)
        bc, bci = np.unique(ci[big], return_inverse=True)
        chosen[big] = _sparse_max_weight(bri, bci, weight[big], len(br), len(bc))
    small = multi[~large]
    order = small[np.argsort(edge_comp[small], kind="stable")]
    bounds = np.flatnonzero(np.diff(edge_comp[order])) + 1
    for group in np.split(order, bounds) if len(order) else []:
        lr, li = np.unique(ri[group], return_inverse=True)
        lc, lj = np.unique(ci[group], return_inverse=True)
        cost = np.zeros((len(lr), len(lc)), dtype=np.float64)
        cost[li, lj] = weight[group]
        edge_at = np.full((len(lr), len(lc)), -1, dtype=np.int64)
        edge_at[li, lj] = group
        a, b = linear_sum_assignment(-cost)
        picked = edge_at[a, b]
        chosen[picked[picked >= 0]] = True
    return chosen


def _stats_from_table(
    table: _Table,
    gt_keep: np.ndarray | None = None,
    pred_keep: np.ndarray | None = None,
    *,
    match_iou: float = 0.5,
    with_aji: bool = True,
    with_aji_plus: bool = True,
) -> InstanceStats:
    """Compute :class:`InstanceStats` on the objects selected by ``gt_keep`` / ``pred_keep`` (boolean per index)."""
    n_g, n_p = len(table.gt_ids), len(table.pred_ids)
    if gt_keep is None:
        gt_keep = np.ones(n_g, dtype=bool)
    if pred_keep is None:
        pred_keep = np.ones(n_p, dtype=bool)
    gt_keep = gt_keep.copy()
    pred_keep = pred_keep.copy()
    gt_keep[0] = False
    pred_keep[0] = False
    # ids listed in the table but with no pixel (only the background can be absent) are not objects
    gt_keep &= table.gt_area > 0
    pred_keep &= table.pred_area > 0

    sel = gt_keep[table.rows] & pred_keep[table.cols]
    r, c, inter = table.rows[sel], table.cols[sel], table.inter[sel]
    ga, pa = table.gt_area[r], table.pred_area[c]
    union = ga + pa - inter
    gt_total = int(table.gt_area[gt_keep].sum())
    pred_total = int(table.pred_area[pred_keep].sum())
    n_gt, n_pred = int(gt_keep.sum()), int(pred_keep.sum())

    # PQ / DQ / SQ
    iou = inter / union
    if match_iou >= 0.5:
        matched = iou > match_iou
    else:
        matched = _max_weight_pairs(r, c, iou) & (iou > match_iou)
    tp = int(matched.sum())
    iou_sum = float(iou[matched].sum())

    def aji_terms(pairs: np.ndarray) -> tuple[int, int]:
        """AJI numerator and denominator for the selected pairs (entries of the pair arrays): their
        intersections, and their unions plus every unpaired GT and prediction area."""
        paired_gt = np.zeros(n_g, dtype=bool)
        paired_gt[r[pairs]] = True
        paired_pred = np.zeros(n_p, dtype=bool)
        paired_pred[c[pairs]] = True
        unpaired = int(table.gt_area[gt_keep & ~paired_gt].sum()) + int(table.pred_area[pred_keep & ~paired_pred].sum())
        return int(inter[pairs].sum()), int(union[pairs].sum()) + unpaired

    aji_inter = aji_union = ajp_inter = ajp_union = 0
    if with_aji or with_aji_plus:
        iou_eps = inter / (union.astype(np.float64) + _AJI_EPS)
    if with_aji:
        # best prediction per GT object: highest iou_eps, ties broken by the smallest prediction index
        order = np.lexsort((c, -iou_eps, r))
        rs = r[order]
        first = np.ones(len(rs), dtype=bool)
        first[1:] = rs[1:] != rs[:-1]
        aji_inter, aji_union = aji_terms(order[first])
    if with_aji_plus:
        ajp_inter, ajp_union = aji_terms(_max_weight_pairs(r, c, iou_eps))

    return InstanceStats(
        n_gt=n_gt,
        n_pred=n_pred,
        tp=tp,
        iou_sum=iou_sum,
        aji_inter=aji_inter,
        aji_union=aji_union,
        aji_plus_inter=ajp_inter,
        aji_plus_union=ajp_union,
        fg_inter=int(inter.sum()),
        fg_total=gt_total + pred_total,
    )


def _check_match_iou(match_iou: object) -> float:
    if isinstance(match_iou, bool) or not isinstance(match_iou, (int, float, np.integer, np.floating)):
        raise TypeError(f"match_iou must be a float, got {type(match_iou).__name__}.")
    if not 0.0 <= float(match_iou) < 1.0:
        raise ValueError(f"match_iou must be in [0, 1), got {match_iou}.")
    return float(match_iou)


def _prepare_pair(gt: ArrayLike, pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    g = as_label_map(gt, "gt")
    p = as_label_map(pred, "pred")
    check_same_shape(g, p, "gt", "pred")
    return g, p


def instance_stats(gt: ArrayLike, pred: ArrayLike, *, match_iou: float = 0.5) -> InstanceStats:
    """Count everything the instance metrics need, from one contingency table.

    Args:
        gt: ``(H, W)`` (or ``(H, W, D)``) ground-truth instance ids, numpy or torch; 0 = background.
        pred: predicted instance ids, same shape.
        match_iou: IoU above which a (GT, prediction) pair is a PQ match, in ``[0, 1)``.

    Returns:
        :class:`InstanceStats` (use ``.scores()`` for the metric values).

    Raises:
        TypeError: for non-array inputs or non-numeric dtypes.
        ValueError: for shape mismatch, negative or non-integer ids, or ``match_iou`` outside ``[0, 1)``.
    """
    match_iou = _check_match_iou(match_iou)
    g, p = _prepare_pair(gt, pred)
    return _stats_from_table(_build_table(g, p), match_iou=match_iou)


def instance_scores(
    gt: ArrayLike, pred: ArrayLike, *, match_iou: float = 0.5, empty_value: float = math.nan
) -> dict[str, float]:
    """All instance metrics of one image at once: AJI, AJI+, DQ, SQ, PQ, F1 (= DQ) and DICE1.

    Args:
        gt: ``(H, W)`` ground-truth instance ids (numpy or torch); 0 = background; ids arbitrary.
        pred: ``(H, W)`` predicted instance ids.
        match_iou: PQ matching threshold (pairs need ``IoU > match_iou``); the paper's F1 uses 0.5.
        empty_value: value of every metric when neither map has an object (default NaN = undefined).

    Returns:
        dict with keys :data:`INSTANCE_METRICS`.

    Raises:
        TypeError, ValueError: see :func:`instance_stats`.
    """
    return instance_stats(gt, pred, match_iou=match_iou).scores(empty_value=empty_value)


def aji(gt: ArrayLike, pred: ArrayLike, *, empty_value: float = math.nan) -> float:
    """Aggregated Jaccard Index (MoNuSeg AJI, HoVer-Net ``get_fast_aji``).

    Args:
        gt: ``(H, W)`` ground-truth instance ids; 0 = background.
        pred: ``(H, W)`` predicted instance ids.
        empty_value: result when neither map has an object.

    Returns:
        AJI in ``[0, 1]`` (0 when exactly one map is empty).

    Raises:
        TypeError, ValueError: see :func:`instance_stats`.
    """
    g, p = _prepare_pair(gt, pred)
    stats = _stats_from_table(_build_table(g, p), with_aji_plus=False)
    return stats.scores(empty_value=empty_value)["aji"]


def aji_plus(gt: ArrayLike, pred: ArrayLike, *, empty_value: float = math.nan) -> float:
    """AJI+ (one-to-one Munkres pairing, HoVer-Net ``get_fast_aji_plus``).

    Args:
        gt: ``(H, W)`` ground-truth instance ids; 0 = background.
        pred: ``(H, W)`` predicted instance ids.
        empty_value: result when neither map has an object.

    Returns:
        AJI+ in ``[0, 1]``.

    Raises:
        TypeError, ValueError: see :func:`instance_stats`.
    """
    g, p = _prepare_pair(gt, pred)
    stats = _stats_from_table(_build_table(g, p), with_aji=False)
    return stats.scores(empty_value=empty_value)["aji_plus"]


def panoptic_quality(
    gt: ArrayLike, pred: ArrayLike, match_iou: float = 0.5, *, empty_value: float = math.nan
) -> tuple[float, float, float]:
    """Panoptic quality of one image (HoVer-Net ``get_fast_pq``).

    Args:
        gt: ``(H, W)`` ground-truth instance ids; 0 = background.
        pred: ``(H, W)`` predicted instance ids.
        match_iou: pairs need ``IoU > match_iou``; below 0.5 a Munkres pairing is made first.
        empty_value: value of all three when neither map has an object.

    Returns:
        ``(dq, sq, pq)``.

    Raises:
        TypeError, ValueError: see :func:`instance_stats`.
    """
    match_iou = _check_match_iou(match_iou)
    g, p = _prepare_pair(gt, pred)
    stats = _stats_from_table(_build_table(g, p), match_iou=match_iou, with_aji=False, with_aji_plus=False)
    s = stats.scores(empty_value=empty_value)
    return s["dq"], s["sq"], s["pq"]


def detection_f1(gt: ArrayLike, pred: ArrayLike, *, match_iou: float = 0.5, empty_value: float = math.nan) -> float:
    """Detection F1: ``2 TP / (2 TP + FP + FN)`` with pairs of ``IoU > match_iou`` (= PQ's DQ; the paper's "F1").

    Args:
        gt: ``(H, W)`` ground-truth instance ids; 0 = background.
        pred: ``(H, W)`` predicted instance ids.
        match_iou: matching threshold (0.5 in the paper).
        empty_value: result when neither map has an object.

    Returns:
        F1 in ``[0, 1]``.

    Raises:
        TypeError, ValueError: see :func:`instance_stats`.
    """
    return panoptic_quality(gt, pred, match_iou, empty_value=empty_value)[0]


def dice_1(gt: ArrayLike, pred: ArrayLike, *, empty_value: float = math.nan) -> float:
    """HoVer-Net's DICE1: binary Dice of the foregrounds (``id > 0``).

    Args:
        gt: ground-truth instance ids (any shape); 0 = background.
        pred: predicted instance ids, same shape.
        empty_value: result when both foregrounds are empty.

    Returns:
        Dice in ``[0, 1]``.

    Raises:
        TypeError, ValueError: see :func:`instance_stats`.
    """
    empty_value = check_empty_value(empty_value)
    g = as_label_map(gt, "gt", ndims=None)
    p = as_label_map(pred, "pred", ndims=None)
    check_same_shape(g, p, "gt", "pred")
    gf, pf = g > 0, p > 0
    total = int(gf.sum()) + int(pf.sum())
    if total == 0:
        return empty_value
    return 2.0 * int(np.count_nonzero(gf & pf)) / total


TypeSource = ArrayLike | Mapping[int, int]


def _object_types(
    source: TypeSource, ids: np.ndarray, index: np.ndarray, shape: tuple[int, ...], num_classes: int, name: str
) -> np.ndarray:
    """Type of every id of ``ids`` (index 0 = background gets type 0), by pixel majority or from a mapping."""
    types = np.zeros(len(ids), dtype=np.int64)
    if isinstance(source, Mapping):
        missing = [int(i) for i in ids[1:] if int(i) not in source]
        if missing:
            more = " ..." if len(missing) > 10 else ""
            raise ValueError(f"{name} has no type for instance ids {missing[:10]}{more}.")
        for k, i in enumerate(ids[1:], start=1):
            t = source[int(i)]
            if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= int(t) < num_classes:
                raise ValueError(f"{name}[{int(i)}] = {t!r} is not a class index in [0, {num_classes}).")
            types[k] = int(t)
        return types
    type_map = as_label_map(source, name, ndims=None)
    if type_map.shape != shape:
        raise ValueError(f"{name} must have the instance map's shape {shape}, got {type_map.shape}.")
    if type_map.size and int(type_map.max()) >= num_classes:
        raise ValueError(f"{name} has type {int(type_map.max())} >= num_classes={num_classes}.")
    counts = np.bincount(index * num_classes + type_map.reshape(-1), minlength=len(ids) * num_classes)
    counts = counts.reshape(len(ids), num_classes)[:, 1:]
    # majority over the non-background types; ties -> the smallest type; no typed pixel -> type 0 (no class)
    has_type = counts.sum(axis=1) > 0
    types[has_type] = np.argmax(counts[has_type], axis=1) + 1
    types[0] = 0
    return types


def instance_types(inst: ArrayLike, type_map: ArrayLike, *, num_classes: int) -> dict[int, int]:
    """Type of each object by majority vote of its pixels' types (HoVer-Net / CellViT convention).

    Background-typed pixels (0) vote only when an object has no other type; ties go to the smallest type.

    Args:
        inst: ``(H, W)`` instance ids; 0 = background.
        type_map: ``(H, W)`` per-pixel type in ``[0, num_classes)``; 0 = background.
        num_classes: number of types including the background.

    Returns:
        ``{instance id: type}`` for every non-zero id.

    Raises:
        TypeError, ValueError: on bad maps (shape, negative, non-integer or too large values).
    """
    num_classes = check_num_classes(num_classes)
    ids_map = as_label_map(inst, "inst")
    ids, index = _index_ids(ids_map.reshape(-1))
    types = _object_types(type_map, ids, index, ids_map.shape, num_classes, "type_map")
    return {int(i): int(t) for i, t in zip(ids[1:], types[1:])}


def _per_class_tables(
    gt: ArrayLike,
    pred: ArrayLike,
    gt_type: TypeSource,
    pred_type: TypeSource,
    num_classes: int,
    type_assignment: str,
) -> tuple[_Table, np.ndarray, np.ndarray]:
    g, p = _prepare_pair(gt, pred)
    if type_assignment == "majority":
        table = _build_table(g, p)
        gt_cls = _object_types(gt_type, table.gt_ids, table.gt_index, g.shape, num_classes, "gt_type")
        pred_cls = _object_types(pred_type, table.pred_ids, table.pred_index, p.shape, num_classes, "pred_type")
        return table, gt_cls, pred_cls
    # "pixel": restrict each map to the pixels of type k (CoNIC / released Co-Seg++ GT convention); an object split
    # over several types becomes one object per type. Encode (object index, type) as one compound id.
    compound = []
    for ids_map, source, name in ((g, gt_type, "gt_type"), (p, pred_type, "pred_type")):
        if isinstance(source, Mapping):
            raise TypeError(f"type_assignment='pixel' needs a per-pixel {name} map, not a mapping.")
        tmap = as_label_map(source, name, ndims=None)
        if tmap.shape != ids_map.shape:
            raise ValueError(f"{name} must have the instance map's shape {ids_map.shape}, got {tmap.shape}.")
        if tmap.size and int(tmap.max()) >= num_classes:
            raise ValueError(f"{name} has type {int(tmap.max())} >= num_classes={num_classes}.")
        _, index = _index_ids(ids_map.reshape(-1))
        flat_t = tmap.reshape(-1)
        code = np.where((index > 0) & (flat_t > 0), index * num_classes + flat_t, 0)
        compound.append(code.reshape(ids_map.shape))
    table = _build_table(compound[0], compound[1])
    return table, table.gt_ids % num_classes, table.pred_ids % num_classes


def _check_type_assignment(type_assignment: object) -> str:
    if type_assignment not in ("majority", "pixel"):
        raise ValueError(f"type_assignment must be 'majority' or 'pixel', got {type_assignment!r}.")
    return str(type_assignment)


def per_class_instance_stats(
    gt: ArrayLike,
    pred: ArrayLike,
    gt_type: TypeSource,
    pred_type: TypeSource,
    *,
    num_classes: int,
    match_iou: float = 0.5,
    type_assignment: Literal["majority", "pixel"] = "majority",
) -> dict[int, InstanceStats]:
    """Per-class instance statistics for classes ``1 .. num_classes - 1`` from one contingency table.

    For class k both maps keep only their objects of type k (HoVer-Net / CellViT / PanNuke per-type PQ):

    - ``type_assignment="majority"`` (default): an object's type is the majority type of its pixels (or is read
      from an ``{instance id: type}`` mapping); whole objects are kept or dropped.
    - ``type_assignment="pixel"``: each map is restricted to the pixels of type k (CoNIC, and the released
      Co-Seg++ code for its ground truth); an object whose pixels have several types is split.

    Args:
        gt: ``(H, W)`` ground-truth instance ids; 0 = background.
        pred: ``(H, W)`` predicted instance ids.
        gt_type: ``(H, W)`` per-pixel GT types in ``[0, num_classes)`` or ``{instance id: type}``.
        pred_type: the same for the prediction.
        num_classes: number of types including the background (class 0).
        match_iou: PQ matching threshold.
        type_assignment: ``"majority"`` or ``"pixel"`` (see above).

    Returns:
        ``{k: InstanceStats}`` for ``k = 1 .. num_classes - 1``.

    Raises:
        TypeError, ValueError: on bad maps or arguments (shape, dtype, values out of range, missing types).
    """
    num_classes = check_num_classes(num_classes)
    match_iou = _check_match_iou(match_iou)
    type_assignment = _check_type_assignment(type_assignment)
    table, gt_cls, pred_cls = _per_class_tables(gt, pred, gt_type, pred_type, num_classes, type_assignment)
    return {k: _stats_from_table(table, gt_cls == k, pred_cls == k, match_iou=match_iou) for k in range(1, num_classes)}


def per_class_instance_scores(
    gt: ArrayLike,
    pred: ArrayLike,
    gt_type: TypeSource,
    pred_type: TypeSource,
    *,
    num_classes: int,
    match_iou: float = 0.5,
    type_assignment: Literal["majority", "pixel"] = "majority",
    empty_value: float = math.nan,
    skip_empty_gt: bool = False,
) -> dict[int, dict[str, float]]:
    """Per-class AJI, AJI+, DQ, SQ, PQ, F1 and DICE1 (see :func:`per_class_instance_stats`).

    Args:
        gt, pred, gt_type, pred_type, num_classes, match_iou, type_assignment: see :func:`per_class_instance_stats`.
        empty_value: value when class k has no object in either map (default NaN, skipped by the aggregators).
        skip_empty_gt: also give ``empty_value`` when only the prediction has objects of class k (PanNuke / CellViT
            convention); by default such a class scores 0.

    Returns:
        ``{k: {metric: value}}`` for ``k = 1 .. num_classes - 1``.

    Raises:
        TypeError, ValueError: see :func:`per_class_instance_stats`.
    """
    stats = per_class_instance_stats(
        gt, pred, gt_type, pred_type, num_classes=num_classes, match_iou=match_iou, type_assignment=type_assignment
    )
    return {k: s.scores(empty_value=empty_value, skip_empty_gt=skip_empty_gt) for k, s in stats.items()}
