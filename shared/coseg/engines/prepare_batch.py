"""Turn a collated data dict into ``(image, targets)`` for MONAI's ``SupervisedTrainer`` / ``SupervisedEvaluator``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from monai.engines.utils import PrepareBatch

from coseg.keys import DataKeys

__all__ = ["PrepareBatchCoSeg", "LABEL_KEYS"]

#: the label entries the Co-Seg++ loss and metrics read
LABEL_KEYS: tuple[str, ...] = (DataKeys.LABEL_SEM, DataKeys.LABEL_INST, DataKeys.LABEL_TYPE, DataKeys.LABEL_HV)


class PrepareBatchCoSeg(PrepareBatch):
    """``batch -> (batch["image"], {label key: tensor})`` on ``device``.

    Labels that are absent from the batch are left out (inference batches carry none), so the same object
    serves training, validation and inference engines.

    Args:
        image_key: key of the image.
        label_keys: keys gathered into the target dict.
    """

    def __init__(self, image_key: str = DataKeys.IMAGE, label_keys: Sequence[str] = LABEL_KEYS) -> None:
        self.image_key = image_key
        self.label_keys = tuple(label_keys)

    def __call__(
        self,
        batchdata: Mapping[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.image_key not in batchdata:
            raise KeyError(f"batch has no {self.image_key!r}; keys: {sorted(batchdata)}")
        image = batchdata[self.image_key].to(device=device, non_blocking=non_blocking, **kwargs)
        targets = {
            k: batchdata[k].to(device=device, non_blocking=non_blocking, **kwargs)
            for k in self.label_keys
            if k in batchdata
        }
        return image, targets
