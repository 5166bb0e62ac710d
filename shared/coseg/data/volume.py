"""From 3D volumes to model-size 2D slices and back, 3D tooth instances, FDI numbering and volume outputs.

Slicing rule (:class:`SliceGeometry`), used for training data and for inference alike:

1. **Anatomical reorientation.** The volume is viewed (no copy: transposes and flips only) in a canonical
   orientation chosen from its affine with nibabel's ``io_orientation``, never from array indices. For each
   slicing plane the canonical axes ``(through, rows, cols)`` point to (:data:`SLICE_AXES`):

   - ``axial``: ``S, P, L``: slices from inferior to superior, anterior at the top, patient right on the left
     of the image (radiological view from below);
   - ``coronal``: ``A, I, L``: superior at the top, patient right on the left;
   - ``sagittal``: ``L, I, P``: superior at the top, anterior on the left.

2. **Resize, then pad to a square.** A canonical slice of ``(H0, W0)`` pixels with spacing ``(sy, sx)`` mm is
   resized to ``(h, w)`` so that its larger PHYSICAL side fills ``size`` pixels and its physical aspect ratio
   is kept (``h = round(H0 sy k)``, ``w = round(W0 sx k)``, ``k = size / max(H0 sy, W0 sx)``), then padded
   symmetrically to ``(size, size)`` (``top = (size - h) // 2``, ``left = (size - w) // 2``; images padded with
   0 = the window's low end, labels with 0). Resizing first keeps anisotropic pixels (a coronal slice of a CT
   with thick slices) undistorted; for square pixels it equals padding to a square first. Images use area
   interpolation when shrinking and bilinear when enlarging; labels use centre-aligned nearest neighbour
   (row ``r`` of the output takes input row ``floor((r + 0.5) H0 / h)``).

3. **Inverse.** Crop the padding, resize ``(h, w) -> (H0, W0)`` (nearest for labels, bilinear for maps), undo
   the reorientation. When ``h >= H0`` and ``w >= W0`` the label round trip is exact (nearest up then nearest
   down returns every input pixel); :meth:`SliceGeometry.to_dict` stores everything the inverse needs.

Outputs are written on the input's exact voxel grid: NIfTI with the input's header (sform/qform codes kept) when
the input was NIfTI, else with sform = qform = the RAS affine (code 1, scanner), every file written to a
temporary name and renamed only once all of them are complete.
"""

from __future__ import annotations

import colorsys
import contextlib
import itertools
import json
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import cv2
import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform
from scipy import ndimage

from coseg.data.cbct import (
    FDI_TEETH,
    SEMANTIC_CLASSES,
    TOOTH_WIDTHS_MM,
    TOOTHFAIRY2_LABELS,
    TOOTHFAIRY2_REGION_IDS,
    Volume,
)

__all__ = [
    "SLICE_AXES",
    "UNNUMBERED_TOOTH_BASE",
    "SliceGeometry",
    "LinkedInstances",
    "DentalPrediction",
    "slice_geometry",
    "slices_to_volume",
    "apply_window",
    "make_model_slices",
    "link_instances_3d",
    "number_teeth_fdi",
    "assemble_dental_prediction",
    "combined_toothfairy2",
    "structure_summary",
    "render_montage",
    "write_nifti_like",
    "write_png",
    "write_json",
    "write_dental_outputs",
]

logger = logging.getLogger(__name__)

#: Canonical ``(through, rows, cols)`` axis codes of each slicing plane.
SLICE_AXES: dict[str, tuple[str, str, str]] = {
    "axial": ("S", "P", "L"),
    "coronal": ("A", "I", "L"),
    "sagittal": ("L", "I", "P"),
}

#: Teeth that the FDI heuristic cannot number (more than 8 on one side) get ids 101, 102, ... in tooth volumes.
UNNUMBERED_TOOTH_BASE = 100


def _nearest_index(n_out: int, n_in: int) -> np.ndarray:
    """Centre-aligned nearest-neighbour source index of each of ``n_out`` samples over ``n_in`` inputs."""
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.intp), n_in - 1)


