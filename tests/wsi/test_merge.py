"""Per-tile post-processing and the merge across tile borders: no split, no duplicate, large nuclei included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.draw import ellipse

from coseg.keys import OutputKeys
from coseg.postprocess import hv_watershed, params_for_resolution
from coseg.postprocess.synthetic import perfect_outputs, random_ellipse_instances
from coseg.wsi.merge import _border_pairs, merge_tiles, process_tile, reduce_outputs, vote_types
from coseg.wsi.parts import load_record, save_record
from coseg.wsi.tiling import TilePlan

WATERSHED = params_for_resolution(magnification=40)


def test_vote_types_follows_hovernets_rule():
    votes = np.array([[5, 3, 0], [2, 2, 2], [9, 0, 0], [1, 4, 4]])
    types, probs = vote_types(votes)
    # background wins but objects voted -> best object type; ties -> lower type; no object vote -> 0
    assert types.tolist() == [1, 1, 0, 1]
    np.testing.assert_allclose(probs, [3 / 8, 2 / 6, 1.0, 4 / 9])


def test_border_pairs_join_when_half_the_votes_agree():
    # lines: (piece, own context label, context label beyond the border) along a border of 6 pixel pairs
    a = np.array([[1, 1, 1, 2, 2, 0], [7, 7, 7, 8, 8, 0], [7, 7, 7, 9, 9, 4]])
    b = np.array([[3, 3, 3, 4, 5, 5], [1, 1, 1, 2, 6, 6], [1, 1, 1, 2, 2, 6]])
    ia, ib = _border_pairs(a, b)
    # (1, 3): both tiles say "same" -> joined; (2, 4) and (2, 5): tile A says different, B says same for (2, 4)
    # only -> 1 of 2 votes = half -> joined; (2, 5): A no, B no at position 4 -> not joined
    assert sorted(zip(ia.tolist(), ib.tolist())) == [(1, 3), (2, 4)]
    empty = _border_pairs(np.zeros((3, 4), int), b[:, :4])
    assert len(empty[0]) == 0


def _instances(size: int = 240, tile: int = 80, seed: int = 3) -> np.ndarray:
    """A map with a nucleus much larger than the margin across three tile rows and two columns, one on a tile
    corner, two touching nuclei on either side of a tile border, and small random nuclei."""
    inst = random_ellipse_instances((size, size), size * size // 1000, radius_range=(4, 9), seed=seed)
    inst[inst > 0] += 10
    for k, (r, c, ry, rx) in enumerate([(1.5 * tile, tile, 0.9 * tile, 22), (2 * tile, 2 * tile, 9, 9)], start=1):
        rr, cc = ellipse(r, c, ry, rx, shape=inst.shape)
        inst[rr, cc] = k
    inst[20:40, tile - 16 : tile] = 3  # touching pair across the border x = tile
    inst[20:40, tile : tile + 16] = 4
    return np.unique(inst, return_inverse=True)[1].reshape(inst.shape)


def _maps(inst: np.ndarray, *, hv: bool = True) -> dict[str, np.ndarray]:
    outputs = perfect_outputs(inst)
    if not hv:
        outputs[OutputKeys.INST_HV] = np.zeros_like(outputs[OutputKeys.INST_HV])
    blended = {k: torch.from_numpy(v) for k, v in outputs.items()}
    blended[OutputKeys.SEM_LOGITS] = torch.from_numpy(np.stack([np.zeros(inst.shape), (inst > 0) * 2.0 - 1]))
    return reduce_outputs(blended)


def _tile_all(plan: TilePlan, maps: dict[str, np.ndarray]):
    records = {}
    for tile in plan.tiles():
        box = plan.context(*tile)
        crop = {k: v[..., box.y0 : box.y1, box.x0 : box.x1] for k, v in maps.items()}
        records[tile] = process_tile(crop, plan=plan, tile=tile, watershed=WATERSHED, num_types=2, num_sem_classes=2)
    return records, merge_tiles(plan, records)


def _assemble(plan: TilePlan, records, merged) -> np.ndarray:
    out = np.zeros((plan.height, plan.width), np.int64)
    for tile, rec in records.items():
        core = plan.core(*tile)
        out[core.y0 : core.y1, core.x0 : core.x1] = merged.luts[tile][rec.inst]
    return out


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """The two maps hold the same objects (ids may differ)."""
    if not np.array_equal(a > 0, b > 0):
        return False
    fg = a > 0
    pairs = np.unique(np.stack([a[fg], b[fg]]), axis=1)
    return pairs.shape[1] == len(np.unique(a[fg])) == len(np.unique(b[fg]))


def cut_objects(tiled: np.ndarray, whole: np.ndarray, tile: int) -> int:
    """Objects of ``whole`` that ``tiled`` splits along a tile border (adjacent pixels across a border that are one
    object in ``whole`` but two in ``tiled``)."""
    cuts = set()
    for b in range(tile, tiled.shape[1], tile):
        for t0, t1, w0, w1 in (
            (tiled[:, b - 1], tiled[:, b], whole[:, b - 1], whole[:, b]),
            (tiled[b - 1], tiled[b], whole[b - 1], whole[b]),
        ):
            split = (t0 > 0) & (t1 > 0) & (t0 != t1) & (w0 == w1) & (w0 > 0)
            cuts.update(w0[split].tolist())
    return len(cuts)


@pytest.mark.parametrize("margin", [8, 30])
def test_tiles_merge_exactly_into_the_whole_image_instances(margin):
    """With HV = 0 the watershed is local (objects from the object map alone), so tiling must not change a pixel."""
    inst = _instances()
    maps = _maps(inst, hv=False)
    whole = hv_watershed(maps["prob"], maps["hv"], params=WATERSHED)
    plan = TilePlan(height=240, width=240, tile_size=80, margin=margin, roi_size=(64, 64), overlap=(0.25, 0.25))
    records, merged = _tile_all(plan, maps)
    tiled = _assemble(plan, records, merged)
    assert _same_partition(tiled, whole)
    # ids are 1..N, each object once, and the table agrees with the map
    assert sorted(np.unique(tiled[tiled > 0])) == list(range(1, len(merged) + 1))
    np.testing.assert_array_equal(np.bincount(tiled.ravel(), minlength=len(merged) + 1)[1:], merged.area)
    giant = tiled[120, 80]
    assert merged.area[giant - 1] == (whole == whole[120, 80]).sum() > 3000
    ys, xs = np.nonzero(tiled == giant)
    np.testing.assert_allclose(merged.centroid[giant - 1], [xs.mean(), ys.mean()])
    assert merged.bbox[giant - 1].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert len(merged.members[giant]) == 6  # two tile columns, three tile rows, far beyond the margin
    assert len(merged.members[tiled[160, 160]]) == 4  # the nucleus on a tile corner
    assert merged.joins >= 10


@pytest.mark.parametrize("seed", [0, 1])
def test_tiles_with_hv_splits_agree_with_the_whole_image(seed):
    """With exact HV maps, touching nuclei are split by the HV watershed; the tiles agree with the whole image up to
    HoVer-Net's per-image min-max normalisation of the HV maps and their gradients (each tile normalises its own
    context), which moves a few boundaries between touching nuclei."""
    from coseg.metrics.instance import panoptic_quality

    inst = _instances(size=360, tile=180, seed=seed)
    maps = _maps(inst)
    whole = hv_watershed(maps["prob"], maps["hv"], params=WATERSHED)
    plan = TilePlan(height=360, width=360, tile_size=180, margin=40, roi_size=(64, 64), overlap=(0.25, 0.25))
    records, merged = _tile_all(plan, maps)
    tiled = _assemble(plan, records, merged)
    assert panoptic_quality(whole, tiled)[2] >= 0.97
    assert cut_objects(tiled, whole, 180) == 0
    assert tiled[30, 179] != tiled[30, 180] and tiled[30, 179] > 0 and tiled[30, 180] > 0  # touching pair
    # the large nucleus (four tiles, far beyond the margin) is never split, though a tile whose context holds only a
    # stretch of its gentle HV ramps may find no marker there (HoVer-Net drops marker-less pieces)
    giant = whole[150, 180]
    assert giant > 0 and whole[300, 180] == giant
    assert len(np.unique(tiled[(whole == giant) & (tiled > 0)])) == 1


def test_records_round_trip(tmp_path):
    plan = TilePlan(height=240, width=240, tile_size=80, margin=10, roi_size=(64, 64), overlap=(0.25, 0.25))
    records, merged = _tile_all(plan, _maps(_instances()))
    rec = records[(1, 1)]
    save_record(tmp_path / "t.npz", rec, band_height=32)
    back = load_record(tmp_path / "t.npz")
    np.testing.assert_array_equal(back.inst, rec.inst)
    np.testing.assert_array_equal(back.sem, rec.sem)
    for name in ("area", "sum_xy", "bbox", "votes", "sem_votes", "border", "sem_pixels", "sem_low"):
        np.testing.assert_array_equal(getattr(back, name), getattr(rec, name))
    assert back.lines.keys() == rec.lines.keys()
    assert back.masks.keys() == rec.masks.keys()
    for k, (mask, x0, y0) in rec.masks.items():
        np.testing.assert_array_equal(back.masks[k][0], mask)
        assert back.masks[k][1:] == (x0, y0)
    assert len(back.polygons) == rec.n
    for p, q in zip(back.polygons, rec.polygons):
        assert len(p) == len(q) and all(np.array_equal(a, b) for x, y in zip(p, q) for a, b in zip(x, y))
    light = load_record(tmp_path / "t.npz", maps=False, geometry=False)
    assert light.inst.size == 0 and light.polygons == [] and light.n == rec.n


def test_piece_statistics_by_hand():
    # one 80 x 80 tile region, tiles of 40: a 6 x 20 bar across the vertical border x = 40
    inst = np.zeros((80, 80), np.int64)
    inst[10:16, 30:50] = 1
    plan = TilePlan(height=80, width=80, tile_size=40, margin=8, roi_size=(32, 32), overlap=(0.25, 0.25))
    records, merged = _tile_all(plan, _maps(inst, hv=False))
    left = records[(0, 0)]
    assert left.n == 1 and left.area.tolist() == [60] and left.bbox.tolist() == [[30, 10, 40, 16]]
    np.testing.assert_allclose(left.sum_xy, [[sum(range(30, 40)) * 6, sum(range(10, 16)) * 10]])
    assert left.border.tolist() == [True] and set(left.lines) == {"right", "bottom"}
    assert left.lines["right"][0, 10:16].tolist() == [1] * 6  # its piece on the edge column
    assert len(merged) == 1 and merged.area.tolist() == [120] and merged.joins == 1
    assert merged.types.tolist() == [1] and merged.tissue.tolist() == [1]


def _rotated_to_first_min(ring: np.ndarray) -> np.ndarray:
    """The ring started at its smallest ``(y, x)`` vertex (to compare rings that start elsewhere)."""
    return np.roll(ring, -int(np.lexsort((ring[:, 0], ring[:, 1]))[0]), axis=0)


def _masks(count: int, seed: int) -> list[np.ndarray]:
    """Single-piece masks: blobs, ellipses, noise with holes and diagonal-only contacts, thin lines, one pixel."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    out = [np.ones((1, 1), bool), np.ones((1, 7), bool), np.ones((6, 1), bool), np.eye(4, dtype=bool)]
    for k in range(count):
        h, w = (int(v) for v in rng.integers(1, 28, 2))
        if k % 3 == 0:
            m = rng.random((h, w)) < rng.uniform(0.4, 0.95)
        elif k % 3 == 1:
            yy, xx = np.mgrid[:h, :w]
            m = ((yy - h / 2) / max(h / 2, 1)) ** 2 + ((xx - w / 2) / max(w / 2, 1)) ** 2 < rng.uniform(0.5, 1.3)
        else:
            m = ndimage.gaussian_filter(rng.random((h, w)), rng.uniform(0.8, 2.0)) > 0.5
        labels, n = ndimage.label(m)
        if n:
            out.append(labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    return out


def test_traced_outlines_are_those_of_mask_to_polygons():
    """The outline of a piece (holes filled) traced by OpenCV is the polygon mask_to_polygons gives, vertex for
    vertex and in the same orientation; masks it cannot trace (saddles) take mask_to_polygons' way."""
    from scipy import ndimage

    from coseg.histo.geojson import mask_to_polygons, polygon_mask
    from coseg.wsi.merge import _outline, _traced_outline

    traced = 0
    for mask in _masks(900, seed=4):
        x0, y0 = 17, 5
        expected = mask_to_polygons(ndimage.binary_fill_holes(mask), offset=(float(x0), float(y0)))
        got = _outline(mask, x0, y0)
        fast = _traced_outline(mask, x0, y0)
        traced += fast is not None
        assert len(got) == len(expected)
        for p, q in zip(got, expected):
            assert len(p) == len(q) == 1  # holes filled: exteriors only
            np.testing.assert_array_equal(_rotated_to_first_min(p[0]), _rotated_to_first_min(q[0]))
        # exact under re-rasterisation: the pixel centres inside are the mask with its holes filled
        shape = (y0 + mask.shape[0] + 1, x0 + mask.shape[1] + 1)
        filled = np.zeros(shape, bool)
        filled[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]] = ndimage.binary_fill_holes(mask)
        np.testing.assert_array_equal(polygon_mask(got, shape), filled)
    assert traced > 600  # most masks took the fast way


def test_geometry_texts_are_the_geojson_writers_bytes():
    import json

    from coseg.histo.geojson import polygons_geometry
    from coseg.wsi.merge import _outline, geometry_text, geometry_texts
    from coseg.wsi.tiling import Placement

    objects = [_outline(m, 3 * k, 1000 + k) for k, m in enumerate(_masks(60, seed=5))]
    objects.append([[np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])], [np.array([[5.0, 5.0], [6.0, 5.0], [6.0, 7.0]])]])
    for placement in (Placement((1.0, 1.0), (0.0, 0.0), None), Placement((2.0001, 1.9999), (13.0, 7.5), (0.5, 0.5))):
        texts = geometry_texts(objects, placement)
        for polys, text in zip(objects, texts):
            geometry = polygons_geometry(polys, scale=placement.scale, offset=placement.offset, decimals=2)
            assert text == json.dumps(geometry, separators=(",", ":")) == geometry_text(polys, placement)
    assert json.loads(texts[-1])["type"] == "MultiPolygon"
