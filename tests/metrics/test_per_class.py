"""Per-class instance metrics from type maps (majority vote and per-pixel restriction)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from coseg.metrics import instance_scores, instance_types, per_class_instance_scores, per_class_instance_stats
from tests.metrics.oracle import perturbed, random_instances


def test_majority_type_by_hand():
    inst = np.array([[1, 1, 1, 2, 2, 2, 2, 2], [3, 3, 4, 4, 0, 0, 5, 5]])
    tmap = np.array([[1, 1, 2, 2, 2, 0, 0, 0], [0, 0, 1, 2, 3, 3, 3, 3]])
    # 1: {1, 1, 2} -> 1; 2: {2, 2, 0, 0, 0} -> 2 (background votes only alone); 3: {0, 0} -> 0;
    # 4: {1, 2} tie -> 1; 5: {3, 3} -> 3
    assert instance_types(inst, tmap, num_classes=4) == {1: 1, 2: 2, 3: 0, 4: 1, 5: 3}


def test_per_class_by_hand():
    gt = np.array([[1, 1, 0, 2, 2, 0, 3, 3]])
    gt_t = np.array([[1, 1, 0, 2, 2, 0, 2, 2]])
    pred = np.array([[4, 4, 0, 5, 5, 0, 0, 0]])
    pred_t = np.array([[1, 1, 0, 1, 1, 0, 0, 0]])
    per = per_class_instance_scores(gt, pred, gt_t, pred_t, num_classes=3)
    # class 1: GT {1}, pred {4, 5}: one exact match, one FP
    assert per[1]["dq"] == pytest.approx(1 / 1.5)
    assert per[1]["aji"] == pytest.approx(2 / 4)
    # class 2: GT {2, 3}, no prediction of type 2 -> 0 everywhere
    assert all(v == 0.0 for v in per[2].values())
    stats = per_class_instance_stats(gt, pred, gt_t, pred_t, num_classes=3)
    assert (stats[1].tp, stats[1].fp, stats[1].fn) == (1, 1, 0)
    assert (stats[2].tp, stats[2].fp, stats[2].fn) == (0, 0, 2)


def test_class_absent_on_both_sides_is_nan_and_skip_empty_gt():
    gt = np.array([[1, 1, 0, 0]])
    gt_t = np.array([[1, 1, 0, 0]])
    pred = np.array([[0, 0, 7, 7]])
    pred_t = np.array([[0, 0, 2, 2]])
    per = per_class_instance_scores(gt, pred, gt_t, pred_t, num_classes=4)
    assert all(math.isnan(v) for v in per[3].values())  # class 3 nowhere
    assert per[2]["pq"] == 0.0  # predicted only
    skipped = per_class_instance_scores(gt, pred, gt_t, pred_t, num_classes=4, skip_empty_gt=True)
    assert math.isnan(skipped[2]["pq"])
    assert skipped[1]["pq"] == 0.0  # GT present, nothing predicted: still 0


@pytest.mark.parametrize("seed", range(4))
def test_per_class_equals_restricted_maps(seed):
    """Majority rule: class k's metrics equal the class-agnostic metrics of the maps restricted to type-k objects."""
    rng = np.random.default_rng(seed)
    num_classes = 4
    gt = random_instances(rng, (40, 40), 12)
    pred = perturbed(rng, gt)
    gt_t = rng.integers(0, num_classes, gt.shape)
    pred_t = rng.integers(0, num_classes, gt.shape)
    per = per_class_instance_scores(gt, pred, gt_t, pred_t, num_classes=num_classes)
    g_types = instance_types(gt, gt_t, num_classes=num_classes)
    p_types = instance_types(pred, pred_t, num_classes=num_classes)
    for k in range(1, num_classes):
        g_k = np.where(np.isin(gt, [i for i, t in g_types.items() if t == k]), gt, 0)
        p_k = np.where(np.isin(pred, [i for i, t in p_types.items() if t == k]), pred, 0)
        ref = instance_scores(g_k, p_k)
        for m, v in ref.items():
            assert per[k][m] == pytest.approx(v, abs=1e-12, nan_ok=True), (k, m)


def test_mapping_types_equal_pixel_types():
    rng = np.random.default_rng(7)
    gt = random_instances(rng, (32, 32), 8)
    pred = perturbed(rng, gt)
    gt_t = rng.integers(0, 3, gt.shape)
    pred_t = rng.integers(0, 3, gt.shape)
    from_maps = per_class_instance_stats(gt, pred, gt_t, pred_t, num_classes=3)
    from_dicts = per_class_instance_stats(
        gt,
        pred,
        instance_types(gt, gt_t, num_classes=3),
        instance_types(pred, pred_t, num_classes=3),
        num_classes=3,
    )
    assert from_maps == from_dicts
    tensors = per_class_instance_stats(
        torch.from_numpy(gt), torch.from_numpy(pred), torch.from_numpy(gt_t), torch.from_numpy(pred_t), num_classes=3
    )
    assert tensors == from_maps


