"""Benchmark of the histology data code: polygon rasterization, PUMA conversion, codec, synthetic samples.

Run ``python benchmarks/bench_data_histo.py``; writes ``benchmarks/results/data_histo.json`` and prints a table.

Rasterizers are compared side by side on the same polygons (a PUMA-like 1024^2 ROI made from a synthetic
sample: its nuclei and tissue regions outlined with :func:`coseg.histo.geojson.instances_to_features`):

- ``ours``: :func:`coseg.histo.geojson.rasterize_instances` / ``rasterize_regions`` (pixel-centre rule, holes).
- ``skimage``: :func:`skimage.draw.polygon` per polygon (exterior only: no holes; its own centre rule).
- ``cv2``: :func:`cv2.fillPoly` per polygon on integer-rounded vertices (paints boundary pixels).

Agreement with the exact pixel-centre rule is reported as the fraction of differing pixels.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import tifffile
from skimage.draw import polygon as sk_polygon

from coseg.data.label_codec import decode, encode
from coseg.histo.geojson import (
    feature_polygons,
    instances_to_features,
    rasterize_instances,
    rasterize_regions,
    regions_to_features,
    write_geojson,
)
from coseg.histo.prepare import prepare_dataset
from coseg.histo.synthetic import make_sample

OUT = Path(__file__).resolve().parent / "results" / "data_histo.json"


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def skimage_instances(objects, shape):
    inst = np.zeros(shape, np.int32)
    for k, polys in enumerate(objects, start=1):
        for poly in polys:
            ext = poly[0] - 0.5  # skimage tests integer points: shift so they are pixel centres
            rr, cc = sk_polygon(ext[:, 1], ext[:, 0], shape)
            inst[rr, cc] = k
    return inst


def cv2_instances(objects, shape):
    inst = np.zeros(shape, np.int32)
    for k, polys in enumerate(objects, start=1):
        for poly in polys:
            pts = np.round(poly[0] - 0.5).astype(np.int32)
            cv2.fillPoly(inst, [pts], int(k))
    return inst


def skimage_regions(regions, shape):
    sem = np.zeros(shape, np.uint8)
    for polys, c in regions:
        for poly in polys:
            ext = poly[0] - 0.5
            rr, cc = sk_polygon(ext[:, 1], ext[:, 0], shape)
            sem[rr, cc] = c
    return sem


def cv2_regions(regions, shape):
    sem = np.zeros(shape, np.uint8)
    for polys, c in regions:
        cv2.fillPoly(sem, [np.round(p - 0.5).astype(np.int32) for poly in polys for p in poly], int(c))
    return sem


def main() -> None:
    results: dict = {"machine": platform.processor() or platform.machine(), "python": platform.python_version()}
    t_sample = best_of(lambda: make_sample(256, 7), 5)
    results["synthetic_256_s"] = t_sample
    t0 = time.perf_counter()
    d = make_sample(1024, 0)
    results["synthetic_1024_s"] = time.perf_counter() - t0
    shape = d["inst"].shape

    t0 = time.perf_counter()
    nuc_feats = instances_to_features(
        d["inst"], type_map=d["type"], type_names={1: "tumor", 2: "lymphocyte", 3: "stroma"}
    )
    tis_feats = regions_to_features(d["sem"], {1: "tumor", 2: "stroma"})
    results["features_from_1024_labels_s"] = time.perf_counter() - t0
    objects = [feature_polygons(f) for f in nuc_feats]
    regions = [(feature_polygons(f), i + 1) for i, f in enumerate(tis_feats)]
    n_vertices_tissue = sum(len(r) for polys, _ in regions for p in polys for r in p)
    results["roi"] = {"size": shape[0], "nuclei": len(objects), "tissue_vertices": n_vertices_tissue}

    ours_inst = rasterize_instances(objects, shape)[0]
    ref_inst = d["inst"]
    rows = []
    for name, fn in (
        ("ours", lambda: rasterize_instances(objects, shape)[0]),
        ("skimage", lambda: skimage_instances(objects, shape)),
        ("cv2", lambda: cv2_instances(objects, shape)),
    ):
        t = best_of(fn)
        out = fn()
        rows.append(
            {
                "task": "nuclei",
                "method": name,
                "seconds": t,
                "pixels_differing": float(np.mean((out > 0) != (ref_inst > 0))),
            }
        )
    for name, fn in (
        ("ours", lambda: rasterize_regions(regions, shape)),
        ("skimage", lambda: skimage_regions(regions, shape)),
        ("cv2", lambda: cv2_regions(regions, shape)),
    ):
        t = best_of(fn, 2)
        out = fn()
        rows.append(
            {"task": "tissue", "method": name, "seconds": t, "pixels_differing": float(np.mean(out != d["sem"]))}
        )
    base = {r["task"]: r["seconds"] for r in rows if r["method"] == "ours"}
    for r in rows:
        r["time_vs_ours"] = r["seconds"] / base[r["task"]]
    results["rasterize"] = rows
    results["exact_round_trip"] = bool(np.array_equal(ours_inst > 0, ref_inst > 0))

    label = encode(d["sem"], d["inst"], d["type"], 3, 4)
    results["encode_1024_s"] = best_of(lambda: encode(d["sem"], d["inst"], d["type"], 3, 4))
    results["decode_1024_s"] = best_of(lambda: decode(label, 3, 4))

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        n_roi = 3
        for i in range(n_roi):
            case = f"training_set_metastatic_roi_{i:03d}"
            s = make_sample(1024, 100 + i)
            (raw / "rois").mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(raw / "rois" / f"{case}.tif", s["image"], photometric="rgb")
            names = {1: "nuclei_tumor", 2: "nuclei_lymphocyte", 3: "nuclei_stroma"}
            write_geojson(
                raw / "nuclei" / f"{case}_nuclei.geojson",
                instances_to_features(s["inst"], type_map=s["type"], type_names=names),
            )
            write_geojson(
                raw / "tissue" / f"{case}_tissue.geojson",
                regions_to_features(s["sem"], {1: "tissue_tumor", 2: "tissue_stroma"}),
            )
        t0 = time.perf_counter()
        prepare_dataset("puma", raw, Path(tmp) / "out", progress=False)
        results["prepare_puma_1024_per_roi_s"] = (time.perf_counter() - t0) / n_roi

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1), encoding="utf-8")
    t256, t1024 = results["synthetic_256_s"], results["synthetic_1024_s"]
    print(f"synthetic sample 256^2: {t256 * 1e3:.0f} ms; 1024^2: {t1024:.2f} s")
    print(f"ROI 1024^2: {len(objects)} nuclei, {n_vertices_tissue} tissue vertices")
    print(f"{'task':<8}{'method':<9}{'seconds':>9}{'x ours':>8}{'pixels differing':>18}")
    for r in rows:
        print(
            f"{r['task']:<8}{r['method']:<9}{r['seconds']:>9.3f}{r['time_vs_ours']:>8.1f}{r['pixels_differing']:>18.5f}"
        )
    print(f"encode / decode 1024^2: {results['encode_1024_s'] * 1e3:.0f} / {results['decode_1024_s'] * 1e3:.0f} ms")
    print(f"labels -> GeoJSON features 1024^2: {results['features_from_1024_labels_s']:.2f} s")
    print(f"prepare_histo puma, per 1024^2 ROI: {results['prepare_puma_1024_per_roi_s']:.2f} s")
    print(f"written {OUT}")


if __name__ == "__main__":
    main()
