"""Benchmark of coseg.postprocess against MONAI's HoVer-Net post-processing chain, side by side on one core.

Run from the repository root: ``python benchmarks/bench_postprocess.py``. Writes
``benchmarks/results/postprocess.json`` and prints a table.

1. Speed and quality on a synthetic 1024x1024 tile with ~1000 nuclei (touching pairs and clusters, objects
   cut by the tile border), perfect network outputs (``coseg.postprocess.synthetic.perfect_outputs``):
   instance map + type map + instance table (type, centroid, bbox, area, contour), ours vs MONAI's
   ``HoVerNetInstanceMapPostProcessing`` + ``HoVerNetNuclearTypePostProcessing`` chained as the MONAI HoVer-Net
   bundle chains them, both with HoVer-Net's 40x settings (Sobel 21, marker threshold 0.4, opening radius 2).
2. Upper bound on real nuclei: CoNSeP 256x256 tiles (``../shared/data/consep256``, when present) with perfect
   outputs, default settings vs ``keep_unmarked=True``.
3. Resolution scaling: objects half the 40x size, 40x settings vs ``params_for_resolution(magnification=20)``.

One core: ``torch.set_num_threads(1)`` and ``cv2.setNumThreads(1)``; scipy and scikit-image run single-threaded.
"""

from __future__ import annotations

import contextlib
import io
import json
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import monai
import numpy as np
import torch
from monai.apps.pathology.transforms.post.array import (
    GenerateDistanceMap,
    GenerateInstanceBorder,
    GenerateWatershedMarkers,
    GenerateWatershedMask,
    HoVerNetInstanceMapPostProcessing,
    HoVerNetNuclearTypePostProcessing,
    Watershed,
)
from PIL import Image
from tqdm import tqdm

