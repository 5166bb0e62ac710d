"""One integer label map that carries regions, objects and object types together: two schemes.

MONAI Label hands a bundle only ``{image, label}``; Co-Seg++ needs a semantic map, an instance map and a
type map. Two encodings are provided:

**Class map** (:func:`encode_class_map`, :func:`decode_class_map`; what the bundles' ``pred`` output is and
what MONAI Label annotators paint): each pixel holds ONE class of a flat list
``[background, region 1 .. region S-1, object type 1 .. object type T-1]``::

    value = sem                      outside objects
    value = S - 1 + type             on object pixels

Objects are the connected components of object pixels of one type; touching objects are kept apart by a
one-pixel gap (the encoder gives the border pixels of the object with the larger id back to the region).
Under objects the region is not stored: the decoder takes it from the nearest region pixel. An annotator
paints regions with region classes and nuclei with nucleus-type classes, leaving a one-pixel gap between
touching nuclei. This is lossy only in those gap pixels and in regions hidden under objects.

**Indexed** (:func:`encode`, :func:`decode`; lossless, for exchanging prepared datasets as single files):
they are packed into one integer per pixel::

    value = sem + S * (type + T * k)

with ``S = num_sem_classes`` (background included), ``T = num_inst_types`` (background included), ``sem``
the region class of the pixel, ``type`` the object type (0 outside objects) and ``k`` the object's local
index ``1..n`` (0 outside objects). Object pixels keep the class of the region they lie in, so regions
and objects never hide each other. Decoding is ``sem = v % S``, ``type = (v // S) % T``,
``k = v // (S * T)``.

Capacity: the largest value is ``S * T * (n + 1) - 1``, so at most ``2**16 // (S * T) - 1`` objects fit a
``uint16`` map (5460 for PUMA's S = 3, T = 4) and ``2**32 // (S * T) - 1`` a ``uint32`` map;
:func:`encode` picks ``uint16`` when the objects fit, else ``uint32``, else raises.

Painted types without indices: an annotator may paint object types without numbering objects
(``k = 0`` but ``type > 0``). :func:`decode` then derives objects as the 4-connected components of each
type's painted pixels, numbered after the indexed objects. Touching painted objects of the same type
therefore MERGE into one: leave a 1-pixel background gap between them (diagonal contact is a gap).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type, convert_to_numpy
from scipy import ndimage
from skimage.segmentation import relabel_sequential

from coseg.keys import DataKeys

__all__ = [
    "encode",
    "decode",
    "label_capacity",
    "encode_class_map",
    "decode_class_map",
    "class_map_names",
    "DecodeLabeld",
]


def _check_counts(num_sem_classes: int, num_inst_types: int) -> tuple[int, int]:
    for name, v in (("num_sem_classes", num_sem_classes), ("num_inst_types", num_inst_types)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
        if v < 1:
            raise ValueError(f"{name} must be >= 1 (background included), got {v}")
    return int(num_sem_classes), int(num_inst_types)


def label_capacity(num_sem_classes: int, num_inst_types: int, dtype: np.dtype | type | str = np.uint16) -> int:
    """The largest number of objects per image that an encoded map of ``dtype`` can hold.

    Args:
        num_sem_classes: ``S``, semantic classes including background.
        num_inst_types: ``T``, object types including background.
        dtype: ``uint8``, ``uint16``, ``uint32`` or ``uint64``.

    Returns:
        ``(max_value + 1) // (S * T) - 1`` (may be 0 or negative when not even one object fits).

    Raises:
        TypeError / ValueError: bad counts or a non-unsigned dtype.
    """
    s, t = _check_counts(num_sem_classes, num_inst_types)
    dt = np.dtype(dtype)
    if dt.kind != "u":
        raise ValueError(f"dtype must be an unsigned integer type, got {dt}")
    return (int(np.iinfo(dt).max) + 1) // (s * t) - 1


def _as_int_map(arr: Any, name: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype.kind == "f":
        if not np.isfinite(a).all() or not (a == np.round(a)).all():
            raise ValueError(f"{name} has non-integer values")
        a = a.astype(np.int64)
    if a.dtype.kind not in "uib":
        raise TypeError(f"{name} must hold integers, got dtype {a.dtype}")
    if a.dtype.kind == "i" and a.size and a.min() < 0:
        raise ValueError(f"{name} has negative values (min {a.min()})")
    return a.astype(np.int64, copy=False)


def encode(
    sem: np.ndarray,
    inst: np.ndarray,
    type_map: np.ndarray,
    num_sem_classes: int,
    num_inst_types: int,
) -> np.ndarray:
    """Pack region classes, objects and types into one label map (see the module docstring).

    Object ids in ``inst`` may be arbitrary; they are renumbered ``1..n`` in increasing id order. Pixels
    with ``type > 0`` outside any object are kept as painted types (``k = 0``) and decode to connected
    components. When ``T > 1`` every object pixel must have a type ``>= 1`` (this is what lets
    :func:`decode` notice a label decoded with the wrong ``S``/``T``).

    Args:
        sem: ``(H, W)`` (or any shape, same for all three) region class per pixel, ``0..S-1``.
        inst: instance ids, 0 = background.
        type_map: object type per pixel, ``0..T-1``.
        num_sem_classes: ``S``.
        num_inst_types: ``T``.

    Returns:
        The encoded map, ``uint16`` when it fits, else ``uint32``.

    Raises:
        TypeError: non-integer inputs or counts.
        ValueError: shapes differ; negative values; a class or type beyond ``S - 1`` / ``T - 1``; an object
            pixel with type 0 while ``T > 1``; more objects than a ``uint32`` map holds
            (:func:`label_capacity`).
    """
    s, t = _check_counts(num_sem_classes, num_inst_types)
    sem_a = _as_int_map(sem, "sem")
    inst_a = _as_int_map(inst, "inst")
    type_a = _as_int_map(type_map, "type_map")
    if not sem_a.shape == inst_a.shape == type_a.shape:
        raise ValueError(f"shapes differ: sem {sem_a.shape}, inst {inst_a.shape}, type_map {type_a.shape}")
    if sem_a.size and sem_a.max() >= s:
        raise ValueError(f"sem has class {sem_a.max()} but num_sem_classes={s} (classes 0..{s - 1})")
    if type_a.size and type_a.max() >= t:
        raise ValueError(f"type_map has type {type_a.max()} but num_inst_types={t} (types 0..{t - 1})")
    if t > 1 and ((inst_a > 0) & (type_a == 0)).any():
        raise ValueError("some object pixels (inst > 0) have type 0; with num_inst_types > 1 every object needs a type")
    k, _, _ = relabel_sequential(inst_a)
    n = int(k.max()) if k.size else 0
    for dt in (np.uint16, np.uint32):
        if n <= label_capacity(s, t, dt):
            return (sem_a + s * (type_a + t * k)).astype(dt)
    cap = label_capacity(s, t, np.uint32)
    raise ValueError(f"{n} objects exceed the capacity of a uint32 map ({cap} for S={s}, T={t})")


def decode(label: np.ndarray, num_sem_classes: int, num_inst_types: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unpack a label map made by :func:`encode` (or painted by hand in the same scheme).

    Args:
        label: encoded map of any shape (``(H, W)`` usually; ``(D, H, W)`` works too); integer dtype, or
            float holding integers.
        num_sem_classes: ``S`` used to encode.
        num_inst_types: ``T`` used to encode.

    Returns:
        ``(sem, inst, type_map)``, each ``int32`` of ``label``'s shape. ``inst`` is contiguous ``1..n``:
        indexed objects first (by ``k``), then the connected components of painted types (by type, then
        in raster order).

    Raises:
        TypeError: non-integer ``label`` or counts.
        ValueError: negative or non-integer values; an object (``k > 0``) with type 0 when ``T > 1``
            (a sign that ``S``/``T`` do not match the encoder's).
    """
    s, t = _check_counts(num_sem_classes, num_inst_types)
    v = _as_int_map(label, "label")
    sem = v % s
    rest = v // s
    type_map = rest % t
    k = rest // t
    if t > 1 and ((k > 0) & (type_map == 0)).any():
        bad = int(v[(k > 0) & (type_map == 0)][0])
        raise ValueError(
            f"value {bad} decodes to an object without a type (S={s}, T={t}); objects need a type in "
            f"1..{t - 1}: were num_sem_classes/num_inst_types the ones used to encode?"
        )
    inst, _, _ = relabel_sequential(k)
    painted = (k == 0) & (type_map > 0)
    if painted.any():
        structure = ndimage.generate_binary_structure(v.ndim, 1)
        next_id = int(inst.max())
        for ty in np.unique(type_map[painted]):
            comp, n = ndimage.label(painted & (type_map == ty), structure=structure)
            inst[comp > 0] = comp[comp > 0] + next_id
            next_id += n
    return sem.astype(np.int32), inst.astype(np.int32), type_map.astype(np.int32)


