"""Semantic label maps from the semantic output: argmax and removal of small regions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from skimage.measure import label as label_regions

from coseg.postprocess._inputs import as_float_array

__all__ = ["FILL_MODES", "remove_small_regions", "semantic_map"]

FILL_MODES = ("neighbours", "background")

_Index = tuple[slice, slice]

_SHIFTS = {
    1: ((0, 1), (1, 0)),
    2: ((0, 1), (1, 0), (1, 1), (1, -1)),
}


def _neighbour_views(shape: tuple[int, int], connectivity: int) -> Iterator[tuple[_Index, _Index]]:
    """Yield slice pairs ``(a, b)`` such that ``x[a]`` and ``x[b]`` are neighbouring pixels (each pair once)."""
    height, width = shape
    for dy, dx in _SHIFTS[connectivity]:
        a = (slice(0, height - dy), slice(max(0, -dx), width - max(0, dx)))
        b = (slice(dy, height), slice(max(0, dx), width - max(0, -dx)))
        yield a, b


def remove_small_regions(
    label_map: Any,
    *,
    min_size: int,
    connectivity: int = 1,
    fill: str = "neighbours",
    include_background: bool = False,
) -> np.ndarray:
    """Replace connected regions smaller than ``min_size`` pixels, class by class.

    A region is a connected set of pixels of one label (``connectivity`` 1: 4-neighbours, 2: 8-neighbours).
    Every region of a foreground label (and of label 0 too when ``include_background``) with fewer than
    ``min_size`` pixels is removed at once, then filled:

    - ``fill="neighbours"``: the whole region takes the label that shares the longest boundary with it
      among the pixels that are kept (ties: the lower label). A removed region touching only other removed
      regions takes its label from them once they are filled (repeated until all are filled); a region with
      no kept pixel anywhere in the image becomes 0.
    - ``fill="background"``: the region becomes 0.

    Args:
        label_map: ``(H, W)`` integer label map (numpy array or torch tensor), 0 = background.
        min_size: regions with fewer pixels are removed (>= 1; 1 removes nothing).
        connectivity: 1 or 2, for the regions and for "touching" in the neighbour fill.
        fill: ``"neighbours"`` or ``"background"``.
        include_background: also remove small regions of label 0 (fills small holes).

    Returns:
        ``(H, W)`` int32 label map (a new array).

    Raises:
        ValueError: for a non-2D or non-integer map, negative labels or bad arguments.
    """
    if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 1:
        raise ValueError(f"min_size must be an integer >= 1, got {min_size!r}")
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 or 2, got {connectivity!r}")
    if fill not in FILL_MODES:
        raise ValueError(f"fill must be one of {FILL_MODES}, got {fill!r}")
    labels = label_map.detach().cpu().numpy() if hasattr(label_map, "detach") else np.asarray(label_map)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"label_map must be a 2D integer array, got {labels.dtype} of shape {labels.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError("label_map has negative labels")
    out = labels.astype(np.int32, copy=True)
    if min_size <= 1 or out.size == 0:
        return out

    regions, num = label_regions(out, background=-1, connectivity=connectivity, return_num=True)
    sizes = np.bincount(regions.ravel(), minlength=num + 1)
    region_label = np.zeros(num + 1, dtype=np.int64)
    region_label[regions.ravel()] = out.ravel()
    small = sizes < min_size
    small[0] = False  # label_regions numbers from 1; index 0 is unused
    if not include_background:
        small &= region_label != 0
    if not small.any():
        return out
    removed = small[regions]
    if fill == "background":
        out[removed] = 0
        return out

    views = list(_neighbour_views(out.shape, connectivity))
    num_labels = int(out.max()) + 1
    pending = removed.copy()
    while pending.any():
        # votes of kept pixels for the removed regions they touch, weighted by shared boundary length
        vote_region, vote_label = [], []
        for a, b in views:
            for src, dst in ((a, b), (b, a)):
                hit = pending[dst] & ~pending[src]
                vote_region.append(regions[dst][hit])
                vote_label.append(out[src][hit])
        regions_voted = np.concatenate(vote_region).astype(np.int64)
        if regions_voted.size == 0:
            break  # no kept pixel touches what is left: it becomes background below
        votes = np.bincount(
            regions_voted * num_labels + np.concatenate(vote_label), minlength=(num + 1) * num_labels
        ).reshape(num + 1, num_labels)
        new_label = np.where(votes.sum(axis=1) > 0, votes.argmax(axis=1), -1)
        assign = pending & (new_label[regions] >= 0)
        out[assign] = new_label[regions[assign]]
        pending &= ~assign
    out[pending] = 0
    return out


def semantic_map(
    sem: Any,
    *,
    min_size: int = 1,
    connectivity: int = 1,
    fill: str = "neighbours",
) -> np.ndarray:
    """Semantic label map: argmax over classes, then optional removal of small regions.

    Args:
        sem: ``(S, H, W)`` semantic logits or probabilities, channel 0 background (numpy or torch, any device).
            Only the argmax is used, so no activation is needed.
        min_size: regions of a foreground class with fewer pixels are replaced (see
            :func:`remove_small_regions`); 1 (default) keeps everything.
        connectivity: 1 (4-neighbours) or 2 (8-neighbours).
        fill: ``"neighbours"`` (label sharing the longest boundary) or ``"background"``.

    Returns:
        ``(H, W)`` int32 class map.

    Raises:
        ValueError: for a non-3D input, fewer than 1 channel, non-finite values or bad arguments.
    """
    scores = as_float_array(sem, "sem")
    if scores.ndim != 3 or scores.shape[0] < 1:
        raise ValueError(f"sem must be (S, H, W) with S >= 1 class channels, got shape {scores.shape}")
    classes = scores.argmax(axis=0).astype(np.int32)
    return remove_small_regions(classes, min_size=min_size, connectivity=connectivity, fill=fill)
