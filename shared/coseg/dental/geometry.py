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

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

__all__ = ["SLICE_AXES", "SliceGeometry", "slice_geometry", "slices_to_volume", "apply_window", "make_model_slices"]


#: Canonical ``(through, rows, cols)`` axis codes of each slicing plane.
SLICE_AXES: dict[str, tuple[str, str, str]] = {
    "axial": ("S", "P", "L"),
    "coronal": ("A", "I", "L"),
    "sagittal": ("L", "I", "P"),
}


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
