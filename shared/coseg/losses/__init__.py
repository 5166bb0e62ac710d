"""Training objective of Co-Seg++ (paper Eq. 9-12)."""

from coseg.losses.consistency import SymmetricKLLoss
from coseg.losses.coseg_loss import RELEASED_CODE_WEIGHTS, CoSegLoss, lowres_foreground
from coseg.losses.hv import HVGradientLoss
from coseg.losses.targets import CoSegTargetsd, compute_hv_maps

__all__ = [
    "RELEASED_CODE_WEIGHTS",
    "CoSegLoss",
    "CoSegTargetsd",
    "HVGradientLoss",
    "SymmetricKLLoss",
    "compute_hv_maps",
    "lowres_foreground",
]
