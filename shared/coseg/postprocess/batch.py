"""Post-processing of the network's whole output dictionary, image by image."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from coseg.keys import OutputKeys
from coseg.postprocess._inputs import as_float_array, check_activation
from coseg.postprocess.instances import InstanceTable, WatershedParams, instances_from_outputs
from coseg.postprocess.semantic import semantic_map

__all__ = ["PostprocessResult", "postprocess_outputs"]


@dataclass
class PostprocessResult:
    """Post-processed outputs of one image; a field is ``None`` when its network outputs were absent.

    Attributes:
        inst_map: ``(H, W)`` int32 instance map, ids ``1..n`` contiguous, 0 = background.
        type_map: ``(H, W)`` int32 type of each pixel's instance, 0 on background.
        instances: :class:`~coseg.postprocess.instances.InstanceTable`, one row per instance id.
        sem_map: ``(H, W)`` int32 semantic class map.
    """

    inst_map: np.ndarray | None = None
    type_map: np.ndarray | None = None
    instances: InstanceTable | None = None
    sem_map: np.ndarray | None = None


def _spatial_layout(arrays: Mapping[str, np.ndarray]) -> tuple[bool, int, tuple[int, int]]:
    """Check that all arrays agree on batching and size; return ``(batched, batch_size, (H, W))``."""
    ndims = {key: value.ndim for key, value in arrays.items()}
    if any(n not in (3, 4) for n in ndims.values()) or len(set(ndims.values())) != 1:
        shapes = {key: value.shape for key, value in arrays.items()}
        raise ValueError(f"outputs must all be (C, H, W) or all (B, C, H, W), got shapes {shapes}")
    batched = next(iter(ndims.values())) == 4
    sizes = {key: value.shape[-2:] for key, value in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"outputs differ in spatial size (H, W): {sizes}")
    batch_sizes = {key: value.shape[0] for key, value in arrays.items()} if batched else {}
    if batched and len(set(batch_sizes.values())) != 1:
        raise ValueError(f"outputs differ in batch size: {batch_sizes}")
    batch = next(iter(batch_sizes.values())) if batched else 1
    return batched, batch, next(iter(sizes.values()))


_CHANNELS = {
    OutputKeys.INST_BINARY: ((1, 2), "1 (object) or 2 (background, object)"),
    OutputKeys.INST_HV: ((2,), "2 (horizontal, vertical)"),
}


def _check_channels(arrays: Mapping[str, np.ndarray]) -> None:
    """Raise ``ValueError`` naming the key whose channel count is wrong."""
    for key, value in arrays.items():
        channels = value.shape[-3]
        if key in _CHANNELS and channels not in _CHANNELS[key][0]:
            raise ValueError(f"{key!r} must have {_CHANNELS[key][1]} channels, got {channels} (shape {value.shape})")
        if key == OutputKeys.INST_TYPE and channels < 2:
            raise ValueError(f"{key!r} must have >= 2 channels (background + types), got {channels}")
        if key == OutputKeys.SEM_LOGITS and channels < 1:
            raise ValueError(f"{key!r} must have >= 1 class channel, got {channels}")


def postprocess_outputs(
    outputs: Mapping[str, Any],
    *,
    activation: str | None = "softmax",
    params: WatershedParams | None = None,
    with_contours: bool = True,
    sem_min_size: int = 1,
    sem_connectivity: int = 1,
    sem_fill: str = "neighbours",
) -> list[PostprocessResult]:
    """Turn the network's output dictionary (one image or a batch) into label maps and instance tables.

    Reads ``OutputKeys.INST_BINARY`` + ``OutputKeys.INST_HV`` (+ ``OutputKeys.INST_TYPE`` if present) for the
    instances and ``OutputKeys.SEM_LOGITS`` for the semantic map; other keys are ignored. Values may be numpy
    arrays or torch tensors on any device (moved to the CPU once per batch), all ``(B, C, H, W)`` or all
    ``(C, H, W)`` for a single image.

    Args:
        outputs: the network's output dict.
        activation: how ``INST_BINARY`` becomes an object probability: ``"softmax"`` (2 channels of logits),
            ``"sigmoid"`` (logit of the object channel) or ``None`` (already a probability). Types and
            semantic classes use the argmax, which no activation changes.
        params: watershed settings (default: 40x, see
            :func:`~coseg.postprocess.instances.params_for_resolution`).
        with_contours: compute instance contours (skip for metrics-only evaluation).
        sem_min_size: semantic regions of a foreground class smaller than this are replaced (1: keep all).
        sem_connectivity: 1 or 2, connectivity of semantic regions.
        sem_fill: ``"neighbours"`` or ``"background"``, see
            :func:`~coseg.postprocess.semantic.remove_small_regions`.

    Returns:
        one :class:`PostprocessResult` per image (a list of length 1 for unbatched input).

    Raises:
        ValueError: if neither the instance outputs nor the semantic output is present, ``INST_BINARY`` comes
            without ``INST_HV`` (or the reverse), or the shapes disagree (message names the key).
        TypeError: if ``outputs`` is not a mapping.
    """
    if not isinstance(outputs, Mapping):
        raise TypeError(f"outputs must be a mapping of output keys to arrays, got {type(outputs).__name__}")
    check_activation(activation)
    present = {key for key, value in outputs.items() if value is not None}  # a None value counts as absent
    has_binary, has_hv = OutputKeys.INST_BINARY in present, OutputKeys.INST_HV in present
    if has_binary != has_hv:
        missing = OutputKeys.INST_HV if has_binary else OutputKeys.INST_BINARY
        raise ValueError(
            f"instance post-processing needs both {OutputKeys.INST_BINARY!r} and {OutputKeys.INST_HV!r}; "
            f"{missing!r} is missing"
        )
    has_inst, has_sem = has_binary, OutputKeys.SEM_LOGITS in present
    if not (has_inst or has_sem):
        raise ValueError(
            f"outputs hold neither {OutputKeys.INST_BINARY!r} + {OutputKeys.INST_HV!r} nor {OutputKeys.SEM_LOGITS!r}"
        )
    keys = [OutputKeys.INST_BINARY, OutputKeys.INST_HV, OutputKeys.INST_TYPE] if has_inst else []
    keys += [OutputKeys.SEM_LOGITS] if has_sem else []
    arrays = {key: as_float_array(outputs[key], key) for key in keys if key in present}
    batched, batch, _ = _spatial_layout(arrays)
    _check_channels(arrays)
    if not batched:
        arrays = {key: value[None] for key, value in arrays.items()}

    results = []
    for b in range(batch):
        result = PostprocessResult()
        if has_inst:
            inst = instances_from_outputs(
                arrays[OutputKeys.INST_BINARY][b],
                arrays[OutputKeys.INST_HV][b],
                arrays[OutputKeys.INST_TYPE][b] if OutputKeys.INST_TYPE in arrays else None,
                activation=activation,
                params=params,
                with_contours=with_contours,
            )
            result.inst_map, result.type_map, result.instances = inst.inst_map, inst.type_map, inst.table
        if has_sem:
            result.sem_map = semantic_map(
                arrays[OutputKeys.SEM_LOGITS][b], min_size=sem_min_size, connectivity=sem_connectivity, fill=sem_fill
            )
        results.append(result)
    return results
