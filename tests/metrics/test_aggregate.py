"""Dataset reductions: per-image mean (NaN skipped) versus pooled, for instance and semantic statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coseg.metrics import (
    InstanceAccumulator,
    InstanceStats,
    SemanticAccumulator,
    instance_stats,
    nanmean,
    per_class_instance_stats,
    reduce_instance_stats,
    semantic_stats,
)

EPS = 1.0e-6


def _three_images() -> list[tuple[np.ndarray, np.ndarray]]:
    a = np.zeros((6, 6), dtype=np.int64)
    a[0:2, 0:2] = 1
    b = np.zeros_like(a)
    b[0:2, 0:2] = 1
    b[4:6, 4:6] = 2
    z = np.zeros_like(a)
    # image 1: one exact match; image 2: two GT objects, nothing predicted; image 3: both empty
    return [(a, a.copy()), (b, z), (z, z)]


def test_per_image_mean_versus_pooled_by_hand():
    stats = [instance_stats(g, p) for g, p in _three_images()]
    per_image = reduce_instance_stats(stats, reduction="per_image_mean")
    pooled = reduce_instance_stats(stats, reduction="pooled")
    # per image: PQ = [1/(1+eps), 0, NaN] -> mean of the first two
    assert per_image["pq"] == pytest.approx(0.5 / (1 + EPS))
    assert per_image["aji"] == pytest.approx(0.5)
    # pooled: TP 1, FN 2 -> DQ = 1 / (1 + 1) = 0.5; SQ = 1 / (1 + eps); AJI = 4 / (4 + 8)
    assert pooled["dq"] == pytest.approx(0.5)
    assert pooled["pq"] == pytest.approx(0.5 / (1 + EPS))
    assert pooled["aji"] == pytest.approx(4 / 12)
    assert pooled["dice_1"] == pytest.approx(8 / 16)
    # an explicit empty_value is averaged in
    assert reduce_instance_stats(stats, empty_value=1.0)["aji"] == pytest.approx(2 / 3)


def test_all_empty_dataset():
    z = np.zeros((4, 4), dtype=np.int64)
    stats = [instance_stats(z, z)] * 2
    assert all(math.isnan(v) for v in reduce_instance_stats(stats).values())
    assert all(math.isnan(v) for v in reduce_instance_stats(stats, reduction="pooled").values())
    assert all(math.isnan(v) for v in reduce_instance_stats([]).values())
    assert reduce_instance_stats(stats, reduction="pooled", empty_value=0.0)["pq"] == 0.0


def test_accumulator_states_its_reduction():
    acc = InstanceAccumulator()
    t = np.zeros((6, 6), dtype=np.int64)
    for g, p in _three_images():
        tg = np.where(g > 0, 1, 0) + t
        acc.add(overall=instance_stats(g, p), per_class=per_class_instance_stats(g, p, tg, tg, num_classes=3))
    assert len(acc) == 3
    both = acc.compute_all()
    for name in ("per_image_mean", "pooled"):
        res = both[name]
        assert res["reduction"] == name and res["num_images"] == 3
        assert set(res["per_class"]) == {1, 2}
        # every object has type 1: class 1 equals the class-agnostic result, class 2 is undefined everywhere
        for m, v in res["overall"].items():
            assert res["per_class"][1][m] == pytest.approx(v)
            assert math.isnan(res["per_class"][2][m])
            assert res["class_mean"][m] == pytest.approx(v)
    acc.reset()
    assert len(acc) == 0 and acc.compute()["overall"] is None


def test_accumulator_skip_empty_gt():
    gt = np.zeros((4, 4), dtype=np.int64)
    pred = gt.copy()
    pred[0, 0] = 1
    acc = InstanceAccumulator(skip_empty_gt=True)
    acc.add(instance_stats(gt, pred))
    assert math.isnan(acc.compute()["overall"]["pq"])
    assert acc.compute("pooled")["overall"]["pq"] == 0.0  # pooled keeps the false positive


def test_bad_accumulator_use():
    acc = InstanceAccumulator()
    with pytest.raises(ValueError, match="overall"):
        acc.add()
    with pytest.raises(TypeError, match="InstanceStats"):
        acc.add(overall={"pq": 1.0})
    with pytest.raises(TypeError, match="per_class"):
        acc.add(per_class={1: 0.5})
    with pytest.raises(ValueError, match="reduction"):
        acc.compute("mean")
    with pytest.raises(TypeError, match="InstanceStats"):
        reduce_instance_stats([1.0])
    with pytest.raises(TypeError, match="skip_empty_gt"):
        InstanceAccumulator(skip_empty_gt=1)


def test_semantic_accumulator_by_hand():
    gt = np.array([[[1, 1, 0, 0]], [[2, 2, 2, 0]]])
    pred = np.array([[[1, 0, 0, 0]], [[2, 2, 0, 0]]])
    acc = SemanticAccumulator()
    acc.add(semantic_stats(gt[:1], pred[:1], num_classes=3))
    acc.add(semantic_stats(gt[1:], pred[1:], num_classes=3))
    res = acc.compute("per_image_mean")
    assert res["reduction"] == "per_image_mean" and res["num_images"] == 2
    # class 1 only in image 1 (Dice 2/3; image 2 NaN, skipped); class 2 only in image 2 (Dice 4/5)
    assert res["per_class"]["dice"][1] == pytest.approx(2 / 3)
    assert res["per_class"]["dice"][2] == pytest.approx(4 / 5)
    assert res["mean"]["dice"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert res["distance_reduction"] == "per_image_mean"
    pooled = acc.compute("pooled")
    # background: image 1 (gt 2, pred 3, inter 2), image 2 (gt 1, pred 2, inter 1) -> 2*3 / 8
    assert pooled["per_class"]["dice"][0] == pytest.approx(6 / 8)
    assert pooled["per_class"]["iou"][0] == pytest.approx(3 / 5)
    assert pooled["mean"]["dice"] == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_semantic_accumulator_missing_distance():
    gt = np.array([[[1, 1, 0, 0]], [[1, 0, 0, 0]]])
    pred = np.array([[[1, 1, 0, 0]], [[0, 0, 0, 0]]])
    stats = semantic_stats(gt, pred, num_classes=2)
    inf_acc = SemanticAccumulator()
    inf_acc.add(stats)
    assert inf_acc.compute()["per_class"]["hd"][1] == math.inf
    skip_acc = SemanticAccumulator(missing_value=math.nan)
    skip_acc.add(stats)
    assert skip_acc.compute()["per_class"]["hd"][1] == 0.0
    with pytest.raises(ValueError, match="same number of classes"):
        skip_acc.add(semantic_stats(gt, pred, num_classes=3))
    with pytest.raises(TypeError, match="SemanticStats"):
        skip_acc.add(stats.scores())


def test_nanmean():
    assert nanmean([1.0, math.nan, 3.0]) == 2.0
    assert math.isnan(nanmean([math.nan, math.nan]))
    assert math.isnan(nanmean([]))
    assert nanmean([1.0, math.inf]) == math.inf
    np.testing.assert_array_equal(nanmean(np.array([[1.0, math.nan], [3.0, math.nan]]), axis=0), [2.0, math.nan])


def test_stats_sum_is_pooling():
    a, b = InstanceStats(n_gt=2, tp=1, iou_sum=0.8), InstanceStats(n_pred=3, tp=0)
    assert reduce_instance_stats([a, b], reduction="pooled") == (a + b).scores()
