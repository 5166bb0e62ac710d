"""Co-Seg++ network: SAM2-Hiera image encoder with adapters, SSP-Encoder, MTC-Decoder, two-pass co-segmentation.

Build with ``CoSegPlusPlus.from_preset("paper" | "tiny" | "cpu" | "micro", **overrides)`` (``cpu``: a MONAI ResNet-18
trunk instead of Hiera, not the paper's encoder); saved weights record these build
arguments, and ``CoSegPlusPlus.from_saved(path)`` builds the network they belong to. The presets' official SAM2.1
encoder checkpoints and the check before training: :mod:`coseg.networks.pretrained`.
"""

from coseg.networks.backbones import ENCODER_PRESETS, ImageEncoder, build_image_encoder
from coseg.networks.coseg import (
    ARCHITECTURE_ARGS,
    PRESETS,
    RECORDED_ARGS,
    ConvPromptEncoder,
    CoSegPlusPlus,
    build_args_conflicts,
)
from coseg.networks.mtc_decoder import MTCDecoder
from coseg.networks.pretrained import SAM2_CHECKPOINTS, check_sam2_checkpoint, fetch_command, sam2_checkpoint_path
from coseg.networks.ssp_encoder import SSPEncoder
from coseg.networks.weights import (
    BUILD_ARGS_KEY,
    LoadReport,
    SAM2CheckpointError,
    count_parameters,
    freeze_trunk,
    load_sam2_weights,
    read_build_args,
    recorded_build_args,
)

__all__ = [
    "ARCHITECTURE_ARGS",
    "BUILD_ARGS_KEY",
    "ENCODER_PRESETS",
    "PRESETS",
    "RECORDED_ARGS",
    "SAM2_CHECKPOINTS",
    "ConvPromptEncoder",
    "CoSegPlusPlus",
    "ImageEncoder",
    "LoadReport",
    "MTCDecoder",
    "SAM2CheckpointError",
    "SSPEncoder",
    "build_args_conflicts",
    "build_image_encoder",
    "check_sam2_checkpoint",
    "count_parameters",
    "fetch_command",
    "freeze_trunk",
    "load_sam2_weights",
    "read_build_args",
    "recorded_build_args",
    "sam2_checkpoint_path",
]