def encode_class_map(sem: np.ndarray, inst: np.ndarray, type_map: np.ndarray, num_sem_classes: int) -> np.ndarray:
    """Flatten regions, objects and types into one class map (the "class map" scheme of the module docstring).

    Args:
        sem: ``(H, W)`` region class per pixel, ``0..S-1``.
        inst: ``(H, W)`` instance ids (arbitrary), 0 = background.
        type_map: ``(H, W)`` object type per pixel (>= 1 on objects).
        num_sem_classes: ``S``.

    Returns:
        ``uint8`` (or ``uint16`` when the classes do not fit) map: ``sem`` outside objects, ``S - 1 + type``
        on object pixels, region class on the one-pixel gaps between touching objects.

    Raises:
        ValueError: shapes differ, a class beyond ``S - 1``, or an object pixel without a type.
    """
    s = int(num_sem_classes)
    sem_a, inst_a, type_a = _as_int_map(sem, "sem"), _as_int_map(inst, "inst"), _as_int_map(type_map, "type_map")
    if not sem_a.shape == inst_a.shape == type_a.shape:
        raise ValueError(f"shapes differ: sem {sem_a.shape}, inst {inst_a.shape}, type_map {type_a.shape}")
    if sem_a.size and sem_a.max() >= s:
        raise ValueError(f"sem has class {sem_a.max()} but num_sem_classes={s}")
    obj = inst_a > 0
    if (obj & (type_a == 0)).any():
        raise ValueError("some object pixels (inst > 0) have type 0; every object needs a type >= 1")
    # give up object pixels that have an 8-neighbour of a SMALLER id: no two objects stay 8-adjacent
    padded = np.pad(inst_a, 1)
    h, w = inst_a.shape
    gap = np.zeros_like(obj)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                nb = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
                gap |= obj & (nb > 0) & (nb < inst_a)
    keep = obj & ~gap
    out = sem_a.copy()
    out[keep] = s - 1 + type_a[keep]
    dtype = np.uint8 if out.size == 0 or out.max() < 256 else np.uint16
    return out.astype(dtype)


