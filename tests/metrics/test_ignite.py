"""The CumulativeIterationMetric wrappers inside a real ignite Engine through MONAI's IgniteMetricHandler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.handlers import IgniteMetricHandler
from monai.networks.utils import one_hot

from coseg.metrics import (
    InstanceAccumulator,
    InstanceMetric,
    MissingClassCount,
    SemanticAccumulator,
    SemanticMetric,
    instance_stats,
    per_class_instance_stats,
    semantic_stats,
)
from tests.metrics.oracle import perturbed, random_instances

NUM_TYPES = 3
NUM_CLASSES = 4


def _instance_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Three batches of two (B, 2, H, W) pairs: channel 0 ids, channel 1 types (y_pred, y)."""
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(3):
        preds, gts = [], []
        for _ in range(2):
            gt = random_instances(rng, (32, 32), int(rng.integers(0, 8)))
            pred = perturbed(rng, gt)
            gt_t = rng.integers(0, NUM_TYPES, gt.shape) * (gt > 0)
            pred_t = rng.integers(0, NUM_TYPES, gt.shape) * (pred > 0)
            gts.append(np.stack([gt, gt_t]))
            preds.append(np.stack([pred, pred_t]))
        batches.append((torch.from_numpy(np.stack(preds)), torch.from_numpy(np.stack(gts))))
    return batches


def _run(batches, handlers: dict[str, IgniteMetricHandler]) -> Engine:
    engine = Engine(lambda e, batch: batch)
    for name, handler in handlers.items():
        handler.attach(engine, name)
    engine.run(batches, max_epochs=1)
    return engine


@pytest.mark.parametrize("reduction", ["per_image_mean", "pooled"])
def test_instance_metric_in_engine_matches_direct_functions(reduction):
    batches = _instance_batches()
    specs = {
        "pq": {"metric": "pq"},
        "aji_k2": {"metric": "aji", "class_index": 2, "num_classes": NUM_TYPES},
        "f1_mean": {"metric": "f1", "class_index": "mean", "num_classes": NUM_TYPES},
        "aji_plus": {"metric": "aji_plus"},
        "dice_1": {"metric": "dice_1"},
    }
    handlers = {
        name: IgniteMetricHandler(metric_fn=InstanceMetric(reduction=reduction, **kw), output_transform=lambda o: o)
        for name, kw in specs.items()
    }
    engine = _run(batches, handlers)

    acc = InstanceAccumulator()
    for y_pred, y in batches:
        for b in range(y.shape[0]):
            g, p = y[b].numpy(), y_pred[b].numpy()
            acc.add(
                overall=instance_stats(g[0], p[0]),
                per_class=per_class_instance_stats(g[0], p[0], g[1], p[1], num_classes=NUM_TYPES),
            )
    ref = acc.compute(reduction)
    metrics = engine.state.metrics
    assert metrics["pq"] == pytest.approx(ref["overall"]["pq"], abs=1e-12)
    assert metrics["aji_plus"] == pytest.approx(ref["overall"]["aji_plus"], abs=1e-12)
    assert metrics["dice_1"] == pytest.approx(ref["overall"]["dice_1"], abs=1e-12)
    assert metrics["aji_k2"] == pytest.approx(ref["per_class"][2]["aji"], abs=1e-12, nan_ok=True)
    assert metrics["f1_mean"] == pytest.approx(ref["class_mean"]["f1"], abs=1e-12, nan_ok=True)
    # per-image statistics are kept for other handlers (save_details)
    assert engine.state.metric_details["pq"].shape == (6, 1, 10)
    assert engine.state.metric_details["f1_mean"].shape == (6, NUM_TYPES - 1, 10)


def test_instance_metric_single_channel_and_lists():
    batches = _instance_batches()
    metric = InstanceMetric("pq")
    for y_pred, y in batches:
        metric(y_pred=[p[:1] for p in y_pred], y=[t[:1] for t in y])  # decollated channel-first items
    direct = InstanceAccumulator()
    for y_pred, y in batches:
        for b in range(y.shape[0]):
            direct.add(instance_stats(y[b, 0], y_pred[b, 0]))
    assert float(metric.aggregate()) == pytest.approx(direct.compute()["overall"]["pq"], abs=1e-12)
    assert metric.aggregate().dtype == torch.float64 and metric.aggregate().ndim == 0


