"""Tissue detection on a slide thumbnail, to skip tiles of empty glass.

The rule is deliberately conservative (a tile is skipped only when nothing in or near it looks like tissue): a
thumbnail pixel is **background** when it is both bright and unsaturated (glass, ``grey >= bright`` and HSV
``saturation <= max_saturation``, on a 0-255 scale); everything else (stained tissue, pale stroma, dark debris)
counts as tissue. Specks smaller than ``min_speck`` thumbnail pixels are ignored, then the tissue is grown by the
tiles' margin so that an object reaching into a tile from a neighbour keeps that tile. Otsu thresholds, common in
slide tools, split tissue-only regions (no glass at all) into two classes; a fixed glass rule cannot.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy import ndimage

from coseg.wsi.tiling import TilePlan

__all__ = ["tissue_mask", "active_tiles"]


def tissue_mask(
    rgb: np.ndarray,
    *,
    bright: int = 210,
    max_saturation: int = 25,
    min_speck: int = 4,
) -> np.ndarray:
    """Tissue pixels of an RGB thumbnail.

    Args:
        rgb: ``(h, w, 3)`` uint8.
        bright: grey level at or above which an unsaturated pixel is glass (0-255).
        max_saturation: HSV saturation (0-255) at or below which a bright pixel is glass.
        min_speck: tissue pieces with fewer pixels are dropped (dust, noise).

    Returns:
        ``(h, w)`` bool.

    Raises:
        ValueError: for a non-RGB array or out-of-range thresholds.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be an (h, w, 3) uint8 array, got {rgb.dtype} {rgb.shape}")
    for name, value in (("bright", bright), ("max_saturation", max_saturation)):
        if not 0 <= int(value) <= 255:
            raise ValueError(f"{name} must be in [0, 255], got {value!r}")
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    saturation = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]
    tissue = ~((grey >= bright) & (saturation <= max_saturation))
    if min_speck > 1 and tissue.any():
        labels, n = ndimage.label(tissue)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        keep = sizes >= min_speck
        keep[0] = False
        tissue = keep[labels]
    return tissue


def active_tiles(
    plan: TilePlan, tissue: np.ndarray, factor: float, *, min_fraction: float = 0.0
) -> list[tuple[int, int]]:
    """The tiles to process: those whose core, with the tissue grown by the margin, holds more than ``min_fraction``
    tissue (so a tile next to tissue is kept when an object could reach into it).

    Args:
        plan: the tile plan.
        tissue: ``(h, w)`` bool tissue mask of the region's thumbnail.
        factor: region pixels per thumbnail pixel.
        min_fraction: share of the core that must be (grown) tissue (0: any tissue at all).

    Returns:
        the active tiles in :meth:`TilePlan.tiles` order.
    """
    if not 0.0 <= min_fraction < 1.0:
        raise ValueError(f"min_fraction must be in [0, 1), got {min_fraction!r}")
    # grow by the margin (in thumbnail pixels) and by one pixel for the rounding of the boxes below
    grow = int(math.ceil(plan.margin / factor)) + 1
    if grow > 0 and tissue.any():
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * grow + 1, 2 * grow + 1))
        tissue = cv2.dilate(tissue.astype(np.uint8), kernel).astype(bool)
    integral = np.pad(tissue.astype(np.int64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    th, tw = tissue.shape
    out = []
    for row, col in plan.tiles():
        box = plan.core(row, col)
        y0, x0 = min(th - 1, int(box.y0 / factor)), min(tw - 1, int(box.x0 / factor))
        y1, x1 = (
            max(y0 + 1, min(th, int(math.ceil(box.y1 / factor)))),
            max(x0 + 1, min(tw, int(math.ceil(box.x1 / factor)))),
        )
        count = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
        if count > min_fraction * (y1 - y0) * (x1 - x0):
            out.append((row, col))
    return out
