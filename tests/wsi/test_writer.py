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
