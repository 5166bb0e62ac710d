"""Single-tensor views of the Co-Seg++ bundles, for tools that expect ``network(image) -> tensor``.

MONAI's ``verify_net_in_out`` (and TorchScript / ONNX export) call the network on a random input and read one tensor;
Co-Seg++ returns a dict of task outputs.

- :class:`ClassMapProbabilities` (coseg_histo) turns that dict into the per-pixel probability of every class of the
  bundle's class map (:mod:`coseg.data.label_codec`): ``[background, region 1 .. region S-1, object type 1 .. object
  type T-1]``, the ``pred`` ``channel_def`` of the bundle's ``metadata.json``.
- :class:`LabelVolumeOneHot` (coseg_cbct) runs the whole volume pipeline (slicing, the 2D network, per-slice
  post-processing, 3D tooth linking, FDI numbering) and one-hot encodes the resulting ``pred`` label volume over
  the ToothFairy2 ids of ``channel_def``. No per-voxel probability exists for an FDI number (it is assigned to whole
  3D teeth by a positional heuristic), so this view is exact but not differentiable; it checks the bundle's metadata
  against what inference really produces, not the 2D network on its own (that is :class:`ClassMapProbabilities`
  applied to normalised slices).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from torch import nn

from coseg.bundle.metadata import TOOTHFAIRY2_PRED_IDS
from coseg.keys import DataKeys, OutputKeys

__all__ = ["ClassMapProbabilities", "LabelVolumeOneHot"]


class ClassMapProbabilities(nn.Module):
    """Wrap a Co-Seg++ network: ``image -> (B, S + T - 1, H, W)`` class-map probabilities.

    With ``p_obj`` the object probability (softmax of ``inst_binary``, channel 1), ``p_sem`` the region
    probabilities (softmax of ``sem_logits``) and ``p_type`` the object-type probabilities among the types
    ``1 .. T-1`` (softmax of ``inst_type`` without its background channel)::

        region k (k = 0 .. S-1)      p_sem[k] * (1 - p_obj)
        object type t (t = 1 .. T-1) p_type[t] * p_obj

    The channels sum to 1 at every pixel. Their argmax is close to, but not the same as, the bundle's ``pred``
    label map: that one separates touching objects with the watershed of the HV maps and a one-pixel gap, which no
    per-pixel probability can express.

    Args:
        network: a module returning the :class:`~coseg.keys.OutputKeys` dict (:class:`coseg.networks.CoSegPlusPlus`).
        num_sem_classes: ``S`` (background included); when given, the network's outputs are checked against it.
        num_inst_types: ``T`` (background included); checked like ``num_sem_classes``.

    Raises:
        TypeError: ``network`` is not an ``nn.Module``.
        ValueError: a count below 1 (``S``) or 2 (``T``: at least one object type).
    """

    def __init__(
        self, network: nn.Module, *, num_sem_classes: int | None = None, num_inst_types: int | None = None
    ) -> None:
        super().__init__()
        if not isinstance(network, nn.Module):
            raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}")
        if num_sem_classes is not None and int(num_sem_classes) < 1:
            raise ValueError(f"num_sem_classes must be >= 1, got {num_sem_classes}")
        if num_inst_types is not None and int(num_inst_types) < 2:
            raise ValueError(f"num_inst_types must be >= 2 (background + at least one type), got {num_inst_types}")
        self.network = network
        self.num_sem_classes = num_sem_classes
        self.num_inst_types = num_inst_types

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Class-map probabilities.

        Args:
            image: ``(B, 3, H, W)`` normalised image (what the wrapped network takes).

        Returns:
            ``(B, S + T - 1, H, W)`` float tensor; channel order as the class map.

        Raises:
            ValueError: the network's outputs lack a key or disagree with the given class counts.
        """
        out = self.network(image)
        missing = [k for k in (OutputKeys.SEM_LOGITS, OutputKeys.INST_BINARY, OutputKeys.INST_TYPE) if k not in out]
        if missing:
            raise ValueError(f"the network's output has no {missing}; expected a Co-Seg++ output dict")
        sem, binary, types = out[OutputKeys.SEM_LOGITS], out[OutputKeys.INST_BINARY], out[OutputKeys.INST_TYPE]
        if binary.shape[1] != 2:
            raise ValueError(f"{OutputKeys.INST_BINARY} must have 2 channels, got {binary.shape[1]}")
        for name, tensor, expected in (
            ("num_sem_classes", sem, self.num_sem_classes),
            ("num_inst_types", types, self.num_inst_types),
        ):
            if expected is not None and tensor.shape[1] != int(expected):
                raise ValueError(f"the network gives {tensor.shape[1]} channels but {name}={expected}")
        if types.shape[1] < 2:
            raise ValueError(f"{OutputKeys.INST_TYPE} needs background + at least one type, got {types.shape[1]}")
        p_obj = torch.softmax(binary.float(), dim=1)[:, 1:2]
        regions = torch.softmax(sem.float(), dim=1) * (1.0 - p_obj)
        objects = torch.softmax(types[:, 1:].float(), dim=1) * p_obj
        return torch.cat([regions, objects], dim=1)


