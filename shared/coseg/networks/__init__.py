"""Co-Seg++ network: SAM2-Hiera image encoder with adapters, SSP-Encoder, MTC-Decoder, two-pass co-segmentation.

Build with ``CoSegPlusPlus.from_preset("paper" | "tiny" | "micro", **overrides)``.
"""

from coseg.networks.backbones import ENCODER_PRESETS, ImageEncoder, build_image_encoder
from coseg.networks.coseg import PRESETS, ConvPromptEncoder, CoSegPlusPlus
from coseg.networks.mtc_decoder import MTCDecoder
from coseg.networks.ssp_encoder import SSPEncoder
from coseg.networks.weights import LoadReport, SAM2CheckpointError, count_parameters, freeze_trunk, load_sam2_weights

__all__ = [
    "ENCODER_PRESETS",
    "PRESETS",
    "ConvPromptEncoder",
    "CoSegPlusPlus",
    "ImageEncoder",
    "LoadReport",
    "MTCDecoder",
    "SAM2CheckpointError",
    "SSPEncoder",
    "build_image_encoder",
    "count_parameters",
    "freeze_trunk",
    "load_sam2_weights",
]
