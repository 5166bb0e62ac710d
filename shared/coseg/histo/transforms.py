"""Histology-specific augmentation: H&E stain jitter."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable
from skimage.color import hed2rgb, rgb2hed

__all__ = ["RandHEDJitterd"]


class RandHEDJitterd(Randomizable, MapTransform):
    """Stain augmentation for H&E: perturb the haematoxylin, eosin and DAB channels of the colour
    deconvolution (Ruifrok & Johnston; ``skimage.color.rgb2hed``), as in Tellez et al. 2018.

    Each stain channel ``s`` becomes ``s * a + b`` with ``a ~ U(1 - sigma, 1 + sigma)`` and
    ``b ~ U(-bias, bias)``. Input and output: ``(3, H, W)`` RGB in [0, 255].

    Args:
        keys: image keys.
        prob: probability of applying it.
        sigma: range of the multiplicative factor.
        bias: range of the additive shift.
    """

    def __init__(
        self,
        keys: KeysCollection,
        *,
        prob: float = 0.5,
        sigma: float = 0.05,
        bias: float = 0.02,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.prob, self.sigma, self.bias = prob, sigma, bias
        self._do = False
        self._a = np.ones(3)
        self._b = np.zeros(3)

    def randomize(self, data: object = None) -> None:
        self._do = self.R.random() < self.prob
        self._a = self.R.uniform(1 - self.sigma, 1 + self.sigma, 3)
        self._b = self.R.uniform(-self.bias, self.bias, 3)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        self.randomize()
        if not self._do:
            return d
        for key in self.key_iterator(d):
            img = d[key]
            rgb = torch.as_tensor(img).float().cpu().numpy().transpose(1, 2, 0) / 255.0
            hed = rgb2hed(np.clip(rgb, 0, 1))
            hed = hed * self._a + self._b
            out = np.clip(hed2rgb(hed), 0, 1).transpose(2, 0, 1).astype(np.float32) * 255.0
            t = torch.from_numpy(out)
            d[key] = MetaTensor(t, meta=img.meta) if isinstance(img, MetaTensor) else t
        return d
