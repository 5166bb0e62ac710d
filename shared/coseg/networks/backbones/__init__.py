"""Image encoder backbones (SAM2 Hiera + FPN neck)."""

from coseg.networks.backbones.hiera import Hiera
from coseg.networks.backbones.image_encoder import (
    ENCODER_PRESETS,
    FpnNeck,
    ImageEncoder,
    PositionEmbeddingSine,
    build_image_encoder,
)

__all__ = ["ENCODER_PRESETS", "FpnNeck", "Hiera", "ImageEncoder", "PositionEmbeddingSine", "build_image_encoder"]
