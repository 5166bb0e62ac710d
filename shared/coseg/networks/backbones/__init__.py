"""Image encoder backbones (SAM2 Hiera, or a MONAI ResNet for the ``cpu`` preset, + FPN neck)."""

from coseg.networks.backbones.hiera import Hiera
from coseg.networks.backbones.image_encoder import (
    BACKBONES,
    ENCODER_PRESETS,
    FpnNeck,
    ImageEncoder,
    PositionEmbeddingSine,
    build_image_encoder,
    is_sam2_encoder,
)
from coseg.networks.backbones.resnet import RESNET_NAMES, ResNetTrunk

__all__ = [
    "BACKBONES",
    "ENCODER_PRESETS",
    "RESNET_NAMES",
    "FpnNeck",
    "Hiera",
    "ImageEncoder",
    "PositionEmbeddingSine",
    "ResNetTrunk",
    "build_image_encoder",
    "is_sam2_encoder",
]
