"""Constants defined once for the whole package."""

from __future__ import annotations

__all__ = ["PIXEL_MEAN", "PIXEL_STD"]

#: SAM2 was trained on RGB images scaled to [0, 1] and normalised with the ImageNet mean and std
#: (``sam2/utils/transforms.py``: ``Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))``).
PIXEL_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
PIXEL_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
