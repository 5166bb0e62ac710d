"""Benchmark of :mod:`coseg.metrics` against straightforward baselines, measured side by side in one run.

Run from the repository root: ``python benchmarks/bench_metrics.py``. Writes ``benchmarks/results/metrics.json``
and prints a table. Rows:

- instance metrics (AJI, AJI+, PQ, DICE1) at 1024 x 1024 with ~1000 objects: contingency table versus the
  per-object-mask re-implementation of HoVer-Net's reference (``tests/metrics/oracle.py``), values compared;
- PQ alone at 256 x 256 with ~100 objects versus ``monai.metrics.compute_panoptic_quality`` (also per-mask; at
  1024 x 1024 it needs minutes);
- per-class instance statistics and a 20 000-object image (sparse table), ours only;
- Dice + IoU of a 20-class 3D volume: bincount on label maps versus MONAI ``DiceMetric`` + ``MeanIoU`` on one-hot;
- HD + HD95 of an 8-class 3D volume: one boundary-distance pass versus two ``compute_hausdorff_distance`` calls.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from monai.metrics import DiceMetric, MeanIoU, compute_hausdorff_distance, compute_panoptic_quality
from monai.networks.utils import one_hot
from skimage.segmentation import expand_labels

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.metrics.oracle (the baseline lives with the tests that use it)

from coseg.metrics import (  # noqa: E402
    instance_scores,
    panoptic_quality,
    per_class_instance_stats,
    semantic_scores,
)
from tests.metrics.oracle import oracle_all  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "metrics.json"


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median wall time in seconds over ``repeats`` calls, and the last result."""
    times = []
    result = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def instance_pair(rng: np.random.Generator, size: int, n: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """GT blobs, and a prediction shifted by 2 px with 10 % of objects missed, 5 % merged and 5 % spurious."""
    seeds = np.zeros((size, size), dtype=np.int64)
    seeds[rng.integers(0, size, n), rng.integers(0, size, n)] = rng.permutation(n) + 1
    gt = expand_labels(seeds, radius)
    pred = np.roll(gt, 2, axis=1) * 7 + 3 * (gt > 0)  # arbitrary, non-contiguous ids
    ids = np.unique(pred[pred > 0])
    pred[np.isin(pred, rng.choice(ids, len(ids) // 10, replace=False))] = 0
    merge = rng.choice(ids, len(ids) // 20, replace=False)
    pred[np.isin(pred, merge)] = merge[0]
    extra = np.zeros_like(seeds)
    extra[rng.integers(0, size, n // 20), rng.integers(0, size, n // 20)] = 1
    extra = expand_labels(extra, radius // 2)
    pred = np.where((pred == 0) & (extra > 0), 10**7 + extra, pred)
    return gt, pred


def smooth_labels(rng: np.random.Generator, shape: tuple[int, ...], num_classes: int) -> np.ndarray:
    from scipy import ndimage

    noise = ndimage.gaussian_filter(rng.random(shape), sigma=3)
    return np.digitize(noise, np.quantile(noise, np.linspace(0, 1, num_classes + 1)[1:-1]))


def main() -> None:
    rng = np.random.default_rng(0)
    torch.set_num_threads(2)
    rows = []

    # 1. all instance metrics, ~1000 objects at 1024 x 1024
    gt, pred = instance_pair(rng, 1024, 1000, 12)
    n_gt, n_pred = len(np.unique(gt)) - 1, len(np.unique(pred)) - 1
    fast_t, fast = timed(lambda: instance_scores(gt, pred), 5)
    slow_t, slow = timed(lambda: oracle_all(gt, pred), 1)
    max_diff = max(abs(fast[k] - float(slow[k])) for k in slow)
    rows.append(
        {
            "case": f"AJI, AJI+, PQ, DICE1: 1024x1024, {n_gt} GT / {n_pred} pred objects",
            "ours_s": fast_t,
            "baseline": "per-object-mask reference re-implementation",
            "baseline_s": slow_t,
            "speedup": slow_t / fast_t,
            "max_abs_value_difference": max_diff,
        }
    )

    # 2. PQ alone versus MONAI, ~100 objects at 256 x 256
    gt_s, pred_s = instance_pair(rng, 256, 100, 8)
    ours_t, ours_pq = timed(lambda: panoptic_quality(gt_s, pred_s), 5)
    g_t, p_t = torch.from_numpy(gt_s), torch.from_numpy(pred_s)
    monai_t, monai_pq = timed(lambda: compute_panoptic_quality(p_t, g_t), 3)
    rows.append(
        {
            "case": f"PQ only, 256x256, {len(np.unique(gt_s)) - 1} GT objects",
            "ours_s": ours_t,
            "baseline": "monai.metrics.compute_panoptic_quality",
            "baseline_s": monai_t,
            "speedup": monai_t / ours_t,
            "max_abs_value_difference": abs(ours_pq[2] - float(monai_pq)),
        }
    )

    # 3. per-class (3 types, majority vote) and 4. a 20 000-object image (sparse table): ours only
    gt_type = rng.integers(1, 4, gt.shape) * (gt > 0)
    pred_type = rng.integers(1, 4, pred.shape) * (pred > 0)
    t, _ = timed(lambda: per_class_instance_stats(gt, pred, gt_type, pred_type, num_classes=4), 3)
    rows.append({"case": "per-class stats (3 types), 1024x1024, ~1000 objects", "ours_s": t})
    gt_m, pred_m = instance_pair(rng, 1024, 20000, 3)
    t, _ = timed(lambda: instance_scores(gt_m, pred_m), 3)
    rows.append({"case": f"all metrics, 1024x1024, {len(np.unique(gt_m)) - 1} GT objects (sparse)", "ours_s": t})

    # 5. Dice + IoU, 20 classes, one 64 x 160 x 160 volume
    vol_gt = smooth_labels(rng, (1, 64, 160, 160), 20)
    vol_pred = np.roll(vol_gt, 2, axis=2)
    ours_t, ours = timed(lambda: semantic_scores(vol_gt, vol_pred, num_classes=20, metrics=("dice", "iou")), 3)
    oh_gt = one_hot(torch.from_numpy(vol_gt)[:, None], 20)
    oh_pred = one_hot(torch.from_numpy(vol_pred)[:, None], 20)

    def monai_dice_iou():
        d = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(oh_pred, oh_gt)
        i = MeanIoU(include_background=True, reduction="none", ignore_empty=False)(oh_pred, oh_gt)
        return d, i

    monai_t, (d, i) = timed(monai_dice_iou, 3)
    diff = max(np.abs(ours["dice"] - d.numpy()).max(), np.abs(ours["iou"] - i.numpy()).max())
    rows.append(
        {
            "case": "Dice+IoU, 20 classes, 64x160x160 volume",
            "ours_s": ours_t,
            "baseline": "MONAI DiceMetric+MeanIoU on precomputed one-hot (float32, 2 x 131 MB)",
            "baseline_s": monai_t,
            "speedup": monai_t / ours_t,
            "max_abs_value_difference": float(diff),
        }
    )

    # 6. HD + HD95, 8 classes, one 48 x 96 x 96 volume
    hd_gt = smooth_labels(rng, (1, 48, 96, 96), 8)
    hd_pred = np.roll(hd_gt, 2, axis=3)
    spacing = [0.3, 0.3, 0.3]
    ours_t, ours = timed(
        lambda: semantic_scores(hd_gt, hd_pred, num_classes=8, metrics=("hd", "hd95"), spacing=spacing), 1
    )
    oh_gt = one_hot(torch.from_numpy(hd_gt)[:, None], 8)
    oh_pred = one_hot(torch.from_numpy(hd_pred)[:, None], 8)

    def monai_hd():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = compute_hausdorff_distance(oh_pred, oh_gt, include_background=True, spacing=spacing)
            b = compute_hausdorff_distance(oh_pred, oh_gt, include_background=True, spacing=spacing, percentile=95)
        return a, b

    monai_t, (a, b) = timed(monai_hd, 1)
    diff = max(np.abs(ours["hd"] - a.numpy()).max(), np.abs(ours["hd95"] - b.numpy()).max())
    rows.append(
        {
            "case": "HD+HD95, 8 classes, 48x96x96 volume",
            "ours_s": ours_t,
            "baseline": "two monai compute_hausdorff_distance calls on one-hot",
            "baseline_s": monai_t,
            "speedup": monai_t / ours_t,
            "max_abs_value_difference": float(diff),
        }
    )

    out = {
        "benchmark": "coseg.metrics",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "rows": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    tmp.replace(RESULTS)

    print(f"{'case':<62} {'ours [s]':>9} {'baseline [s]':>13} {'speedup':>8} {'max |diff|':>11}")
    for r in rows:
        base = f"{r['baseline_s']:13.3f}" if "baseline_s" in r else f"{'-':>13}"
        speed = f"{r['speedup']:7.1f}x" if "speedup" in r else f"{'-':>8}"
        diff = f"{r['max_abs_value_difference']:11.1e}" if "max_abs_value_difference" in r else f"{'-':>11}"
        print(f"{r['case']:<62} {r['ours_s']:9.3f} {base} {speed} {diff}")
    print(f"written: {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
