"""Where the network windows and the processing tiles of a large image lie.

Two grids cover the region being processed (the region of interest at the working resolution, ``height x
width`` pixels, coordinates ``(y, x)`` from its top-left corner):

- **Network windows**: exactly the windows MONAI's ``sliding_window_inference`` would place over the whole
  region (same ``roi_size``, ``overlap``, start positions, last window flush with the far edge, symmetric padding
  when the region is smaller than a window). Because the windows are the same, the blended outputs are the same
  as a whole-image run, whatever the tiling (:mod:`coseg.wsi.stream`).
- **Tiles**: squares of ``tile_size`` pixels (the last row / column smaller) that partition the region. Each tile
  is post-processed on its *context*, the tile grown by ``margin`` pixels on every side (clipped to the region),
  and owns the label pixels of its *core*, the tile itself (:mod:`coseg.wsi.merge`).

Tiles are grouped into vertical **strips** of ``strip_tiles`` tile columns: the network runs over one strip at a
time, top to bottom, so that its buffers hold a band of rows of one strip, never the whole slide.

Boxes are ``(y0, x0, y1, x1)`` with exclusive ends.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from monai.data.utils import dense_patch_slices

__all__ = [
    "Box",
    "Placement",
    "WindowGrid",
    "TilePlan",
    "window_grid",
    "split_among_ranks",
    "contiguous_runs",
]


class Box(NamedTuple):
    """A rectangle ``[y0, y1) x [x0, x1)`` in region pixels."""

    y0: int
    x0: int
    y1: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    def intersects(self, other: Box) -> bool:
        return self.y0 < other.y1 and other.y0 < self.y1 and self.x0 < other.x1 and other.x0 < self.x1


@dataclass(frozen=True)
class WindowGrid:
    """The network windows along one axis, as MONAI's ``sliding_window_inference`` places them.

    Attributes:
        size: length of the region along this axis.
        roi: window length.
        interval: step between window starts (MONAI's scan interval).
        pad_before: padding MONAI adds before the region when it is shorter than a window (else 0).
        starts: window starts in region coordinates (negative by ``pad_before`` when padded), increasing.
    """

    size: int
    roi: int
    interval: int
    pad_before: int
    starts: tuple[int, ...]

    def intersecting(self, lo: int, hi: int) -> list[int]:
        """Starts of the windows that overlap ``[lo, hi)``."""
        return [s for s in self.starts if s < hi and s + self.roi > lo]


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def window_grid(size: int, roi: int, overlap: float) -> WindowGrid:
    """Window starts along one axis, identical to MONAI's ``sliding_window_inference``.

    MONAI pads a region shorter than the window symmetrically (``diff // 2`` before), uses the scan interval
    ``int(roi * (1 - overlap))`` (at least 1; the whole window when the padded size equals it) and
    :func:`monai.data.utils.dense_patch_slices` for the starts, the last one moved back to end at the border.
    The interval rule is restated here (it is private in MONAI); the starts come from MONAI itself.

    Args:
        size: region length (>= 1).
        roi: window length (>= 1).
        overlap: fraction of overlap in ``[0, 1)``.

    Returns:
        the :class:`WindowGrid`.

    Raises:
        ValueError: for a size or window below 1 or an overlap outside ``[0, 1)``.
    """
    size = _check_int("size", size, 1)
    roi = _check_int("roi", roi, 1)
    if isinstance(overlap, bool) or not isinstance(overlap, numbers.Real) or not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be a number in [0, 1), got {overlap!r}")
    padded = max(size, roi)
    pad_before = (padded - size) // 2
    interval = roi if roi == padded else max(1, int(roi * (1 - overlap)))
    slices = dense_patch_slices((padded,), (roi,), (interval,))
    starts = tuple(int(s[0].start) - pad_before for s in slices)
    return WindowGrid(size=size, roi=roi, interval=interval, pad_before=pad_before, starts=starts)


@dataclass(frozen=True)
class TilePlan:
    """Tiles, their contexts, strips and network windows over a ``height x width`` region.

    Args:
        height, width: region size in working pixels.
        tile_size: tile side (the cores partition the region; the last row / column is smaller).
        margin: context around each core for post-processing, in pixels (>= 1: the merge compares the label
            lines on both sides of every core border).
        roi_size: network window ``(h, w)``.
        overlap: window overlap ``(oy, ox)`` (fractions, as MONAI's ``overlap``).
        strip_tiles: tile columns per strip (>= 1).

    Raises:
        ValueError: for a non-positive size, a margin below 1 or larger than the tile, or a bad window setting.
    """

    height: int
    width: int
    tile_size: int
    margin: int
    roi_size: tuple[int, int]
    overlap: tuple[float, float]
    strip_tiles: int = 1

    def __post_init__(self) -> None:
        _check_int("height", self.height, 1)
        _check_int("width", self.width, 1)
        _check_int("tile_size", self.tile_size, 1)
        _check_int("margin", self.margin, 1)
        _check_int("strip_tiles", self.strip_tiles, 1)
        if self.margin > self.tile_size:
            raise ValueError(f"margin ({self.margin}) must not exceed tile_size ({self.tile_size})")
        if len(self.roi_size) != 2 or len(self.overlap) != 2:
            raise ValueError(f"roi_size and overlap must have 2 entries, got {self.roi_size} and {self.overlap}")
        # validate the window settings now rather than at first use
        self.rows_grid  # noqa: B018
        self.cols_grid  # noqa: B018

    @property
    def rows_grid(self) -> WindowGrid:
        return window_grid(self.height, self.roi_size[0], self.overlap[0])

    @property
    def cols_grid(self) -> WindowGrid:
        return window_grid(self.width, self.roi_size[1], self.overlap[1])

    @property
    def n_rows(self) -> int:
        return math.ceil(self.height / self.tile_size)

    @property
    def n_cols(self) -> int:
        return math.ceil(self.width / self.tile_size)

    @property
    def n_strips(self) -> int:
        return math.ceil(self.n_cols / self.strip_tiles)

    def tiles(self) -> list[tuple[int, int]]:
        """Every tile ``(row, col)`` in processing order: strip by strip, top to bottom, left to right."""
        out = []
        for strip in range(self.n_strips):
            for row in range(self.n_rows):
                out.extend((row, col) for col in self.strip_columns(strip))
        return out

    def strip_of(self, col: int) -> int:
        return col // self.strip_tiles

    def strip_columns(self, strip: int) -> range:
        return range(strip * self.strip_tiles, min((strip + 1) * self.strip_tiles, self.n_cols))

    def core(self, row: int, col: int) -> Box:
        """The pixels tile ``(row, col)`` owns."""
        if not (0 <= row < self.n_rows and 0 <= col < self.n_cols):
            raise ValueError(f"tile ({row}, {col}) is outside the {self.n_rows} x {self.n_cols} tile grid")
        t = self.tile_size
        return Box(row * t, col * t, min((row + 1) * t, self.height), min((col + 1) * t, self.width))

    def context(self, row: int, col: int) -> Box:
        """The core grown by ``margin`` on every side, clipped to the region: what the tile is post-processed on."""
        c, m = self.core(row, col), self.margin
        return Box(max(0, c.y0 - m), max(0, c.x0 - m), min(self.height, c.y1 + m), min(self.width, c.x1 + m))

    def neighbours(self, row: int, col: int) -> dict[str, tuple[int, int]]:
        """The tiles across each side of a core: ``{"top" | "bottom" | "left" | "right": (row, col)}``."""
        out = {}
        if row > 0:
            out["top"] = (row - 1, col)
        if row + 1 < self.n_rows:
            out["bottom"] = (row + 1, col)
        if col > 0:
            out["left"] = (row, col - 1)
        if col + 1 < self.n_cols:
            out["right"] = (row, col + 1)
        return out

    def windows(self, tiles: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
        """The network windows ``(y, x)`` (top-left corners, region coordinates) that overlap the context of any of
        ``tiles``, in MONAI's order (row-major). Every pixel of those contexts is covered by all the windows that
        cover it in a whole-region run, so its blended value is the same."""
        contexts = [self.context(r, c) for r, c in tiles]
        rows, cols = self.rows_grid, self.cols_grid
        needed = []
        for wy in rows.starts:
            band = [b for b in contexts if wy < b.y1 and wy + rows.roi > b.y0]
            if not band:
                continue
            xs = {wx for b in band for wx in cols.intersecting(b.x0, b.x1)}
            needed.extend((wy, wx) for wx in sorted(xs))
        return needed


def contiguous_runs(plan: TilePlan, tiles: Sequence[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Split tiles (in :meth:`TilePlan.tiles` order) into runs the network can stream without restarting: tiles of
    one strip whose rows follow each other without a gap.

    Args:
        plan: the tile plan.
        tiles: ``(row, col)`` tiles, in processing order.

    Returns:
        runs of tiles, each in processing order.
    """
    runs: list[list[tuple[int, int]]] = []
    for tile in tiles:
        if runs:
            last = runs[-1][-1]
            same_strip = plan.strip_of(last[1]) == plan.strip_of(tile[1])
            if same_strip and tile[0] in (last[0], last[0] + 1):
                runs[-1].append(tile)
                continue
        runs.append([tile])
    return runs


def split_among_ranks(tiles: Sequence[tuple[int, int]], world_size: int) -> list[list[tuple[int, int]]]:
    """Give each of ``world_size`` processes a contiguous share of the tiles (sizes differ by at most one).

    Contiguous shares keep each process's tiles in few strips and runs, so the windows shared by neighbouring
    tiles are computed once per share rather than once per tile.

    Args:
        tiles: tiles in processing order.
        world_size: number of processes (>= 1).

    Returns:
        ``world_size`` lists; list ``r`` is rank ``r``'s share.
    """
    world_size = _check_int("world_size", world_size, 1)
    bounds = np.linspace(0, len(tiles), world_size + 1).round().astype(int)
    return [list(tiles[bounds[r] : bounds[r + 1]]) for r in range(world_size)]


@dataclass(frozen=True)
class Placement:
    """Where the region's pixels lie on the slide: level-0 ``X = (x + ox) * sx``, ``Y = (y + oy) * sy``.

    Attributes:
        scale: ``(sy, sx)`` level-0 pixels per working pixel.
        offset: ``(oy, ox)`` the region's origin in working pixels.
        mpp: ``(y, x)`` working pixel size in micrometres; ``None`` when the file does not record it.
    """

    scale: tuple[float, float]
    offset: tuple[float, float]
    mpp: tuple[float, float] | None

    @classmethod
    def of(cls, image: Any) -> Placement:
        """The placement of a :class:`~coseg.wsi.reader.WorkingImage` (its ``to_level0``, ``roi`` and ``mpp``)."""
        sy, sx = image.to_level0
        mpp = None if image.mpp is None else (float(image.mpp[0]), float(image.mpp[1]))
        return cls(scale=(float(sy), float(sx)), offset=(float(image.roi[0]), float(image.roi[1])), mpp=mpp)

    def point(self, x: float, y: float) -> tuple[float, float]:
        """Level-0 ``(X, Y)`` of region coordinates ``(x, y)`` given in QuPath's convention (pixel edges)."""
        return (x + self.offset[1]) * self.scale[1], (y + self.offset[0]) * self.scale[0]

    @property
    def pixel_area_um2(self) -> float | None:
        """Area of one working pixel in square micrometres."""
        return None if self.mpp is None else self.mpp[0] * self.mpp[1]
