"""Losses on the horizontal-vertical (HV) distance maps: MSE and HoVer-Net's gradient loss (MSGE)."""

from __future__ import annotations

import torch
from monai.transforms import SobelGradients
from torch import nn

__all__ = ["HVGradientLoss"]


class HVGradientLoss(nn.Module):
    """Mean squared error of the HV maps' gradients, inside objects only (HoVer-Net's MSGE, CellViT's "msge").

    The horizontal map's x-derivative and the vertical map's y-derivative are taken with MONAI's
    ``SobelGradients`` (kernel 5, as HoVer-Net) on prediction and target; their squared difference is averaged
    over the object pixels ``focus``.

    Args:
        kernel_size: Sobel kernel size.
    """

    def __init__(self, kernel_size: int = 5) -> None:
        super().__init__()
        self.sobel_x = SobelGradients(kernel_size=kernel_size, spatial_axes=1)  # along W
        self.sobel_y = SobelGradients(kernel_size=kernel_size, spatial_axes=0)  # along H

    def _gradients(self, hv: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.sobel_x(hv[:, 0]), self.sobel_y(hv[:, 1])], dim=1)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, focus: torch.Tensor) -> torch.Tensor:
        """Args:
            pred: ``(B, 2, H, W)`` predicted HV maps.
            target: ``(B, 2, H, W)`` target HV maps.
            focus: ``(B, 1, H, W)`` or ``(B, H, W)``, 1 on object pixels.

        Returns:
            scalar loss (0 when there is no object pixel).
        """
        if pred.shape != target.shape or pred.shape[1] != 2:
            raise ValueError(f"HV maps must both be (B, 2, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}")
        focus = focus.reshape(pred.shape[0], 1, *pred.shape[-2:]).to(pred.dtype)
        diff = self._gradients(pred) - self._gradients(target)
        return (focus * diff.square()).sum() / (2 * focus.sum() + 1e-8)
