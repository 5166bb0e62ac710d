"""Tissue PQ (components per class, released post-processing) and GlaS object Dice / Hausdorff."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from coseg.metrics import (
    object_dice,
    object_hausdorff,
    tissue_instances,
    tissue_panoptic_quality,
    tissue_panoptic_stats,
)
from tests.metrics.oracle import oracle_object_dice, perturbed, random_instances

EPS = 1.0e-6


# ---------------------------------------------------------------- tissue components


def test_components_min_area_and_closing_by_hand():
    m = np.zeros((12, 12), dtype=np.uint8)
    m[1:8, 1:8] = 1
    m[4, 4] = 0  # a one-pixel hole
    m[10, 10] = 1  # a one-pixel speck
    m[9, 1] = m[10, 2] = 1  # two pixels touching diagonally: one 8-connected component
    lab = tissue_instances(m)
    assert len(np.unique(lab)) - 1 == 3
    assert lab[9, 1] == lab[10, 2] != 0
    lab = tissue_instances(m, min_area=3)
    assert len(np.unique(lab)) - 1 == 1 and lab[10, 10] == 0 and lab[9, 1] == 0
    closed = tissue_instances(m, min_area=3, closing_size=5)
    assert closed[4, 4] == closed[2, 2] != 0  # hole filled
    # the image border is ignored by the closing (as OpenCV's), so the 1-pixel strip between the square and the
    # border is filled too: the closed object is [0:8, 0:8]
    expected = np.zeros((12, 12), dtype=bool)
    expected[0:8, 0:8] = True
    np.testing.assert_array_equal(closed > 0, expected)


def test_components_match_the_released_opencv_recipe():
    """connectedComponentsWithStats (8-conn) -> drop areas < 200 -> 5x5 MORPH_CLOSE on the label image."""
    rng = np.random.default_rng(0)
    for _ in range(8):
        m = (cv2.GaussianBlur(rng.random((128, 128)), (0, 0), 4) > 0.5).astype(np.uint8)
        _, ref, _, _ = cv2.connectedComponentsWithStats(m * 255)
        area = np.bincount(ref.reshape(-1))
        small = area < 200
        small[0] = False
        ref[small[ref]] = 0
        ref = cv2.morphologyEx(ref.astype(np.float32), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8)).astype(np.int64)
        np.testing.assert_array_equal(tissue_instances(torch.from_numpy(m), min_area=200, closing_size=5), ref)


def test_components_3d():
    m = np.zeros((3, 5, 5), dtype=bool)
    m[0, 0, 0] = m[1, 1, 1] = True  # 26-connected
    m[2, 4, 4] = True
    lab = tissue_instances(m)
    assert lab[0, 0, 0] == lab[1, 1, 1] != lab[2, 4, 4]


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"min_area": -1}, ValueError),
        ({"closing_size": 4}, ValueError),
        ({"closing_size": 2.0}, TypeError),
        ({"min_area": True}, TypeError),
    ],
)
def test_components_bad_arguments(kwargs, error):
    with pytest.raises(error):
        tissue_instances(np.zeros((4, 4), int), **kwargs)


# ---------------------------------------------------------------- tissue PQ


def test_tissue_pq_by_hand():
    gt = np.zeros((64, 64), dtype=np.int64)
    gt[5:30, 5:30] = 1
    gt[40:60, 40:60] = 2
    pred = gt.copy()
    pred[0:3, 0:3] = 1  # a 9 px speck of class 1
    pred[40:60, 40:50] = 0  # half of class 2 lost
    res = tissue_panoptic_quality(gt, pred, num_classes=4, min_area=5, closing_size=0)
    # class 1: exact match + one FP speck; class 2: IoU 0.5 is not a match; class 3: nowhere
    assert res[1]["dq"] == pytest.approx(1 / 1.5)
    assert res[1]["sq"] == pytest.approx(1 / (1 + EPS))
    assert res[2] == {"dq": 0.0, "sq": 0.0, "pq": 0.0}
    assert all(math.isnan(v) for v in res[3].values())
    # the released default min_area=200 removes the speck
    default = tissue_panoptic_quality(gt, pred, num_classes=4)
    assert default[1]["dq"] == 1.0
    stats = tissue_panoptic_stats(gt, pred, num_classes=4)
    assert (stats[2].tp, stats[2].fp, stats[2].fn) == (0, 1, 1)


def test_tissue_pq_skip_empty_gt():
    gt = np.zeros((32, 32), dtype=np.int64)
    pred = np.zeros_like(gt)
    pred[0:20, 0:20] = 1
    assert tissue_panoptic_quality(gt, pred, num_classes=2)[1]["pq"] == 0.0
    assert math.isnan(tissue_panoptic_quality(gt, pred, num_classes=2, skip_empty_gt=True)[1]["pq"])


def test_tissue_pq_bad_input():
    with pytest.raises(ValueError, match="num_classes"):
        tissue_panoptic_quality(np.full((4, 4), 3), np.zeros((4, 4), int), num_classes=3)
    with pytest.raises(ValueError, match="same shape"):
        tissue_panoptic_quality(np.zeros((4, 4), int), np.zeros((4, 3), int), num_classes=3)


# ---------------------------------------------------------------- GlaS object metrics


def _two_object_case() -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((64, 64), dtype=np.int64)
    gt[5:30, 5:30] = 1  # 625 px
    gt[40:60, 40:60] = 2  # 400 px
    pred = np.zeros_like(gt)
    pred[5:30, 5:30] = 11
    pred[0:3, 0:3] = 11  # same object with a detached corner: 634 px
    pred[40:60, 50:60] = 12  # 200 px
    return gt, pred


def test_object_dice_by_hand():
    gt, pred = _two_object_case()
    g_side = 625 / 1025 * (2 * 625 / (625 + 634)) + 400 / 1025 * (2 * 200 / 600)
    p_side = 634 / 834 * (2 * 625 / (625 + 634)) + 200 / 834 * (2 * 200 / 600)
    assert object_dice(gt, pred) == pytest.approx(0.5 * (g_side + p_side), abs=1e-12)


def test_object_hausdorff_by_hand():
    gt, pred = _two_object_case()
    # object 1 vs 11: the corner pixel (0, 0) is sqrt(50) from (5, 5); object 2 vs 12: column 40 is 10 from 50
    d1, d2 = math.sqrt(50), 10.0
    g_side = (625 * d1 + 400 * d2) / 1025
    p_side = (634 * d1 + 200 * d2) / 834
    assert object_hausdorff(gt, pred) == pytest.approx(0.5 * (g_side + p_side), abs=1e-9)
    # anisotropic spacing: rows 2, columns 1 -> sqrt(5^2 * 4 + 25) and 10
    d1s = math.sqrt(100 + 25)
    expected = 0.5 * ((625 * d1s + 400 * d2) / 1025 + (634 * d1s + 200 * d2) / 834)
    assert object_hausdorff(gt, pred, spacing=(2.0, 1.0)) == pytest.approx(expected, abs=1e-9)


def test_object_hausdorff_unmatched_object_uses_nearest():
    gt = np.zeros((10, 20), dtype=np.int64)
    gt[2, 2] = 1
    pred = np.zeros_like(gt)
    pred[2, 2] = 5
    pred[2, 9] = 6  # overlaps nothing: compared with GT object 1 at distance 7
    expected = 0.5 * (1.0 * 0.0 + (0.5 * 0.0 + 0.5 * 7.0))
    assert object_hausdorff(gt, pred) == pytest.approx(expected)
    # object Dice: the unmatched prediction contributes 0 with weight 1/2
    assert object_dice(gt, pred) == pytest.approx(0.5 * (1.0 + 0.5))


@pytest.mark.parametrize("seed", range(5))
def test_object_dice_matches_oracle(seed):
    rng = np.random.default_rng(seed)
    gt = random_instances(rng, (48, 48), 8)
    pred = perturbed(rng, gt) if seed % 2 else random_instances(rng, (48, 48), 6)
    assert object_dice(gt, pred) == pytest.approx(oracle_object_dice(gt, pred), abs=1e-12)


def test_object_metrics_empty_conventions():
    z = np.zeros((8, 8), dtype=np.int64)
    obj = z.copy()
    obj[2:4, 2:4] = 3
    assert math.isnan(object_dice(z, z)) and math.isnan(object_hausdorff(z, z))
    assert object_dice(z, z, empty_value=1.0) == 1.0
    assert object_dice(obj, z) == 0.0 and object_dice(z, obj) == 0.0
    assert object_hausdorff(obj, z) == math.inf
    assert object_hausdorff(z, obj, missing_value=-1.0) == -1.0


def test_real_glas_image_object_dice(shared_dir):
    from PIL import Image

    gt = np.array(Image.open(shared_dir / "data" / "glas" / "train" / "gland_inst_cc" / "train_1.png")).astype(np.int64)
    pred = np.roll(gt, 5, axis=1)
    assert object_dice(gt, pred) == pytest.approx(oracle_object_dice(gt, pred), abs=1e-12)
    assert 0 < object_hausdorff(gt, pred) < 50
