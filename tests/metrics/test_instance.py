"""Instance metrics: reference fixture, hand-computed cases, the per-mask oracle, MONAI's PQ and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import compute_panoptic_quality
from scipy.optimize import linear_sum_assignment

import coseg.metrics.instance as instance_module
from coseg.metrics import (
    INSTANCE_METRICS,
    InstanceStats,
    aji,
    aji_plus,
    detection_f1,
    dice_1,
    instance_scores,
    instance_stats,
    panoptic_quality,
)
from tests.metrics.oracle import oracle_aji, oracle_aji_plus, oracle_dice_1, oracle_pq, perturbed, random_instances

EPS = 1.0e-6


# ---------------------------------------------------------------- reference fixture (HoVer-Net values)


def test_fixture_matches_reference(shared_dir):
    data = np.load(shared_dir / "fixtures" / "instance_metrics_ref.npz")
    keys = [str(k) for k in data["keys"]]
    assert keys == ["aji", "aji_plus", "dq", "sq", "pq", "dice_1"]
    values = data["values"]
    assert values.shape == (40, 6)
    for i in range(40):
        gt, pred = data[f"gt_{i}"], data[f"pred_{i}"]
        scores = instance_scores(gt, pred)
        got = np.array([scores[k] for k in keys])
        np.testing.assert_allclose(got, values[i], rtol=0, atol=1e-6, err_msg=f"pair {i}")
        # the single-metric functions agree with the all-at-once function
        assert aji(gt, pred) == pytest.approx(values[i, 0], abs=1e-6)
        assert aji_plus(gt, pred) == pytest.approx(values[i, 1], abs=1e-6)
        np.testing.assert_allclose(panoptic_quality(gt, pred), values[i, 2:5], rtol=0, atol=1e-6)
        assert dice_1(gt, pred) == pytest.approx(values[i, 5], abs=1e-6)
        assert scores["f1"] == scores["dq"] == detection_f1(gt, pred)


def test_fixture_empty_pairs_are_zero(shared_dir):
    data = np.load(shared_dir / "fixtures" / "instance_metrics_ref.npz")
    assert not data["pred_0"].any() and data["gt_0"].any()
    assert not data["gt_1"].any() and data["pred_1"].any()
    for i in (0, 1):
        assert all(v == 0.0 for v in instance_scores(data[f"gt_{i}"], data[f"pred_{i}"]).values())


# ---------------------------------------------------------------- hand-computed cases


def test_partial_overlap_by_hand():
    gt = np.zeros((4, 4), dtype=np.int32)
    gt[0:2, 0:2] = 7  # 4 px
    pred = np.zeros_like(gt)
    pred[0:2, 0:2] = 3
    pred[1, 1] = 0
    pred[2, 0] = 3  # 4 px, 3 shared -> IoU 3/5
    s = instance_scores(gt, pred)
    assert s["aji"] == pytest.approx(3 / 5, abs=1e-12)
    assert s["aji_plus"] == pytest.approx(3 / 5, abs=1e-12)
    assert s["dq"] == 1.0 and s["f1"] == 1.0
    assert s["sq"] == pytest.approx(0.6 / (1 + EPS), abs=1e-15)
    assert s["pq"] == pytest.approx(0.6 / (1 + EPS), abs=1e-15)
    assert s["dice_1"] == pytest.approx(6 / 8)


def test_one_prediction_over_two_objects_by_hand():
    """AJI pairs both GT objects with the same prediction; AJI+ allows one pair; PQ needs IoU > 0.5."""
    gt = np.array([[1, 1, 2, 2]])
    pred = np.array([[5, 5, 5, 5]])
    s = instance_scores(gt, pred)
    assert s["aji"] == pytest.approx((2 + 2) / (4 + 4))
    assert s["aji_plus"] == pytest.approx(2 / (4 + 2))  # one pair (inter 2, union 4) + unpaired GT of 2 px
    assert s["dq"] == 0.0 and s["sq"] == 0.0 and s["pq"] == 0.0  # IoU 0.5 is not > 0.5
    assert s["dice_1"] == 1.0
    # with a lower threshold the Munkres pairing makes one match
    dq, sq, pq = panoptic_quality(gt, pred, 0.4)
    assert dq == pytest.approx(1 / (1 + 0.5 * 1))
    assert sq == pytest.approx(0.5 / (1 + EPS))


def test_unmatched_prediction_adds_its_area():
    gt = np.zeros((6, 6), dtype=np.int64)
    gt[0:2, 0:2] = 1
    pred = np.zeros_like(gt)
    pred[0:2, 0:2] = 4
    pred[4, 3:6] = 9  # false positive of 3 px
    s = instance_scores(gt, pred)
    assert s["aji"] == pytest.approx(4 / 7)
    assert s["aji_plus"] == pytest.approx(4 / 7)
    assert s["dq"] == pytest.approx(1 / 1.5)
    assert s["sq"] == pytest.approx(1 / (1 + EPS))
    assert s["dice_1"] == pytest.approx(8 / 11)
    st = instance_stats(gt, pred)
    assert (st.tp, st.fp, st.fn, st.n_gt, st.n_pred) == (1, 1, 0, 1, 2)


def test_aji_best_pred_tie_takes_smallest_id():
    """A GT object overlapped equally by two predictions: AJI takes the smaller id; the other counts as unpaired."""
    gt = np.array([[1, 1, 1, 1]])
    pred = np.array([[8, 8, 3, 3]])
    # pair (1, 3): inter 2, union 4; prediction 8 unpaired adds 2 px
    assert aji(gt, pred) == pytest.approx(2 / 6)


@pytest.mark.parametrize("gt_id,pred_id", [(1, 1), (70000, 3), (2**40, 2**35 + 1), (255, 65535)])
def test_single_pixel_objects_and_large_ids(gt_id, pred_id):
    gt = np.zeros((5, 5), dtype=np.int64)
    pred = np.zeros_like(gt)
    gt[2, 3] = gt_id
    pred[2, 3] = pred_id
    gt[0, 0] = gt_id + 1  # a missed single-pixel object
    s = instance_scores(gt, pred)
    assert s["dq"] == pytest.approx(1 / 1.5)
    assert s["sq"] == pytest.approx(1 / (1 + EPS))
    assert s["aji"] == pytest.approx(1 / 2)
    assert s["aji_plus"] == pytest.approx(1 / 2)
    assert s["dice_1"] == pytest.approx(2 / 3)


# ---------------------------------------------------------------- empty inputs


def test_both_empty_is_undefined():
    z = np.zeros((8, 8), dtype=np.int32)
    s = instance_scores(z, z)
    assert set(s) == set(INSTANCE_METRICS)
    assert all(math.isnan(v) for v in s.values())
    assert all(v == 1.0 for v in instance_scores(z, z, empty_value=1.0).values())
    assert math.isnan(aji(z, z)) and math.isnan(aji_plus(z, z)) and math.isnan(dice_1(z, z))
    assert all(math.isnan(v) for v in panoptic_quality(z, z))
    assert detection_f1(z, z, empty_value=0.25) == 0.25


@pytest.mark.parametrize("side", ["gt", "pred"])
def test_one_side_empty_is_zero(side):
    obj = np.zeros((8, 8), dtype=np.int32)
    obj[2:5, 2:5] = 11
    z = np.zeros_like(obj)
    gt, pred = (z, obj) if side == "gt" else (obj, z)
    assert all(v == 0.0 for v in instance_scores(gt, pred, empty_value=1.0).values())


# ---------------------------------------------------------------- against the per-mask oracle


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("match_iou", [0.0, 0.3, 0.5, 0.75])
def test_matches_oracle_on_random_maps(seed, match_iou):
    rng = np.random.default_rng(seed)
    gt = random_instances(rng, (48, 56), int(rng.integers(1, 15)))
    pred = perturbed(rng, gt) if seed % 2 else random_instances(rng, (48, 56), int(rng.integers(1, 15)))
    s = instance_stats(gt, pred, match_iou=match_iou).scores()
    dq, sq, pq = oracle_pq(gt, pred, match_iou)
    np.testing.assert_allclose([s["dq"], s["sq"], s["pq"]], [dq, sq, pq], rtol=0, atol=1e-12)
    assert s["aji"] == pytest.approx(oracle_aji(gt, pred), abs=1e-12)
    assert s["aji_plus"] == pytest.approx(oracle_aji_plus(gt, pred), abs=1e-12)
    assert s["dice_1"] == pytest.approx(oracle_dice_1(gt, pred), abs=1e-12)


def test_many_instances_sparse_table_matches_oracle():
    """~1800 objects each side: the dense table would exceed the image, so the sparse table is used; shifted by one
    pixel both ways, every object overlaps four others and the overlap graph is one giant component, solved by the
    sparse matcher."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:128, 0:128]
    gt = (yy // 3) * 43 + (xx // 3) + 1
    pred = np.roll(np.roll(gt, 1, axis=1), 1, axis=0) * (rng.random(gt.shape) > 0.1)
    pred[pred > 0] += 10**6  # unrelated, large ids
    assert len(np.unique(gt)) * len(np.unique(pred)) > max(4 * gt.size, 1 << 20)
    s = instance_scores(gt, pred, match_iou=0.3)
    dq, sq, pq = oracle_pq(gt, pred, 0.3)
    np.testing.assert_allclose([s["dq"], s["sq"], s["pq"]], [dq, sq, pq], rtol=0, atol=1e-12)
    assert s["aji"] == pytest.approx(oracle_aji(gt, pred), abs=1e-12)
    assert s["aji_plus"] == pytest.approx(oracle_aji_plus(gt, pred), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_sparse_and_dense_matching_reach_the_same_optimum(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    n_r, n_c = int(rng.integers(2, 30)), int(rng.integers(2, 30))
    dense = np.where(rng.random((n_r, n_c)) < 0.15, rng.random((n_r, n_c)), 0.0)
    dense[rng.integers(0, n_r), :] = rng.random(n_c)  # connect things up
    rows, cols = np.nonzero(dense)
    weight = dense[rows, cols]
    a, b = linear_sum_assignment(-dense)
    best = dense[a, b].sum()
    for cells in (10**9, 0):  # all components dense, then all sparse
        monkeypatch.setattr(instance_module, "_DENSE_COMPONENT_CELLS", cells)
        chosen = instance_module._max_weight_pairs(rows, cols, weight)
        assert len(set(rows[chosen])) == chosen.sum() and len(set(cols[chosen])) == chosen.sum()  # one-to-one
        assert weight[chosen].sum() == pytest.approx(best, abs=1e-12)


def test_three_dimensional_maps():
    rng = np.random.default_rng(0)
    gt = np.stack([random_instances(rng, (24, 24), 5) for _ in range(3)])
    pred = np.roll(gt, 1, axis=2)
    s = instance_scores(gt, pred)
    dq, sq, pq = oracle_pq(gt, pred)
    np.testing.assert_allclose([s["dq"], s["sq"], s["pq"]], [dq, sq, pq], atol=1e-12)
    assert s["aji"] == pytest.approx(oracle_aji(gt, pred), abs=1e-12)


# ---------------------------------------------------------------- input types


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64, np.float32, np.float64])
def test_dtypes_and_torch_give_the_same_result(dtype):
    rng = np.random.default_rng(1)
    gt = random_instances(rng, (32, 32), 6, max_id=5)
    pred = perturbed(rng, gt)
    ref = instance_scores(gt, pred)
    assert instance_scores(gt.astype(dtype), pred.astype(dtype)) == ref
    assert instance_scores(torch.from_numpy(gt.astype(dtype)), torch.from_numpy(pred.astype(dtype))) == ref


def test_boolean_maps_are_single_objects():
    gt = np.zeros((4, 4), dtype=bool)
    gt[:2] = True
    pred = np.zeros_like(gt)
    pred[:3] = True
    assert panoptic_quality(gt, pred)[2] == pytest.approx(1.0 * (8 / 12) / (1 + EPS))


# ---------------------------------------------------------------- MONAI's PQ


def test_against_monai_compute_panoptic_quality():
    """MONAI pairs the same way but computes IoU in float32 and PQ as iou_sum / (TP + FP/2 + FN/2 + 1e-6)
    (ours: DQ * SQ with SQ = iou_sum / (TP + 1e-6), as HoVer-Net): the counts agree exactly, the values to ~1e-6."""
    rng = np.random.default_rng(5)
    gt = random_instances(rng, (64, 64), 12)
    pred = perturbed(rng, gt)
    for match_iou in (0.5, 0.3):
        st = instance_stats(gt, pred, match_iou=match_iou)
        cm = compute_panoptic_quality(
            torch.from_numpy(pred), torch.from_numpy(gt), match_iou_threshold=match_iou, output_confusion_matrix=True
        )
        assert [int(cm[0]), int(cm[1]), int(cm[2])] == [st.tp, st.fp, st.fn]
        assert float(cm[3]) == pytest.approx(st.iou_sum, abs=1e-5)
        monai_pq = compute_panoptic_quality(torch.from_numpy(pred), torch.from_numpy(gt), match_iou_threshold=match_iou)
        assert st.scores()["pq"] == pytest.approx(float(monai_pq), abs=1e-5)


# ---------------------------------------------------------------- InstanceStats


def test_stats_round_trip_and_sum():
    a = InstanceStats(n_gt=3, n_pred=2, tp=2, iou_sum=1.5, aji_inter=10, aji_union=20, fg_inter=5, fg_total=12)
    b = InstanceStats(n_gt=1, n_pred=4, tp=1, iou_sum=0.75, aji_inter=3, aji_union=9, fg_inter=1, fg_total=4)
    assert InstanceStats.from_array(a.to_array()) == a
    assert InstanceStats.from_array(torch.from_numpy(a.to_array())) == a
    c = a + b
    assert (c.n_gt, c.n_pred, c.tp, c.fp, c.fn) == (4, 6, 3, 3, 1)
    assert c.iou_sum == 2.25
    with pytest.raises(ValueError, match="stats"):
        InstanceStats.from_array(np.zeros(3))


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "gt,pred,error,match",
    [
        (np.zeros((4, 4), int), np.zeros((4, 5), int), ValueError, "same shape"),
        (np.full((4, 4), 1.5), np.zeros((4, 4)), ValueError, "non-integer"),
        (np.full((4, 4), np.nan), np.zeros((4, 4)), ValueError, "NaN"),
        (-np.ones((4, 4), int), np.zeros((4, 4), int), ValueError, "negative"),
        (np.zeros(4, int), np.zeros(4, int), ValueError, "dimensions"),
        (np.zeros((2, 2, 2, 2), int), np.zeros((2, 2, 2, 2), int), ValueError, "dimensions"),
        ([[0, 1]], np.zeros((1, 2), int), TypeError, "numpy array or a torch tensor"),
        (np.array([["a"]]), np.array([["b"]]), TypeError, "dtype"),
    ],
)
def test_bad_maps_raise(gt, pred, error, match):
    with pytest.raises(error, match=match):
        instance_scores(gt, pred)


@pytest.mark.parametrize(
    "match_iou,error", [(-0.1, ValueError), (1.0, ValueError), ("0.5", TypeError), (True, TypeError)]
)
def test_bad_match_iou_raises(match_iou, error):
    z = np.zeros((2, 2), int)
    with pytest.raises(error, match="match_iou"):
        panoptic_quality(z, z, match_iou)


def test_bad_empty_value_raises():
    z = np.zeros((2, 2), int)
    with pytest.raises(TypeError, match="empty_value"):
        instance_scores(z, z, empty_value="nan")
