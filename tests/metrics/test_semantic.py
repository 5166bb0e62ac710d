"""Semantic metrics: hand-computed Dice / IoU / HD / HD95 (2D, 3D, anisotropic), MONAI equality, empty masks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric, MeanIoU, compute_hausdorff_distance
from monai.networks.utils import one_hot

from coseg.metrics import (
    dice_per_class,
    hausdorff_per_class,
    iou_per_class,
    semantic_scores,
    semantic_stats,
)


def test_dice_iou_by_hand():
    gt = np.array([[[0, 1], [1, 2]]])
    pred = np.array([[[0, 1], [2, 2]]])
    # class 0: 1 vs 1 shared; class 1: gt 2 px, pred 1 px, 1 shared; class 2: gt 1, pred 2, 1 shared
    np.testing.assert_allclose(dice_per_class(gt, pred, num_classes=3), [[1.0, 2 / 3, 2 / 3]])
    np.testing.assert_allclose(iou_per_class(gt, pred, num_classes=3), [[1.0, 1 / 2, 1 / 2]])


def test_empty_class_conventions():
    gt = np.array([[[1, 1], [0, 0]]])
    pred = np.array([[[2, 2], [0, 0]]])
    s = semantic_scores(gt, pred, num_classes=4)
    # class 1 only in GT, class 2 only in prediction: overlap 0, distances inf; class 3 nowhere: NaN
    for k in (1, 2):
        assert s["dice"][0, k] == 0.0 and s["iou"][0, k] == 0.0
        assert s["hd"][0, k] == math.inf and s["hd95"][0, k] == math.inf
    for m in ("dice", "iou", "hd", "hd95"):
        assert math.isnan(s[m][0, 3])
    s2 = semantic_scores(gt, pred, num_classes=4, empty_value=1.0, missing_value=math.nan)
    assert s2["dice"][0, 3] == 1.0 and s2["hd"][0, 3] == 1.0
    assert math.isnan(s2["hd"][0, 1]) and s2["dice"][0, 1] == 0.0


def test_hd_hd95_by_hand_2d_with_anisotropic_spacing():
    """GT: one pixel; prediction: that pixel and an isolated one 4 columns away (both are boundary pixels)."""
    gt = np.zeros((1, 8, 8), dtype=np.int64)
    gt[0, 2, 2] = 1
    pred = gt.copy()
    pred[0, 2, 6] = 1
    # directed distances pred->gt = [0, 4], gt->pred = [0]: HD = 4; HD95 = 95th pct of [0, 4] (linear) = 3.8
    assert hausdorff_per_class(gt, pred, num_classes=2)[0, 1] == pytest.approx(4.0)
    assert hausdorff_per_class(gt, pred, num_classes=2, percentile=95)[0, 1] == pytest.approx(3.8, abs=1e-6)
    # column spacing 0.5 -> distances halve
    s = semantic_scores(gt, pred, num_classes=2, spacing=(1.0, 0.5), metrics=("hd", "hd95"))
    assert s["hd"][0, 1] == pytest.approx(2.0)
    assert s["hd95"][0, 1] == pytest.approx(1.9, abs=1e-6)
    # row spacing does not matter here
    assert semantic_scores(gt, pred, num_classes=2, spacing=(7.0, 1.0), metrics=("hd",))["hd"][0, 1] == 4.0


def test_hd_by_hand_squares():
    """Two 3x3 squares two columns apart: every boundary pixel is at most 2 from the other boundary."""
    gt = np.zeros((1, 6, 8), dtype=np.int64)
    pred = np.zeros_like(gt)
    gt[0, 1:4, 1:4] = 1
    pred[0, 1:4, 3:6] = 1
    assert hausdorff_per_class(gt, pred, num_classes=2)[0, 1] == pytest.approx(2.0)


def test_hd_by_hand_3d_anisotropic():
    gt = np.zeros((1, 4, 4, 8), dtype=np.int64)
    gt[0, 1, 1, 1] = 1
    pred = gt.copy()
    pred[0, 1, 1, 4] = 1  # 3 voxels along the last axis
    pred[0, 3, 1, 1] = 1  # 2 voxels along the first axis
    assert hausdorff_per_class(gt, pred, num_classes=2)[0, 1] == pytest.approx(3.0)
    # spacing (2, 1, 0.5): distances 2*2 = 4 and 3*0.5 = 1.5 -> HD 4
    assert hausdorff_per_class(gt, pred, num_classes=2, spacing=[2.0, 1.0, 0.5])[0, 1] == pytest.approx(4.0)
    # spacing (0.5, 1, 3): 1 and 9 -> 9
    assert hausdorff_per_class(gt, pred, num_classes=2, spacing=[0.5, 1.0, 3.0])[0, 1] == pytest.approx(9.0)
    # 95th percentile of pred->gt [0, 1, 9] is 9 - 0.1 * 8 = 8.2 (linear interpolation); gt->pred [0]
    hd95 = hausdorff_per_class(gt, pred, num_classes=2, spacing=[0.5, 1.0, 3.0], percentile=95)[0, 1]
    assert hd95 == pytest.approx(8.2, abs=1e-5)


def _random_maps(rng: np.random.Generator, shape: tuple[int, ...], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage

    noise = ndimage.gaussian_filter(rng.random(shape), sigma=[0] + [2] * (len(shape) - 1))
    gt = np.digitize(noise, np.quantile(noise, np.linspace(0, 1, num_classes + 1)[1:-1]))
    pred = gt.copy()
    flip = rng.random(shape) < 0.1
    pred[flip] = rng.integers(0, num_classes, int(flip.sum()))
    pred[1][pred[1] == num_classes - 1] = 0  # a class missing from one prediction
    return gt, pred


@pytest.mark.parametrize("shape", [(3, 24, 20), (2, 10, 12, 9)])
def test_equals_monai(shape):
    rng = np.random.default_rng(0)
    num_classes = 4
    gt, pred = _random_maps(rng, shape, num_classes)
    g1 = one_hot(torch.from_numpy(gt)[:, None], num_classes)
    p1 = one_hot(torch.from_numpy(pred)[:, None], num_classes)
    spacing = [0.8, 1.3] if len(shape) == 3 else [0.8, 1.3, 2.0]
    ours = semantic_scores(gt, pred, num_classes=num_classes, spacing=spacing, empty_value=1.0)
    dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(p1, g1)
    iou = MeanIoU(include_background=True, reduction="none", ignore_empty=False)(p1, g1)
    np.testing.assert_allclose(ours["dice"], dice.numpy(), atol=1e-6)
    np.testing.assert_allclose(ours["iou"], iou.numpy(), atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(p1, g1, include_background=True, spacing=spacing).numpy()
        hd95 = compute_hausdorff_distance(p1, g1, include_background=True, spacing=spacing, percentile=95).numpy()
    present = (g1.sum((2, 3) if len(shape) == 3 else (2, 3, 4)) > 0).numpy()
    present &= (p1.sum((2, 3) if len(shape) == 3 else (2, 3, 4)) > 0).numpy()
    assert (~present).any()
    np.testing.assert_allclose(ours["hd"][present], hd[present], rtol=1e-6)
    np.testing.assert_allclose(ours["hd95"][present], hd95[present], rtol=1e-6)
    # MONAI's value when a class is missing on exactly one side is inf (or NaN); ours is missing_value = inf
    assert np.all(np.isinf(ours["hd"][~present]))


def test_one_hot_and_torch_inputs_agree():
    rng = np.random.default_rng(2)
    gt, pred = _random_maps(rng, (2, 16, 16), 3)
    ref = semantic_scores(gt, pred, num_classes=3)
    g1 = one_hot(torch.from_numpy(gt)[:, None], 3).to(torch.uint8)
    p1 = one_hot(torch.from_numpy(pred)[:, None], 3).to(torch.uint8)
    oh = semantic_scores(g1, p1, num_classes=3, one_hot=True)
    tt = semantic_scores(torch.from_numpy(gt), torch.from_numpy(pred).float(), num_classes=3)
    for m in ref:
        np.testing.assert_array_equal(oh[m], ref[m])
        np.testing.assert_array_equal(tt[m], ref[m])


def test_stats_counts():
    gt = np.array([[[0, 1, 1, 2]]])
    pred = np.array([[[1, 1, 2, 2]]])
    st = semantic_stats(gt, pred, num_classes=3, distances=False)
    np.testing.assert_array_equal(st.inter, [[0, 1, 1]])
    np.testing.assert_array_equal(st.gt_count, [[1, 2, 1]])
    np.testing.assert_array_equal(st.pred_count, [[0, 2, 2]])
    assert st.hd is None and st.hd95 is None
    assert set(st.scores()) == {"dice", "iou"}


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"gt": np.zeros((1, 4, 4), int), "pred": np.full((1, 4, 4), 3)}, ValueError, "num_classes"),
        ({"gt": np.zeros((1, 4, 4), int), "pred": np.zeros((1, 4, 5), int)}, ValueError, "same shape"),
        ({"gt": np.zeros((4, 4), int), "pred": np.zeros((4, 4), int)}, ValueError, "dimensions"),
        ({"gt": np.zeros((1, 4, 4)), "pred": np.full((1, 4, 4), 0.5)}, ValueError, "non-integer"),
        ({"gt": np.zeros((1, 4, 4), int), "pred": -np.ones((1, 4, 4), int)}, ValueError, "negative"),
        ({"spacing": [1.0]}, ValueError, "2 values"),
        ({"spacing": [1.0, -1.0]}, ValueError, "positive"),
        ({"spacing": "1"}, TypeError, "spacing"),
        ({"metrics": ("dice", "hd99")}, ValueError, "metrics"),
        ({"num_classes": 1}, ValueError, "num_classes"),
        ({"one_hot": True}, ValueError, "dimensions"),
        ({"one_hot": 1}, TypeError, "one_hot"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    args = {"gt": np.zeros((1, 4, 4), int), "pred": np.zeros((1, 4, 4), int), "num_classes": 3}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        semantic_scores(args.pop("gt"), args.pop("pred"), **args)


def test_bad_one_hot_and_percentile():
    with pytest.raises(ValueError, match="channels"):
        semantic_scores(np.zeros((1, 2, 4, 4), int), np.zeros((1, 2, 4, 4), int), num_classes=3, one_hot=True)
    with pytest.raises(ValueError, match="only 0 and 1"):
        semantic_scores(np.full((1, 3, 4, 4), 2), np.zeros((1, 3, 4, 4), int), num_classes=3, one_hot=True)
    z = np.zeros((1, 4, 4), int)
    with pytest.raises(ValueError, match="percentile"):
        hausdorff_per_class(z, z, num_classes=2, percentile=101)
    with pytest.raises(TypeError, match="missing_value"):
        hausdorff_per_class(z, z, num_classes=2, missing_value=None)
