"""Outputs of whole-slide inference, written with bounded memory.

Generic writers:

- :func:`write_label_pyramid`: a label map given as consecutive bands of rows, written as a tiled, pyramidal
  TIFF (level 0, then SubIFDs of 2x, 4x, ... smaller levels made by nearest-neighbour sub-sampling, so ids stay
  ids); the sub-levels are collected while level 0 streams (spooled to compressed files in a temporary folder).
- :func:`region_polygons`: outlines of large regions with their holes, in linear time.
- :func:`draw_overlay`: the slide thumbnail tinted by region class, nuclei outlined in their type's colour.

The outputs of one slide, from its merged instances (:class:`~coseg.wsi.merge.MergeResult`) and tile records, in
level-0 pixels (:class:`Placement`):

- :func:`write_label_maps`: ``<name>_inst.tif`` / ``<name>_type.tif`` / ``<name>_sem.tif``.
- :func:`write_instance_table`: ``<name>_instances.csv``.
- :func:`region_features`, :func:`tile_features`: every tissue region as a QuPath annotation and every nucleus as a
  detection, for the one GeoJSON writer :func:`coseg.histo.geojson.write_geojson` (features as
  :func:`coseg.histo.geojson.qupath_feature` makes them for single images; nuclei rendered tile by tile, in worker
  processes, as JSON text: :class:`NucleusFeatures`).
- :func:`summarise_nuclei`: counts per type and tissue class, tissue areas, nuclei per mm².

Every file is written under a temporary name and renamed when complete (:func:`coseg.io.atomic_write_path`).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tifffile

from coseg.histo.geojson import qupath_feature
from coseg.io import atomic_write_path, temporary_sibling_dir
from coseg.postprocess import remove_small_regions
from coseg.visualize import REGION_COLOURS, TYPE_COLOURS
from coseg.wsi.merge import MergeResult, geometry_texts
from coseg.wsi.parts import load_record, stored_bands, write_npz
from coseg.wsi.tiling import Placement, TilePlan

__all__ = [
    "Placement",
    "write_label_pyramid",
    "write_label_maps",
    "write_instance_table",
    "region_features",
    "FeatureJob",
    "TileFeatures",
    "tile_features",
    "overview_rings",
    "draw_rings",
    "NucleusFeatures",
    "write_label_map",
    "summarise_nuclei",
    "draw_overlay",
    "pyramid_shapes",
    "region_polygons",
]

Polygon = list[np.ndarray]


def pyramid_shapes(height: int, width: int, *, min_size: int = 1024) -> list[tuple[int, int]]:
    """Level sizes: halve (rounding up) while the longer side of the last level exceeds ``min_size``."""
    shapes = [(int(height), int(width))]
    while max(shapes[-1]) > min_size:
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def _tiles_of(rows: np.ndarray, tile: int) -> Iterator[np.ndarray]:
    """Cut a band of ``tile`` rows (possibly fewer, at the bottom) into tiles, zero-padded to full size."""
    h, w = rows.shape
    full = np.zeros((tile, math.ceil(w / tile) * tile), dtype=rows.dtype)
    full[:h, :w] = rows
    for x in range(0, full.shape[1], tile):
        yield full[:, x : x + tile]


def write_label_pyramid(
    path: str | os.PathLike,
    bands: Iterable[np.ndarray],
    *,
    shape: Sequence[int],
    dtype: np.dtype | type,
    tile: int = 256,
    min_size: int = 1024,
    mpp: tuple[float, float] | None = None,
    compression: str = "zlib",
    description: str | None = None,
) -> list[tuple[int, int]]:
    """Write a label map, given band by band, as a tiled pyramidal TIFF.

    Args:
        path: the ``.tif`` to write (atomically).
        bands: ``(rows, width)`` arrays of consecutive rows from the top; their heights must add up to ``height``.
        shape: ``(height, width)`` of the map.
        dtype: integer dtype of the file.
        tile: TIFF tile side (multiple of 16).
        min_size: sub-levels are added while the longer side exceeds this.
        mpp: ``(y, x)`` micrometres per pixel of level 0, written as resolution tags (centimetre unit); each
            level's tags give its own pixel size.
        compression: TIFF compression (``"zlib"`` = Adobe deflate, read by QuPath and every TIFF reader).
        description: ImageDescription of level 0.

    Returns:
        the level shapes.

    Raises:
        ValueError: a bad tile size, or bands that do not add up to the shape.
    """
    if tile < 16 or tile % 16:
        raise ValueError(f"tile must be a positive multiple of 16, got {tile}")
    height, width = (int(v) for v in shape)
    shapes = pyramid_shapes(height, width, min_size=min_size)
    dtype = np.dtype(dtype)
    big = height * width * dtype.itemsize > 2**31

    def resolution(level: int) -> dict[str, Any]:
        if mpp is None:
            return {}
        f = 2**level
        return {"resolution": (1e4 / (mpp[1] * f), 1e4 / (mpp[0] * f)), "resolutionunit": "CENTIMETER"}

    with temporary_sibling_dir(path, tag="spool") as spool:
        spooled: list[list[str]] = [[] for _ in shapes]
        pending: list[list[np.ndarray]] = [[] for _ in shapes]
        pending_rows = [0] * len(shapes)

        def spool_rows(level: int, rows: np.ndarray, final: bool) -> None:
            if rows.size:
                pending[level].append(rows)
                pending_rows[level] += rows.shape[0]
            while pending_rows[level] >= tile or (final and pending_rows[level] > 0):
                stacked = np.concatenate(pending[level])
                part, rest = stacked[:tile], stacked[tile:]
                name = os.path.join(spool, f"level{level}_{len(spooled[level])}.npz")
                write_npz(name, {"rows": part})
                spooled[level].append(name)
                pending[level] = [rest] if rest.shape[0] else []
                pending_rows[level] = rest.shape[0]

        def level0() -> Iterator[np.ndarray]:
            # tifffile stops drawing tiles once it has them all, so nothing may wait after the last yield: the
            # sub-levels are flushed as soon as the last row has arrived
            buf: list[np.ndarray] = []
            buffered = 0
            y = 0
            for band in bands:
                band = np.asarray(band)
                if band.ndim != 2 or band.shape[1] != width:
                    raise ValueError(f"band of shape {band.shape} does not have the map's width {width}")
                if y + band.shape[0] > height:
                    raise ValueError(f"bands cover more than the map's {height} rows")
                for level in range(1, len(shapes)):
                    f = 2**level
                    first = (-y) % f
                    spool_rows(level, band[first::f, ::f].astype(dtype, copy=False), final=y + band.shape[0] == height)
                y += band.shape[0]
                buf.append(band.astype(dtype, copy=False))
                buffered += band.shape[0]
                while buffered >= tile or (y == height and buffered > 0):
                    stacked = np.concatenate(buf)
                    yield from _tiles_of(stacked[:tile], tile)
                    rest = stacked[tile:]
                    buf, buffered = ([rest] if rest.shape[0] else []), rest.shape[0]
            if y != height:
                raise ValueError(f"bands cover {y} rows, the map has {height}")

        def sub_level(level: int) -> Iterator[np.ndarray]:
            for name in spooled[level]:
                with np.load(name) as data:
                    yield from _tiles_of(data["rows"], tile)

        common = {"tile": (tile, tile), "compression": compression, "photometric": "minisblack", "metadata": None}
        with atomic_write_path(path) as tmp:
            with tifffile.TiffWriter(tmp, bigtiff=big) as tif:
                tif.write(
                    level0(),
                    shape=shapes[0],
                    dtype=dtype,
                    subifds=len(shapes) - 1,
                    description=description,
                    **common,
                    **resolution(0),
                )
                for level in range(1, len(shapes)):
                    tif.write(
                        sub_level(level), shape=shapes[level], dtype=dtype, subfiletype=1, **common, **resolution(level)
                    )
    return shapes


def region_polygons(mask: np.ndarray) -> list[Polygon]:
    """Outlines of the regions of a binary mask, holes included, for tissue annotations.

    OpenCV's border following (``cv2.findContours`` with a two-level hierarchy) pairs every hole with its region in
    one pass; :func:`coseg.histo.geojson.mask_to_polygons`, exact to the pixel edge, tests every hole against every
    region, which takes minutes on a slide's noisy region map. Here the rings run through the centres of the
    boundary pixels (``(j + 0.5, i + 0.5)``), half a pixel inside the pixel edges: fine for regions on a map
    sampled every few tens of pixels. Pieces thinner than 2 pixels (no area as a polygon) are left out.

    Args:
        mask: ``(h, w)`` bool.

    Returns:
        polygons, each ``[exterior, *holes]`` with ``(m, 2)`` ``(x, y)`` rings (exterior counter-clockwise in
        ``(x, y)`` numbers, holes clockwise, as :mod:`coseg.histo.geojson` writes them).
    """
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    if not m.any():
        return []
    contours, hierarchy = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    polygons: dict[int, Polygon] = {}
    holes: list[tuple[int, np.ndarray]] = []
    for i, contour in enumerate(contours):
        # the shoelace area of the integer points (the same as of the rings, which only shift them by 0.5)
        area = cv2.contourArea(contour, oriented=True) if len(contour) >= 3 else 0.0
        if area == 0:
            continue
        ring = contour.reshape(-1, 2).astype(np.float64) + 0.5
        parent = int(hierarchy[0][i][3])
        if parent < 0:
            polygons[i] = [ring if area > 0 else ring[::-1]]
        else:
            holes.append((parent, ring if area < 0 else ring[::-1]))
    for parent, ring in holes:
        if parent in polygons:
            polygons[parent].append(ring)
    return [polygons[i] for i in sorted(polygons)]


def draw_overlay(
    thumbnail: np.ndarray,
    sem_low: np.ndarray | None,
    *,
    low_step: int,
    factor: float,
    alpha: float = 0.3,
) -> tuple[np.ndarray, Callable[[Sequence[Polygon], int], None]]:
    """Start an overview picture: the thumbnail tinted by region class; nuclei are added with the returned function.

    Args:
        thumbnail: ``(h, w, 3)`` uint8 RGB of the region.
        sem_low: region classes sampled every ``low_step`` region pixels (``None``: no tint).
        low_step: sampling step of ``sem_low``.
        factor: region pixels per thumbnail pixel.
        alpha: opacity of the tint.

    Returns:
        ``(canvas, draw)``: the picture (drawn into in place) and ``draw(polygons, type)`` outlining one object
        given in region pixels.
    """
    canvas = np.asarray(thumbnail, np.uint8).copy()
    h, w = canvas.shape[:2]
    if sem_low is not None and sem_low.size:
        rows = np.minimum((np.arange(h) * factor / low_step).astype(np.int64), sem_low.shape[0] - 1)
        cols = np.minimum((np.arange(w) * factor / low_step).astype(np.int64), sem_low.shape[1] - 1)
        classes = sem_low[rows][:, cols]
        # every class's tinted value of every channel value (the arithmetic of a per-pixel blend) in one table
        n = int(classes.max()) + 1
        colours = np.asarray(REGION_COLOURS, np.float32)[np.arange(n) % len(REGION_COLOURS)] * alpha
        values = np.arange(256, dtype=np.float64)
        table = np.round(values[None, :, None] * (1 - alpha) + colours[:, None, :]).astype(np.uint8)
        # class by class, OpenCV's table look-up copied under the class's mask (4x less CPU than one fancy-indexed
        # look-up of every pixel; background stays untinted)
        source = canvas.copy()  # a look-up reads the untinted thumbnail
        for c in range(1, n):
            mask = (classes == c).view(np.uint8)
            if mask.any():
                cv2.copyTo(cv2.LUT(source, np.ascontiguousarray(table[c]).reshape(1, 256, 3)), mask, canvas)

    def draw(polygons: Sequence[Polygon], type_id: int) -> None:
        draw_rings(canvas, overview_rings(polygons, factor), type_id)

    return canvas, draw


_TYPE_RGB = [tuple(int(v) for v in colour) for colour in TYPE_COLOURS]


def draw_rings(canvas: np.ndarray, rings: Sequence[np.ndarray], type_id: int) -> None:
    """Outline rings (overview pixels, :func:`overview_rings`) in the colour of nucleus type ``type_id``."""
    if rings:
        rgb = _TYPE_RGB[int(type_id) % len(_TYPE_RGB)]
        cv2.polylines(canvas, list(rings), isClosed=True, color=rgb, thickness=1)


# ---- the outputs of one slide ------------------------------------------------------------------------------------


def write_label_maps(
    outputs: Mapping[str, Path],
    *,
    plan: TilePlan,
    records: Mapping[tuple[int, int], Path],
    merged: MergeResult,
    tile: int,
    mpp: tuple[float, float] | None,
) -> None:
    """Write the instance, type and region maps of the region as pyramidal TIFFs (:func:`write_label_map` for
    each; :mod:`coseg.wsi.pipeline` hands the three to worker processes).

    Args:
        outputs: ``{"inst": path, "type": path, "sem": path, ...}``.
        plan: the tile plan.
        records: the tile records, keyed by tile; their label maps were stored in bands of ``tile`` rows.
        merged: the merged instances (slide ids and types).
        tile: TIFF tile side.
        mpp: working pixel size, for the resolution tags.
    """
    for kind in LABEL_MAPS:
        write_label_map(
            outputs[kind], kind, plan=plan, records=records, luts=merged.luts, types=merged.types, tile=tile, mpp=mpp
        )


#: the label maps written for each slide
LABEL_MAPS = ("inst", "type", "sem")


def write_label_map(
    path: str | os.PathLike,
    kind: str,
    *,
    plan: TilePlan,
    records: Mapping[tuple[int, int], Path],
    luts: Mapping[tuple[int, int], np.ndarray],
    types: np.ndarray,
    tile: int,
    mpp: tuple[float, float] | None,
) -> None:
    """Write one label map of the region as a pyramidal TIFF (:func:`write_label_pyramid`): nucleus ids
    (``"inst"``, ``uint16``, ``uint32`` beyond 65535 nuclei), nucleus types (``"type"``) or region classes
    (``"sem"``).

    Args:
        path: the ``.tif``.
        kind: ``"inst"``, ``"type"`` or ``"sem"``.
        plan: the tile plan.
        records: the tile records, keyed by tile; their label maps were stored in bands of ``tile`` rows.
        luts: per tile, local piece id -> slide instance id (:attr:`coseg.wsi.merge.MergeResult.luts`).
        types: ``(N,)`` type of each slide instance.
        tile: TIFF tile side.
        mpp: working pixel size, for the resolution tags.

    Raises:
        ValueError: an unknown ``kind``.
    """
    if kind not in LABEL_MAPS:
        raise ValueError(f"kind must be one of {LABEL_MAPS}, got {kind!r}")
    dtype = (np.uint16 if len(types) < 2**16 else np.uint32) if kind == "inst" else np.uint8
    type_lut = np.concatenate([[0], types]).astype(np.uint8)

    def mapping(t: tuple[int, int], band: np.ndarray) -> np.ndarray:
        if kind == "sem":
            return band
        ids = luts[t][band]
        return type_lut[ids] if kind == "type" else ids

    write_label_pyramid(
        path,
        stored_bands(plan, records, "sem" if kind == "sem" else "inst", tile, mapping, dtype),
        shape=(plan.height, plan.width),
        dtype=dtype,
        tile=tile,
        mpp=mpp,
        description=f"coseg {kind} map",
    )


_CSV_COLUMNS = (
    "id",
    "type",
    "type_name",
    "type_prob",
    "tissue",
    "tissue_name",
    "centroid_x",
    "centroid_y",
    "area_px",
    "area_um2",
    "x_min",
    "y_min",
    "x_max",
    "y_max",
)


def write_instance_table(
    path: str | os.PathLike,
    merged: MergeResult,
    placement: Placement,
    *,
    sem_classes: Mapping[int, str],
    inst_types: Mapping[int, str],
) -> None:
    """One CSV row per nucleus: ids, type and tissue (numbers and names), level-0 centroid and box, area.

    Args:
        path: the ``.csv``.
        merged: the merged instances.
        placement: region pixels to level 0.
        sem_classes, inst_types: class names by index.
    """
    area_um2 = placement.pixel_area_um2
    (sy, sx), (oy, ox) = placement.scale, placement.offset
    # the arithmetic of Placement.point, column by column
    cx = (merged.centroid[:, 0] + 0.5 + ox) * sx
    cy = (merged.centroid[:, 1] + 0.5 + oy) * sy
    box = merged.bbox.astype(np.float64)
    bx0, bx1 = (box[:, 0] + ox) * sx, (box[:, 2] + ox) * sx
    by0, by1 = (box[:, 1] + oy) * sy, (box[:, 3] + oy) * sy
    types, tissue, area = merged.types.tolist(), merged.tissue.tolist(), merged.area.tolist()

    def fmt(spec: str, values: np.ndarray) -> list[str]:
        return [format(v, spec) for v in values.tolist()]

    columns = [
        merged.ids.tolist(),
        types,
        [inst_types.get(t, str(t)) for t in types],
        fmt(".3f", merged.type_probs),
        tissue,
        [sem_classes.get(c, str(c)) for c in tissue],
        fmt(".2f", cx),
        fmt(".2f", cy),
        area,
        [""] * len(area) if area_um2 is None else fmt(".2f", merged.area * area_um2),
        fmt(".1f", bx0),
        fmt(".1f", by0),
        fmt(".1f", bx1),
        fmt(".1f", by1),
    ]
    with atomic_write_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(_CSV_COLUMNS)
        w.writerows(zip(*columns))


class NucleusFeatures:
    """The slide's nuclei as QuPath detections, as the JSON text :func:`coseg.histo.geojson.write_geojson` writes for
    the features :func:`coseg.histo.geojson.qupath_feature` makes (the same bytes), each geometry given as text
    (:func:`coseg.wsi.merge.geometry_text`, rendered by the worker that post-processed the tile). The part of a
    feature that only depends on its type is made once per type.

    Args:
        merged: the merged instances.
        placement: region pixels to level 0.
        sem_classes, inst_types: class names by index.
    """

    def __init__(
        self,
        merged: MergeResult,
        placement: Placement,
        *,
        sem_classes: Mapping[int, str],
        inst_types: Mapping[int, str],
    ) -> None:
        self.merged = merged
        self.placement = placement
        self.sem_classes = sem_classes
        self.inst_types = inst_types
        self._heads: dict[int, str] = {}
        self._dumps = json.JSONEncoder(separators=(",", ":")).encode

    def _head(self, t: int) -> str:
        """``{"objectType":...,"classification":{...}`` of type ``t``, without the closing brace."""
        head = self._heads.get(t)
        if head is None:
            name = self.inst_types.get(t, f"type_{t}") if t > 0 else None
            props = qupath_feature([], object_type="detection", class_name=name, class_index=t)["properties"]
            head = self._heads[t] = self._dumps(props)[:-1]
        return head

    def text(self, i: int, geometry: str) -> str:
        """The feature of instance row ``i`` (id - 1) with its geometry text (level-0 pixels)."""
        m, placement = self.merged, self.placement
        t = int(m.types[i])
        tissue = int(m.tissue[i])
        cx, cy = placement.point(m.centroid[i, 0] + 0.5, m.centroid[i, 1] + 0.5)
        area = int(m.area[i])
        props: dict[str, Any] = {
            "id": int(m.ids[i]),
            "type": t,
            "type_prob": round(float(m.type_probs[i]), 4),
            "tissue": self.sem_classes.get(tissue, str(tissue)),
            "centroid": [round(cx, 2), round(cy, 2)],
            "area_px": area,
        }
        if placement.pixel_area_um2 is not None:
            props["measurements"] = {"Area um^2": round(float(area) * placement.pixel_area_um2, 3)}
        return f'{{"type":"Feature","geometry":{geometry},"properties":{self._head(t)},{self._dumps(props)[1:]}}}'


def region_features(
    *,
    sem_low: np.ndarray,
    low_step: int,
    placement: Placement,
    sem_classes: Mapping[int, str],
    region_min_um2: float,
) -> Iterator[dict[str, Any]]:
    """The slide's tissue regions as QuPath annotations, one per class.

    Regions are outlined on ``sem_low`` without regions or holes smaller than ``region_min_um2`` (64 samples when
    the pixel size is unknown), so that annotations outline tissue, not every speck (:func:`region_polygons`).

    Args:
        sem_low: region classes sampled every ``low_step`` region pixels.
        low_step: its sampling step.
        placement: region pixels to level 0.
        sem_classes: class names by index.
        region_min_um2: smallest region or hole outlined.

    Yields:
        feature dictionaries for :func:`coseg.histo.geojson.write_geojson`.
    """
    area_um2 = placement.pixel_area_um2
    min_size = 64 if area_um2 is None else max(1, int(round(region_min_um2 / (area_um2 * low_step * low_step))))
    regions = remove_small_regions(sem_low, min_size=min_size, include_background=True)
    sy, sx = placement.scale
    oy, ox = placement.offset
    for c in range(1, len(sem_classes)):
        polys = region_polygons(regions == c)
        if polys:
            yield qupath_feature(
                polys,
                object_type="annotation",
                class_name=sem_classes[c],
                class_index=c,
                scale=(sy * low_step, sx * low_step),
                offset=(oy / low_step, ox / low_step),
                decimals=2,
            )


@dataclass(frozen=True)
class FeatureJob:
    """What every tile's nuclei are rendered with (:func:`tile_features`).

    Attributes:
        placement: region pixels to level 0.
        sem_classes, inst_types: class names by index.
        factor: region pixels per overview pixel (:func:`draw_overlay`).
    """

    placement: Placement
    sem_classes: dict[int, str]
    inst_types: dict[int, str]
    factor: float


@dataclass
class TileFeatures:
    """A tile's nuclei, rendered (:func:`tile_features`).

    Attributes:
        texts: the features of the instances that are one piece of this tile, in piece order (JSON text).
        outlines: for each of them, ``(type, ring)``: the outline in overview pixels, ``(m, 1, 2)`` int32.
        pieces: the pieces of instances made of several pieces, ``(instance id, (mask, x0, y0))`` in piece order,
            to be joined once all are read (:func:`coseg.wsi.merge.group_polygons`).
    """

    texts: list[str]
    outlines: list[tuple[int, np.ndarray]]
    pieces: list[tuple[int, tuple[np.ndarray, int, int]]]


def overview_rings(polygons: Sequence[Polygon], factor: float) -> list[np.ndarray]:
    """An object's exterior rings in overview pixels (``factor`` region pixels each), as OpenCV draws them."""
    return [np.round(poly[0] / factor).astype(np.int32).reshape(-1, 1, 2) for poly in polygons if len(poly)]


def tile_features(
    job: FeatureJob, path: str | os.PathLike, lut: np.ndarray, rows: MergeResult, joined: np.ndarray
) -> TileFeatures:
    """Render the nuclei of one tile record: the GeoJSON features of its one-piece instances (the geometry the worker
    rendered with the record, :attr:`coseg.wsi.parts.TileRecord.geometry`) and their overview outlines, and the
    pieces of the instances joined across tiles. Runs in a worker process (:mod:`coseg.wsi.pipeline`).

    Args:
        job: the slide's rendering settings.
        path: the tile's record.
        lut: local piece id -> slide instance id (``(n + 1,)``).
        rows: the merged rows (:meth:`coseg.wsi.merge.MergeResult.rows`) of the tile's one-piece instances.
        joined: ``(n + 1,)`` bool, the local pieces that belong to an instance of several pieces.

    Returns:
        the :class:`TileFeatures`.
    """
    rec = load_record(path, maps=False, geometry=True)
    geometry = rec.geometry if len(rec.geometry) == rec.n else geometry_texts(rec.polygons, job.placement)
    features = NucleusFeatures(rows, job.placement, sem_classes=job.sem_classes, inst_types=job.inst_types)
    row_of = {fid: i for i, fid in enumerate(rows.ids.tolist())}
    out = TileFeatures([], [], [])
    for local in range(1, rec.n + 1):
        fid = int(lut[local])
        if joined[local]:
            out.pieces.append((fid, rec.masks[local]))
            continue
        i = row_of[fid]
        out.texts.append(features.text(i, geometry[local - 1]))
        t = int(rows.types[i])
        out.outlines.extend((t, ring) for ring in overview_rings(rec.polygons[local - 1], job.factor))
    return out


def summarise_nuclei(
    merged: MergeResult,
    sem_pixels: np.ndarray,
    placement: Placement,
    *,
    sem_classes: Mapping[int, str],
    inst_types: Mapping[int, str],
) -> dict[str, Any]:
    """Counts of nuclei per type, overall and per tissue class, with the tissue areas and densities.

    Args:
        merged: the merged instances.
        sem_pixels: ``(S,)`` pixels of the region per tissue class.
        placement: for the pixel area.
        sem_classes, inst_types: class names by index.

    Returns:
        ``{"nuclei": N, "counts": {type: n}, "tissue": {class: {"area_px", "area_mm2", "nuclei": {type: n},
        "nuclei_total", "density_per_mm2": {type: per mm², "all": ...}}}}`` (``density_per_mm2`` only when the area
        is known and not zero).
    """
    k = len(inst_types)
    counts = np.bincount(merged.types, minlength=k) if len(merged) else np.zeros(k, np.int64)
    px_area_mm2 = None if placement.pixel_area_um2 is None else placement.pixel_area_um2 * 1e-6
    tissue: dict[str, Any] = {}
    for c, cname in sem_classes.items():
        sel = merged.tissue == c
        per_type = np.bincount(merged.types[sel], minlength=k) if sel.any() else np.zeros(k, np.int64)
        area_mm2 = None if px_area_mm2 is None else float(sem_pixels[c]) * px_area_mm2
        entry: dict[str, Any] = {
            "area_px": int(sem_pixels[c]),
            "area_mm2": area_mm2,
            "nuclei": {inst_types[t]: int(per_type[t]) for t in range(1, k)},
            "nuclei_total": int(per_type[1:].sum()),
        }
        if area_mm2:
            entry["density_per_mm2"] = {inst_types[t]: float(per_type[t]) / area_mm2 for t in range(1, k)}
            entry["density_per_mm2"]["all"] = float(per_type[1:].sum()) / area_mm2
        tissue[cname] = entry
    return {
        "nuclei": len(merged),
        "counts": {inst_types[t]: int(counts[t]) for t in range(1, k)},
        "tissue": tissue,
    }
