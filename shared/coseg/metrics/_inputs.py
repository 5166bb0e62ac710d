"""Checks and conversions shared by the metric modules (label maps, spacing, reductions)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "ArrayLike",
    "REDUCTIONS",
    "as_label_map",
    "check_empty_value",
    "check_num_classes",
    "check_reduction",
    "check_spacing",
    "check_same_shape",
]

ArrayLike = np.ndarray | torch.Tensor

REDUCTIONS = ("per_image_mean", "pooled")


def as_label_map(x: object, name: str, *, ndims: Sequence[int] | None = (2, 3)) -> np.ndarray:
    """Return an integer label map as a non-negative ``int64`` numpy array.

    Args:
        x: numpy array or torch tensor (any device) of integer ids; booleans are read as 0/1; floating point arrays
            are accepted only when every value is a finite whole number (for example ids stored as float32).
        name: argument name used in error messages.
        ndims: allowed numbers of dimensions, or ``None`` for any.

    Returns:
        ``int64`` array with the shape of ``x``.

    Raises:
        TypeError: when ``x`` is not an array/tensor or has a non-numeric dtype.
        ValueError: when the number of dimensions is not allowed, values are not whole numbers, or are negative.
    """
    if isinstance(x, torch.Tensor):
        arr = x.detach().cpu().numpy()
    elif isinstance(x, np.ndarray):
        arr = x
    else:
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}.")
    if ndims is not None and arr.ndim not in tuple(ndims):
        raise ValueError(f"{name} must have {' or '.join(str(d) for d in ndims)} dimensions, got shape {arr.shape}.")
    kind = arr.dtype.kind
    if kind == "b":
        return arr.astype(np.int64)
    if kind in "iu":
        if kind == "i" and arr.size and arr.min() < 0:
            raise ValueError(f"{name} has negative ids (min {int(arr.min())}); ids must be >= 0 (0 = background).")
        if kind == "u" and arr.dtype.itemsize >= 8 and arr.size and arr.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{name} has ids above the int64 range.")
        return arr.astype(np.int64, copy=False)
    if kind == "f":
        if arr.size:
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} has NaN or infinite values; expected whole-number ids.")
            if not np.array_equal(arr, np.floor(arr)):
                raise ValueError(f"{name} is a float array with non-integer values; expected whole-number ids.")
            if arr.min() < 0:
                raise ValueError(f"{name} has negative ids (min {arr.min()}); ids must be >= 0 (0 = background).")
            if arr.max() > 2.0**53:
                raise ValueError(f"{name} has ids above 2**53 that a float array cannot hold exactly.")
        return arr.astype(np.int64)
    raise TypeError(f"{name} must hold integer, boolean or whole-number float values, got dtype {arr.dtype}.")


def check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` when two arrays differ in shape."""
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {a.shape} and {b.shape}.")


def check_empty_value(value: object, name: str = "empty_value") -> float:
    """Return ``value`` as a float (NaN allowed) or raise ``TypeError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a float (NaN allowed), got {type(value).__name__}.")
    return float(value)


def check_num_classes(num_classes: object, *, minimum: int = 2) -> int:
    """Return ``num_classes`` as an int or raise (``TypeError`` / ``ValueError``); background counts as a class."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__}.")
    if num_classes < minimum:
        raise ValueError(f"num_classes must be >= {minimum} (background included), got {num_classes}.")
    return int(num_classes)


def check_reduction(reduction: object) -> str:
    """Return ``reduction`` if it is one of :data:`REDUCTIONS`, else raise ``ValueError``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}.")
    return str(reduction)


def check_spacing(spacing: object, spatial_dims: int) -> list[float] | None:
    """Return the pixel/voxel spacing as a list of ``spatial_dims`` positive floats (``None`` = unit spacing).

    Args:
        spacing: ``None``, one positive number (isotropic) or a sequence with one positive number per spatial axis,
            in array axis order.
        spatial_dims: number of spatial dimensions.

    Raises:
        TypeError: when ``spacing`` is not a number or a sequence of numbers.
        ValueError: when its length does not match ``spatial_dims`` or a value is not positive and finite.
    """
    if spacing is None:
        return None
    if isinstance(spacing, (int, float, np.integer, np.floating)) and not isinstance(spacing, bool):
        values = [float(spacing)] * spatial_dims
    elif isinstance(spacing, (Sequence, np.ndarray, torch.Tensor)) and not isinstance(spacing, str):
        items = spacing.reshape(-1).tolist() if isinstance(spacing, (np.ndarray, torch.Tensor)) else list(spacing)
        values = []
        for v in items:
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise TypeError(f"spacing values must be numbers, got {type(v).__name__}.")
            values.append(float(v))
        if len(values) != spatial_dims:
            raise ValueError(f"spacing must have {spatial_dims} values (one per spatial axis), got {len(values)}.")
    else:
        raise TypeError(f"spacing must be None, a number or a sequence of numbers, got {type(spacing).__name__}.")
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing values must be positive and finite, got {values}.")
    return values
