"""Post-processing as a MONAI dictionary transform: network outputs -> label maps, instance table, ``pred``."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform

from coseg.data.label_codec import encode_class_map
from coseg.keys import DataKeys, OutputKeys
from coseg.postprocess.batch import postprocess_outputs
from coseg.postprocess.instances import WatershedParams

__all__ = ["CoSegPostProcessd", "PredKeys"]


class PredKeys:
    """Keys written by :class:`CoSegPostProcessd`.

    - ``SEM``: ``(1, H, W)`` semantic class map.
    - ``INST``: ``(1, H, W)`` int32 instance map, ids 1..n.
    - ``TYPE``: ``(1, H, W)`` type of each pixel's instance.
    - ``PANOPTIC``: ``(2, H, W)`` instance ids and types stacked (the input of per-class instance metrics).
    - ``GT_SEM``, ``GT_INST``, ``GT_TYPE``, ``GT_PANOPTIC``: the ground truth in the same layouts, when the item
      has labels (MONAI's engines route keys that exist in the batch back to the batch, so the ground truth is
      copied under these new names to reach the engine output that metrics and handlers read).
    - ``INSTANCES``: the :class:`~coseg.postprocess.InstanceTable`.
    - ``DataKeys.PRED``: the single class map for MONAI Label and viewers
      (:func:`coseg.data.label_codec.encode_class_map`).
    """

    SEM = "pred_sem"
    INST = "pred_inst"
    TYPE = "pred_type"
    PANOPTIC = "pred_panoptic"
    INSTANCES = "instances"
    GT_SEM = "gt_sem"
    GT_INST = "gt_inst"
    GT_TYPE = "gt_type"
    GT_PANOPTIC = "gt_panoptic"


class CoSegPostProcessd(MapTransform):
    """Turn one decollated item's network outputs (flat keys, see ``FlattenEngineOutputd``) into label maps.

    Outputs (see :class:`PredKeys`) are MetaTensors carrying the meta of ``meta_key`` (the image), so that
    MONAI's ``SaveImaged`` names files after the input.

    Args:
        num_sem_classes: semantic classes incl. background (for the combined ``pred`` map).
        watershed: the watershed settings (:class:`~coseg.postprocess.WatershedParams`; in the bundles the
            config's ``watershed`` item, :func:`~coseg.postprocess.watershed_settings`). Default:
            ``WatershedParams()``, HoVer-Net's 40x settings.
        sem_min_size: semantic regions smaller than this (pixels) are absorbed by their neighbours.
        with_contours: compute the instance table's contours (nothing in the bundles reads them: the GeoJSON outputs
            trace the instance map, :mod:`coseg.histo.geojson`).
        meta_key: the item whose meta the outputs copy.
        remove_logits: drop the raw network outputs from the item afterwards (saves memory).

    Raises:
        TypeError: ``watershed`` is not a :class:`~coseg.postprocess.WatershedParams`.
    """

    def __init__(
        self,
        *,
        num_sem_classes: int,
        watershed: WatershedParams | None = None,
        sem_min_size: int = 1,
        with_contours: bool = True,
        meta_key: str = DataKeys.IMAGE,
        remove_logits: bool = True,
    ) -> None:
        super().__init__([OutputKeys.INST_BINARY], allow_missing_keys=False)
        self.num_sem_classes = int(num_sem_classes)
        watershed = WatershedParams() if watershed is None else watershed
        if not isinstance(watershed, WatershedParams):
            raise TypeError(f"watershed must be a WatershedParams, got {type(watershed).__name__}")
        self.watershed = watershed
        self.sem_min_size = int(sem_min_size)
        self.with_contours = with_contours
        self.meta_key = meta_key
        self.remove_logits = remove_logits

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        outputs = {
            k: d[k] for k in (OutputKeys.INST_BINARY, OutputKeys.INST_HV, OutputKeys.INST_TYPE, OutputKeys.SEM_LOGITS)
        }
        result = postprocess_outputs(
            outputs,
            params=self.watershed,
            with_contours=self.with_contours,
            sem_min_size=self.sem_min_size,
        )[0]
        ref = d.get(self.meta_key)
        meta = dict(ref.meta) if isinstance(ref, MetaTensor) else {}

        def wrap(array: np.ndarray) -> MetaTensor:
            return MetaTensor(torch.from_numpy(np.ascontiguousarray(array)), meta=dict(meta))

        d[PredKeys.SEM] = wrap(result.sem_map[None].astype(np.int32))
        d[PredKeys.INST] = wrap(result.inst_map[None].astype(np.int32))
        d[PredKeys.TYPE] = wrap(result.type_map[None].astype(np.int32))
        d[PredKeys.PANOPTIC] = wrap(np.stack([result.inst_map, result.type_map]).astype(np.int32))
        d[PredKeys.INSTANCES] = result.instances
        # an instance whose pixels all voted "background" has type 0 and no class of its own in the class map:
        # it stays in the instance map and the table but is drawn as the region around it in ``pred``
        typed = np.where(result.type_map > 0, result.inst_map, 0)
        d[DataKeys.PRED] = wrap(encode_class_map(result.sem_map, typed, result.type_map, self.num_sem_classes)[None])
        labels = d.get(DataKeys.LABEL) if isinstance(d.get(DataKeys.LABEL), Mapping) else d
        shape = (1, *result.inst_map.shape)
        gt = {
            PredKeys.GT_SEM: labels.get(DataKeys.LABEL_SEM),
            PredKeys.GT_INST: labels.get(DataKeys.LABEL_INST),
            PredKeys.GT_TYPE: labels.get(DataKeys.LABEL_TYPE),
        }
        for key, value in gt.items():
            if value is not None:
                d[key] = torch.as_tensor(value).reshape(shape).to(torch.int64)
        if PredKeys.GT_INST in d and PredKeys.GT_TYPE in d:
            d[PredKeys.GT_PANOPTIC] = torch.cat([d[PredKeys.GT_INST], d[PredKeys.GT_TYPE]])
        if self.remove_logits:
            for key in (
                *outputs,
                OutputKeys.SEM_PROMPT,
                OutputKeys.INST_PROMPT,
                OutputKeys.SEM_CONSISTENCY,
                OutputKeys.INST_CONSISTENCY,
                DataKeys.LABEL_HV,
            ):
                d.pop(key, None)
        return d
