"""Outputs of whole-slide inference, written with bounded memory.

- :func:`write_label_pyramid`: a label map given as consecutive bands of rows, written as a tiled, pyramidal
  TIFF (level 0, then SubIFDs of 2x, 4x, ... smaller levels made by nearest-neighbour sub-sampling, so ids stay
  ids); the sub-levels are collected while level 0 streams (spooled to compressed temporary files).
- :func:`region_polygons`: outlines of large regions with their holes, in linear time.
- :func:`draw_overlay`: the slide thumbnail tinted by region class, nuclei outlined in their type's colour.

Every file is written under a temporary name and renamed when complete (:func:`coseg.io.atomic_write_path`).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tifffile

from coseg.io import atomic_write_path
from coseg.visualize import REGION_COLOURS, TYPE_COLOURS

__all__ = [
    "write_label_pyramid",
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

    with tempfile.TemporaryDirectory(dir=Path(path).parent, prefix=".pyramid.") as spool:
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
                np.savez_compressed(name, rows=part)
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


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


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
        ring = contour.reshape(-1, 2).astype(np.float64) + 0.5
        if len(ring) < 3 or _signed_area(ring) == 0:
            continue
        parent = int(hierarchy[0][i][3])
        if parent < 0:
            polygons[i] = [ring if _signed_area(ring) > 0 else ring[::-1]]
        else:
            holes.append((parent, ring if _signed_area(ring) < 0 else ring[::-1]))
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
        classes = sem_low[rows[:, None], cols[None, :]]
        tint = np.asarray(REGION_COLOURS, np.float32)[classes % len(REGION_COLOURS)]
        fg = classes > 0
        canvas[fg] = np.round(canvas[fg] * (1 - alpha) + tint[fg] * alpha).astype(np.uint8)

    def draw(polygons: Sequence[Polygon], type_id: int) -> None:
        rgb = tuple(int(v) for v in TYPE_COLOURS[int(type_id) % len(TYPE_COLOURS)])
        rings = [np.round(poly[0] / factor).astype(np.int32).reshape(-1, 1, 2) for poly in polygons if len(poly)]
        if rings:
            cv2.polylines(canvas, rings, isClosed=True, color=rgb, thickness=1)

    return canvas, draw