def _semantic_batches(spatial: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(1)
    batches = []
    for _ in range(3):
        gt = rng.integers(0, NUM_CLASSES - 1, (2, 1, *spatial))  # the last class never in the GT
        pred = gt.copy()
        flip = rng.random(pred.shape) < 0.2
        pred[flip] = rng.integers(0, NUM_CLASSES, int(flip.sum()))
        batches.append((torch.from_numpy(pred), torch.from_numpy(gt)))
    return batches


@pytest.mark.parametrize("spatial", [(12, 12), (6, 8, 5)])
def test_semantic_metric_in_engine_matches_direct_functions(spatial):
    batches = _semantic_batches(spatial)
    spacing = [1.5] * len(spatial)
    specs = {
        "dice": {"metric": "dice"},
        "iou_k1": {"metric": "iou", "class_index": 1},
        "dice_pooled": {"metric": "dice", "reduction": "pooled"},
        "hd": {"metric": "hd", "spacing": spacing, "missing_value": math.nan},
        "hd95_k2": {"metric": "hd95", "class_index": 2, "spacing": spacing},
    }
    handlers = {
        name: IgniteMetricHandler(metric_fn=SemanticMetric(num_classes=NUM_CLASSES, **kw), output_transform=lambda o: o)
        for name, kw in specs.items()
    }
    metrics = _run(batches, handlers).state.metrics

    acc = SemanticAccumulator(missing_value=math.nan)
    acc_inf = SemanticAccumulator()
    for y_pred, y in batches:
        st = semantic_stats(y[:, 0], y_pred[:, 0], num_classes=NUM_CLASSES, spacing=spacing)
        acc.add(st)
        acc_inf.add(st)
    per_image, pooled = acc.compute("per_image_mean"), acc.compute("pooled")
    assert metrics["dice"] == pytest.approx(per_image["mean"]["dice"], abs=1e-12)
    assert metrics["iou_k1"] == pytest.approx(per_image["per_class"]["iou"][1], abs=1e-12)
    assert metrics["dice_pooled"] == pytest.approx(pooled["mean"]["dice"], abs=1e-12)
    assert metrics["hd"] == pytest.approx(per_image["mean"]["hd"], abs=1e-9)
    assert metrics["hd95_k2"] == pytest.approx(acc_inf.compute()["per_class"]["hd95"][2], abs=1e-9)


def test_semantic_metric_one_hot_input():
    batches = _semantic_batches((10, 10))
    label_metric = SemanticMetric("dice", num_classes=NUM_CLASSES)
    onehot_metric = SemanticMetric("dice", num_classes=NUM_CLASSES)
    for y_pred, y in batches:
        label_metric(y_pred, y)
        onehot_metric(one_hot(y_pred, NUM_CLASSES), one_hot(y, NUM_CLASSES))
    assert float(label_metric.aggregate()) == float(onehot_metric.aggregate())


@pytest.mark.parametrize(
    "cls,kwargs,match",
    [
        (InstanceMetric, {"metric": "map"}, "metric"),
        (InstanceMetric, {"class_index": 1}, "num_classes is required"),
        (InstanceMetric, {"class_index": 3, "num_classes": 3}, "class_index"),
        (InstanceMetric, {"class_index": "all", "num_classes": 3}, "class_index"),
        (InstanceMetric, {"reduction": "mean"}, "reduction"),
        (SemanticMetric, {"metric": "hd", "num_classes": 3, "reduction": "pooled"}, "pooled"),
        (SemanticMetric, {"metric": "dsc", "num_classes": 3}, "metric"),
        (SemanticMetric, {"num_classes": 3, "class_index": 3}, "class_index"),
    ],
)
def test_bad_constructor_arguments(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_bad_batches():
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="needs \\(B, 2, H, W\\)"):
        InstanceMetric("pq", class_index=1, num_classes=3)(x, x)
    with pytest.raises(ValueError, match="same shape"):
        InstanceMetric("pq")(x, torch.zeros(2, 1, 8, 9))
    with pytest.raises(ValueError, match="1 or 2"):
        InstanceMetric("pq")(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="1 channel"):
        SemanticMetric("dice", num_classes=4)(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="no data"):
        SemanticMetric("dice", num_classes=4).aggregate()
    with pytest.raises(ValueError, match="no data"):
        InstanceMetric("pq").aggregate()


def test_missing_class_count_sides():
    gt = torch.tensor([[[[1, 1], [2, 0]]], [[[3, 0], [0, 0]]]])
    pred = torch.tensor([[[[1, 0], [0, 3]]], [[[3, 2], [0, 0]]]])
    counts = {}
    for side in MissingClassCount.SIDES:
        metric = MissingClassCount(num_classes=4, side=side)
        metric(pred, gt)
        counts[side] = float(metric.aggregate())
    # image 0: class 2 missed, class 3 spurious; image 1: class 2 spurious
    assert counts == {"either": 3.0, "missed": 1.0, "spurious": 2.0}
    only = MissingClassCount(num_classes=4, class_index=2)
    only(pred, gt)
    assert float(only.aggregate()) == 2.0
    assert float(MissingClassCount(num_classes=4).aggregate()) == 0.0
    with pytest.raises(ValueError, match="side"):
        MissingClassCount(num_classes=4, side="both")
