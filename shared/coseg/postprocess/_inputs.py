"""Input conversion shared by the post-processing functions: torch / numpy to float32 numpy, activations."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.special import expit

__all__ = ["ACTIVATIONS", "as_float_array", "check_activation", "object_probability"]

ACTIVATIONS = ("softmax", "sigmoid", None)


def as_float_array(value: Any, name: str) -> np.ndarray:
    """A torch tensor (any device, any real dtype) or array-like as a float32 numpy array, checked finite.

    Args:
        value: tensor or array-like.
        name: the argument's name, for error messages.

    Returns:
        float32 numpy array (a copy only when a conversion is needed).

    Raises:
        TypeError: for values that are not real numbers (strings, complex, objects).
        ValueError: for NaN or infinite values.
    """
    if isinstance(value, torch.Tensor):
        if value.is_complex():
            raise TypeError(f"{name} must be real, got a complex tensor")
        array = value.detach().to(device="cpu", dtype=torch.float32).numpy()
    else:
        array = np.asarray(value)
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.iscomplexobj(array):
            raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
        array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def check_activation(activation: str | None) -> None:
    """Raise ``ValueError`` unless ``activation`` is ``"softmax"``, ``"sigmoid"`` or ``None``."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def object_probability(binary: np.ndarray, activation: str | None) -> np.ndarray:
    """Object probability ``(H, W)`` from a ``(C, H, W)`` binary output (C = 1 or 2, object channel last).

    Args:
        binary: ``(2, H, W)`` (background, object) or ``(1, H, W)`` (object) float array.
        activation: ``"softmax"`` over the 2 channels (``sigmoid(object - background)``), ``"sigmoid"`` of the
            object channel, or ``None`` for a probability already.

    Returns:
        ``(H, W)`` float32 probabilities.

    Raises:
        ValueError: for a channel count other than 1 or 2, or softmax on one channel.
    """
    check_activation(activation)
    if binary.ndim != 3 or binary.shape[0] not in (1, 2):
        raise ValueError(
            f"binary must have 1 (object) or 2 (background, object) channels as (C, H, W), got shape {binary.shape}"
        )
    if activation == "softmax":
        if binary.shape[0] != 2:
            raise ValueError("activation='softmax' needs 2 binary channels (background, object), got 1")
        # softmax over two channels is the sigmoid of their difference (no exp overflow)
        return expit(binary[1] - binary[0]).astype(np.float32, copy=False)
    if activation == "sigmoid":
        return expit(binary[-1]).astype(np.float32, copy=False)
    return binary[-1]