def decode_class_map(
    label: np.ndarray, num_sem_classes: int, num_inst_types: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split a class map into ``(sem, inst, type_map)`` (inverse of :func:`encode_class_map` up to its gaps).

    Objects are the 4-connected components of each object class; the region under an object is the class of
    the nearest region (non-object) pixel, or background when the whole map is objects.

    Args:
        label: ``(H, W)`` class map (integers, or floats holding integers).
        num_sem_classes: ``S``.
        num_inst_types: ``T``.

    Returns:
        ``(sem, inst, type_map)``, int32, instance ids contiguous ``1..n``.

    Raises:
        ValueError: a value beyond the class list (``S + T - 2``), or negative / non-integer values.
    """
    s, t = _check_counts(num_sem_classes, num_inst_types)
    v = _as_int_map(label, "label")
    top = s + t - 2
    if v.size and v.max() > top:
        raise ValueError(
            f"class value {int(v.max())} is beyond the class list (S={s} regions + {t - 1} object types: max {top})"
        )
    obj = v >= s
    type_map = np.where(obj, v - s + 1, 0)
    sem = np.where(obj, 0, v)
    if obj.any() and (~obj).any():
        _, (iy, ix) = ndimage.distance_transform_edt(obj, return_indices=True)
        sem = sem[iy, ix]
    inst = np.zeros(v.shape, np.int64)
    next_id = 0
    structure = ndimage.generate_binary_structure(v.ndim, 1)
    for ty in range(1, t):
        comp, n = ndimage.label(type_map == ty, structure=structure)
        inst[comp > 0] = comp[comp > 0] + next_id
        next_id += n
    return sem.astype(np.int32), inst.astype(np.int32), type_map.astype(np.int32)


def class_map_names(
    sem_names: Mapping[int, str], type_names: Mapping[int, str], *, object_suffix: str = ""
) -> dict[str, str]:
    """Names of the class-map values (a ``channel_def`` for MONAI bundle metadata / MONAI Label).

    Args:
        sem_names: ``{0: "background", 1: region, ...}``.
        type_names: ``{0: "background", 1: type, ...}``.
        object_suffix: appended to object names (e.g. ``" nucleus"``).

    Returns:
        ``{"0": "background", "1": region 1, ..., str(S - 1 + t): type t + suffix, ...}``.
    """
    s = len(sem_names)
    out = {str(i): str(sem_names[i]) for i in range(s)}
    for t in sorted(k for k in type_names if int(k) > 0):
        out[str(s - 1 + int(t))] = f"{type_names[t]}{object_suffix}"
    return out


class DecodeLabeld(MapTransform):
    """Dictionary transform: split the combined ``label`` into ``label_sem``, ``label_inst``, ``label_type``.

    ``scheme="class_map"`` (default; MONAI Label's labels and the bundles' ``pred``) uses
    :func:`decode_class_map`, ``scheme="indexed"`` uses :func:`decode`.

    The input may be a numpy array, a tensor or a :class:`monai.data.MetaTensor`, with a leading channel
    dimension of size 1 (``(1, H, W)``, as ``LoadImaged`` + ``EnsureChannelFirstd`` give) or without one.
    The outputs keep the input's type, channel layout and metadata; their dtype is ``dtype`` if given,
    else the input's (a float32 label must hold exact integers: values up to 2**24).

    Args:
        keys: the combined label key (exactly one), default ``"label"``.
        num_sem_classes: ``S`` of the encoding.
        num_inst_types: ``T`` of the encoding.
        scheme: ``"class_map"`` or ``"indexed"``.
        sem_key / inst_key / type_key: output keys.
        dtype: output dtype (e.g. ``torch.int64``); ``None`` keeps the input dtype.
        allow_missing_keys: skip silently when the key is absent.

    Raises:
        ValueError: more than one key; bad counts; a channel dimension other than 1; decoding errors
            (see :func:`decode`); float labels beyond exact float32 integers.
    """

    def __init__(
        self,
        keys: KeysCollection = DataKeys.LABEL,
        *,
        num_sem_classes: int,
        num_inst_types: int,
        scheme: str = "class_map",
        sem_key: str = DataKeys.LABEL_SEM,
        inst_key: str = DataKeys.LABEL_INST,
        type_key: str = DataKeys.LABEL_TYPE,
        dtype: torch.dtype | np.dtype | type | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"DecodeLabeld decodes one key, got {list(self.keys)}")
        self.num_sem_classes, self.num_inst_types = _check_counts(num_sem_classes, num_inst_types)
        if scheme not in ("class_map", "indexed"):
            raise ValueError(f"scheme must be 'class_map' or 'indexed', got {scheme!r}")
        self.decoder = decode_class_map if scheme == "class_map" else decode
        self.sem_key, self.inst_key, self.type_key = sem_key, inst_key, type_key
        self.dtype = dtype

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            arr = convert_to_numpy(img)
            if arr.ndim >= 3 and arr.shape[0] != 1:
                raise ValueError(f"{key}: expected a single channel (1, H, W), got shape {arr.shape}")
            if arr.dtype == np.float32 and arr.size and float(np.abs(arr).max()) > 2**24:
                raise ValueError(f"{key}: float32 label values beyond 2**24 are not exact; load it as integers")
            squeeze = arr.ndim >= 3
            sem, inst, type_map = self.decoder(arr[0] if squeeze else arr, self.num_sem_classes, self.num_inst_types)
            dtype = self.dtype if self.dtype is not None else getattr(img, "dtype", None)
            for out_key, out in ((self.sem_key, sem), (self.inst_key, inst), (self.type_key, type_map)):
                out = out[None] if squeeze else out
                d[out_key] = convert_to_dst_type(out, dst=img, dtype=dtype)[0]
        return d
