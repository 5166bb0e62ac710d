"""Training transforms of the dental slices: tooth types of the bundle's scheme, and left-right flips that swap the
sides of the FDI labels; the check that a prepared dataset's tooth types serve the bundle's scheme.

Prepared slices hold tooth types in the ``"fdi"`` scheme (``coseg.dental.prepare``): :class:`ToothTypesd` maps them
to the bundle's scheme when they are loaded, so one dataset trains either scheme and the mapping from an FDI number
to a type is defined once (:func:`coseg.dental.labels.tooth_type_lut`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import Flip, MapTransform, RandomizableTransform

from coseg.dental.geometry import SLICE_AXES
from coseg.dental.labels import (
    FDI_TEETH,
    SEMANTIC_CLASSES,
    TOOTH_TYPE_SCHEMES,
    fdi_class_lut,
    mirror_fdi,
    mirror_type_lut,
    tooth_type_names,
)
from coseg.errors import InputFileError
from coseg.io import source_name

__all__ = ["ToothTypesd", "RandLeftRightFlipd", "left_right_axis", "check_tooth_types", "dataset_tooth_types"]

logger = logging.getLogger(__name__)


def _check_scheme(tooth_types: str) -> str:
    if tooth_types not in TOOTH_TYPE_SCHEMES:
        raise ValueError(f"tooth_types must be one of {TOOTH_TYPE_SCHEMES}, got {tooth_types!r}")
    return tooth_types


def _lookup(values: Any, lut: np.ndarray) -> Any:
    """``lut[values]`` for a tensor (MetaTensor kept, dtype kept) or an array of integer-valued labels."""
    if isinstance(values, torch.Tensor):
        table = torch.as_tensor(lut, dtype=torch.int64, device=values.device)
        out = table[values.round().long() if values.is_floating_point() else values.long()].to(values.dtype)
        result = values.clone()
        result.copy_(out)
        return result
    array = np.asarray(values)
    return lut[np.rint(array).astype(np.int64) if np.issubdtype(array.dtype, np.floating) else array].astype(
        array.dtype
    )


class ToothTypesd(MapTransform):
    """Map tooth types read in the ``"fdi"`` scheme (prepared slices) to the bundle's scheme.

    Args:
        keys: the type label keys (``label_type``).
        tooth_types: the bundle's scheme: ``"fdi"`` (kept) or ``"jaw"`` (1 upper, 2 lower teeth).
        allow_missing_keys: as MONAI's.

    Raises:
        ValueError: an unknown scheme.
        InputFileError: (when called) a type value outside the ``"fdi"`` classes 0..32, naming the file.
    """

    def __init__(self, keys: KeysCollection = "label_type", *, tooth_types: str, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.tooth_types = _check_scheme(tooth_types)
        self.lut = fdi_class_lut(tooth_types)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            values = d[key]
            t = torch.as_tensor(values)
            if t.numel() and (t.min() < 0 or t.max() > len(FDI_TEETH) or not torch.equal(t, t.round())):
                raise InputFileError(
                    source_name(values, default=f"<{key}>"),
                    f"{key}: tooth types must be the 'fdi' classes 0..{len(FDI_TEETH)} written by "
                    f"coseg.dental.prepare, found values {int(t.min())}..{int(t.max())}",
                )
            d[key] = _lookup(values, self.lut)
        return d


def left_right_axis(slice_axis: str) -> int | None:
    """The spatial axis of a ``(H, W)`` slice that runs from the patient's right to left, or ``None``.

    Args:
        slice_axis: ``"axial"`` or ``"coronal"`` (columns: right to left, axis 1); ``"sagittal"`` (no left-right
            axis in the plane: ``None``).

    Raises:
        ValueError: an unknown slicing plane.
    """
    if slice_axis not in SLICE_AXES:
        raise ValueError(f"slice_axis must be one of {sorted(SLICE_AXES)}, got {slice_axis!r}")
    in_plane = SLICE_AXES[slice_axis][1:]
    return in_plane.index("L") if "L" in in_plane else None


class RandLeftRightFlipd(RandomizableTransform, MapTransform):
    """Mirror a slice left-right and its labels with it: a flip that teaches anatomy instead of confusing sides.

    The slices are in the canonical frame of :mod:`coseg.dental.geometry` (built from the scan's affine, so a scan
    stored with a flipped or permuted direction matrix is sliced the right way round), where the patient's
    left-right axis is known: the columns of axial and coronal slices. A mirrored slice shows a mirrored patient,
    whose right teeth are the mirror images of the left ones, so with ``tooth_types="fdi"`` the type labels swap
    sides (1x <-> 2x, 3x <-> 4x; :func:`coseg.dental.labels.mirror_type_lut`) and FDI instance ids likewise
    (:func:`coseg.dental.labels.mirror_fdi`), in the same call as the flip. With ``"jaw"`` types only the pixels
    move. Sagittal slices have no left-right axis in the plane: nothing is flipped.

    Args:
        keys: every key to flip (image and label maps), channel-first ``(C, H, W)``.
        prob: probability of a flip.
        slice_axis: the slicing plane of the slices.
        tooth_types: the scheme of ``type_key``'s values.
        type_key: the tooth type map (its values swap sides with ``"fdi"``); ``None``: none.
        inst_key: the tooth instance map whose ids are FDI numbers (they swap sides); ``None``: none.
        allow_missing_keys: as MONAI's.

    Raises:
        ValueError: bad arguments.
    """

    def __init__(
        self,
        keys: KeysCollection,
        *,
        prob: float = 0.5,
        slice_axis: str = "axial",
        tooth_types: str = "jaw",
        type_key: str | None = "label_type",
        inst_key: str | None = "label_inst",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.axis = left_right_axis(slice_axis)
        self.type_lut = mirror_type_lut(_check_scheme(tooth_types))
        self.type_key, self.inst_key = type_key, inst_key
        inst_lut = np.arange(max(FDI_TEETH) + 1, dtype=np.int64)
        for fdi in FDI_TEETH:
            inst_lut[fdi] = mirror_fdi(fdi)
        self.inst_lut = inst_lut
        self.flipper = None if self.axis is None else Flip(spatial_axis=self.axis)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform or self.flipper is None:
            return d
        for key in self.key_iterator(d):
            d[key] = self.flipper(d[key])
        if self.type_key is not None and self.type_key in d:
            d[self.type_key] = _lookup(d[self.type_key], self.type_lut)
        if self.inst_key is not None and self.inst_key in d:
            values = d[self.inst_key]
            top = int(torch.as_tensor(values).max()) if torch.as_tensor(values).numel() else 0
            lut = (
                self.inst_lut
                if top < len(self.inst_lut)
                else np.concatenate([self.inst_lut, np.arange(len(self.inst_lut), top + 1)])
            )
            d[self.inst_key] = _lookup(values, lut)
        return d


def dataset_tooth_types(dataset_dir: str | os.PathLike) -> str | None:
    """The tooth type scheme a prepared dataset's ``labels_type`` slices hold (``dataset.json`` → ``tooth_types``).

    Returns:
        the scheme, or ``None`` when the folder has no ``dataset.json`` (not prepared yet).

    Raises:
        InputFileError: a ``dataset.json`` that is not JSON, or one written before the scheme was recorded (its
            type slices hold upper / lower teeth and cannot give FDI classes).
    """
    path = Path(dataset_dir).expanduser() / "dataset.json"
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputFileError(path, f"cannot be read as JSON ({exc})") from exc
    scheme = info.get("tooth_types") if isinstance(info, dict) else None
    if scheme is None:
        raise InputFileError(
            path,
            "records no 'tooth_types': the dataset was prepared by an older coseg.dental.prepare whose labels_type "
            "slices hold upper/lower teeth only; prepare it again (python -m coseg.dental.prepare ... --overwrite; a "
            "quickstart's phantoms folder can simply be deleted, it is regenerated)",
        )
    if scheme not in TOOTH_TYPE_SCHEMES:
        raise InputFileError(path, f"'tooth_types' is {scheme!r}, not one of {TOOTH_TYPE_SCHEMES}")
    return str(scheme)


def check_tooth_types(
    dataset_dir: str | os.PathLike,
    tooth_types: str,
    inst_types: Mapping[Any, str],
    sem_classes: Mapping[Any, str] | None = None,
) -> None:
    """Fail early when the bundle's tooth types and a prepared dataset cannot work together.

    Checks: the bundle's ``inst_types`` are the names of its ``tooth_types`` scheme
    (:func:`coseg.dental.labels.tooth_type_names`); the dataset (when prepared) records a scheme that gives the
    bundle's (``"fdi"`` gives both; :class:`ToothTypesd` maps it on load) and, with ``sem_classes``, as many
    semantic classes as the bundle.

    Args:
        dataset_dir: the prepared dataset folder (not prepared yet: only the config is checked).
        tooth_types: the bundle's scheme.
        inst_types: the bundle's ``inst_types``.
        sem_classes: the bundle's ``sem_classes`` (optional).

    Raises:
        ValueError: the config's ``inst_types`` are not those of its ``tooth_types``, or an unknown scheme.
        InputFileError: (naming ``dataset.json``) a dataset whose tooth types or semantic classes do not fit.
    """
    expected = tooth_type_names(_check_scheme(tooth_types))
    have = {int(k): str(v) for k, v in inst_types.items()}
    if have != expected:
        raise ValueError(
            f"inst_types {have} are not the {tooth_types!r} tooth types {expected}: set inst_types to "
            f"coseg.dental.tooth_type_names(tooth_types)"
        )
    scheme = dataset_tooth_types(dataset_dir)
    if scheme is None:
        return
    path = Path(dataset_dir).expanduser() / "dataset.json"
    if scheme != "fdi" and scheme != tooth_types:
        raise InputFileError(path, f"its tooth types are {scheme!r}; the bundle's {tooth_types!r} cannot be made")
    if sem_classes is not None:
        info = json.loads(path.read_text(encoding="utf-8"))
        theirs = info.get("semantic_classes", {k: v for k, v in SEMANTIC_CLASSES.items()})
        if len(theirs) != len(sem_classes):
            raise InputFileError(
                path, f"has {len(theirs)} semantic classes {dict(theirs)}; the bundle has {dict(sem_classes)}"
            )
