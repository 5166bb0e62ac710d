"""Constants defined once for the whole package, and the one SAM2 input normalisation built from them."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["PIXEL_MEAN", "PIXEL_STD", "normalize", "denormalize"]

#: SAM2 was trained on RGB images scaled to [0, 1] and normalised with the ImageNet mean and std
#: (``sam2/utils/transforms.py``: ``Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))``).
PIXEL_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
PIXEL_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def normalize(image: Any) -> Any:
    """RGB in [0, 255], channels first (``(..., 3, H, W)``), to SAM2's network input (float32).

    Works on ``torch.Tensor`` (kept on its device; a MONAI ``MetaTensor`` keeps its meta data) and numpy arrays.

    Raises:
        ValueError: the channel axis (third from last) does not hold 3 channels.
    """
    if image.ndim < 3 or image.shape[-3] != 3:
        raise ValueError(f"expected RGB channels first (..., 3, H, W), got shape {tuple(image.shape)}")
    mean = np.asarray(PIXEL_MEAN, np.float32).reshape(3, 1, 1) * 255.0
    std = np.asarray(PIXEL_STD, np.float32).reshape(3, 1, 1) * 255.0
    if isinstance(image, np.ndarray):
        return (image.astype(np.float32) - mean) / std
    import torch

    x = image.float() if isinstance(image, torch.Tensor) else torch.as_tensor(image, dtype=torch.float32)
    return (x - x.new_tensor(mean)) / x.new_tensor(std)


def denormalize(image: Any) -> np.ndarray:
    """The inverse of :func:`normalize` for one image: ``(3, H, W)`` network input to ``(H, W, 3)`` uint8 RGB."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 3 or img.shape[0] != 3:
        raise ValueError(f"expected one normalised image (3, H, W), got shape {img.shape}")
    mean = np.asarray(PIXEL_MEAN, np.float32).reshape(3, 1, 1) * 255.0
    std = np.asarray(PIXEL_STD, np.float32).reshape(3, 1, 1) * 255.0
    return np.clip(img * std + mean, 0, 255).round().astype(np.uint8).transpose(1, 2, 0)
