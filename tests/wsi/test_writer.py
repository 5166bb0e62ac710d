"""Pyramidal label TIFFs written band by band, region outlines, overlays (GeoJSON: tests/histo/test_geojson.py)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from coseg.wsi.writer import draw_overlay, pyramid_shapes, write_label_pyramid


@pytest.mark.parametrize("dtype", [np.uint8, np.uint32])
def test_label_pyramid_round_trip(tmp_path, dtype):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 200, (300, 530)).astype(dtype)
    heights = [7, 100, 64, 1, 128]  # bands of any height
    bands = np.split(labels, np.cumsum(heights)[:-1])
    path = tmp_path / "labels.tif"
    shapes = write_label_pyramid(
        path, iter(bands), shape=labels.shape, dtype=dtype, tile=64, min_size=140, mpp=(0.5, 0.5)
    )
    assert shapes == [(300, 530), (150, 265), (75, 133)]
    with tifffile.TiffFile(path) as tif:
        levels = tif.series[0].levels
        assert [lv.shape for lv in levels] == shapes
        for i, level in enumerate(levels):
            np.testing.assert_array_equal(level.asarray(), labels[:: 2**i, :: 2**i])
        page = levels[0].keyframe
        assert page.is_tiled and page.tilewidth == 64 and page.dtype == dtype
        assert page.get_resolution() == pytest.approx((2e4, 2e4))  # pixels per cm at 0.5 um
        assert levels[2].keyframe.get_resolution() == pytest.approx((5e3, 5e3))


def test_label_pyramid_rejects_wrong_bands(tmp_path):
    with pytest.raises(ValueError, match="rows"):
        write_label_pyramid(tmp_path / "a.tif", [np.zeros((10, 20), np.uint8)], shape=(20, 20), dtype=np.uint8, tile=16)
    with pytest.raises(ValueError, match="width"):
        write_label_pyramid(tmp_path / "b.tif", [np.zeros((20, 19), np.uint8)], shape=(20, 20), dtype=np.uint8, tile=16)
    with pytest.raises(ValueError, match="multiple of 16"):
        write_label_pyramid(tmp_path / "c.tif", [], shape=(20, 20), dtype=np.uint8, tile=10)
    assert not list(tmp_path.glob("*.tif"))  # nothing half-written
    assert pyramid_shapes(100, 3000, min_size=1024) == [(100, 3000), (50, 1500), (25, 750)]


def test_overlay():
    thumb = np.full((20, 30, 3), 200, np.uint8)
    sem = np.zeros((10, 15), np.uint8)
    sem[:, 5:] = 1
    canvas, draw = draw_overlay(thumb, sem, low_step=4, factor=2.0)
    assert (canvas[:, :8] == 200).all() and (canvas[:, 12:] != 200).any()  # class 1 tinted from x = 10 on
    draw([[np.array([[4.0, 4.0], [20.0, 4.0], [20.0, 20.0], [4.0, 20.0]])]], 1)
    assert tuple(canvas[2, 5]) == (230, 25, 25)  # type 1 outline at thumbnail (2, 2)..(10, 10)


def test_region_polygons_pair_holes_with_their_regions():
    from coseg.wsi.writer import region_polygons

    mask = np.zeros((40, 60), bool)
    mask[5:35, 5:30] = True
    mask[10:15, 10:15] = False  # two holes in the first region
    mask[20:30, 12:20] = False
    mask[10:20, 40:55] = True  # a second region without holes
    mask[38, 0] = True  # a single pixel: no area, left out
    polys = region_polygons(mask)
    assert [len(p) for p in polys] == [3, 1] or [len(p) for p in polys] == [1, 3]
    big = max(polys, key=len)

    def area(ring):
        x, y = ring[:, 0], ring[:, 1]
        return 0.5 * (np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))

    assert area(big[0]) > 0 and all(area(h) < 0 for h in big[1:])
    # rings through the centres of the boundary pixels: 25 x 30 pixels -> a 24 x 29 ring
    assert area(big[0]) == pytest.approx(24 * 29)
    assert region_polygons(np.zeros((5, 5), bool)) == []


def _merged(n: int = 40, seed: int = 0):
    from coseg.wsi.merge import MergeResult

    rng = np.random.default_rng(seed)
    area = rng.integers(1, 400, n)
    x0, y0 = rng.integers(0, 5000, n), rng.integers(0, 5000, n)
    return MergeResult(
        luts={},
        ids=np.arange(1, n + 1),
        area=area,
        centroid=np.stack([x0 + rng.random(n) * 9, y0 + rng.random(n) * 9], 1),
        bbox=np.stack([x0, y0, x0 + 10, y0 + 11], 1),
        votes=np.zeros((n, 4), np.int64),
        types=rng.integers(0, 4, n).astype(np.int32),
        type_probs=rng.random(n).astype(np.float32),
        sem_votes=np.zeros((n, 3), np.int64),
        tissue=rng.integers(0, 3, n).astype(np.int32),
        members={},
    )


@pytest.mark.parametrize("mpp", [None, (0.2501, 0.2499)])
def test_nucleus_features_are_qupath_features(mpp):
    """The text made per type and nucleus equals the feature made by qupath_feature, written by write_geojson."""
    import json

    from coseg.histo.geojson import qupath_feature
    from coseg.wsi.merge import geometry_text
    from coseg.wsi.tiling import Placement
    from coseg.wsi.writer import NucleusFeatures

    merged = _merged()
    placement = Placement((2.0, 2.0), (100.0, 50.5), mpp)
    names = {"sem_classes": {0: "background", 1: "tumour", 2: "stroma"}, "inst_types": {0: "bg", 1: "a", 2: "b"}}
    features = NucleusFeatures(merged, placement, **names)
    polys = [[np.array([[0.0, 0.5], [0.5, 0.0], [1.0, 0.5], [0.5, 1.0]]) + 300]]
    for i in range(len(merged)):
        t = int(merged.types[i])
        cx, cy = placement.point(merged.centroid[i, 0] + 0.5, merged.centroid[i, 1] + 0.5)
        props = {
            "id": i + 1,
            "type": t,
            "type_prob": round(float(merged.type_probs[i]), 4),
            "tissue": names["sem_classes"][int(merged.tissue[i])],
            "centroid": [round(cx, 2), round(cy, 2)],
            "area_px": int(merged.area[i]),
        }
        if mpp is not None:
            props["measurements"] = {"Area um^2": round(float(merged.area[i]) * mpp[0] * mpp[1], 3)}
        expected = qupath_feature(
            polys,
            object_type="detection",
            class_name=names["inst_types"].get(t, f"type_{t}") if t > 0 else None,
            class_index=t,
            properties=props,
            scale=placement.scale,
            offset=placement.offset,
            decimals=2,
        )
        assert features.text(i, geometry_text(polys, placement)) == json.dumps(expected, separators=(",", ":"))


def test_instance_table_rows(tmp_path):
    import csv

    from coseg.wsi.tiling import Placement
    from coseg.wsi.writer import write_instance_table

    merged = _merged(seed=1)
    placement = Placement((2.0, 1.5), (10.0, 20.0), (0.5, 0.25))
    write_instance_table(
        tmp_path / "t.csv", merged, placement, sem_classes={0: "bg", 1: "a,b", 2: "c"}, inst_types={0: "x", 1: "y"}
    )
    rows = list(csv.DictReader(open(tmp_path / "t.csv", encoding="utf-8")))
    assert len(rows) == len(merged)
    for i, row in enumerate(rows):
        t, c = int(merged.types[i]), int(merged.tissue[i])
        cx, cy = placement.point(merged.centroid[i, 0] + 0.5, merged.centroid[i, 1] + 0.5)
        x0, y0, x1, y1 = merged.bbox[i]
        assert row == {
            "id": str(i + 1),
            "type": str(t),
            "type_name": {0: "x", 1: "y"}.get(t, str(t)),
            "type_prob": f"{merged.type_probs[i]:.3f}",
            "tissue": str(c),
            "tissue_name": {0: "bg", 1: "a,b", 2: "c"}[c],
            "centroid_x": f"{cx:.2f}",
            "centroid_y": f"{cy:.2f}",
            "area_px": str(merged.area[i]),
            "area_um2": f"{merged.area[i] * 0.125:.2f}",
            "x_min": f"{placement.point(x0, y0)[0]:.1f}",
            "y_min": f"{placement.point(x0, y0)[1]:.1f}",
            "x_max": f"{placement.point(x1, y1)[0]:.1f}",
            "y_max": f"{placement.point(x1, y1)[1]:.1f}",
        }


def test_overlay_tint_is_the_per_pixel_blend():
    from coseg.visualize import REGION_COLOURS

    rng = np.random.default_rng(0)
    thumb = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    sem = rng.integers(0, 4, (24, 31)).astype(np.uint8)
    sem[0, 0] = len(REGION_COLOURS)  # a class beyond the palette takes its colour modulo the palette
    canvas, _ = draw_overlay(thumb, sem, low_step=8, factor=2.0)
    rows = np.minimum((np.arange(90) * 2.0 / 8).astype(np.int64), sem.shape[0] - 1)
    cols = np.minimum((np.arange(120) * 2.0 / 8).astype(np.int64), sem.shape[1] - 1)
    classes = sem[rows[:, None], cols[None, :]]
    tint = np.asarray(REGION_COLOURS, np.float32)[classes % len(REGION_COLOURS)]
    expected = thumb.copy()
    fg = classes > 0
    expected[fg] = np.round(expected[fg] * 0.7 + tint[fg] * 0.3).astype(np.uint8)
    np.testing.assert_array_equal(canvas, expected)
