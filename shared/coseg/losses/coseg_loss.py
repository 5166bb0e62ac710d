"""The Co-Seg++ training objective (paper Eq. 9-12): ``L = λ · L_pass1 + L_pass2``.

- ``L_pass1``: BCE (optionally + Dice) of each task's pass-1 low-resolution binary mask against the
  area-downsampled foreground (semantic: any region class; instance: any object), plus the symmetric KL
  spatial-consistency term between the two tasks' probability maps.
- ``L_pass2``: semantic Dice + CE, and the CellViT-style instance loss: object/background Dice + CE, HV maps
  MSE + MSGE (gradient loss on object pixels), object types Dice + CE.

Defaults follow the paper (λ = 0.5, plain BCE on pass 1) and CellViT for the instance terms (HV: MSE 2.5,
MSGE 8); :data:`RELEASED_CODE_WEIGHTS` holds the weights of the authors' released training script.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss
from torch import nn

from coseg.keys import DataKeys, OutputKeys
from coseg.losses.consistency import SymmetricKLLoss
from coseg.losses.hv import HVGradientLoss

__all__ = ["CoSegLoss", "RELEASED_CODE_WEIGHTS", "lowres_foreground"]

#: loss weights of the released training script (train_puma.py): Dice+CE on pass 1, semantic 0.5, HV 8 / 2.5
RELEASED_CODE_WEIGHTS = {
    "pass1_weight": 0.5,
    "pass1_dice_weight": 1.0,
    "kl_weight": 10.0,
    "sem_weight": 0.5,
    "hv_mse_weight": 8.0,
    "hv_msge_weight": 2.5,
}


def lowres_foreground(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Fraction of foreground (``label > 0``) pixels of each low-resolution cell: ``(B, 1, H, W) -> (B, 1, h, w)``.

    Area averaging keeps small objects visible as soft targets where nearest sampling could miss them.
    """
    fg = (label > 0).float()
    if tuple(fg.shape[-2:]) == tuple(size):
        return fg
    return F.interpolate(fg, size=size, mode="area")


