"""A single-tensor view of the Co-Seg++ network, for tools that expect ``network(image) -> tensor``.

MONAI's ``verify_net_in_out`` (and TorchScript / ONNX export) call the network on a random input and read one tensor;
Co-Seg++ returns a dict of task outputs. :class:`ClassMapProbabilities` turns that dict into the per-pixel probability
of every class of the bundle's class map (:mod:`coseg.data.label_codec`): ``[background, region 1 .. region S-1,
object type 1 .. object type T-1]``, the ``pred`` ``channel_def`` of the bundle's ``metadata.json``.
"""

from __future__ import annotations

import torch
from torch import nn

from coseg.keys import OutputKeys

__all__ = ["ClassMapProbabilities"]


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
