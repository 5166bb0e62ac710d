"""Keeping instances whole when an instance map is resampled by nearest neighbour.

Shrinking an instance map by nearest-neighbour sampling loses any instance that falls between the sampled pixels
(a nucleus narrower than the sampling step) and can cut a thin or curved one into pieces. Enlarging it cannot do
either (every pixel is kept, neighbours stay neighbours). :func:`keep_instances_whole` repairs a resampled map
against the original: a lost instance comes back as one pixel where its centre lands, a piece cut off an instance
that was connected is given to the background (the largest piece stays), and what cannot be repaired is reported.
The distance maps of the horizontal/vertical task are computed afterwards, on the repaired map.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

__all__ = ["ResizedInstances", "keep_instances_whole"]

#: 8-connectivity: instances touching at a corner are one piece
_CONNECTIVITY = np.ones((3, 3), dtype=bool)

#: where to look for a free pixel around a lost instance's centre, nearest first
_NEIGHBOURS = sorted(((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)), key=lambda o: (o[0] ** 2 + o[1] ** 2, o))


@dataclass
class ResizedInstances:
    """The result of :func:`keep_instances_whole`.

    Attributes:
        inst: the repaired instance map ``(h, w)``.
        types: the type map ``(h, w)`` repaired alike (``None`` when none was given).
        restored: ids of instances the resampling lost, put back as one pixel.
        trimmed: ids of connected instances the resampling cut into pieces; all but the largest piece went to the
            background.
        lost: ids that could not be put back (every pixel near their centre belongs to another instance).
    """

    inst: np.ndarray
    types: np.ndarray | None
    restored: list[int] = field(default_factory=list)
    trimmed: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)


def _pieces(mask: np.ndarray) -> tuple[np.ndarray, int]:
    return ndimage.label(mask, structure=_CONNECTIVITY)


def keep_instances_whole(
    original: np.ndarray,
    resized: np.ndarray,
    *,
    original_types: np.ndarray | None = None,
    resized_types: np.ndarray | None = None,
) -> ResizedInstances:
    """Repair a nearest-neighbour resampling of an instance map so that no instance vanishes or splits.

    Args:
        original: ``(H, W)`` integer instance ids, 0 background.
        resized: ``(h, w)`` the same map resampled by nearest neighbour (pixel centres aligned, e.g. MONAI's
            ``nearest-exact``).
        original_types: ``(H, W)`` type of each instance pixel (the type of a restored pixel comes from here).
        resized_types: ``(h, w)`` the type map resampled alike; repaired with the instances.

    Returns:
        A :class:`ResizedInstances` (new arrays; the inputs are not modified).

    Raises:
        ValueError: maps that are not 2D, or type maps without their instance map's shape.
    """
    if original.ndim != 2 or resized.ndim != 2:
        raise ValueError(f"instance maps must be 2D, got {original.shape} and {resized.shape}")
    if (original_types is None) != (resized_types is None):
        raise ValueError("give both type maps (original and resized) or neither")
    if original_types is not None and (original_types.shape != original.shape or resized_types.shape != resized.shape):
        raise ValueError(
            f"type maps {original_types.shape} / {resized_types.shape} do not match the instance maps "
            f"{original.shape} / {resized.shape}"
        )
    inst = np.array(resized, copy=True)
    types = None if resized_types is None else np.array(resized_types, copy=True)
    result = ResizedInstances(inst=inst, types=types)
    if resized.shape[0] >= original.shape[0] and resized.shape[1] >= original.shape[1]:
        return result  # enlarging keeps every pixel and every neighbourhood: nothing to repair
    orig = np.asarray(original).astype(np.int64, copy=False)
    scale = np.array(resized.shape, dtype=np.float64) / np.array(original.shape, dtype=np.float64)

    # pieces: an instance connected before and cut by the sampling keeps its largest piece
    boxes = ndimage.find_objects(inst.astype(np.int64, copy=False))
    orig_boxes = ndimage.find_objects(orig)
    for index, box in enumerate(boxes):
        if box is None:
            continue
        ident = index + 1
        labels, n = _pieces(inst[box] == ident)
        if n < 2 or ident > len(orig_boxes) or orig_boxes[ident - 1] is None:
            continue
        if _pieces(orig[orig_boxes[ident - 1]] == ident)[1] > 1:
            continue  # already in pieces before: not the sampling's doing
        sizes = np.bincount(labels.ravel())[1:]
        drop = (labels > 0) & (labels != int(np.argmax(sizes)) + 1)
        inst[box][drop] = 0
        if types is not None:
            types[box][drop] = 0
        result.trimmed.append(ident)

    # lost instances: one pixel where the centre lands, or the nearest free pixel around it
    ids = np.unique(orig)
    missing = np.setdiff1d(ids[ids > 0], np.unique(inst))
    if missing.size:
        centres = ndimage.center_of_mass(np.ones_like(orig), orig, missing)
        kinds = None if original_types is None else ndimage.maximum(original_types, orig, missing)
        h, w = inst.shape
        for k, (ident, centre) in enumerate(zip(missing.tolist(), centres)):
            y, x = (min(max(int(round((c + 0.5) * s - 0.5)), 0), n - 1) for c, s, n in zip(centre, scale, (h, w)))
            spot = next(
                (
                    (y + dy, x + dx)
                    for dy, dx in _NEIGHBOURS
                    if 0 <= y + dy < h and 0 <= x + dx < w and inst[y + dy, x + dx] == 0
                ),
                None,
            )
            if spot is None:
                result.lost.append(ident)
                continue
            inst[spot] = ident
            if types is not None:
                types[spot] = kinds[k]
            result.restored.append(ident)
    return result