@dataclass(frozen=True)
class SliceGeometry:
    """How one volume maps to model-size 2D slices and back (see the module docstring for the rule).

    Build it with :func:`slice_geometry`. Arrays in "canonical" layout are ``(N, H0, W0)`` stacks whose axes
    point to :data:`SLICE_AXES` ``[axis]``; model-size stacks are ``(N, size, size)``.

    Attributes:
        axis: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
        shape: shape of the input volume ``(I, J, K)``.
        ornt: nibabel orientation transform from the input's array axes to the canonical axes, ``(3, 2)``.
        canonical_shape: ``(N, H0, W0)``.
        canonical_spacing: ``(through, row, col)`` spacing in mm.
        size: model input side.
        resized_shape: ``(h, w)`` of the slice content before padding.
        pad: ``(top, left)`` padding; bottom and right padding fill up to ``size``.
    """

    axis: str
    shape: tuple[int, int, int]
    ornt: tuple[tuple[int, int], ...]
    canonical_shape: tuple[int, int, int]
    canonical_spacing: tuple[float, float, float]
    size: int
    resized_shape: tuple[int, int]
    pad: tuple[int, int]

    @property
    def num_slices(self) -> int:
        """Number of slices ``N`` along the slicing axis."""
        return self.canonical_shape[0]

    def _inverse_ornt(self) -> np.ndarray:
        """Orientation transform back to the input axes: canonical axis ``a_i`` returns to input axis ``i``."""
        inverse = np.empty((3, 2))
        for axis, (new_axis, flip) in enumerate(self.ornt):
            inverse[new_axis] = [axis, flip]
        return inverse

    def to_canonical(self, volume: np.ndarray) -> np.ndarray:
        """View an input-grid volume in canonical layout.

        Args:
            volume: ``(I, J, K, ...)`` with ``(I, J, K) == shape``; trailing axes are carried along.

        Returns:
            ``(N, H0, W0, ...)`` view (no copy).

        Raises:
            ValueError: on a shape mismatch.
        """
        volume = np.asarray(volume)
        if tuple(volume.shape[:3]) != self.shape:
            raise ValueError(f"volume shape {volume.shape[:3]} differs from the geometry's {self.shape}")
        return apply_orientation(volume, np.asarray(self.ornt, dtype=float))

    def from_canonical(self, stack: np.ndarray) -> np.ndarray:
        """Put a canonical stack back on the input grid (inverse of :meth:`to_canonical`).

        Args:
            stack: ``(N, H0, W0, ...)``.

        Returns:
            ``(I, J, K, ...)`` C-contiguous array on the input grid.

        Raises:
            ValueError: on a shape mismatch.
        """
        stack = np.asarray(stack)
        if tuple(stack.shape[:3]) != self.canonical_shape:
            raise ValueError(f"stack shape {stack.shape[:3]} differs from the canonical shape {self.canonical_shape}")
        return np.ascontiguousarray(apply_orientation(stack, self._inverse_ornt()))

    def canonical_to_model(
        self, stack: np.ndarray, *, kind: Literal["image", "label"], pad_value: float = 0.0
    ) -> np.ndarray:
        """Resize and pad canonical slices to the model size.

        Args:
            stack: ``(N, H0, W0)`` or ``(N, H0, W0, C)`` canonical slices (any ``N``).
            kind: ``"label"`` (nearest, dtype kept) or ``"image"`` (area/bilinear, float32 result).
            pad_value: fill value of the padding for images (labels are padded with 0).

        Returns:
            ``(N, size, size[, C])``.

        Raises:
            ValueError: on a bad ``kind`` or a slice shape other than ``(H0, W0)``.
        """
        stack = np.asarray(stack)
        if stack.ndim not in (3, 4) or tuple(stack.shape[1:3]) != self.canonical_shape[1:]:
            h0, w0 = self.canonical_shape[1:]
            raise ValueError(f"expected canonical slices (N, {h0}, {w0}[, C]), got {stack.shape}")
        (h, w), (top, left), (h0, w0) = self.resized_shape, self.pad, self.canonical_shape[1:]
        out_shape = (stack.shape[0], self.size, self.size) + stack.shape[3:]
        if kind == "label":
            out = np.zeros(out_shape, dtype=stack.dtype)
            rows, cols = _nearest_index(h, h0), _nearest_index(w, w0)
            out[:, top : top + h, left : left + w] = stack[:, rows][:, :, cols]
            return out
        if kind != "image":
            raise ValueError(f"kind must be 'image' or 'label', got {kind!r}")
        out = np.full(out_shape, pad_value, dtype=np.float32)
        interpolation = cv2.INTER_AREA if (h < h0 or w < w0) else cv2.INTER_LINEAR
        for n in range(stack.shape[0]):
            resized = cv2.resize(stack[n].astype(np.float32, copy=False), (w, h), interpolation=interpolation)
            out[n, top : top + h, left : left + w] = resized.reshape((h, w) + stack.shape[3:])
        return out

    def model_to_canonical(self, stack: np.ndarray, *, mode: Literal["nearest", "linear"] = "nearest") -> np.ndarray:
        """Crop the padding of model-size slices and resize them back to the canonical slice size.

        Args:
            stack: ``(N, size, size)`` or ``(N, size, size, C)`` with ``N == num_slices``.
            mode: ``"nearest"`` for labels (dtype kept), ``"linear"`` for continuous maps (float32).

        Returns:
            ``(N, H0, W0[, C])``.

        Raises:
            ValueError: on a bad ``mode`` or shape.
        """
        stack = np.asarray(stack)
        expected = (self.num_slices, self.size, self.size)
        if stack.ndim not in (3, 4) or tuple(stack.shape[:3]) != expected:
            raise ValueError(f"expected model-size slices {expected}[+(C,)], got {stack.shape}")
        (h, w), (top, left), (h0, w0) = self.resized_shape, self.pad, self.canonical_shape[1:]
        content = stack[:, top : top + h, left : left + w]
        if mode == "nearest":
            return np.ascontiguousarray(content[:, _nearest_index(h0, h)][:, :, _nearest_index(w0, w)])
        if mode != "linear":
            raise ValueError(f"mode must be 'nearest' or 'linear', got {mode!r}")
        out = np.empty((stack.shape[0], h0, w0) + stack.shape[3:], dtype=np.float32)
        for n in range(stack.shape[0]):
            resized = cv2.resize(content[n].astype(np.float32), (w0, h0), interpolation=cv2.INTER_LINEAR)
            out[n] = resized.reshape((h0, w0) + stack.shape[3:])
        return out

    def to_model(self, volume: np.ndarray, *, kind: Literal["image", "label"], pad_value: float = 0.0) -> np.ndarray:
        """Input-grid volume -> ``(N, size, size[, C])`` model-size slices (:meth:`to_canonical` then resize)."""
        return self.canonical_to_model(self.to_canonical(volume), kind=kind, pad_value=pad_value)

    def from_model(self, stack: np.ndarray, *, mode: Literal["nearest", "linear"] = "nearest") -> np.ndarray:
        """Model-size slices ``(N, size, size[, C])`` -> input-grid volume ``(I, J, K[, C])``."""
        return self.from_canonical(self.model_to_canonical(stack, mode=mode))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly description; :meth:`from_dict` rebuilds the geometry from it."""
        return {
            "axis": self.axis,
            "shape": list(self.shape),
            "ornt": [list(p) for p in self.ornt],
            "canonical_shape": list(self.canonical_shape),
            "canonical_spacing": list(self.canonical_spacing),
            "size": self.size,
            "resized_shape": list(self.resized_shape),
            "pad": list(self.pad),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SliceGeometry:
        """Rebuild a geometry written by :meth:`to_dict`.

        Raises:
            ValueError: if a key is missing or a value is inconsistent.
        """
        try:
            geometry = cls(
                axis=str(data["axis"]),
                shape=tuple(int(v) for v in data["shape"]),
                ornt=tuple((int(a), int(f)) for a, f in data["ornt"]),
                canonical_shape=tuple(int(v) for v in data["canonical_shape"]),
                canonical_spacing=tuple(float(v) for v in data["canonical_spacing"]),
                size=int(data["size"]),
                resized_shape=tuple(int(v) for v in data["resized_shape"]),
                pad=tuple(int(v) for v in data["pad"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a slice geometry description: {exc}") from exc
        axes = sorted(a for a, _ in geometry.ornt)
        if geometry.axis not in SLICE_AXES or axes != [0, 1, 2] or any(f not in (-1, 1) for _, f in geometry.ornt):
            raise ValueError(f"bad axis {geometry.axis!r} or orientation transform {geometry.ornt}")
        permuted = [0, 0, 0]
        for in_axis, (out_axis, _) in enumerate(geometry.ornt):
            permuted[out_axis] = geometry.shape[in_axis]
        (h, w), (top, left) = geometry.resized_shape, geometry.pad
        if (
            tuple(permuted) != geometry.canonical_shape
            or not (1 <= h <= geometry.size and 1 <= w <= geometry.size)
            or not (0 <= top <= geometry.size - h and 0 <= left <= geometry.size - w)
        ):
            raise ValueError("inconsistent slice geometry description")
        return geometry


def slice_geometry(
    shape: Sequence[int],
    affine: np.ndarray,
    *,
    axis: Literal["axial", "coronal", "sagittal"] = "axial",
    size: int = 256,
) -> SliceGeometry:
    """Slicing geometry of a volume.

    Args:
        shape: ``(I, J, K)`` of the volume.
        affine: ``(4, 4)`` voxel-to-RAS affine of the volume.
        axis: anatomical slicing plane, see :data:`SLICE_AXES`.
        size: side of the square model input, >= 8.

    Returns:
        the :class:`SliceGeometry`.

    Raises:
        ValueError: on a bad axis, size, shape or affine.
    """
    if axis not in SLICE_AXES:
        raise ValueError(f"axis must be one of {sorted(SLICE_AXES)}, got {axis!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    shape = tuple(int(v) for v in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be 3 positive sizes, got {shape}")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ValueError("affine must be a non-singular (4, 4) matrix")
    ornt = ornt_transform(io_orientation(affine), axcodes2ornt(SLICE_AXES[axis]))
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    canonical_shape = [0, 0, 0]
    canonical_spacing = [0.0, 0.0, 0.0]
    for in_axis, (out_axis, _) in enumerate(ornt):
        canonical_shape[int(out_axis)] = shape[in_axis]
        canonical_spacing[int(out_axis)] = float(spacing[in_axis])
    h0, w0 = canonical_shape[1:]
    extent_y, extent_x = h0 * canonical_spacing[1], w0 * canonical_spacing[2]
    scale = size / max(extent_y, extent_x)
    h = min(size, max(1, round(extent_y * scale)))
    w = min(size, max(1, round(extent_x * scale)))
    return SliceGeometry(
        axis=axis,
        shape=shape,
        ornt=tuple((int(a), int(f)) for a, f in ornt),
        canonical_shape=tuple(canonical_shape),
        canonical_spacing=tuple(canonical_spacing),
        size=int(size),
        resized_shape=(h, w),
        pad=((size - h) // 2, (size - w) // 2),
    )


def slices_to_volume(
    slices: np.ndarray, geometry: SliceGeometry, *, mode: Literal["nearest", "linear"] = "nearest"
) -> np.ndarray:
    """Reassemble model-size 2D predictions into a volume on the input grid (see :meth:`SliceGeometry.from_model`).

    Args:
        slices: ``(N, size, size)`` (or ``(N, size, size, C)``) predictions, one per slice in canonical order.
        geometry: the geometry the slices were made with.
        mode: ``"nearest"`` for label maps, ``"linear"`` for probability maps.

    Returns:
        ``(I, J, K[, C])`` array on the input voxel grid.
    """
    return geometry.from_model(slices, mode=mode)


def apply_window(values: np.ndarray, window: Sequence[float]) -> np.ndarray:
    """Clip intensities to ``window = (low, high)`` and scale them linearly to ``[0, 255]``.

    Args:
        values: intensities (e.g. HU), any shape.
        window: ``(low, high)`` with ``low < high``.

    Returns:
        float32 array of the same shape in ``[0, 255]``.

    Raises:
        ValueError: if the window is not two finite numbers with ``low < high``.
    """
    if len(window) != 2 or not all(math.isfinite(float(v)) for v in window) or float(window[0]) >= float(window[1]):
        raise ValueError(f"window must be (low, high) with low < high, got {tuple(window)}")
    low, high = float(window[0]), float(window[1])
    out = np.clip(np.asarray(values, dtype=np.float32), low, high)
    out -= low
    out *= 255.0 / (high - low)
    return out


def make_model_slices(
    image: np.ndarray,
    geometry: SliceGeometry,
    *,
    window: Sequence[float] = (-1000.0, 4000.0),
    channels: Literal["repeat", "adjacent"] = "repeat",
    slice_indices: Sequence[int] | None = None,
) -> np.ndarray:
    """Model input images of a volume: windowed, resized, padded, as RGB uint8.

    Args:
        image: ``(I, J, K)`` intensities on the geometry's input grid.
        geometry: from :func:`slice_geometry`.
        window: intensity window, see :func:`apply_window`.
        channels: ``"repeat"`` (the slice in all three channels, the paper's 2D setting) or ``"adjacent"``
            (canonical slices ``n - 1, n, n + 1`` as R, G, B; the end slices repeat at the borders; 2.5D).
        slice_indices: canonical slice indices to return (default: all ``N``).

    Returns:
        ``(len(slice_indices), size, size, 3)`` uint8.

    Raises:
        ValueError: on a bad ``channels``, window, index, or volume shape.
    """
    if channels not in ("repeat", "adjacent"):
        raise ValueError(f"channels must be 'repeat' or 'adjacent', got {channels!r}")
    canonical = geometry.to_canonical(image)
    n_total = geometry.num_slices
    indices = list(range(n_total)) if slice_indices is None else [int(i) for i in slice_indices]
    if any(i < 0 or i >= n_total for i in indices):
        raise ValueError(f"slice indices must lie in [0, {n_total}), got {indices}")
    cache: dict[int, np.ndarray] = {}

    def model_slice(n: int) -> np.ndarray:
        if n not in cache:
            windowed = apply_window(canonical[n][None], window)
            cache[n] = np.rint(geometry.canonical_to_model(windowed, kind="image")[0]).astype(np.uint8)
        return cache[n]

    out = np.empty((len(indices), geometry.size, geometry.size, 3), dtype=np.uint8)
    for k, n in enumerate(indices):
        if channels == "repeat":
            out[k] = model_slice(n)[..., None]
        else:
            for c, m in enumerate((max(n - 1, 0), n, min(n + 1, n_total - 1))):
                out[k, ..., c] = model_slice(m)
        for stale in [m for m in cache if m < n - 1]:
            del cache[stale]
    return out


class LinkedInstances(NamedTuple):
    """Result of :func:`link_instances_3d`: ``labels`` ``(D, H, W)`` int32 3D ids 1..n (0 background) and
    ``types`` 3D id -> majority instance type (0 when no typed voxel)."""

    labels: np.ndarray
    types: dict[int, int]


class _UnionFind:
    def __init__(self) -> None:
        self.parent = [0]
        self.birth = [0]

    def add(self, birth: int) -> int:
        self.parent.append(len(self.parent))
        self.birth.append(birth)
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, keep: int, other: int) -> int:
        keep, other = self.find(keep), self.find(other)
        if keep != other:
            self.parent[other] = keep
            self.birth[keep] = min(self.birth[keep], self.birth[other])
        return keep

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


def link_instances_3d(
    inst_slices: np.ndarray,
    type_slices: np.ndarray | None = None,
    *,
    min_overlap: float = 0.3,
    max_gap: int = 1,
    merge_young: int = 2,
    min_voxels: int = 0,
) -> LinkedInstances:
    """Give each object one id in 3D by linking per-slice instances across neighbouring slices.

    Slices are visited along axis 0. The reference for slice ``z`` holds, per pixel, the 3D id of the nearest
    of the previous ``max_gap + 1`` slices where that pixel was an object, so a tooth missed in up to
    ``max_gap`` slices keeps its id. A slice instance ``c`` and a 3D object ``t`` are *linked* when their
    overlap coefficient ``|c & t| / min(|c|, |t|)`` (pixels in this slice vs the reference) is at least
    ``min_overlap``. Then, per slice instance:

    - no link: a new 3D object starts;
    - one link: it joins that object; several pieces linked to one object all join it (a tooth split in one
      slice, or a molar's roots, stays one tooth);
    - several links: objects younger than ``merge_young`` slices are merged into one (the cusps of a molar
      meeting in its crown); if two or more *established* objects remain (two touching teeth predicted as one
      instance in this slice), the instance's pixels are split between them by the nearest reference pixel, so
      the teeth stay two.

    Every 3D object gets the majority type of its voxels (``type_slices``, 0 ignored). Objects with fewer
    than ``min_voxels`` voxels are removed and the rest renumbered 1..n in order of first appearance.

    Args:
        inst_slices: ``(D, H, W)`` integer per-slice instance ids (ids need not agree between slices).
        type_slices: ``(D, H, W)`` integer per-pixel types, or ``None``.
        min_overlap: link threshold in ``(0, 1]``.
        max_gap: number of empty slices an object may skip, >= 0.
        merge_young: age (slices) below which objects meeting in one instance are merged, >= 1.
        min_voxels: smallest 3D object kept, >= 0.

    Returns:
        :class:`LinkedInstances`.

    Raises:
        ValueError: on bad shapes, dtypes or parameter values.
    """
    inst = np.asarray(inst_slices)
    if inst.ndim != 3 or not np.issubdtype(inst.dtype, np.integer):
        raise ValueError(f"inst_slices must be a (D, H, W) integer array, got {inst.shape} {inst.dtype}")
    if type_slices is not None:
        type_slices = np.asarray(type_slices)
        if type_slices.shape != inst.shape or not np.issubdtype(type_slices.dtype, np.integer):
            raise ValueError(f"type_slices must be an integer array of shape {inst.shape}")
        if type_slices.size and type_slices.min() < 0:
            raise ValueError("type_slices must be >= 0")
    if not 0.0 < float(min_overlap) <= 1.0:
        raise ValueError(f"min_overlap must lie in (0, 1], got {min_overlap}")
    for name, value, low in (("max_gap", max_gap, 0), ("merge_young", merge_young, 1), ("min_voxels", min_voxels, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")

    depth = inst.shape[0]
    tracks = np.zeros(inst.shape, dtype=np.int32)
    uf = _UnionFind()
    for z in range(depth):
        cur = inst[z]
        fg = cur > 0
        if not fg.any():
            continue
        ref = np.zeros(cur.shape, dtype=np.int64)
        for s in range(max(0, z - max_gap - 1), z):  # oldest first: newer slices overwrite
            prev = tracks[s]
            ref[prev > 0] = prev[prev > 0]
        root_of = uf.roots()
        ref = root_of[ref]
        ids, compact = np.unique(cur[fg], return_inverse=True)
        local = np.zeros(cur.shape, dtype=np.int64)
        local[fg] = compact.ravel() + 1
        n_local = len(ids)
        area_local = np.bincount(local.ravel(), minlength=n_local + 1)
        area_ref = np.bincount(ref.ravel(), minlength=len(root_of))
        both = fg & (ref > 0)
        pair_keys, overlap = np.unique(local[both] * len(root_of) + ref[both], return_counts=True)
        candidates: dict[int, list[tuple[int, int]]] = {}
        for key, count in zip(pair_keys.tolist(), overlap.tolist()):
            c, t = divmod(key, len(root_of))
            if count / min(area_local[c], area_ref[t]) >= min_overlap:
                candidates.setdefault(c, []).append((t, count))
        assign = np.zeros(n_local + 1, dtype=np.int64)
        splits: list[tuple[int, list[int]]] = []
        for c in range(1, n_local + 1):
            links = candidates.get(c, [])
            if not links:
                assign[c] = uf.add(z)
                continue
            if len(links) == 1:
                assign[c] = uf.find(links[0][0])
                continue
            established = [t for t, _ in links if z - uf.birth[uf.find(t)] >= merge_young]
            if len(established) <= 1:
                oldest = min((t for t, _ in links), key=lambda t: uf.birth[uf.find(t)])
                keep = established[0] if established else oldest
                for t, _ in links:
                    keep = uf.union(keep, t)
                assign[c] = keep
                continue
            best = max(((t, n) for t, n in links if t in established), key=lambda p: p[1])[0]
            for t, _ in links:
                if t not in established:
                    uf.union(best, t)
            splits.append((c, established))
        labels_z = assign[local]
        for c, established in splits:
            labels_z[local == c] = _split_by_nearest(local == c, ref, [uf.find(t) for t in established], uf)
        tracks[z] = labels_z
    return _finish_linking(tracks, uf, type_slices, min_voxels)


def _split_by_nearest(mask: np.ndarray, ref: np.ndarray, owners: list[int], uf: _UnionFind) -> np.ndarray:
    """Values for ``mask``'s pixels: the owner (root id) of the nearest reference pixel of one of ``owners``."""
    rows, cols = np.nonzero(mask)
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    sub_roots = uf.roots()[ref[box]]
    seeds = np.isin(sub_roots, owners)
    _, (ii, jj) = ndimage.distance_transform_edt(~seeds, return_indices=True)
    return sub_roots[ii, jj][mask[box]]


def _finish_linking(
    tracks: np.ndarray, uf: _UnionFind, type_slices: np.ndarray | None, min_voxels: int
) -> LinkedInstances:
    root_of = uf.roots().astype(np.int32)
    roots = root_of[tracks]
    sizes = np.bincount(roots.ravel(), minlength=len(root_of))
    keep = [r for r in np.flatnonzero(sizes).tolist() if r > 0 and sizes[r] >= max(min_voxels, 1)]
    keep.sort(key=lambda r: (uf.birth[r], r))  # order of first appearance along axis 0
    relabel = np.zeros(len(root_of), dtype=np.int32)
    relabel[keep] = np.arange(1, len(keep) + 1, dtype=np.int32)
    labels = relabel[roots]
    types = {i: 0 for i in range(1, len(keep) + 1)}
    if keep and type_slices is not None:
        fg = labels > 0
        n_types = int(type_slices.max()) + 1
        votes = np.bincount(
            labels[fg].astype(np.int64) * n_types + type_slices[fg].astype(np.int64),
            minlength=(len(keep) + 1) * n_types,
        ).reshape(len(keep) + 1, n_types)
        votes[:, 0] = 0
        for i in range(1, len(keep) + 1):
            types[i] = int(np.argmax(votes[i])) if votes[i].any() else 0
    return LinkedInstances(labels=labels, types=types)


def _voxel_stats(labels: np.ndarray, *, boxes: bool = True) -> tuple[np.ndarray, np.ndarray, list | None]:
    """Voxel counts, per-axis index sums (``(3, n)``) and bounding boxes of every id, slice by slice (bounded
    memory on large volumes)."""
    n = int(labels.max(initial=0)) + 1
    counts = np.zeros(n, dtype=np.int64)
    sums = np.zeros((3, n))
    jj, kk = np.indices(labels.shape[1:])
    for i in range(labels.shape[0]):
        plane = labels[i].ravel().astype(np.int64)
        c = np.bincount(plane, minlength=n)
        counts += c
        sums[0] += c * i
        sums[1] += np.bincount(plane, weights=jj.ravel(), minlength=n)
        sums[2] += np.bincount(plane, weights=kk.ravel(), minlength=n)
    return counts, sums, (ndimage.find_objects(labels) if boxes else None)


def _centroids(labels: np.ndarray, ids: Sequence[int]) -> dict[int, np.ndarray]:
    """Voxel-index centroid of each of ``ids`` present in ``labels``."""
    counts, sums, _ = _voxel_stats(labels, boxes=False)
    return {i: sums[:, i] / counts[i] for i in ids if 0 < i < len(counts) and counts[i] > 0}


# numpy 2 has it in numpy.exceptions only, numpy 1.x (MONAI Label's environment) at the top level only
_RANK_WARNING = getattr(getattr(np, "exceptions", None), "RankWarning", None) or np.RankWarning


def _arch_midline(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Midline point ``(x0, y0)`` of an arch from tooth centroids (x: RAS left-right, y: RAS anterior).

    A parabola ``y = a x^2 + b x + c`` is fitted (an arch opens posteriorly, so ``a < 0``) and its apex is the
    midline point; when the fit is not an arch (fewer than 3 teeth, ``a >= 0``, apex outside the teeth) the middle
    of the teeth's left-right extent and their most anterior ``y`` are used.
    """
    fallback = (float((x.min() + x.max()) / 2), float(y.max()))
    if len(x) < 3 or np.ptp(x) < 1e-6:
        return fallback
    with warnings.catch_warnings():
        # few or nearly collinear teeth make the fit poorly conditioned: the checks below reject such fits
        warnings.simplefilter("ignore", _RANK_WARNING)
        a, b, c = np.polyfit(x, y, 2)
    if a >= 0:
        return fallback
    apex = -b / (2 * a)
    if not x.min() <= apex <= x.max():
        return fallback
    return float(apex), float(a * apex**2 + b * apex + c)


def _arch_positions(steps: list[np.ndarray], centres: np.ndarray, scale: float) -> list[int]:
    """Tooth positions (1..8) of the teeth of one side from the distances walked along the arch.

    ``steps[0]`` is the distance from the midline point to the first tooth, ``steps[i]`` the distance between teeth
    ``i - 1`` and ``i``; ``centres`` are the template distances of positions 1..8 from the midline. Each tooth
    takes the position whose template distance from the previous tooth (``scale`` times) is closest to the
    walked distance, leaving room for the teeth still to come.
    """
    positions: list[int] = []
    previous = 0.0
    count = len(steps)
    for i, step in enumerate(steps):
        first = positions[-1] + 1 if positions else 1
        last = len(centres) - (count - i - 1)
        options = np.arange(first, last + 1)
        expected = scale * (centres[options - 1] - previous)
        chosen = int(options[np.argmin(np.abs(expected - float(step)))])
        positions.append(chosen)
        previous = centres[chosen - 1]
    return positions


def number_teeth_fdi(teeth: np.ndarray, types: Mapping[int, int], affine: np.ndarray) -> dict[int, int | None]:
    """FDI numbers for 3D teeth from their jaw (type) and position: a documented HEURISTIC.

    The network predicts only upper/lower teeth; numbers come from geometry:

    1. Tooth centroids go to RAS millimetres; teeth of type 0 join the jaw whose mean height (RAS ``z``) is nearer.
    2. Per jaw, the midline point is the apex of a parabola fitted to the centroids in the axial plane; teeth with
       RAS ``x`` above it are on the patient's right (quadrant 1 upper, 4 lower), the others on the left (2, 3).
    3. Per side, teeth are ordered along the arch by the angle, seen from the arch's mean centroid, between the
       anterior direction and the tooth (incisors first, molars last).
    4. Positions 1..8 come from the distances walked along the arch (midline point -> first tooth -> next tooth
       ...) compared with a template of average crown widths (:data:`coseg.data.cbct.TOOTH_WIDTHS_MM`) scaled by
       the jaw's median ratio of neighbour distance to template distance: a walk much longer than the next
       template step skips a missing tooth. With no gap, teeth are simply numbered 1, 2, 3 ... from the midline.

    Teeth that drifted into a gap, or many missing teeth, mislead step 4; a side with more than 8 teeth gets
    ``None`` for the ones beyond the eighth.

    Args:
        teeth: ``(I, J, K)`` integer 3D tooth ids (0 background).
        types: id -> type (1 upper, 2 lower, 0 unknown) for the ids to number.
        affine: ``(4, 4)`` voxel-to-RAS affine of ``teeth``.

    Returns:
        id -> FDI number, or ``None`` for teeth the heuristic cannot number.

    Raises:
        ValueError: on a bad affine or a type outside {0, 1, 2}.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be (4, 4), got {affine.shape}")
    bad = {i: t for i, t in types.items() if t not in (0, 1, 2)}
    if bad:
        raise ValueError(f"tooth types must be 0, 1 or 2, got {bad}")
    centres = _centroids(np.asarray(teeth), list(types))
    world = {i: affine[:3, :3] @ c + affine[:3, 3] for i, c in centres.items()}
    jaw = {i: types[i] for i in world if types[i] in (1, 2)}
    untyped = [i for i in world if types[i] == 0]
    if untyped:
        heights = {t: [world[i][2] for i in jaw if jaw[i] == t] for t in (1, 2)}
        if heights[1] and heights[2]:
            ref_up, ref_low = np.mean(heights[1]), np.mean(heights[2])
        else:
            mid = float(np.median([w[2] for w in world.values()]))
            ref_up, ref_low = mid + 1.0, mid - 1.0
        for i in untyped:
            jaw[i] = 1 if abs(world[i][2] - ref_up) <= abs(world[i][2] - ref_low) else 2
    numbers: dict[int, int | None] = {i: None for i in types}
    for jaw_type, (right_q, left_q) in ((1, (1, 2)), (2, (4, 3))):
        members = [i for i in jaw if jaw[i] == jaw_type]
        if not members:
            continue
        widths = np.asarray(TOOTH_WIDTHS_MM[jaw_type])
        template = np.cumsum(widths) - widths / 2
        x = np.array([world[i][0] for i in members])
        y = np.array([world[i][1] for i in members])
        x0, y0 = _arch_midline(x, y)
        angle = np.arctan2(np.abs(x - x0), y - float(y.mean()))
        walks: dict[int, tuple[list[int], list[np.ndarray]]] = {}
        ratios: list[float] = []
        for quadrant, side in ((right_q, x > x0), (left_q, x <= x0)):
            order = [members[k] for k in np.flatnonzero(side)[np.argsort(angle[side], kind="stable")]]
            points = [np.array([x0, y0])] + [world[i][:2] for i in order]
            steps = [float(np.linalg.norm(b - a)) for a, b in zip(points[:-1], points[1:])]
            walks[quadrant] = (order, steps)
            ratios += [steps[k] / (template[k] - template[k - 1]) for k in range(1, min(len(steps), len(template)))]
        scale = float(np.median(ratios)) if ratios else 1.0
        for quadrant, (order, steps) in walks.items():
            if len(order) > len(template):
                logger.warning(
                    "%d teeth on the side of quadrant %d; the extra ones stay unnumbered", len(order), quadrant
                )
                positions = list(range(1, len(template) + 1))
            elif ratios:
                positions = _arch_positions(steps, template, scale)
            else:
                positions = list(range(1, len(order) + 1))
            for tooth, position in zip(order, positions):
                numbers[tooth] = 10 * quadrant + position
    return numbers


@dataclass(frozen=True)
class DentalPrediction:
    """A dental CBCT prediction on the input voxel grid.

    Attributes:
        semantic: ``(I, J, K)`` uint8 classes of :data:`coseg.data.cbct.SEMANTIC_CLASSES`.
        teeth: ``(I, J, K)`` uint16 tooth ids: FDI numbers, or ``UNNUMBERED_TOOTH_BASE + k`` for teeth the FDI
            heuristic could not number.
        tooth_types: tooth id -> type (1 upper, 2 lower, 0 unknown).
    """

    semantic: np.ndarray
    teeth: np.ndarray
    tooth_types: dict[int, int]


def assemble_dental_prediction(
    sem_slices: np.ndarray,
    inst_slices: np.ndarray,
    type_slices: np.ndarray,
    geometry: SliceGeometry,
    affine: np.ndarray,
    *,
    min_overlap: float = 0.3,
    max_gap: int = 1,
    merge_young: int = 2,
    min_tooth_voxels: int = 0,
) -> DentalPrediction:
    """Turn per-slice model outputs into a 3D prediction on the input grid.

    Model-size label maps are resized back (nearest) to canonical slices, per-slice tooth instances are linked
    in 3D along the slicing axis (:func:`link_instances_3d`), the volumes are put back on the input grid and the
    teeth numbered (:func:`number_teeth_fdi`).

    Args:
        sem_slices: ``(N, size, size)`` semantic classes per slice.
        inst_slices: ``(N, size, size)`` per-slice instance ids.
        type_slices: ``(N, size, size)`` per-pixel instance types (1 upper, 2 lower).
        geometry: the slicing geometry of the volume.
        affine: ``(4, 4)`` voxel-to-RAS affine of the input volume.
        min_overlap, max_gap, merge_young: see :func:`link_instances_3d`.
        min_tooth_voxels: 3D teeth smaller than this (input-grid voxels after reassembly) are dropped.

    Returns:
        :class:`DentalPrediction`.

    Raises:
        ValueError: on shape mismatches or bad parameters.
    """
    if (
        isinstance(min_tooth_voxels, bool)
        or not isinstance(min_tooth_voxels, (int, np.integer))
        or min_tooth_voxels < 0
    ):
        raise ValueError(f"min_tooth_voxels must be an integer >= 0, got {min_tooth_voxels!r}")
    for name, arr in (("sem_slices", sem_slices), ("inst_slices", inst_slices), ("type_slices", type_slices)):
        if np.asarray(arr).shape != (geometry.num_slices, geometry.size, geometry.size):
            raise ValueError(f"{name} must be {(geometry.num_slices, geometry.size, geometry.size)}, got {arr.shape}")
    semantic = geometry.from_model(np.asarray(sem_slices).astype(np.uint8, copy=False))
    inst_c = geometry.model_to_canonical(np.asarray(inst_slices))
    type_c = geometry.model_to_canonical(np.asarray(type_slices))
    linked = link_instances_3d(inst_c, type_c, min_overlap=min_overlap, max_gap=max_gap, merge_young=merge_young)
    teeth_ids = geometry.from_canonical(linked.labels)
    types = dict(linked.types)
    if min_tooth_voxels > 0:
        sizes = np.bincount(teeth_ids.ravel(), minlength=len(linked.types) + 1)
        lut = np.arange(len(sizes), dtype=np.int32)
        for i in [i for i in types if sizes[i] < min_tooth_voxels]:
            lut[i] = 0
            del types[i]
        teeth_ids = lut[teeth_ids]
    numbers = number_teeth_fdi(teeth_ids, types, affine)
    lut = np.zeros(len(linked.types) + 1, dtype=np.uint16)
    final_types: dict[int, int] = {}
    spare = UNNUMBERED_TOOTH_BASE
    for i in sorted(types):
        fdi = numbers.get(i)
        if fdi is None:
            spare += 1
            fdi = spare
        lut[i] = fdi
        final_types[fdi] = types[i]
    return DentalPrediction(semantic=semantic, teeth=lut[teeth_ids], tooth_types=final_types)


def combined_toothfairy2(semantic: np.ndarray, teeth: np.ndarray) -> np.ndarray:
    """One label volume in ToothFairy2 ids: 1 lower jawbone, 2 upper jawbone, 7 pharynx, teeth by FDI number.

    Teeth take precedence over regions; teeth without an FDI number (ids > 48) are left out.

    Args:
        semantic: ``(I, J, K)`` semantic classes 0..3.
        teeth: ``(I, J, K)`` tooth ids (FDI numbers).

    Returns:
        ``(I, J, K)`` uint8.

    Raises:
        ValueError: on mismatched shapes or semantic classes outside 0..3.
    """
    semantic, teeth = np.asarray(semantic), np.asarray(teeth)
    if semantic.shape != teeth.shape:
        raise ValueError(f"semantic {semantic.shape} and teeth {teeth.shape} shapes differ")
    if semantic.size and (semantic.min() < 0 or semantic.max() >= len(SEMANTIC_CLASSES)):
        raise ValueError(f"semantic classes must lie in 0..{len(SEMANTIC_CLASSES) - 1}")
    region_lut = np.zeros(len(SEMANTIC_CLASSES), dtype=np.uint8)
    for cls, tf2 in TOOTHFAIRY2_REGION_IDS.items():
        region_lut[cls] = tf2
    out = region_lut[semantic]
    tooth_lut = np.zeros(int(teeth.max(initial=0)) + 1, dtype=np.uint8)
    for fdi in FDI_TEETH:
        if fdi < len(tooth_lut):
            tooth_lut[fdi] = fdi
    numbered = tooth_lut[teeth]
    out[numbered > 0] = numbered[numbered > 0]
    return out


_TF2_NAMES = {v: k for k, v in TOOTHFAIRY2_LABELS.items()}


def _to_world(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ affine[:3, :3].T + affine[:3, 3]


def structure_summary(semantic: np.ndarray, teeth: np.ndarray, affine: np.ndarray) -> dict[str, Any]:
    """Per-structure statistics of a dental prediction.

    Args:
        semantic: ``(I, J, K)`` semantic classes.
        teeth: ``(I, J, K)`` tooth ids (FDI, or > 100 unnumbered).
        affine: ``(4, 4)`` voxel-to-RAS affine.

    Returns:
        ``{"shape", "spacing_mm", "voxel_volume_mm3", "fdi_numbering", "structures": [...]}``; each structure has
        ``name``, ``kind`` (``region``/``tooth``), ``id`` (its value in the written volume), ``toothfairy2_id``
        (``None`` for unnumbered teeth), ``voxels``, ``volume_mm3``, ``centroid_mm`` (RAS), ``bbox_voxels``
        (``min``/``max`` inclusive voxel indices) and ``bbox_mm`` (RAS box enclosing the voxels' corners).

    Raises:
        ValueError: on mismatched shapes.
    """
    semantic, teeth = np.asarray(semantic), np.asarray(teeth)
    if semantic.shape != teeth.shape:
        raise ValueError(f"semantic {semantic.shape} and teeth {teeth.shape} shapes differ")
    affine = np.asarray(affine, dtype=np.float64)
    voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))
    structures: list[dict[str, Any]] = []
    for kind, labels in (("region", semantic), ("tooth", teeth)):
        counts, sums, boxes = _voxel_stats(labels)
        for value in np.flatnonzero(counts).tolist():
            if value == 0:
                continue
            if kind == "region":
                tf2: int | None = TOOTHFAIRY2_REGION_IDS.get(value)
                name = SEMANTIC_CLASSES.get(value, f"class {value}")
            else:
                tf2 = value if value in FDI_TEETH else None
                name = _TF2_NAMES[value] if tf2 is not None else f"unnumbered tooth {value - UNNUMBERED_TOOTH_BASE}"
            box = boxes[value - 1]
            low = np.array([s.start for s in box], dtype=float)
            high = np.array([s.stop - 1 for s in box], dtype=float)
            corners = np.array(list(itertools.product(*zip(low - 0.5, high + 0.5))))
            world = _to_world(affine, corners)
            structures.append(
                {
                    "name": name,
                    "kind": kind,
                    "id": int(value),
                    "toothfairy2_id": tf2,
                    "voxels": int(counts[value]),
                    "volume_mm3": round(float(counts[value]) * voxel_mm3, 3),
                    "centroid_mm": [round(float(v), 3) for v in _to_world(affine, sums[:, value] / counts[value])],
                    "bbox_voxels": {"min": [int(v) for v in low], "max": [int(v) for v in high]},
                    "bbox_mm": {
                        "min": [round(float(v), 3) for v in world.min(axis=0)],
                        "max": [round(float(v), 3) for v in world.max(axis=0)],
                    },
                }
            )
    return {
        "shape": [int(v) for v in semantic.shape],
        "spacing_mm": [round(float(v), 6) for v in np.linalg.norm(affine[:3, :3], axis=0)],
        "voxel_volume_mm3": voxel_mm3,
        "fdi_numbering": "heuristic: jaw from the predicted tooth type, side from the arch midline, "
        "order along the arch from the midline outward (a missing tooth shifts the numbers behind it)",
        "structures": structures,
    }


def _label_color(value: int) -> tuple[int, int, int]:
    fixed = {1: (230, 190, 60), 2: (90, 170, 240), 7: (200, 80, 220)}
    if value in fixed:
        return fixed[value]
    hue = (value * 0.618034) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 1.0)
    return int(255 * r), int(255 * g), int(255 * b)


def render_montage(
    image: np.ndarray,
    labels: np.ndarray,
    affine: np.ndarray,
    *,
    num_slices: int = 6,
    columns: int = 3,
    tile_size: int = 256,
    window: Sequence[float] = (-1000.0, 4000.0),
    alpha: float = 0.45,
) -> np.ndarray:
    """A grid of axial slices with labels drawn over the windowed scan.

    Slices are spread evenly over the labelled extent (the whole volume when nothing is labelled), shown in
    the canonical axial orientation (anterior up, patient right on the left).

    Args:
        image: ``(I, J, K)`` intensities.
        labels: ``(I, J, K)`` label ids (colours: fixed for ToothFairy2 regions, one hue per other id).
        affine: ``(4, 4)`` voxel-to-RAS affine.
        num_slices: number of tiles, >= 1.
        columns: tiles per row, >= 1.
        tile_size: tile side in pixels, >= 8.
        window: intensity window.
        alpha: label opacity in ``[0, 1]``.

    Returns:
        ``(rows * tile_size, columns * tile_size, 3)`` uint8 RGB.

    Raises:
        ValueError: on bad parameters or mismatched shapes.
    """
    image, labels = np.asarray(image), np.asarray(labels)
    if image.shape != labels.shape or image.ndim != 3:
        raise ValueError(f"image {image.shape} and labels {labels.shape} must be equal 3D shapes")
    if num_slices < 1 or columns < 1:
        raise ValueError(f"num_slices and columns must be >= 1, got {num_slices}, {columns}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    geometry = slice_geometry(image.shape, affine, axis="axial", size=tile_size)
    canon_labels = geometry.to_canonical(labels)
    labelled = np.flatnonzero(canon_labels.reshape(geometry.num_slices, -1).any(axis=1))
    first, last = (labelled[0], labelled[-1]) if labelled.size else (0, geometry.num_slices - 1)
    picks = np.unique(np.linspace(first, last, num_slices + 2)[1:-1].round().astype(int))
    grey = make_model_slices(image, geometry, window=window, channels="repeat", slice_indices=picks.tolist())
    lab = geometry.canonical_to_model(canon_labels[picks], kind="label")
    palette = np.zeros((int(labels.max(initial=0)) + 1, 3), dtype=np.float32)
    for value in range(1, len(palette)):
        palette[value] = _label_color(value)
    rows = math.ceil(len(picks) / columns)
    out = np.zeros((rows * tile_size, columns * tile_size, 3), dtype=np.uint8)
    for k, n in enumerate(picks):
        tile = grey[k].astype(np.float32)
        mask = lab[k] > 0
        tile[mask] = (1 - alpha) * tile[mask] + alpha * palette[lab[k][mask]]
        tile = np.ascontiguousarray(tile.round().astype(np.uint8))
        cv2.putText(tile, f"slice {n}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        r, c = divmod(k, columns)
        out[r * tile_size : (r + 1) * tile_size, c * tile_size : (c + 1) * tile_size] = tile
    return out


@contextlib.contextmanager
def _temporary_sibling(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` with the same suffixes (writers pick formats by suffix); removed on error."""
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _nifti_image(array: np.ndarray, reference: Volume) -> nib.Nifti1Image:
    if reference.nifti_header is not None:
        header = reference.nifti_header.copy()
        header.set_data_dtype(array.dtype)
        header.set_slope_inter(1.0, 0.0)
        header["cal_min"], header["cal_max"] = 0.0, 0.0
        image = nib.Nifti1Image(array, reference.affine, header=header)
    else:
        image = nib.Nifti1Image(array, reference.affine)
        image.set_sform(reference.affine, code=1)
        image.set_qform(reference.affine, code=1)
        image.header.set_xyzt_units("mm")
    image.header.set_intent("label")
    return image


def _check_on_grid(array: np.ndarray, reference: Volume) -> np.ndarray:
    array = np.asarray(array)
    if array.shape != reference.array.shape:
        raise ValueError(f"array shape {array.shape} differs from the reference volume's {reference.array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"label volumes must be integer arrays, got {array.dtype}")
    high = int(array.max(initial=0))
    dtype = np.uint8 if high < 2**8 else np.uint16 if high < 2**16 else np.uint32
    return np.ascontiguousarray(array.astype(dtype, copy=False))


def write_nifti_like(path: str | os.PathLike, array: np.ndarray, reference: Volume) -> Path:
    """Write a label volume as NIfTI on the reference volume's exact grid, atomically.

    The reference's NIfTI header is reused when it has one (sform/qform and their codes unchanged; scaling
    reset); otherwise sform = qform = the reference's RAS affine with code 1 (scanner).

    Args:
        path: output file ending in ``.nii`` or ``.nii.gz``.
        array: ``(I, J, K)`` integer labels on the reference grid (stored as the smallest unsigned dtype).
        reference: the input volume.

    Returns:
        the written path.

    Raises:
        ValueError: on a bad suffix, shape or dtype.
    """
    path = Path(path)
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        raise ValueError(f"NIfTI output must end in .nii or .nii.gz, got {path.name}")
    image = _nifti_image(_check_on_grid(array, reference), reference)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _temporary_sibling(path) as tmp:
        nib.save(image, tmp)
        os.replace(tmp, path)
    return path


def _png_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8:
        array = array[..., ::-1]  # OpenCV encodes BGR
    elif array.ndim != 2 or array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG data must be (H, W) uint8/uint16 or (H, W, 3) uint8, got {array.shape} {array.dtype}")
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(array))
    if not ok:
        raise ValueError("PNG encoding failed")
    return encoded.tobytes()


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with _temporary_sibling(path) as tmp:
        tmp.write_bytes(data)
        os.replace(tmp, path)


def write_png(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write an RGB uint8 image ``(H, W, 3)`` or a uint8/uint16 label map ``(H, W)`` as PNG, atomically.

    Raises:
        ValueError: on other shapes or dtypes.
    """
    path = Path(path)
    _write_bytes(path, _png_bytes(array))
    return path


def write_json(path: str | os.PathLike, content: Any) -> Path:
    """Write JSON (indented, UTF-8) atomically."""
    path = Path(path)
    _write_bytes(path, (json.dumps(content, indent=2) + "\n").encode("utf-8"))
    return path


def write_dental_outputs(
    out_dir: str | os.PathLike,
    prediction: DentalPrediction,
    reference: Volume,
    *,
    prefix: str | None = None,
    montage: bool = True,
    window: Sequence[float] = (-1000.0, 4000.0),
) -> dict[str, Path]:
    """Write a dental prediction for users: label volumes on the scan's grid, a JSON summary and a PNG montage.

    Files (``<p>`` = ``prefix``, by default the reference file's case name without ``_0000`` and extension):
    ``<p>_semantic.nii.gz`` (1 lower jawbone, 2 upper jawbone, 3 pharynx), ``<p>_teeth.nii.gz`` (FDI ids),
    ``<p>_toothfairy2.nii.gz`` (:func:`combined_toothfairy2`), ``<p>_summary.json`` (:func:`structure_summary`)
    and ``<p>_montage.png`` (:func:`render_montage`). Everything is computed and written to temporary files
    first; the final names appear only once every file is complete.

    Args:
        out_dir: output folder (created).
        prediction: from :func:`assemble_dental_prediction`.
        reference: the input image volume (grid, affine, header).
        prefix: file name prefix.
        montage: write the PNG montage.
        window: intensity window of the montage.

    Returns:
        kind (``semantic``, ``teeth``, ``toothfairy2``, ``summary``, ``montage``) -> written path.

    Raises:
        ValueError: if the prediction does not lie on the reference grid.
    """
    out_dir = Path(out_dir)
    if prefix is None:
        name = Path(reference.path).name
        for suffix in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr"):
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
        prefix = name[:-5] if name.endswith("_0000") else name
    semantic = _check_on_grid(prediction.semantic, reference)
    teeth = _check_on_grid(prediction.teeth, reference)
    combined = combined_toothfairy2(semantic, teeth)
    summary = structure_summary(semantic, teeth, reference.affine)
    summary["tooth_types"] = {str(k): v for k, v in sorted(prediction.tooth_types.items())}
    payload: dict[str, Any] = {
        "semantic": _nifti_image(semantic, reference),
        "teeth": _nifti_image(teeth, reference),
        "toothfairy2": _nifti_image(combined, reference),
        "summary": (json.dumps(summary, indent=2) + "\n").encode("utf-8"),
    }
    names = {
        "semantic": f"{prefix}_semantic.nii.gz",
        "teeth": f"{prefix}_teeth.nii.gz",
        "toothfairy2": f"{prefix}_toothfairy2.nii.gz",
        "summary": f"{prefix}_summary.json",
    }
    if montage:
        payload["montage"] = _png_bytes(render_montage(reference.array, combined, reference.affine, window=window))
        names["montage"] = f"{prefix}_montage.png"
    out_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        temps: dict[str, Path] = {}
        for key, content in payload.items():
            tmp = stack.enter_context(_temporary_sibling(out_dir / names[key]))
            if isinstance(content, bytes):
                tmp.write_bytes(content)
            else:
                nib.save(content, tmp)
            temps[key] = tmp
        for key, tmp in temps.items():
            os.replace(tmp, out_dir / names[key])
    return {key: out_dir / names[key] for key in names}