from coseg.keys import OutputKeys
from coseg.postprocess import (
    WatershedParams,
    hv_watershed,
    instance_table,
    params_for_resolution,
    postprocess_outputs,
)
from coseg.postprocess._inputs import object_probability
from coseg.postprocess.synthetic import (
    perfect_outputs,
    random_ellipse_instances,
    random_instance_types,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "postprocess.json"
CONSEP = REPO.parent / "shared" / "data" / "consep256" / "train" / "inst"
NUM_TYPES = 5
REPEATS = 3


def panoptic_quality(gt: np.ndarray, pred: np.ndarray) -> float:
    """PQ at IoU 0.5 with the project's metric when importable, MONAI's otherwise."""
    try:
        from coseg.metrics import panoptic_quality as coseg_pq
    except ImportError:
        coseg_pq = None
    if coseg_pq is not None:
        return float(coseg_pq(gt, pred, match_iou=0.5)[2])
    from monai.metrics.panoptic_quality import compute_panoptic_quality

    value = compute_panoptic_quality(
        torch.as_tensor(pred.astype(np.int64)),
        torch.as_tensor(gt.astype(np.int64)),
        metric_name="pq",
        remap=True,
        match_iou_threshold=0.5,
    )
    return float(value)


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of ``repeats`` calls and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def bench_tile() -> dict:
    gt = random_ellipse_instances((1024, 1024), 1000, seed=0)
    types = random_instance_types(gt, NUM_TYPES, seed=0)
    outputs = perfect_outputs(gt, types, num_types=NUM_TYPES)
    params = WatershedParams()

    ours_s, ours = timed(lambda: postprocess_outputs(outputs, params=params)[0], REPEATS)
    prob = object_probability(outputs[OutputKeys.INST_BINARY], "softmax")
    watershed_s, inst_map = timed(lambda: hv_watershed(prob, outputs[OutputKeys.INST_HV], params=params), REPEATS)
    type_argmax = outputs[OutputKeys.INST_TYPE].argmax(axis=0)
    table_s, _ = timed(lambda: instance_table(inst_map, type_argmax, num_types=NUM_TYPES), REPEATS)

    binary = torch.as_tensor(outputs[OutputKeys.INST_BINARY])
    hv = torch.as_tensor(outputs[OutputKeys.INST_HV])
    type_logits = torch.as_tensor(outputs[OutputKeys.INST_TYPE])
    inst_post = HoVerNetInstanceMapPostProcessing(sobel_kernel_size=21, marker_threshold=0.4, marker_radius=2)
    type_post = HoVerNetNuclearTypePostProcessing()

    def monai_chain():
        info, inst = inst_post(binary, hv)
        info, type_map = type_post(type_logits, info, inst)
        return info, inst, type_map

    # MONAI warns (scikit-image deprecations) and prints a line per contour it rejects: keep the table readable
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        monai_s, (monai_info, monai_inst, _) = timed(monai_chain, 1)
    monai_map = np.asarray(monai_inst)[0].astype(np.int32)

    # MONAI's image-level steps alone (what hv_watershed replaces), chained as HoVerNetInstanceMapPostProcessing does
    make_mask, make_border = GenerateWatershedMask(), GenerateInstanceBorder(kernel_size=21)
    make_distance, make_markers = GenerateDistanceMap(), GenerateWatershedMarkers(threshold=0.4, radius=2)
    flood = Watershed()

    def monai_image_level():
        mask = make_mask(binary)
        border = make_border(mask, hv)
        return flood(make_distance(mask, border), mask, make_markers(mask, border))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monai_image_s, _ = timed(monai_image_level, REPEATS)

    return {
        "image": "1024x1024 synthetic, perfect outputs, 5 type channels",
        "gt_instances": int(gt.max()),
        "ours": {
            "seconds_total": ours_s,
            "seconds_watershed": watershed_s,
            "seconds_table_with_contours": table_s,
            "instances": int(ours.inst_map.max()),
            "pq_vs_gt": panoptic_quality(gt, ours.inst_map),
            "pixel_type_accuracy_on_objects": float((ours.type_map[gt > 0] == types[gt > 0]).mean()),
        },
        "monai": {
            "seconds_total": monai_s,
            "seconds_image_level_steps": monai_image_s,
            "instances_in_map": int(len(np.unique(monai_map)) - 1),
            "instances_in_info": len(monai_info),
            "pq_vs_gt": panoptic_quality(gt, monai_map),
        },
        "speedup_monai_over_ours": monai_s / ours_s,
        "pq_ours_vs_monai": panoptic_quality(monai_map, ours.inst_map),
    }


def bench_consep() -> dict | None:
    files = sorted(CONSEP.glob("*.png")) if CONSEP.is_dir() else []
    if not files:
        return None
    variants = {
        "hovernet_defaults": WatershedParams(),
        "keep_unmarked": WatershedParams(keep_unmarked=True),
    }
    scores: dict[str, list[float]] = {name: [] for name in variants}
    tiles = 0
    for path in tqdm(files, desc="CoNSeP tiles", leave=False):
        gt = np.asarray(Image.open(path)).astype(np.int32)
        if gt.max() == 0:
            continue
        tiles += 1
        outputs = perfect_outputs(gt)
        for name, params in variants.items():
            pred = postprocess_outputs(outputs, params=params, with_contours=False)[0].inst_map
            scores[name].append(panoptic_quality(gt, pred) if pred.max() else 0.0)
    return {"tiles": tiles, "mean_pq": {name: float(np.mean(values)) for name, values in scores.items()}}


def bench_scaling() -> dict:
    scores: dict[str, list[float]] = {"40x_params": [], "20x_params": []}
    for seed in range(10):
        gt = random_ellipse_instances((256, 256), 150, radius_range=(2.5, 5.0), min_area=4, seed=seed)
        outputs = perfect_outputs(gt)
        for name, params in (
            ("40x_params", WatershedParams()),
            ("20x_params", params_for_resolution(magnification=20)),
        ):
            scores[name].append(panoptic_quality(gt, postprocess_outputs(outputs, params=params)[0].inst_map))
    return {
        "objects": "semi-axes 2.5-5 px (20x-sized nuclei), 10 images 256x256",
        "mean_pq": {name: float(np.mean(values)) for name, values in scores.items()},
        "params_20x": params_for_resolution(magnification=20).__dict__,
    }


def main() -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    results = {
        "machine": {"python": platform.python_version(), "cpu_threads": 1, "monai": monai.__version__},
        "tile_1024": bench_tile(),
        "consep_perfect_targets": bench_consep(),
        "resolution_scaling": bench_scaling(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=RESULTS.parent, suffix=".tmp", delete=False) as handle:
        json.dump(results, handle, indent=2)
    Path(handle.name).replace(RESULTS)

    tile = results["tile_1024"]
    print(f"1024x1024 tile, {tile['gt_instances']} nuclei, 1 CPU thread")
    print(f"{'':24}{'seconds':>10}{'instances':>11}{'PQ vs GT':>10}")
    print(
        f"{'coseg.postprocess':24}{tile['ours']['seconds_total']:>10.3f}{tile['ours']['instances']:>11}"
        f"{tile['ours']['pq_vs_gt']:>10.3f}"
    )
    print(
        f"{'MONAI HoVer-Net chain':24}{tile['monai']['seconds_total']:>10.3f}{tile['monai']['instances_in_map']:>11}"
        f"{tile['monai']['pq_vs_gt']:>10.3f}"
    )
    print(
        f"speed-up x{tile['speedup_monai_over_ours']:.1f}; PQ(ours vs MONAI) {tile['pq_ours_vs_monai']:.3f}; "
        f"ours: watershed {tile['ours']['seconds_watershed']:.3f} s, "
        f"table {tile['ours']['seconds_table_with_contours']:.3f} s; "
        f"MONAI image-level steps {tile['monai']['seconds_image_level_steps']:.3f} s"
    )
    consep = results["consep_perfect_targets"]
    if consep is not None:
        pqs = consep["mean_pq"]
        print(
            f"CoNSeP {consep['tiles']} tiles, perfect outputs: PQ {pqs['hovernet_defaults']:.3f} (HoVer-Net), "
            f"{pqs['keep_unmarked']:.3f} (keep_unmarked)"
        )
    scaling = results["resolution_scaling"]["mean_pq"]
    print(f"20x-sized objects: PQ {scaling['40x_params']:.3f} (40x params), {scaling['20x_params']:.3f} (scaled)")
    print(f"written to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
