"""GeoJSON polygons <-> label maps, in the pixel convention QuPath uses.

Coordinate convention (QuPath, ImageJ, GDAL): ``x`` is the column, ``y`` the row, and pixel ``(row i, col j)``
is the unit square ``[j, j + 1) x [i, i + 1)``; its centre is ``(j + 0.5, i + 0.5)``.

Rasterization rule: a pixel belongs to a polygon when its CENTRE lies inside (even-odd rule over the
exterior ring and the holes). A centre exactly on an edge counts as inside for edges on the left/top of the
polygon and outside for edges on the right/bottom (half-open intervals), so two polygons that share an
edge never share a pixel and a tiling of polygons covers every pixel exactly once. We fill with our own
vectorized scan-line routine because :func:`skimage.draw.polygon` tests every bounding-box pixel against
every vertex (too slow for tissue outlines with thousands of vertices on 1024^2 ROIs) and knows no holes,
and :func:`cv2.fillPoly` rounds vertices and paints boundary pixels into both neighbours.

Instances (:func:`rasterize_instances`): every polygon (or multipolygon) gets its own id, so touching
objects never merge. Where objects OVERLAP, the pixel goes to the SMALLER object (its own pixel count
before overlaps; ties go to the one listed first), so a small nucleus drawn under a large one keeps its
pixels. With ``gap=True``, of two 4-adjacent objects the one that loses overlaps (the larger) also gives up
its pixels that touch the other, leaving a 1-pixel background gap between touching objects (needed only
when the map is later reduced to a binary mask and re-split by connected components). Objects left with
no pixel (smaller than a pixel, outside the image, or covered by smaller ones) are dropped; ids are
contiguous ``1..n`` in input order of the objects that remain.

Writing: the package makes QuPath features in ONE place, :func:`qupath_feature` (used by
:func:`instances_to_features` and :func:`regions_to_features` here, by the per-image inference outputs of
:mod:`coseg.histo.inference` and by whole-slide inference, :mod:`coseg.wsi`), and writes them with ONE writer,
:func:`write_geojson`, which streams: features are written as an iterable yields them, so a generator writes a
whole slide's nuclei without holding them in memory. Outlines are traced with marching squares at level 0.5
(:func:`mask_to_polygons`, :func:`skimage.measure.find_contours`), so vertices lie on pixel edges (cutting pixel
corners diagonally) and re-rasterizing the written polygons gives back exactly the same pixels. Objects are
4-connected: pixels touching only at a corner become separate parts of a MultiPolygon. Features follow QuPath's
GeoJSON: ``{"type": "Feature", "geometry": Polygon | MultiPolygon, "properties": {"objectType": "detection" |
"annotation" | ..., "classification": {"name", "color"}, ...}}``; exterior rings wind counter-clockwise in
``(x, y)`` numbers (positive shoelace area), holes clockwise. Class colours are those of the overlays
(:data:`coseg.visualize.REGION_COLOURS` for annotations, :data:`coseg.visualize.TYPE_COLOURS` for the others).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.measure import find_contours

from coseg.errors import InputFileError
from coseg.io import atomic_write_path
from coseg.visualize import REGION_COLOURS, TYPE_COLOURS

__all__ = [
    "load_features",
    "feature_class_name",
    "feature_polygons",
    "polygon_mask",
    "rasterize_regions",
    "rasterize_instances",
    "mask_to_polygons",
    "polygons_geometry",
    "class_colour",
    "qupath_feature",
    "instances_to_features",
    "regions_to_features",
    "write_geojson",
    "QUPATH_OBJECT_TYPES",
]

logger = logging.getLogger(__name__)

#: ``properties.objectType`` values QuPath reads.
QUPATH_OBJECT_TYPES = ("annotation", "detection", "cell", "tile", "tma_core")

Polygon = list[np.ndarray]  # exterior ring then holes; each (N, 2) float64 (x, y), not closed


def load_features(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read the features of a GeoJSON file.

    Accepts a ``FeatureCollection``, a bare JSON list of features (what some QuPath exports write) or a
    single ``Feature``.

    Args:
        path: the ``.geojson`` / ``.json`` file.

    Returns:
        The list of feature dictionaries, in file order.

    Raises:
        InputFileError: missing, empty or non-JSON file, or not one of the three accepted structures, or a
            feature that is not an object with a ``geometry``.
    """
    p = Path(path)
    if not p.is_file():
        raise InputFileError(p, "GeoJSON file does not exist")
    if p.stat().st_size == 0:
        raise InputFileError(p, "GeoJSON file is empty (0 bytes)")
    try:
        with open(p, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(p, f"not valid JSON ({exc})") from exc
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features")
        if not isinstance(features, list):
            raise InputFileError(p, "FeatureCollection without a 'features' list")
    elif isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    elif isinstance(data, list):
        features = data
    else:
        kind = data.get("type") if isinstance(data, dict) else type(data).__name__
        raise InputFileError(p, f"expected a FeatureCollection, a Feature or a list of features, got {kind!r}")
    for i, feat in enumerate(features):
        if not isinstance(feat, dict) or not isinstance(feat.get("geometry"), dict):
            raise InputFileError(p, f"feature {i} is not a GeoJSON Feature with a 'geometry' object")
    return features


def feature_class_name(feature: Mapping[str, Any]) -> str | None:
    """``properties.classification.name`` of a feature (QuPath's class), or ``None`` when absent.

    Args:
        feature: a GeoJSON feature dictionary.

    Returns:
        The class name string, or ``None``.
    """
    props = feature.get("properties")
    if not isinstance(props, Mapping):
        return None
    cls = props.get("classification")
    if isinstance(cls, Mapping) and isinstance(cls.get("name"), str):
        return cls["name"]
    return None


def _ring_array(ring: Any) -> np.ndarray:
    if not isinstance(ring, (list, tuple)):
        raise ValueError("a ring must be a list of [x, y] positions")
    try:
        pts = np.asarray(ring, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] < 2:
            raise ValueError("ragged")
        pts = pts[:, :2]
    except (TypeError, ValueError):  # positions of mixed length ([x, y] and [x, y, z]) or bad entries
        try:
            pts = np.array([[float(p[0]), float(p[1])] for p in ring], dtype=np.float64).reshape(-1, 2)
        except (TypeError, IndexError, ValueError) as exc:
            raise ValueError(f"ring positions must be [x, y] numbers ({exc})") from exc
    if not np.isfinite(pts).all():
        raise ValueError("ring has non-finite coordinates")
    if len(pts) > 1 and (pts[0] == pts[-1]).all():
        pts = pts[:-1]
    return pts


def _is_degenerate(ring: np.ndarray) -> bool:
    """Fewer than 3 vertices, or all vertices on one line (covers no area)."""
    if len(ring) < 3:
        return True
    d = ring - ring[0]
    far = d[np.argmax((d**2).sum(axis=1))]
    return bool((d[:, 0] * far[1] - d[:, 1] * far[0] == 0).all())


def feature_polygons(feature: Mapping[str, Any]) -> list[Polygon]:
    """The polygons of a feature's ``Polygon`` or ``MultiPolygon`` geometry.

    Rings with fewer than 3 vertices or all vertices on one line are left out (a polygon whose exterior ring
    is degenerate is left out entirely), so the result may be empty; callers report such features.

    Args:
        feature: a GeoJSON feature dictionary.

    Returns:
        A list of polygons, each a list of rings (exterior first, then holes), each ring an ``(N, 2)``
        float64 array of ``(x, y)`` vertices without the repeated closing vertex.

    Raises:
        ValueError: unsupported geometry type or malformed coordinates (callers turn this into an
            :class:`InputFileError` naming the file and the feature).
    """
    geometry = feature.get("geometry")
    if not isinstance(geometry, Mapping):
        raise ValueError("feature has no geometry object")
    gtype = geometry.get("type")
    coords = geometry.get("coordinates")
    if gtype == "Polygon":
        raw_polygons = [coords]
    elif gtype == "MultiPolygon":
        raw_polygons = coords
    else:
        raise ValueError(f"geometry type {gtype!r} is not supported (expected Polygon or MultiPolygon)")
    if not isinstance(raw_polygons, (list, tuple)):
        raise ValueError(f"{gtype} coordinates must be a list")
    polygons: list[Polygon] = []
    for raw in raw_polygons:
        if not isinstance(raw, (list, tuple)) or len(raw) == 0:
            raise ValueError("a polygon must be a non-empty list of rings")
        rings = [_ring_array(r) for r in raw]
        if _is_degenerate(rings[0]):
            continue
        polygons.append([rings[0]] + [h for h in rings[1:] if not _is_degenerate(h)])
    return polygons


def _scan_intervals(
    polygons: Sequence[Polygon], shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Even-odd scan-line fill of many polygons at once, as runs of covered pixels.

    Row ``i`` is sampled at ``y = i + 0.5``; an edge crosses it when ``min(y) <= y < max(y)``; between two
    consecutive crossings ``xa <= xb`` of the same polygon, the columns ``j`` with ``xa <= j + 0.5 < xb``
    are inside. Every closed ring crosses a scan line an even number of times, so sorting the crossings by
    (polygon, row, x) and pairing neighbours gives the runs.

    Returns:
        ``(polygon index, row, first column, end column)`` of each run, clipped to ``shape``, non-empty.
    """
    h, w = shape
    rings = [r for poly in polygons for r in poly]
    empty = np.zeros(0, dtype=np.int64)
    if not rings:
        return empty, empty, empty, empty
    ring_poly = np.repeat(np.arange(len(polygons)), [len(poly) for poly in polygons])
    lengths = np.array([len(r) for r in rings], dtype=np.int64)
    verts = np.concatenate(rings, axis=0)
    starts = np.cumsum(lengths) - lengths
    nxt = np.arange(len(verts)) + 1
    nxt[starts + lengths - 1] = starts
    x0, y0 = verts[:, 0], verts[:, 1]
    x1, y1 = x0[nxt], y0[nxt]
    pid = np.repeat(ring_poly, lengths)
    keep = y0 != y1
    x0, y0, x1, y1, pid = x0[keep], y0[keep], x1[keep], y1[keep], pid[keep]
    rs = np.clip(np.ceil(np.minimum(y0, y1) - 0.5), 0, h).astype(np.int64)
    re = np.clip(np.ceil(np.maximum(y0, y1) - 0.5), 0, h).astype(np.int64)
    counts = re - rs
    total = int(counts.sum())
    if total == 0:
        return empty, empty, empty, empty
    edge = np.repeat(np.arange(len(counts)), counts)
    rows = rs[edge] + (np.arange(total) - (np.cumsum(counts) - counts)[edge])
    xs = x0[edge] + (rows + 0.5 - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
    cp = pid[edge]
    order = np.lexsort((xs, rows, cp))
    cp, rows, xs = cp[order], rows[order], xs[order]
    ja = np.clip(np.ceil(xs[0::2] - 0.5), 0, w).astype(np.int64)
    jb = np.clip(np.ceil(xs[1::2] - 0.5), 0, w).astype(np.int64)
    ok = jb > ja
    return cp[0::2][ok], rows[0::2][ok], ja[ok], jb[ok]


def _runs_to_window(rows: np.ndarray, ja: np.ndarray, jb: np.ndarray) -> tuple[int, int, np.ndarray] | None:
    """Union of runs as ``(r0, c0, mask)`` over their bounding window."""
    if len(rows) == 0:
        return None
    r0, r1 = int(rows.min()), int(rows.max()) + 1
    c0, c1 = int(ja.min()), int(jb.max())
    diff = np.zeros((r1 - r0, c1 - c0 + 1), dtype=np.int32)
    np.add.at(diff, (rows - r0, ja - c0), 1)
    np.add.at(diff, (rows - r0, jb - c0), -1)
    return r0, c0, np.cumsum(diff[:, :-1], axis=1) > 0


def _object_window(polygons: Sequence[Polygon], shape: tuple[int, int]) -> tuple[int, int, np.ndarray] | None:
    """Rasterize one object (the union of its polygons) in its bounding window: ``(r0, c0, mask)``."""
    _, rows, ja, jb = _scan_intervals(polygons, shape)
    return _runs_to_window(rows, ja, jb)


def _check_shape(shape: Sequence[int]) -> tuple[int, int]:
    if len(shape) != 2 or any(int(s) != s or s < 1 for s in shape):
        raise ValueError(f"shape must be two positive integers (H, W), got {shape!r}")
    return int(shape[0]), int(shape[1])


def polygon_mask(polygons: Polygon | Sequence[Polygon], shape: Sequence[int]) -> np.ndarray:
    """Pixels whose centres lie inside the polygon(s) (union over polygons, even-odd within each).

    Args:
        polygons: one polygon (list of ``(N, 2)`` ``(x, y)`` rings, exterior first) or a list of them.
        shape: ``(H, W)`` of the output.

    Returns:
        ``(H, W)`` bool mask.

    Raises:
        ValueError: bad ``shape`` or ring arrays that are not ``(N, 2)``.
    """
    h, w = _check_shape(shape)
    polys = _as_polygon_list(polygons)
    out = np.zeros((h, w), dtype=bool)
    win = _object_window(polys, (h, w))
    if win is not None:
        r0, c0, m = win
        out[r0 : r0 + m.shape[0], c0 : c0 + m.shape[1]] = m
    return out


def _as_polygon_list(polygons: Polygon | Sequence[Polygon]) -> list[Polygon]:
    if len(polygons) > 0 and isinstance(polygons[0], np.ndarray):
        polys = [list(polygons)]
    else:
        polys = [list(p) for p in polygons]
    for poly in polys:
        for ring in poly:
            if not isinstance(ring, np.ndarray) or ring.ndim != 2 or ring.shape[1] != 2:
                raise ValueError(f"rings must be (N, 2) arrays of (x, y), got {getattr(ring, 'shape', ring)!r}")
    return polys


def rasterize_regions(
    regions: Sequence[tuple[Sequence[Polygon], int]],
    shape: Sequence[int],
    *,
    dtype: np.dtype | type = np.uint8,
) -> np.ndarray:
    """Paint region polygons into a class map; later regions overwrite earlier ones (file order).

    Args:
        regions: ``(polygons, class_id)`` pairs; ``class_id`` 0 paints background (erases).
        shape: ``(H, W)``.
        dtype: output integer dtype.

    Returns:
        ``(H, W)`` class map of ``dtype``, 0 where no region covers a pixel centre.

    Raises:
        ValueError: bad shape, or a class id that does not fit ``dtype``.
    """
    h, w = _check_shape(shape)
    out = np.zeros((h, w), dtype=dtype)
    limit = np.iinfo(out.dtype).max
    for polygons, cls in regions:
        if not 0 <= int(cls) <= limit:
            raise ValueError(f"class id {cls} does not fit {out.dtype}")
        win = _object_window(_as_polygon_list(polygons) if len(polygons) else [], (h, w))
        if win is None:
            continue
        r0, c0, m = win
        view = out[r0 : r0 + m.shape[0], c0 : c0 + m.shape[1]]
        view[m] = cls
    return out


def rasterize_instances(
    objects: Sequence[Sequence[Polygon]],
    shape: Sequence[int],
    *,
    gap: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterize objects (each a list of polygons) into an instance map; see the module docstring for the rule.

    Args:
        objects: one entry per object: its polygons (a MultiPolygon's parts, or a single polygon).
        shape: ``(H, W)``.
        gap: leave a 1-pixel background gap between touching objects (the larger object gives up pixels).

    Returns:
        ``(inst, source)``: ``(H, W) int32`` instance map with ids ``1..n``, and ``(n,) int64`` index into
        ``objects`` of each id (``source[k - 1]`` is the object painted with id ``k``).

    Raises:
        ValueError: bad shape or ring arrays.
    """
    h, w = _check_shape(shape)
    n = len(objects)
    polys: list[Polygon] = []
    owner: list[int] = []
    for i, obj in enumerate(objects):
        parts = _as_polygon_list(obj) if len(obj) else []
        polys.extend(parts)
        owner.extend([i] * len(parts))
    pid, rows, ja, jb = _scan_intervals(polys, (h, w))
    # expand the runs into (object, pixel) pairs; parts of one object may overlap, so deduplicate
    run_len = jb - ja
    total = int(run_len.sum())
    obj = np.repeat(np.asarray(owner, dtype=np.int64)[pid], run_len)
    col = np.repeat(ja, run_len) + (np.arange(total) - np.repeat(np.cumsum(run_len) - run_len, run_len))
    pix = np.repeat(rows, run_len) * w + col
    if len(polys) > n:  # some object has several parts, which may overlap
        pairs = np.sort(obj * (h * w) + pix)
        pairs = pairs[np.concatenate([[True], pairs[1:] != pairs[:-1]])]
        obj, pix = pairs // (h * w), pairs % (h * w)
    area = np.bincount(obj, minlength=n)
    # priority: smaller area first, then earlier object; each pixel goes to its best object
    rank = np.empty(n, dtype=np.int64)
    rank[np.lexsort((np.arange(n), area))] = np.arange(n)
    order = np.lexsort((rank[obj], pix))
    pix, obj = pix[order], obj[order]
    first = np.ones(len(pix), dtype=bool)
    first[1:] = pix[1:] != pix[:-1]
    inst = np.zeros(h * w, dtype=np.int64)
    inst[pix[first]] = obj[first] + 1
    inst = inst.reshape(h, w)
    if gap:
        inst = _separate_touching(inst)
    present = np.flatnonzero(np.bincount(inst.ravel(), minlength=n + 1)[1:]) + 1
    lut = np.zeros(n + 1, dtype=np.int32)
    lut[present] = np.arange(1, len(present) + 1, dtype=np.int32)
    dropped = n - len(present)
    if dropped:
        logger.debug("rasterize_instances: %d of %d objects have no pixel left", dropped, n)
    return lut[inst], (present - 1).astype(np.int64)


def _separate_touching(inst: np.ndarray) -> np.ndarray:
    """Where two objects are 4-adjacent, the lower-priority one gives up its border pixels.

    Priority as for overlaps: the smaller object (pixel count) wins, ties go to the smaller id.
    """
    areas = np.bincount(inst.ravel())
    ids = np.arange(len(areas))
    rank = np.empty(len(areas), dtype=np.int64)
    rank[np.lexsort((ids, areas))] = ids  # by area, then id
    padded = np.pad(inst, 1)
    centre = padded[1:-1, 1:-1]
    lose = np.zeros(inst.shape, dtype=bool)
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        nb = padded[1 + dr : padded.shape[0] - 1 + dr, 1 + dc : padded.shape[1] - 1 + dc]
        lose |= (nb > 0) & (centre > 0) & (nb != centre) & (rank[nb] < rank[centre])
    out = inst.copy()
    out[lose] = 0
    return out


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _drop_collinear(ring: np.ndarray) -> np.ndarray:
    """Remove vertices lying on the straight line through their neighbours (exact: half-pixel coordinates)."""
    prev = np.roll(ring, 1, axis=0)
    nxt = np.roll(ring, -1, axis=0)
    cross = (ring[:, 0] - prev[:, 0]) * (nxt[:, 1] - ring[:, 1]) - (ring[:, 1] - prev[:, 1]) * (nxt[:, 0] - ring[:, 0])
    return ring[cross != 0]


def _point_in_ring(pt: np.ndarray, ring: np.ndarray) -> bool:
    x, y = pt
    x0, y0 = ring[:, 0], ring[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return bool(np.count_nonzero(crosses & (xi > x)) % 2)


def mask_to_polygons(mask: np.ndarray, *, offset: tuple[float, float] = (0.0, 0.0)) -> list[Polygon]:
    """Outline a binary mask as polygons with holes (4-connected parts; exact under :func:`polygon_mask`).

    Args:
        mask: ``(H, W)`` bool (or 0/1) array.
        offset: ``(x, y)`` added to every vertex (the position of ``mask[0, 0]``'s corner in the image).

    Returns:
        Polygons (exterior ring counter-clockwise in ``(x, y)``, holes clockwise), each ring an ``(N, 2)``
        ``(x, y)`` array without the closing vertex; empty for an empty mask.

    Raises:
        ValueError: ``mask`` is not 2D.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2D, got shape {m.shape}")
    if not m.any():
        return []
    padded = np.pad(m.astype(np.float32), 1)
    # fully_connected="low": background is 8-connected, so objects are 4-connected pieces
    contours = find_contours(padded, 0.5, fully_connected="low", positive_orientation="high")
    outers: list[np.ndarray] = []
    holes: list[np.ndarray] = []
    for c in contours:
        ring = np.stack([c[:, 1] - 0.5 + offset[0], c[:, 0] - 0.5 + offset[1]], axis=1)[:-1]
        ring = _drop_collinear(ring)
        area = _signed_area(ring)
        # with positive_orientation="high" the object lies to the left of the walk in (row, col) terms,
        # which in (x, y) = (col, row) makes exteriors clockwise (area < 0) and holes counter-clockwise
        if area < 0:
            outers.append(ring[::-1])
        else:
            holes.append(ring[::-1])
    outer_areas = [_signed_area(r) for r in outers]
    polygons: list[Polygon] = [[r] for r in outers]
    for hole in holes:
        owners = [i for i, r in enumerate(outers) if _point_in_ring(hole[0], r)]
        if not owners:
            raise RuntimeError("mask_to_polygons: a hole lies in no exterior ring")
        polygons[min(owners, key=lambda i: outer_areas[i])].append(hole)
    return polygons


def polygons_geometry(
    polygons: Sequence[Polygon],
    *,
    scale: tuple[float, float] = (1.0, 1.0),
    offset: tuple[float, float] = (0.0, 0.0),
    decimals: int | None = None,
) -> dict[str, Any]:
    """Polygons as a GeoJSON geometry, mapped by ``X = (x + ox) * sx``, ``Y = (y + oy) * sy``, rings closed.

    Args:
        polygons: polygons, each ``[exterior, *holes]`` with ``(m, 2)`` ``(x, y)`` rings (not closed).
        scale: ``(sy, sx)`` output pixels per input pixel (for a slide: level-0 pixels per working pixel).
        offset: ``(oy, ox)`` added before scaling (for a slide: the region's origin in working pixels).
        decimals: round the coordinates to this many decimals; ``None``: as computed.

    Returns:
        a ``Polygon`` geometry for one polygon, else a ``MultiPolygon``.
    """
    sy, sx = scale
    oy, ox = offset

    def ring(r: np.ndarray) -> list[list[float]]:
        r = np.asarray(r, dtype=np.float64)
        pts = np.stack([(r[:, 0] + ox) * sx, (r[:, 1] + oy) * sy], axis=1)
        pts = (pts if decimals is None else np.round(pts, decimals)).tolist()
        return pts + [pts[0]]

    coords = [[ring(r) for r in poly] for poly in polygons]
    if len(coords) == 1:
        return {"type": "Polygon", "coordinates": coords[0]}
    return {"type": "MultiPolygon", "coordinates": coords}


def class_colour(object_type: str, index: int) -> list[int]:
    """QuPath's ``classification.color`` of a class: the colour the overlays draw it in (region tints for
    annotations, nucleus outlines for detections and the other object types).

    Args:
        object_type: QuPath object type of the feature.
        index: class index (region class or object type).

    Returns:
        ``[r, g, b]``.
    """
    table = REGION_COLOURS if object_type == "annotation" else TYPE_COLOURS
    return [int(v) for v in table[int(index) % len(table)]]


def qupath_feature(
    polygons: Sequence[Polygon],
    *,
    object_type: str = "detection",
    class_name: str | None = None,
    class_index: int = 0,
    properties: Mapping[str, Any] | None = None,
    scale: tuple[float, float] = (1.0, 1.0),
    offset: tuple[float, float] = (0.0, 0.0),
    decimals: int | None = None,
) -> dict[str, Any]:
    """One QuPath feature: the one way the package makes GeoJSON objects (module docstring).

    Args:
        polygons: the object's polygons (see :func:`polygons_geometry`).
        object_type: ``properties.objectType`` (:data:`QUPATH_OBJECT_TYPES`).
        class_name: ``properties.classification.name``; ``None``: unclassified (no ``classification``).
        class_index: the class's index, for its colour (:func:`class_colour`).
        properties: more properties, after ``objectType`` and ``classification``.
        scale, offset, decimals: the coordinate mapping of :func:`polygons_geometry`.

    Returns:
        ``{"type": "Feature", "geometry": ..., "properties": {"objectType": ..., "classification": ..., ...}}``.

    Raises:
        ValueError: an unknown ``object_type``, or ``properties`` that would replace ``objectType`` /
            ``classification``.
    """
    _check_object_type(object_type)
    props: dict[str, Any] = {"objectType": object_type}
    if class_name is not None:
        props["classification"] = {"name": str(class_name), "color": class_colour(object_type, class_index)}
    if properties:
        clash = sorted(set(properties) & {"objectType", "classification"})
        if clash:
            raise ValueError(f"properties must not set {clash}: give object_type / class_name instead")
        props.update(properties)
    geometry = polygons_geometry(polygons, scale=scale, offset=offset, decimals=decimals)
    return {"type": "Feature", "geometry": geometry, "properties": props}


def _check_object_type(object_type: str) -> None:
    if object_type not in QUPATH_OBJECT_TYPES:
        raise ValueError(f"object_type must be one of {QUPATH_OBJECT_TYPES}, got {object_type!r}")


def instances_to_features(
    inst: np.ndarray,
    *,
    type_map: np.ndarray | None = None,
    type_names: Mapping[int, str] | Sequence[str] | None = None,
    object_type: str = "detection",
    properties: Mapping[int, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One QuPath-compatible feature per object of an instance map (:func:`qupath_feature`).

    The class of an object is the majority of ``type_map`` over its pixels (type 0 = unclassified: no
    ``classification`` property); it is named through ``type_names``.

    Args:
        inst: ``(H, W)`` integer instance map (0 = background, ids arbitrary).
        type_map: optional ``(H, W)`` integer type per pixel.
        type_names: names of the types, ``type_names[t]``; default ``"type_<t>"``.
        object_type: QuPath object type (``"detection"`` for nuclei, ``"annotation"``, ``"cell"``, ...).
        properties: more properties per instance id (e.g. its id, type probability, area), added to its feature.

    Returns:
        Features in increasing id order.

    Raises:
        ValueError: shapes differ, non-integer or negative arrays, unknown ``object_type``, or a type
            without a name in ``type_names``.
    """
    _check_object_type(object_type)
    inst = _check_int_map(inst, "inst")
    if type_map is not None:
        type_map = _check_int_map(type_map, "type_map")
        if type_map.shape != inst.shape:
            raise ValueError(f"type_map shape {type_map.shape} differs from inst shape {inst.shape}")
    features = []
    slices = ndimage.find_objects(inst)
    for k, sl in enumerate(slices, start=1):
        if sl is None:
            continue
        obj = inst[sl] == k
        polys = mask_to_polygons(obj, offset=(float(sl[1].start), float(sl[0].start)))
        name = None
        t = 0
        if type_map is not None:
            counts = np.bincount(type_map[sl][obj].ravel())
            t = int(np.argmax(counts))
            if t > 0:
                name = _type_name(type_names, t)
        extra = None if properties is None else properties.get(k)
        features.append(
            qupath_feature(polys, object_type=object_type, class_name=name, class_index=t, properties=extra)
        )
    return features


def regions_to_features(
    sem: np.ndarray,
    class_names: Mapping[int, str] | Sequence[str] | None = None,
    *,
    object_type: str = "annotation",
    include_background: bool = False,
) -> list[dict[str, Any]]:
    """One feature per class present in a semantic map (its parts form a MultiPolygon).

    Args:
        sem: ``(H, W)`` integer class map.
        class_names: ``class_names[c]``; default ``"class_<c>"``.
        object_type: QuPath object type.
        include_background: also outline class 0.

    Returns:
        Features in increasing class order.

    Raises:
        ValueError: bad map, unknown ``object_type`` or missing class name.
    """
    _check_object_type(object_type)
    sem = _check_int_map(sem, "sem")
    features = []
    for c in np.unique(sem):
        c = int(c)
        if c == 0 and not include_background:
            continue
        polys = mask_to_polygons(sem == c)
        name = _type_name(class_names, c, prefix="class")
        features.append(qupath_feature(polys, object_type=object_type, class_name=name, class_index=c))
    return features


def _type_name(names: Mapping[int, str] | Sequence[str] | None, t: int, prefix: str = "type") -> str:
    if names is None:
        return f"{prefix}_{t}"
    try:
        return str(names[t])
    except (KeyError, IndexError):
        if isinstance(names, Mapping) and str(t) in names:
            return str(names[str(t)])
        raise ValueError(f"no name for {prefix} {t} in {names!r}") from None


def _check_int_map(arr: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2D (H, W), got shape {a.shape}")
    if a.dtype.kind not in "uib":
        raise ValueError(f"{name} must hold integers, got {a.dtype}")
    if a.dtype.kind == "i" and a.size and a.min() < 0:
        raise ValueError(f"{name} has negative values")
    return a.astype(np.int64, copy=False)


def write_geojson(path: str | os.PathLike, features: Iterable[Mapping[str, Any]]) -> int:
    """Write features as a GeoJSON ``FeatureCollection``: the package's one GeoJSON writer.

    Features are written as ``features`` yields them (one per line), so a generator streams a whole slide's
    objects with bounded memory. The file appears only when complete: it is written under a temporary name and
    renamed at the end (:func:`coseg.io.atomic_write_path`); on any error, the generator's included, nothing is
    left behind and an earlier file of that name is kept.

    Args:
        path: output ``.geojson`` file.
        features: feature dictionaries (from :func:`qupath_feature`, :func:`instances_to_features`, ...), or a
            feature's compact JSON text (``json.dumps(feature, separators=(",", ":"))``, e.g. rendered in another
            process), any iterable.

    Returns:
        the number of features written.

    Raises:
        TypeError: a feature is neither a mapping nor a string.
    """
    count = 0
    with atomic_write_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write('{"type":"FeatureCollection","features":[')
        for feature in features:
            if isinstance(feature, str):
                text = feature
            elif isinstance(feature, Mapping):
                text = json.dumps(feature, separators=(",", ":"))
            else:
                raise TypeError(f"feature {count} must be a mapping or its JSON text, got {type(feature).__name__}")
            f.write(",\n" if count else "\n")
            f.write(text)
            count += 1
        f.write("\n]}\n")
    return count