class LabelVolumeOneHot(nn.Module):
    """Wrap a 2D Co-Seg++ network and a volume inferer: ``(B, 1, I, J, K)`` volume -> ``(B, C, I, J, K)`` uint8
    one-hot encoding of the ``pred`` label volume the bundle's inference produces.

    Channel ``c`` is 1 where ``pred == channel_ids[c]``: with the default ids (background, the ToothFairy2 region ids
    1, 2, 7 and the FDI teeth 11-48, :data:`coseg.bundle.metadata.TOOTHFAIRY2_PRED_IDS`), the 36 channels of the
    coseg_cbct ``pred`` ``channel_def``, so that ``verify_net_in_out`` compares the metadata with the label set the
    pipeline can really write. Exactly one channel is 1 at every voxel.

    Args:
        network: the 2D network (:class:`coseg.networks.CoSegPlusPlus`).
        inferer: a callable ``inferer(volume, network) -> {pred_key: (1, 1, I, J, K) label volume, ...}`` that takes
            one volume at a time (:class:`coseg.dental.inference.VolumeSliceInferer`).
        channel_ids: the label value of each output channel, all different; default
            :data:`~coseg.bundle.metadata.TOOTHFAIRY2_PRED_IDS`.
        pred_key: the inferer's output holding the label volume.

    Raises:
        TypeError: ``network`` is not an ``nn.Module`` or ``inferer`` is not callable.
        ValueError: empty or repeated ``channel_ids``, or negative ids.
    """

    def __init__(
        self,
        network: nn.Module,
        inferer: Callable[..., Any],
        *,
        channel_ids: Sequence[int] | None = None,
        pred_key: str = DataKeys.PRED,
    ) -> None:
        super().__init__()
        if not isinstance(network, nn.Module):
            raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}")
        if not callable(inferer):
            raise TypeError(f"inferer must be callable, got {type(inferer).__name__}")
        ids = [int(i) for i in (TOOTHFAIRY2_PRED_IDS if channel_ids is None else channel_ids)]
        if not ids or len(set(ids)) != len(ids) or min(ids) < 0:
            raise ValueError(f"channel_ids must be distinct non-negative label values, got {list(channel_ids)}")
        self.network = network
        self.inferer = inferer
        self.pred_key = pred_key
        self.register_buffer("channel_ids", torch.tensor(ids, dtype=torch.int64), persistent=False)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        """One-hot label volumes.

        Args:
            volume: ``(B, 1, I, J, K)`` volumes in the units the inferer expects (HU for CBCT). A
                :class:`~monai.data.MetaTensor` carries each volume's affine, which decides the slicing axis; a plain
                tensor is taken to lie on a 1 mm grid with RAS axes (identity affine).

        Returns:
            ``(B, C, I, J, K)`` uint8, ``C = len(channel_ids)``.

        Raises:
            ValueError: a volume that is not ``(B, 1, I, J, K)``, an inferer output without ``pred_key`` or of another
                size, or a label value that is not one of ``channel_ids``.
        """
        if volume.ndim != 5 or volume.shape[1] != 1:
            raise ValueError(f"expected (B, 1, I, J, K) volumes, got shape {tuple(volume.shape)}")
        out = []
        for b in range(volume.shape[0]):
            item = volume[b : b + 1]
            if not isinstance(item, MetaTensor):
                item = MetaTensor(item, affine=torch.eye(4, dtype=torch.float64))
            result = self.inferer(item, self.network)
            if not isinstance(result, dict) or self.pred_key not in result:
                raise ValueError(f"the inferer's output has no {self.pred_key!r} entry")
            pred = result[self.pred_key]
            pred = pred.as_tensor() if isinstance(pred, MetaTensor) else torch.as_tensor(pred)
            if tuple(pred.shape[-3:]) != tuple(volume.shape[2:]) or pred.numel() != volume[0, 0].numel():
                raise ValueError(
                    f"{self.pred_key!r} must be one label volume of shape {tuple(volume.shape[2:])}, got "
                    f"{tuple(pred.shape)}"
                )
            pred = pred.reshape(1, *volume.shape[2:])
            ids = self.channel_ids.to(pred.device)
            onehot = pred.to(torch.int64) == ids.view(-1, 1, 1, 1)
            if not bool(onehot.any(0).all()):
                unknown = sorted(set(torch.unique(pred).tolist()) - set(ids.tolist()))
                raise ValueError(f"{self.pred_key!r} holds label values {unknown} that are not in channel_ids")
            out.append(onehot.to(torch.uint8))
        return torch.stack(out)