class CoSegLoss(nn.Module):
    """Co-Seg++ loss on the network's output dict and a target dict.

    Targets (keys of :class:`coseg.keys.DataKeys`, each ``(B, 1, H, W)`` unless said otherwise):
    ``label_sem`` (class index), ``label_inst`` (object ids, 0 background), ``label_type`` (type index),
    ``label_hv`` ``(B, 2, H, W)`` (HV maps of ``label_inst``, e.g. from MONAI's ``ComputeHoVerMapsd`` after
    the geometric augmentation).

    Args:
        pass1_weight: λ, the weight of the pass-1 terms (paper: 0.5).
        pass1_bce_weight, pass1_dice_weight: BCE / Dice on the pass-1 binary masks (paper: BCE only).
        kl_weight: weight of the symmetric KL term inside ``L_pass1`` (released code: 10).
        sem_weight: weight of the semantic Dice + CE.
        binary_weight, type_weight: weights of the object-map and type-map Dice + CE.
        hv_mse_weight, hv_msge_weight: weights of the HV MSE and gradient losses (CellViT: 2.5, 8).
        sem_class_weights: optional CE weights per semantic class.

    After each call, :attr:`last_terms` holds every weighted term as a detached tensor (for logging).
    """

    def __init__(
        self,
        *,
        pass1_weight: float = 0.5,
        pass1_bce_weight: float = 1.0,
        pass1_dice_weight: float = 0.0,
        kl_weight: float = 10.0,
        sem_weight: float = 1.0,
        binary_weight: float = 1.0,
        type_weight: float = 1.0,
        hv_mse_weight: float = 2.5,
        hv_msge_weight: float = 8.0,
        sem_class_weights: list[float] | None = None,
    ) -> None:
        super().__init__()
        weights = dict(locals())
        for name in ("self", "__class__", "sem_class_weights"):
            weights.pop(name, None)
        bad = {k: v for k, v in weights.items() if v < 0}
        if bad:
            raise ValueError(f"loss weights must be >= 0, got {bad}")
        self.weights = weights
        ce_weight = None if sem_class_weights is None else torch.as_tensor(sem_class_weights, dtype=torch.float32)
        self.sem_loss = DiceCELoss(to_onehot_y=True, softmax=True, weight=ce_weight)
        self.dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)
        self.binary_dice = DiceLoss(sigmoid=True)
        self.kl = SymmetricKLLoss()
        self.msge = HVGradientLoss()
        self.last_terms: dict[str, torch.Tensor] = {}

    def forward(self, pred: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Args:
            pred: the output dict of :class:`coseg.networks.CoSegPlusPlus`.
            target: the label dict described in the class docstring.

        Returns:
            the scalar loss (float32).
        """
        w = self.weights
        for key in (DataKeys.LABEL_SEM, DataKeys.LABEL_INST, DataKeys.LABEL_TYPE, DataKeys.LABEL_HV):
            if key not in target:
                raise KeyError(f"CoSegLoss needs target[{key!r}]; got keys {sorted(target)}")
        sem = _as_index_map(target[DataKeys.LABEL_SEM], DataKeys.LABEL_SEM)
        inst = _as_index_map(target[DataKeys.LABEL_INST], DataKeys.LABEL_INST)
        typ = _as_index_map(target[DataKeys.LABEL_TYPE], DataKeys.LABEL_TYPE)
        hv = target[DataKeys.LABEL_HV].float()
        obj = (inst > 0).long()
        terms: dict[str, torch.Tensor] = {}

        # ---- pass 1: binary prompt masks + spatial consistency -------------------------------------------
        for task, label in (("sem", sem), ("inst", inst)):
            logits = pred[OutputKeys.SEM_PROMPT if task == "sem" else OutputKeys.INST_PROMPT].float()
            soft = lowres_foreground(label, tuple(logits.shape[-2:]))
            if w["pass1_bce_weight"]:
                terms[f"pass1_{task}_bce"] = w["pass1_bce_weight"] * F.binary_cross_entropy_with_logits(logits, soft)
            if w["pass1_dice_weight"]:
                terms[f"pass1_{task}_dice"] = w["pass1_dice_weight"] * self.binary_dice(logits, (soft >= 0.5).float())
        if w["kl_weight"]:
            terms["pass1_kl"] = w["kl_weight"] * self.kl(
                pred[OutputKeys.SEM_CONSISTENCY], pred[OutputKeys.INST_CONSISTENCY]
            )
        lam = w["pass1_weight"]
        terms = {k: lam * v for k, v in terms.items()}

        # ---- final pass: semantic + instance (CellViT) -----------------------------------------------------
        if w["sem_weight"]:
            terms["sem_dice_ce"] = w["sem_weight"] * self.sem_loss(pred[OutputKeys.SEM_LOGITS].float(), sem)
        if w["binary_weight"]:
            terms["binary_dice_ce"] = w["binary_weight"] * self.dice_ce(pred[OutputKeys.INST_BINARY].float(), obj)
        if w["type_weight"]:
            terms["type_dice_ce"] = w["type_weight"] * self.dice_ce(pred[OutputKeys.INST_TYPE].float(), typ)
        hv_pred = pred[OutputKeys.INST_HV].float()
        if w["hv_mse_weight"]:
            terms["hv_mse"] = w["hv_mse_weight"] * F.mse_loss(hv_pred, hv)
        if w["hv_msge_weight"]:
            terms["hv_msge"] = w["hv_msge_weight"] * self.msge(hv_pred, hv, obj)

        total = torch.stack(list(terms.values())).sum()
        self.last_terms = {k: v.detach() for k, v in terms.items()}  # tensors: no host sync here
        return total


def _as_index_map(label: torch.Tensor, name: str) -> torch.Tensor:
    """``(B, 1, H, W)`` integer map (MONAI's Dice/CE take ``to_onehot_y`` targets with a channel dim)."""
    if label.ndim == 3:
        label = label.unsqueeze(1)
    if label.ndim != 4 or label.shape[1] != 1:
        raise ValueError(f"target {name!r} must be (B, 1, H, W) or (B, H, W), got {tuple(label.shape)}")
    return label.round().long() if label.is_floating_point() else label.long()
