"""Synthetic instance maps and the network outputs that would describe them perfectly.

Used by the post-processing tests and benchmark (and usable by any other test): an instance map of
random ellipses, some of them deliberately TOUCHING (no background pixel between them) in pairs and
clusters, and the "perfect" ``inst_binary`` / ``inst_hv`` / ``inst_type`` outputs a network would give for it.
The HV maps come from MONAI's :class:`monai.transforms.ComputeHoVerMaps`, the definition the training
targets use.
"""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np
from monai.transforms import ComputeHoVerMaps
from monai.utils import convert_to_numpy
from scipy import ndimage

from coseg.keys import OutputKeys

__all__ = ["random_ellipse_instances", "random_instance_types", "perfect_outputs"]

logger = logging.getLogger(__name__)

_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    if len(shape) != 2 or any(int(s) != s or s < 1 for s in shape):
        raise ValueError(f"shape must be two positive integers (H, W), got {shape!r}")
    return int(shape[0]), int(shape[1])


def random_ellipse_instances(
    shape: tuple[int, int],
    num_objects: int,
    *,
    radius_range: tuple[float, float] = (5.0, 10.0),
    touching_fraction: float = 0.4,
    min_area: int = 12,
    max_overlap: float = 0.3,
    inside: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """Draw random, partly touching ellipses into an instance map.

    Each ellipse gets random semi-axes in ``radius_range`` and a random angle. With probability
    ``touching_fraction`` it is placed against an already drawn object (centre distance about the sum of
    the two radii), which produces touching pairs and, by chaining, clusters; otherwise its centre is
    uniform in the image. A new ellipse only takes pixels that are still background, so touching objects
    share a boundary without overlapping. An ellipse is rejected (and another one drawn) when more than
    ``max_overlap`` of it falls on earlier objects, when fewer than ``min_area`` pixels remain, or when the
    remaining pixels are not one 4-connected piece; every object in the result is therefore one
    4-connected region of at least ``min_area`` pixels.

    Args:
        shape: ``(H, W)`` of the map.
        num_objects: how many objects to draw (>= 0). If the image fills up before that, fewer are drawn
            and a warning is logged.
        radius_range: ``(min, max)`` semi-axis length in pixels, ``0 < min <= max``. The default 5-10 px gives
            nucleus sizes of 40x scans (CoNSeP: median area ~190 px, quartiles ~110 and ~290 px).
        touching_fraction: probability in ``[0, 1]`` that an object is placed against an existing one.
        min_area: smallest object area in pixels (>= 1).
        max_overlap: largest fraction in ``[0, 1)`` of a new ellipse allowed to fall on earlier objects.
        inside: keep every object off the outermost rows and columns, so that none is cut by the image
            border (by default objects may be cut, as in tiles).
        seed: seed of the random generator (same seed, same map).

    Returns:
        ``(H, W)`` int32 instance map, ids ``1..n`` contiguous in drawing order, 0 = background.

    Raises:
        ValueError: for a bad shape or an argument out of range.
    """
    height, width = _check_shape(shape)
    if int(num_objects) != num_objects or num_objects < 0:
        raise ValueError(f"num_objects must be a non-negative integer, got {num_objects!r}")
    r_min, r_max = (float(r) for r in radius_range)
    if not 0 < r_min <= r_max:
        raise ValueError(f"radius_range must satisfy 0 < min <= max, got {radius_range!r}")
    if not 0.0 <= touching_fraction <= 1.0:
        raise ValueError(f"touching_fraction must be in [0, 1], got {touching_fraction!r}")
    if int(min_area) != min_area or min_area < 1:
        raise ValueError(f"min_area must be a positive integer, got {min_area!r}")
    if not 0.0 <= max_overlap < 1.0:
        raise ValueError(f"max_overlap must be in [0, 1), got {max_overlap!r}")

    rng = np.random.default_rng(seed)
    inst = np.zeros((height, width), dtype=np.int32)
    centres: list[tuple[float, float, float]] = []  # (x, y, mean radius) of the drawn objects
    pad = int(math.ceil(r_max)) + 2
    attempts, max_attempts = 0, 50 * max(int(num_objects), 1)
    while len(centres) < num_objects and attempts < max_attempts:
        attempts += 1
        ax_a, ax_b = rng.uniform(r_min, r_max, size=2)
        angle = float(rng.uniform(0.0, 180.0))
        if centres and rng.random() < touching_fraction:
            px, py, pr = centres[int(rng.integers(len(centres)))]
            theta = rng.uniform(0.0, 2.0 * math.pi)
            dist = 0.85 * (pr + 0.5 * (ax_a + ax_b))
            cx, cy = px + dist * math.cos(theta), py + dist * math.sin(theta)
        else:
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        # draw the ellipse into a local window only (whole-image drawing would cost O(H*W) per object)
        x0, y0 = int(cx) - pad, int(cy) - pad
        window = np.zeros((2 * pad + 1, 2 * pad + 1), dtype=np.uint8)
        cv2.ellipse(
            window,
            (int(round(cx)) - x0, int(round(cy)) - y0),
            (int(round(ax_a)), int(round(ax_b))),
            angle,
            0.0,
            360.0,
            color=1,
            thickness=-1,
        )
        wy0, wx0 = max(0, -y0), max(0, -x0)
        iy0, ix0 = max(0, y0), max(0, x0)
        iy1, ix1 = min(height, y0 + window.shape[0]), min(width, x0 + window.shape[1])
        if iy1 <= iy0 or ix1 <= ix0:
            continue
        ellipse = window[wy0 : wy0 + iy1 - iy0, wx0 : wx0 + ix1 - ix0].astype(bool)
        region = inst[iy0:iy1, ix0:ix1]
        total = int(ellipse.sum())
        if total == 0:
            continue
        if inside:
            on_edge = (
                (iy0 == 0 and ellipse[0].any())
                or (iy1 == height and ellipse[-1].any())
                or (ix0 == 0 and ellipse[:, 0].any())
                or (ix1 == width and ellipse[:, -1].any())
            )
            if on_edge or total < int(np.count_nonzero(window)):
                continue
        free = ellipse & (region == 0)
        n_free = int(free.sum())
        if n_free < min_area or (total - n_free) > max_overlap * total:
            continue
        if ndimage.label(free, structure=_FOUR_CONNECTED)[1] != 1:
            continue
        region[free] = len(centres) + 1
        centres.append((cx, cy, 0.5 * (ax_a + ax_b)))
    if len(centres) < num_objects:
        logger.warning("drew %d of %d objects: the %dx%d image is too full", len(centres), num_objects, height, width)
    return inst


def random_instance_types(inst_map: np.ndarray, num_types: int, *, seed: int = 0) -> np.ndarray:
    """Give every instance a random type and paint it into a per-pixel type map.

    Args:
        inst_map: ``(H, W)`` integer instance map, 0 = background.
        num_types: number of type channels including background (>= 2); types are drawn from
            ``1..num_types - 1``.
        seed: seed of the random generator.

    Returns:
        ``(H, W)`` int32 type map: the type of each pixel's instance, 0 on background.

    Raises:
        ValueError: for a non-2D or non-integer map, or ``num_types < 2``.
    """
    inst_map = np.asarray(inst_map)
    if inst_map.ndim != 2 or not np.issubdtype(inst_map.dtype, np.integer):
        raise ValueError(f"inst_map must be a 2D integer array, got {inst_map.dtype} of shape {inst_map.shape}")
    if int(num_types) != num_types or num_types < 2:
        raise ValueError(f"num_types must be an integer >= 2 (background + types), got {num_types!r}")
    rng = np.random.default_rng(seed)
    lut = rng.integers(1, num_types, size=int(inst_map.max(initial=0)) + 1).astype(np.int32)
    lut[0] = 0
    return lut[np.clip(inst_map, 0, None)]


def perfect_outputs(
    inst_map: np.ndarray,
    type_map: np.ndarray | None = None,
    *,
    num_types: int = 2,
    logit: float = 10.0,
) -> dict[str, np.ndarray]:
    """The outputs a perfect network would give for an instance map (no batch dimension).

    Args:
        inst_map: ``(H, W)`` integer instance map, 0 = background.
        type_map: optional ``(H, W)`` integer type map in ``0..num_types - 1``; when omitted every object
            pixel has type 1.
        num_types: number of type channels including background (>= 2).
        logit: magnitude of the logits (> 0): the true channel gets ``+logit``, the others ``-logit``.

    Returns:
        dict with ``OutputKeys.INST_BINARY`` ``(2, H, W)`` logits (background, object),
        ``OutputKeys.INST_HV`` ``(2, H, W)`` MONAI ``ComputeHoVerMaps`` maps (horizontal, vertical) and
        ``OutputKeys.INST_TYPE`` ``(num_types, H, W)`` logits, all float32.

    Raises:
        ValueError: for mismatched shapes or out-of-range values.
    """
    inst_map = np.asarray(inst_map)
    if inst_map.ndim != 2 or not np.issubdtype(inst_map.dtype, np.integer):
        raise ValueError(f"inst_map must be a 2D integer array, got {inst_map.dtype} of shape {inst_map.shape}")
    if int(num_types) != num_types or num_types < 2:
        raise ValueError(f"num_types must be an integer >= 2 (background + types), got {num_types!r}")
    if not logit > 0:
        raise ValueError(f"logit must be positive, got {logit!r}")
    fg = inst_map > 0
    if type_map is None:
        type_map = fg.astype(np.int64)
    type_map = np.asarray(type_map)
    if type_map.shape != inst_map.shape:
        raise ValueError(f"type_map shape {type_map.shape} differs from inst_map shape {inst_map.shape}")
    if type_map.min(initial=0) < 0 or type_map.max(initial=0) >= num_types:
        raise ValueError(f"type_map values must lie in [0, {num_types - 1}]")
    binary = np.where(np.stack([~fg, fg]), logit, -logit).astype(np.float32)
    hv = convert_to_numpy(ComputeHoVerMaps()(inst_map[None].astype(np.int64)), dtype=np.float32)
    types = np.full((num_types, *inst_map.shape), -logit, dtype=np.float32)
    np.put_along_axis(types, type_map[None].astype(np.int64), logit, axis=0)
    return {OutputKeys.INST_BINARY: binary, OutputKeys.INST_HV: hv, OutputKeys.INST_TYPE: types}
