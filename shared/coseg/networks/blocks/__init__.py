"""Building blocks: norms, MLPs, attention with optional RoPE, adapters."""

from coseg.networks.blocks.adapter import Adapter
from coseg.networks.blocks.attention import Attention, apply_axial_rope, axial_rope_angles
from coseg.networks.blocks.common import MLP, DropPath, LayerNorm2d, TokenwiseMLP

__all__ = [
    "Adapter",
    "Attention",
    "DropPath",
    "LayerNorm2d",
    "MLP",
    "TokenwiseMLP",
    "apply_axial_rope",
    "axial_rope_angles",
]
