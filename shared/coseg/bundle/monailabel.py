"""What MONAI Label needs from a bundle beyond MONAI's own conventions.

MONAI Label's generic bundle inference (``monailabel.tasks.infer.bundle.BundleInferTask``) runs the bundle's
``post_transforms`` when the bundle defines them (otherwise its ``postprocessing``), appends its own ``Restored``
transform and writes ``pred`` with ITK, which treats a 2D array as ``(x, y)``: MONAI's reader convention
(``reverse_indexing=True``). The bundles read images as ``(H, W)`` (``reverse_indexing=False``, numpy's row-major
layout, what every other tool expects), so ``inference.json`` defines ``post_transforms`` = its ``postprocessing``
followed by :class:`MONAILabelPredd`, which hands MONAI Label the class map in its layout.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import convert_to_numpy

from coseg.keys import DataKeys

__all__ = ["MONAILabelPredd"]


class MONAILabelPredd(MapTransform):
    """Lay out a 2D label map for MONAI Label's writer: ``(1, H, W)`` or ``(H, W)`` -> ``(W, H)`` numpy array.

    MONAI Label then appends ``Restored(keys="pred", ref_image="image")``, which would resize ``pred`` to the
    ``spatial_shape`` recorded in the image's metadata whenever the two differ; the prediction already has the image's
    size (the sliding-window inferer works at full resolution), so this transform removes ``spatial_shape`` from the
    reference image's metadata and ``Restored`` leaves ``pred`` as it is. Its writer (``write_itk``) transposes the
    array back, so the written label file has the image's orientation.

    Args:
        keys: the label maps to lay out (default ``"pred"``).
        ref_key: the image whose metadata MONAI Label's ``Restored`` reads (default ``"image"``).
        allow_missing_keys: skip absent keys.

    Raises:
        ValueError: a label map that is not 2D (with or without a leading channel of size 1).
    """

    def __init__(
        self,
        keys: KeysCollection = DataKeys.PRED,
        *,
        ref_key: str = DataKeys.IMAGE,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.ref_key = ref_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = convert_to_numpy(d[key])
            if label.ndim == 3 and label.shape[0] == 1:
                label = label[0]
            if label.ndim != 2:
                raise ValueError(f"{key}: expected a 2D label map (1, H, W) or (H, W), got shape {label.shape}")
            d[key] = np.ascontiguousarray(label.T)
        ref = d.get(self.ref_key)
        if isinstance(ref, MetaTensor):
            ref.meta.pop("spatial_shape", None)
        meta = d.get(f"{self.ref_key}_meta_dict")
        if isinstance(meta, dict):
            meta.pop("spatial_shape", None)
        return d