def test_pixel_assignment_splits_objects():
    """An object whose halves have different types: 'pixel' keeps each half in its class, 'majority' keeps the
    whole object in the first (tied) type."""
    gt = np.array([[1, 1, 1, 1]])
    gt_t = np.array([[1, 1, 2, 2]])
    pred = np.array([[3, 3, 3, 3]])
    pred_t = np.array([[1, 1, 1, 1]])
    major = per_class_instance_stats(gt, pred, gt_t, pred_t, num_classes=3)
    assert (major[1].tp, major[1].iou_sum, major[2].n_gt) == (1, 1.0, 0)
    pixel = per_class_instance_stats(gt, pred, gt_t, pred_t, num_classes=3, type_assignment="pixel")
    # class 1: GT half (2 px) vs the whole prediction (4 px): IoU 0.5, not a match
    assert (pixel[1].n_gt, pixel[1].n_pred, pixel[1].tp) == (1, 1, 0)
    assert pixel[1].aji_inter == 2 and pixel[1].aji_union == 4
    assert (pixel[2].n_gt, pixel[2].n_pred) == (1, 0)


def test_bad_type_inputs():
    gt = np.array([[1, 1, 2, 0]])
    t = np.array([[1, 1, 1, 0]])
    with pytest.raises(ValueError, match="no type for instance ids"):
        per_class_instance_stats(gt, gt, {1: 1}, t, num_classes=3)
    with pytest.raises(ValueError, match="not a class index"):
        per_class_instance_stats(gt, gt, {1: 1, 2: 5}, t, num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        per_class_instance_stats(gt, gt, t, np.array([[3, 3, 3, 0]]), num_classes=3)
    with pytest.raises(ValueError, match="shape"):
        per_class_instance_stats(gt, gt, t, np.zeros((2, 4), int), num_classes=3)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        per_class_instance_stats(gt, gt, t, t, num_classes=1)
    with pytest.raises(TypeError, match="num_classes must be an int"):
        per_class_instance_stats(gt, gt, t, t, num_classes=2.0)
    with pytest.raises(ValueError, match="type_assignment"):
        per_class_instance_stats(gt, gt, t, t, num_classes=3, type_assignment="vote")
    with pytest.raises(TypeError, match="per-pixel"):
        per_class_instance_stats(gt, gt, {1: 1, 2: 1}, t, num_classes=3, type_assignment="pixel")


def test_real_consep_tile_matches_oracle(shared_dir):
    """A CoNSeP tile (68 nuclei, 3 types) against an eroded copy: per-class metrics equal the per-mask oracle run on
    the maps restricted to each type."""
    from PIL import Image
    from scipy import ndimage

    from tests.metrics.oracle import oracle_aji, oracle_aji_plus, oracle_pq

    root = shared_dir / "data" / "consep256" / "train"
    gt = np.array(Image.open(root / "inst" / "train_10_000.png")).astype(np.int64)
    gt_t = np.array(Image.open(root / "type" / "train_10_000.png")).astype(np.int64)
    pred = np.where(ndimage.grey_erosion(gt, size=3) == gt, gt, 0)  # one-pixel erosion of every nucleus
    pred[:, :40] = np.roll(pred[:, :40], 3, axis=0)
    pred_t = np.where(pred > 0, gt_t, 0)
    pred_t[pred_t == 4] = 2  # one type mislabelled
    per = per_class_instance_scores(gt, pred, gt_t, pred_t, num_classes=5)
    g_types = instance_types(gt, gt_t, num_classes=5)
    p_types = instance_types(pred, pred_t, num_classes=5)
    for k in range(1, 5):
        g_k = np.where(np.isin(gt, [i for i, t in g_types.items() if t == k]), gt, 0)
        p_k = np.where(np.isin(pred, [i for i, t in p_types.items() if t == k]), pred, 0)
        if not g_k.any() and not p_k.any():
            assert math.isnan(per[k]["pq"])
            continue
        assert per[k]["aji"] == pytest.approx(oracle_aji(g_k, p_k), abs=1e-12)
        assert per[k]["aji_plus"] == pytest.approx(oracle_aji_plus(g_k, p_k), abs=1e-12)
        np.testing.assert_allclose([per[k][m] for m in ("dq", "sq", "pq")], oracle_pq(g_k, p_k), atol=1e-12)
