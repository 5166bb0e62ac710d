"""A convolutional image-encoder trunk: MONAI's 2-D ``ResNetFeatures`` (ResNet-10 ... ResNet-200), trained from
scratch, giving the same four feature levels as the Hiera trunk (strides 4, 8, 16, 32, highest resolution first).

Not the paper's encoder (the paper's is a frozen, pretrained SAM2 Hiera): it is the image encoder of the ``cpu``
model preset, for training from random weights where no SAM2 checkpoint and no GPU can be had. A convolutional
trunk learns from a few dozen images in minutes of CPU, where a vision transformer from scratch does not. The FPN
neck, the SSP-Encoders and the MTC-Decoder on top of it are the same modules as with Hiera.
"""

from __future__ import annotations

import torch
from monai.networks.nets.resnet import ResNetFeatures, resnet_params
from torch import nn

__all__ = ["RESNET_NAMES", "ResNetTrunk"]

#: the ResNet depths MONAI defines (``resnet10`` ... ``resnet200``)
RESNET_NAMES = tuple(sorted(resnet_params, key=lambda name: int(name[len("resnet") :])))


class ResNetTrunk(nn.Module):
    """MONAI's 2-D ``ResNetFeatures`` (random weights, batch norm) as an image-encoder trunk.

    Its stride-2 stem output is dropped: the trunk returns the outputs of ``layer1`` ... ``layer4`` (strides 4, 8, 16,
    32), as :class:`~coseg.networks.backbones.Hiera` returns its four stages, so the same
    :class:`~coseg.networks.backbones.FpnNeck` (``scalp`` 1) turns them into the stride-4/8/16 levels the
    MTC-Decoder reads.

    Args:
        model_name: a name of :data:`RESNET_NAMES` (``resnet18``: basic blocks, channels 64, 128, 256, 512).
        in_chans: input channels.

    Attributes:
        channel_list: channels of the four levels, deepest first (what the neck's ``backbone_channel_list`` must be).
        size_divisor: input height and width must be multiples of this (32).

    Raises:
        ValueError: unknown ``model_name``.
    """

    def __init__(self, *, model_name: str = "resnet18", in_chans: int = 3) -> None:
        super().__init__()
        if model_name not in RESNET_NAMES:
            raise ValueError(f"unknown ResNet {model_name!r}; choose one of {list(RESNET_NAMES)}")
        self.model_name = model_name
        self.body = ResNetFeatures(model_name, pretrained=False, spatial_dims=2, in_channels=in_chans)
        widths = []
        for layer in (self.body.layer1, self.body.layer2, self.body.layer3, self.body.layer4):
            norms = [m for m in layer[-1].modules() if isinstance(m, nn.BatchNorm2d)]
            widths.append(int(norms[-1].num_features))
        self.channel_list = widths[::-1]
        self.size_divisor = 32

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Args:
            x: ``(B, C, H, W)`` normalised image, H and W multiples of :attr:`size_divisor`.

        Returns:
            four feature maps ``(B, channel_list[-1 - i], H / 2^(i+2), W / 2^(i+2))``, highest resolution first.

        Raises:
            ValueError: H or W not a multiple of :attr:`size_divisor`.
        """
        H, W = x.shape[-2:]
        if H % self.size_divisor or W % self.size_divisor:
            raise ValueError(
                f"ResNet trunk input height and width must be multiples of {self.size_divisor}, got {H}x{W}"
            )
        return list(self.body(x)[1:])
