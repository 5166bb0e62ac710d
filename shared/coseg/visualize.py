"""Overlay pictures: the image, semantic regions as a translucent fill, object contours coloured by type."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from coseg.constants import denormalize

__all__ = ["REGION_COLOURS", "TYPE_COLOURS", "denormalize", "instance_borders", "overlay"]

#: region fill colours by class index (0 = background, not filled)
REGION_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (255, 170, 0),
    (0, 170, 255),
    (170, 255, 0),
    (255, 0, 170),
    (0, 255, 170),
    (170, 0, 255),
)
#: contour colours by object type (0 unused)
TYPE_COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 255, 255),
    (230, 25, 25),
    (25, 200, 25),
    (30, 60, 255),
    (255, 225, 25),
    (0, 220, 220),
    (240, 50, 230),
)


def instance_borders(inst: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: object pixels with a 4-neighbour of another id (or background) — the inner contours."""
    inst = np.asarray(inst)
    p = np.pad(inst, 1, mode="edge")
    centre = p[1:-1, 1:-1]
    border = np.zeros(inst.shape, bool)
    for nb in (p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]):
        border |= nb != centre
    return border & (inst > 0)


def _colour(table: Sequence[tuple[int, int, int]], index: np.ndarray) -> np.ndarray:
    lut = np.asarray(table, np.uint8)
    return lut[np.asarray(index) % len(lut)]


def overlay(
    rgb: np.ndarray,
    sem: np.ndarray | None = None,
    inst: np.ndarray | None = None,
    types: np.ndarray | None = None,
    *,
    alpha: float = 0.3,
) -> np.ndarray:
    """Draw regions and object contours over an RGB image.

    Args:
        rgb: ``(H, W, 3)`` uint8.
        sem: ``(H, W)`` region classes; classes > 0 are tinted with :data:`REGION_COLOURS` at ``alpha``.
        inst: ``(H, W)`` instance ids; their contours are drawn in the colour of their type.
        types: ``(H, W)`` type per pixel (default: every object type 1).
        alpha: opacity of the region tint.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    out = np.asarray(rgb, np.uint8).copy()
    if out.ndim != 3 or out.shape[2] != 3:
        raise ValueError(f"overlay expects an (H, W, 3) image, got shape {out.shape}")
    if sem is not None:
        sem = np.asarray(sem)
        tint = sem > 0
        out[tint] = ((1 - alpha) * out[tint] + alpha * _colour(REGION_COLOURS, sem[tint])).astype(np.uint8)
    if inst is not None:
        inst = np.asarray(inst)
        border = instance_borders(inst)
        t = np.asarray(types) if types is not None else (inst > 0).astype(np.int64)
        out[border] = _colour(TYPE_COLOURS, t[border])
    return out
