"""coseg.histo.geojson: pixel-centre rasterization, instance rules, QuPath features and exact round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from coseg.errors import InputFileError
from coseg.histo.geojson import (
    feature_class_name,
    feature_polygons,
    instances_to_features,
    load_features,
    mask_to_polygons,
    polygon_mask,
    polygons_geometry,
    qupath_feature,
    rasterize_instances,
    rasterize_regions,
    regions_to_features,
    write_geojson,
)
from coseg.visualize import REGION_COLOURS, TYPE_COLOURS


def box(x0, y0, x1, y1):
    """Axis-aligned rectangle ring (x, y), counter-clockwise."""
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)


def test_square_on_pixel_corners():
    m = polygon_mask([box(1, 1, 3, 3)], (5, 5))
    expect = np.zeros((5, 5), bool)
    expect[1:3, 1:3] = True
    np.testing.assert_array_equal(m, expect)


def test_centre_on_edge_is_half_open():
    # x from 0.5 to 2.5 passes exactly through the centres of columns 0 and 2: left edge in, right edge out
    m = polygon_mask([box(0.5, 0.5, 2.5, 1.5)], (3, 4))
    expect = np.zeros((3, 4), bool)
    expect[0, 0:2] = True
    np.testing.assert_array_equal(m, expect)


@pytest.mark.parametrize("cut", [2.0, 1.5, 2.25])
def test_polygons_sharing_an_edge_partition_the_pixels(cut):
    left = polygon_mask([box(0, 0, cut, 4)], (4, 4))
    right = polygon_mask([box(cut, 0, 4, 4)], (4, 4))
    assert not (left & right).any()
    assert (left | right).all()
    # horizontal shared edge too
    top = polygon_mask([box(0, 0, 4, cut)], (4, 4))
    bottom = polygon_mask([box(0, cut, 4, 4)], (4, 4))
    assert not (top & bottom).any() and (top | bottom).all()


def test_hole_and_triangle_hand_computed():
    m = polygon_mask([box(0, 0, 6, 6), box(2, 2, 4, 4)[::-1]], (6, 6))
    assert m.sum() == 32 and not m[2:4, 2:4].any()
    # right triangle (0,0) (4,0) (0,4): centre (j + .5, i + .5) inside when j + i + 1 < 4
    tri = polygon_mask([np.array([[0, 0], [4, 0], [0, 4]], float)], (4, 4))
    ii, jj = np.mgrid[0:4, 0:4]
    np.testing.assert_array_equal(tri, ii + jj + 1 < 4)


def test_clipping_and_outside():
    m = polygon_mask([box(-3, -3, 2, 2)], (4, 4))
    assert m.sum() == 4 and m[:2, :2].all()
    assert not polygon_mask([box(10, 10, 12, 12)], (4, 4)).any()
    with pytest.raises(ValueError, match="shape"):
        polygon_mask([box(0, 0, 1, 1)], (0, 4))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        polygon_mask([np.zeros((4, 3))], (4, 4))


def test_matches_shapely_off_the_boundary():
    shapely = pytest.importorskip("shapely")
    rng = np.random.default_rng(3)
    h, w = 30, 40
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    checked = 0
    for _ in range(60):
        n = int(rng.integers(3, 10))
        ang = np.sort(rng.random(n)) * 2 * np.pi
        r = rng.uniform(3, 12, n)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        ext = np.round(np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1) * 2) / 2  # many on-centre vertices
        hole = np.stack([cx + 1.2 * np.cos(ang), cy + 1.2 * np.sin(ang)], 1)
        poly = shapely.Polygon(ext, [hole])
        if not poly.is_valid:
            continue
        ref = shapely.contains_xy(poly, xx, yy)
        got = polygon_mask([ext, hole], (h, w))
        diff = ref != got
        assert shapely.intersects_xy(poly.boundary, xx[diff], yy[diff]).all()
        checked += 1
    assert checked > 30


def test_instances_touching_overlapping_and_dropped():
    objects = [
        [[box(0, 0, 4, 4)]],  # big
        [[box(2, 2, 4, 4)]],  # small, inside the big one: wins its pixels
        [[box(4, 0, 6, 2)]],  # touches the big one along x = 4
        [[box(20, 20, 22, 22)]],  # outside the 6x8 image
        [[box(4, 2, 6, 4)]],  # 4 pixels
        [[box(4.5, 2, 6, 3)]],  # 2 pixels over object 4 (column 4's centre 4.5 is on its left edge): wins them
    ]
    inst, src = rasterize_instances(objects, (6, 8))
    expect = np.zeros((6, 8), np.int32)
    expect[0:4, 0:4] = 1
    expect[2:4, 2:4] = 2
    expect[0:2, 4:6] = 3
    expect[3, 4:6] = 4
    expect[2, 4:6] = 5
    np.testing.assert_array_equal(inst, expect)  # relabelled 1..n in input order of the remaining objects
    np.testing.assert_array_equal(src, [0, 1, 2, 4, 5])
    assert inst.dtype == np.int32


def test_equal_overlap_goes_to_the_first_and_gap_separates():
    a, b = [[box(0, 0, 3, 2)]], [[box(1, 0, 4, 2)]]
    inst, _ = rasterize_instances([a, b], (2, 5))
    np.testing.assert_array_equal(inst, [[1, 1, 1, 2, 0], [1, 1, 1, 2, 0]])
    touching = [[[box(0, 0, 2, 3)]], [[box(2, 0, 4, 3)]]]
    plain, _ = rasterize_instances(touching, (3, 4))
    np.testing.assert_array_equal(plain, [[1, 1, 2, 2]] * 3)
    gapped, _ = rasterize_instances(touching, (3, 4), gap=True)
    np.testing.assert_array_equal(gapped, [[1, 1, 0, 2]] * 3)


def test_regions_later_wins_and_zero_erases():
    sem = rasterize_regions([([[box(0, 0, 4, 4)]], 1), ([[box(2, 0, 4, 4)]], 2), ([[box(3, 3, 4, 4)]], 0)], (4, 4))
    expect = np.array([[1, 1, 2, 2]] * 4, np.uint8)
    expect[3, 3] = 0
    np.testing.assert_array_equal(sem, expect)
    with pytest.raises(ValueError, match="fit"):
        rasterize_regions([([[box(0, 0, 1, 1)]], 300)], (2, 2))


def _feature(geometry, name="nuclei_tumor"):
    return {"type": "Feature", "geometry": geometry, "properties": {"classification": {"name": name}}}


def test_load_features_accepts_three_structures(tmp_path):
    feat = _feature({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]})
    for i, doc in enumerate([{"type": "FeatureCollection", "features": [feat, feat]}, [feat, feat], feat]):
        p = tmp_path / f"f{i}.geojson"
        p.write_text(json.dumps(doc), encoding="utf-8")
        feats = load_features(p)
        assert len(feats) == (1 if doc is feat else 2)
        assert feature_class_name(feats[0]) == "nuclei_tumor"
    assert feature_class_name({"geometry": {}, "properties": {}}) is None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("{not json", "not valid JSON"),
        ('{"type": "Point", "coordinates": [0, 0]}', "expected a FeatureCollection"),
        ('{"type": "FeatureCollection"}', "features"),
        ('[{"type": "Feature", "properties": {}}]', "feature 0"),
    ],
)
def test_load_features_errors_name_the_file(tmp_path, text, match):
    p = tmp_path / "bad.geojson"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(InputFileError, match=match) as err:
        load_features(p)
    assert err.value.path == str(p)
    with pytest.raises(InputFileError, match="does not exist"):
        load_features(tmp_path / "missing.geojson")


def test_feature_polygons_multipolygon_holes_and_errors():
    ring = [[0, 0], [6, 0], [6, 6], [0, 6], [0, 0]]
    hole = [[2, 2], [2, 4], [4, 4], [4, 2], [2, 2]]
    degenerate = [[0, 0], [1, 1], [2, 2], [0, 0]]  # zero area
    tri = [[10, 10], [12, 10], [12, 12, 5.0]]  # a 3D position is fine; z is ignored
    f = _feature({"type": "MultiPolygon", "coordinates": [[ring, hole], [tri], [degenerate]]})
    polys = feature_polygons(f)
    assert [len(p) for p in polys] == [2, 1]  # degenerate part dropped; closing vertex removed
    assert polys[0][0].shape == (4, 2) and polys[1][0].shape == (3, 2)
    # 36 - 4 (hole) + 3: the triangle's centres (10.5, 10.5), (11.5, 10.5), (11.5, 11.5); two lie on its
    # diagonal, which is a left edge, so they count as inside
    assert polygon_mask(polys, (14, 14)).sum() == 32 + 3
    with pytest.raises(ValueError, match="not supported"):
        feature_polygons(_feature({"type": "Point", "coordinates": [1, 2]}))
    with pytest.raises(ValueError, match=r"\[x, y\]"):
        feature_polygons(_feature({"type": "Polygon", "coordinates": [[[0, "a"], [1, 0], [1, 1]]]}))
    with pytest.raises(ValueError, match="non-finite"):
        feature_polygons(_feature({"type": "Polygon", "coordinates": [[[0, float("nan")], [1, 0], [1, 1]]]}))


@pytest.mark.parametrize("seed", range(6))
def test_mask_to_polygons_round_trip_is_exact(seed):
    rng = np.random.default_rng(seed)
    m = rng.random((17, 23)) < (0.35 + 0.1 * seed)  # includes diagonal-only contacts, holes, islands in holes
    polys = mask_to_polygons(m)
    np.testing.assert_array_equal(polygon_mask(polys, m.shape), m)
    for poly in polys:
        x, y = poly[0][:, 0], poly[0][:, 1]
        assert np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)) > 0  # exterior counter-clockwise
    assert mask_to_polygons(np.zeros((3, 3), bool)) == []


def test_mask_with_hole_gives_one_polygon_with_one_hole():
    m = np.zeros((7, 7), bool)
    m[1:6, 1:6] = True
    m[3, 3] = False
    polys = mask_to_polygons(m)
    assert len(polys) == 1 and len(polys[0]) == 2
    # vertices on pixel edges (collinear ones dropped): the exterior is the 5x5 square with cut corners
    assert len(polys[0][0]) == 8
    assert {tuple(v) for v in polys[0][0]} >= {(1.0, 1.5), (5.5, 1.0), (6.0, 5.5)}


def test_instances_to_features_qupath_and_round_trip(tmp_path):
    inst = np.zeros((12, 12), np.int32)
    inst[1:4, 1:4] = 7
    inst[1:4, 4:6] = 3  # touches id 7
    inst[8:11, 8:11] = 5
    inst[9, 9] = 0  # hole
    types = np.zeros_like(inst)
    types[inst == 7] = 1
    types[inst == 3] = 2
    types[inst == 5] = 2
    types[9, 10] = 1  # minority type inside object 5
    feats = instances_to_features(inst, type_map=types, type_names={1: "tumour", 2: "TIL"})
    assert [f["properties"]["classification"]["name"] for f in feats] == ["TIL", "TIL", "tumour"]  # ids 3, 5, 7
    assert all(f["properties"]["objectType"] == "detection" for f in feats)
    assert feats[1]["geometry"]["type"] == "Polygon" and len(feats[1]["geometry"]["coordinates"]) == 2
    ring = feats[0]["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1]  # closed as GeoJSON requires
    p = tmp_path / "pred.geojson"
    write_geojson(p, feats)
    loaded = load_features(p)
    back, src = rasterize_instances([feature_polygons(f) for f in loaded], inst.shape)
    ids = np.array([3, 5, 7])
    np.testing.assert_array_equal(np.concatenate([[0], ids[src]])[back], inst)
    assert json.loads(p.read_text(encoding="utf-8"))["type"] == "FeatureCollection"


def test_regions_to_features_round_trip_and_errors():
    rng = np.random.default_rng(1)
    sem = rng.integers(0, 3, (9, 11))
    feats = regions_to_features(sem, ["background", "tumour", "stroma"])
    assert [f["properties"]["classification"]["name"] for f in feats] == ["tumour", "stroma"]
    assert all(f["properties"]["objectType"] == "annotation" for f in feats)
    regions = [(feature_polygons(f), i + 1) for i, f in enumerate(feats)]
    np.testing.assert_array_equal(rasterize_regions(regions, sem.shape), sem)
    with pytest.raises(ValueError, match="object_type"):
        regions_to_features(sem, object_type="blob")
    with pytest.raises(ValueError, match="no name"):
        regions_to_features(sem, ["background"])
    with pytest.raises(ValueError, match="differs"):
        instances_to_features(sem, type_map=sem[:3])


def test_instances_to_features_add_properties_per_id_and_leave_type_zero_unclassified():
    inst = np.zeros((12, 16), np.int32)
    inst[2:5, 3:8] = 1
    inst[0, 15] = 2  # a single pixel is a polygon too
    inst[8:10, 0:2] = 3
    types = np.where(inst == 3, 0, 2)
    feats = instances_to_features(
        inst,
        type_map=types,
        type_names=["background", "other", "tumour"],
        properties={1: {"id": 1, "area_px": 15}, 2: {"id": 2, "area_px": 1}},
    )
    assert [f["properties"] for f in feats] == [
        {
            "objectType": "detection",
            "classification": {"name": "tumour", "color": list(TYPE_COLOURS[2])},
            "id": 1,
            "area_px": 15,
        },
        {
            "objectType": "detection",
            "classification": {"name": "tumour", "color": list(TYPE_COLOURS[2])},
            "id": 2,
            "area_px": 1,
        },
        {"objectType": "detection"},  # type 0 (all pixels voted background): unclassified, no extra properties
    ]
    # one pixel: a diamond through the midpoints of its edges (corners cut), closed
    assert feats[1]["geometry"]["coordinates"] == [[[15.0, 0.5], [15.5, 0.0], [16.0, 0.5], [15.5, 1.0], [15.0, 0.5]]]
    with pytest.raises(ValueError, match="no name for type 2"):
        instances_to_features(inst, type_map=types, type_names={1: "other"})


def test_qupath_feature_maps_coordinates_and_names_classes_in_the_overlay_colours():
    square = [[np.array([[2.0, 3.0], [5.0, 3.0], [5.0, 7.0], [2.0, 7.0]])]]
    feature = qupath_feature(
        square, class_name="TIL", class_index=2, properties={"id": 4}, scale=(2.0, 2.0), offset=(10.0, 100.0)
    )
    assert feature["properties"] == {
        "objectType": "detection",
        "classification": {"name": "TIL", "color": list(TYPE_COLOURS[2])},
        "id": 4,
    }
    # X = (x + ox) * sx, Y = (y + oy) * sy, rings closed
    ring = feature["geometry"]["coordinates"][0]
    assert ring[:2] == [[204.0, 26.0], [210.0, 26.0]] and ring[-1] == ring[0]
    # the mapped polygon covers the scaled pixels exactly
    level0 = qupath_feature(square, scale=(2.0, 2.0))
    mask = polygon_mask(feature_polygons(level0), (40, 40))
    assert mask.sum() == (3 * 2) * (4 * 2) and mask[6:14, 4:10].all()
    region = qupath_feature(square, object_type="annotation", class_name="stroma", class_index=9)
    assert region["properties"]["classification"]["color"] == list(REGION_COLOURS[9 % len(REGION_COLOURS)])
    assert "classification" not in qupath_feature(square)["properties"]
    two = [[np.array([[0.0, 0.0], [2.0, 0.0], [2.0, 2.0]])], [np.array([[5.0, 5.0], [6.0, 5.0], [6.0, 6.0]])]]
    geometry = polygons_geometry(two, scale=(3.0, 3.0), decimals=1)
    assert geometry["type"] == "MultiPolygon" and geometry["coordinates"][1][0][0] == [15.0, 15.0]
    assert polygons_geometry([[np.array([[0.5, 0.25], [1, 0], [1, 1]])]], scale=(1 / 3, 1 / 3), decimals=2)[
        "coordinates"
    ][0][0] == [0.17, 0.08]
    with pytest.raises(ValueError, match="object_type"):
        qupath_feature(square, object_type="nucleus")
    with pytest.raises(ValueError, match="classification"):
        qupath_feature(square, properties={"classification": {"name": "x"}})


def test_write_geojson_streams_and_leaves_nothing_behind_on_errors(tmp_path):
    path = tmp_path / "f.geojson"
    square = [[np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])]]
    made = []

    def features():  # a generator: written as it yields, never held as a list
        for k in range(3):
            made.append(k)
            yield qupath_feature(square, properties={"id": k})

    assert write_geojson(path, features()) == 3 and made == [0, 1, 2]
    assert [f["properties"]["id"] for f in load_features(path)] == [0, 1, 2]
    assert json.loads(path.read_text(encoding="utf-8"))["type"] == "FeatureCollection"
    assert write_geojson(tmp_path / "empty.geojson", []) == 0 and load_features(tmp_path / "empty.geojson") == []
    before = path.read_bytes()

    def broken():
        yield qupath_feature(square)
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_geojson(path, broken())
    with pytest.raises(TypeError, match="feature 1"):
        write_geojson(path, [qupath_feature(square), 1])
    assert path.read_bytes() == before  # the earlier file is kept, nothing half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.geojson", "f.geojson"]
