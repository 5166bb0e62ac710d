"""Settings of whole-slide inference, grouped by what they control, each group frozen and checked on creation.

- :class:`ReadSettings` (``reading``): which pyramid level or resolution, which region, which reader.
- :class:`TileSettings` (``tiling``): tile size and context, tissue detection, memory, threads, tiles per run.
- :class:`OutputSettings` (``outputs``): output TIFF tiles, overview and region outlines, what is kept or replaced.
- :class:`WindowSettings`: the network windows, read from the configured sliding-window inferer.

In ``inference.json`` the groups are items of ``wsi_inferer`` (``wsi_inferer#tiling#tile_size``, ...);
:func:`group_options` sorts flat option names (those of ``python -m coseg.wsi``) into them.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from coseg.inferers import FULL_RESOLUTION_OUTPUTS
from coseg.wsi.reader import BACKENDS

__all__ = ["ReadSettings", "TileSettings", "OutputSettings", "WindowSettings", "SETTINGS_GROUPS", "group_options"]


def _check_positive(name: str, value: Any, *, integer: bool = False, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    kinds = (int, np.integer) if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive {'integer' if integer else 'number'}, got {value!r}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")


@dataclass(frozen=True)
class ReadSettings:
    """What to read of each input.

    Args:
        level: read this pyramid level as it is (``>= 0``).
        mpp: work at this many micrometres per pixel (the coarsest level at least that fine, resampled unless
            within 5 %). Neither ``level`` nor ``mpp``: the resolution of the watershed settings (the model's).
        roi: ``(x, y, w, h)`` region of interest in level-0 pixels; default the whole image.
        backend: slide reader backend (:data:`coseg.wsi.reader.BACKENDS`).
        slide_mpp: level-0 pixel size for files that do not record it.

    Raises:
        ValueError: both ``level`` and ``mpp``, or a value out of range.
    """

    level: int | None = None
    mpp: float | None = None
    roi: tuple[float, float, float, float] | None = None
    backend: str = "auto"
    slide_mpp: float | None = None

    def __post_init__(self) -> None:
        if self.level is not None and self.mpp is not None:
            raise ValueError("give a level or a target mpp, not both")
        if self.level is not None and (
            isinstance(self.level, bool) or not isinstance(self.level, (int, np.integer)) or self.level < 0
        ):
            raise ValueError(f"level must be an integer >= 0, got {self.level!r}")
        _check_positive("mpp", self.mpp, allow_none=True)
        _check_positive("slide_mpp", self.slide_mpp, allow_none=True)
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.roi is not None:
            try:
                roi = tuple(float(v) for v in self.roi)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"roi must be 4 numbers (x, y, w, h) in level-0 pixels, got {self.roi!r}") from exc
            if len(roi) != 4 or not all(math.isfinite(v) for v in roi) or roi[2] <= 0 or roi[3] <= 0:
                raise ValueError(f"roi must be (x, y, w, h) in level-0 pixels with w, h > 0, got {self.roi!r}")
            object.__setattr__(self, "roi", roi)  # lists from JSON configs become a hashable tuple
        if self.level is not None:
            object.__setattr__(self, "level", int(self.level))


@dataclass(frozen=True)
class TileSettings:
    """How the region is cut into tiles and processed.

    Args:
        tile_size: tile side in working pixels (a multiple of the output tile, :class:`OutputSettings`).
        margin: context around each tile for post-processing; default three Sobel kernels of the watershed
            (63 px at 40x).
        tissue_detection: skip tiles without tissue (:mod:`coseg.wsi.tissue`).
        tissue_min_fraction: share of a tile's context that must be tissue, in ``[0, 1]``.
        memory_budget_mb: bound on the network's blending buffers and the streamed rows; sets the strip width.
        workers: worker processes that post-process tiles while the network runs in the main process, and write
            the label TIFFs (:mod:`coseg.wsi.workers`); 0: everything in the main process. ``None``: one per core
            but one, at most 4 (:func:`coseg.wsi.workers.default_workers`). The results do not depend on it.
        max_tiles: stop after this many tiles per process (resume later by running again).

    Raises:
        ValueError: a value out of range.
    """

    tile_size: int = 2048
    margin: int | None = None
    tissue_detection: bool = True
    tissue_min_fraction: float = 0.0
    memory_budget_mb: float = 2048.0
    workers: int | None = None
    max_tiles: int | None = None

    def __post_init__(self) -> None:
        _check_positive("tile_size", self.tile_size, integer=True)
        _check_positive("margin", self.margin, integer=True, allow_none=True)
        _check_bool("tissue_detection", self.tissue_detection)
        value = self.tissue_min_fraction
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
            raise ValueError(f"tissue_min_fraction must be a number in [0, 1], got {value!r}")
        _check_positive("memory_budget_mb", self.memory_budget_mb)
        if self.workers is not None and (
            isinstance(self.workers, bool) or not isinstance(self.workers, (int, np.integer)) or self.workers < 0
        ):
            raise ValueError(f"workers must be an integer >= 0 (or None: automatic), got {self.workers!r}")
        _check_positive("max_tiles", self.max_tiles, integer=True, allow_none=True)


@dataclass(frozen=True)
class OutputSettings:
    """What is written, and what happens to earlier work in the output folder.

    Args:
        output_tile: tile side of the output TIFFs (a multiple of 16).
        overview_size: longest side of the overlay picture and of the thumbnail used for tissue detection.
        region_max_size: tissue regions are outlined on the semantic map sampled so its longer side is at most this.
        region_min_um2: tissue regions and holes smaller than this (square micrometres) are left out of the outlines.
        keep_parts: keep the tile records after the outputs are written.
        overwrite: discard records of an earlier run with other settings, and recompute finished outputs.

    Raises:
        ValueError: a value out of range.
    """

    output_tile: int = 256
    overview_size: int = 2048
    region_max_size: int = 2048
    region_min_um2: float = 2500.0
    keep_parts: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        _check_positive("output_tile", self.output_tile, integer=True)
        if self.output_tile % 16:
            raise ValueError(f"output_tile must be a multiple of 16, got {self.output_tile}")
        _check_positive("overview_size", self.overview_size, integer=True)
        _check_positive("region_max_size", self.region_max_size, integer=True)
        _check_positive("region_min_um2", self.region_min_um2)
        _check_bool("keep_parts", self.keep_parts)
        _check_bool("overwrite", self.overwrite)


@dataclass(frozen=True)
class WindowSettings:
    """The network windows and their blending: those of the configured sliding-window inferer.

    Attributes:
        roi_size: window ``(h, w)``.
        overlap: ``(oy, ox)`` fractions.
        sw_batch_size: windows per network call.
        blend_mode: ``"gaussian"`` or ``"constant"``.
        sigma_scale: of the Gaussian blending.
        padding_mode: how regions smaller than a window are padded (only ``"constant"`` is supported there).
        cval: padding value.
        keep: network outputs kept at full resolution.
    """

    roi_size: tuple[int, int]
    overlap: tuple[float, float]
    sw_batch_size: int
    blend_mode: str
    sigma_scale: float | tuple[float, ...]
    padding_mode: str
    cval: float
    keep: tuple[str, ...]

    @classmethod
    def from_inferer(cls, inferer: Any) -> WindowSettings:
        """Read the settings of a MONAI ``SlidingWindowInferer`` (:class:`~coseg.inferers.CoSegSlidingWindowInferer`).

        Raises:
            TypeError: ``inferer`` is no sliding-window inferer.
            ValueError: its window is not 2D.
        """
        roi_size = getattr(inferer, "roi_size", None)
        if roi_size is None:
            raise TypeError(f"inferer must be a MONAI SlidingWindowInferer, got {type(inferer).__name__}")
        roi_size = (roi_size, roi_size) if isinstance(roi_size, (int, np.integer)) else tuple(roi_size)
        if len(roi_size) != 2:
            raise ValueError(f"the inferer's roi_size must be 2D, got {roi_size}")
        overlap = inferer.overlap
        sigma = inferer.sigma_scale
        return cls(
            roi_size=(int(roi_size[0]), int(roi_size[1])),
            overlap=(float(overlap), float(overlap)) if isinstance(overlap, numbers.Real) else tuple(overlap),
            sw_batch_size=int(inferer.sw_batch_size),
            blend_mode=str(getattr(inferer.mode, "value", inferer.mode)),
            sigma_scale=float(sigma) if isinstance(sigma, numbers.Real) else tuple(float(s) for s in sigma),
            padding_mode=str(getattr(inferer.padding_mode, "value", inferer.padding_mode)),
            cval=float(inferer.cval),
            keep=tuple(getattr(inferer, "keep", FULL_RESOLUTION_OUTPUTS)),
        )


#: argument name of :class:`~coseg.wsi.run.WholeSlideInferer` -> settings class
SETTINGS_GROUPS: dict[str, type] = {"reading": ReadSettings, "tiling": TileSettings, "outputs": OutputSettings}


def group_options(options: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Sort flat option names into the settings groups.

    Args:
        options: ``{name: value}``, names of fields of :class:`ReadSettings`, :class:`TileSettings` or
            :class:`OutputSettings`, or of other arguments of :class:`~coseg.wsi.run.WholeSlideInferer`.

    Returns:
        ``{"reading": {...}, "tiling": {...}, "outputs": {...}, "other": {...}}``: the fields of each group, and
        the names that belong to none.
    """
    owner = {f.name: group for group, cls in SETTINGS_GROUPS.items() for f in fields(cls)}
    out: dict[str, dict[str, Any]] = {group: {} for group in (*SETTINGS_GROUPS, "other")}
    for name, value in options.items():
        out[owner.get(name, "other")][name] = value
    return out
