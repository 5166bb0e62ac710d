"""The one on-disk layout of a prepared 2D histology dataset, and its writer.

::

    DIR/images/<name>.png        RGB uint8
    DIR/labels_sem/<name>.png    uint8 region class per pixel (0 background)
    DIR/labels_inst/<name>.png   uint16 object ids, contiguous 1..n per image
    DIR/labels_type/<name>.png   uint8 object type per pixel (0 background)
    DIR/datalist.json            {"training": [...], "validation": [...], "test": [...], + meta}
    DIR/dataset.json             class names, format, source, magnification/mpp, label kinds, statistics

Datalist items hold paths RELATIVE to ``DIR`` (``monai.data.load_decathlon_datalist(..., base_dir=DIR)``
resolves them): ``{"image", "label_sem", "label_inst", "label_type", "group"}`` (label keys only for the
kinds the dataset has), plus ``"subset"`` (the official subset) where the source has one.

Consistency enforced for every sample: labels have the image's height and width; with both instance and
type maps, every object pixel has a type ``>= 1`` and no type lies outside objects (the label codec relies
on it). The writer fills a hidden temporary folder beside ``DIR`` and renames it to ``DIR`` only when
everything has been written, so a failed run leaves no ``datalist.json`` pointing at missing files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from skimage.segmentation import relabel_sequential

from coseg.errors import InputFileError
from coseg.io import StagedDir, write_json, write_label, write_rgb
from coseg.keys import DataKeys

__all__ = [
    "HistoSample",
    "LayoutWriter",
    "LABEL_KINDS",
    "LAYOUT_DIRS",
    "SPLIT_NAMES",
    "generic_class_names",
    "format_summary",
]

logger = logging.getLogger(__name__)

#: label kinds in the order they are listed everywhere
LABEL_KINDS = ("sem", "inst", "type")
#: sub-folder of each part of a sample
LAYOUT_DIRS = {"image": "images", "sem": "labels_sem", "inst": "labels_inst", "type": "labels_type"}
#: datalist keys of the three subsets (MONAI's decathlon names)
SPLIT_NAMES = ("training", "validation", "test")
_ITEM_KEYS = {"sem": DataKeys.LABEL_SEM, "inst": DataKeys.LABEL_INST, "type": DataKeys.LABEL_TYPE}
_MAX_INSTANCES = int(np.iinfo(np.uint16).max)
_MAX_CLASS = int(np.iinfo(np.uint8).max)


@dataclass
class HistoSample:
    """One prepared sample in memory.

    Attributes:
        name: output file stem (unique within the dataset; letters, digits, ``._-`` only).
        image: ``(H, W, 3) uint8``.
        sem: ``(H, W)`` region classes or ``None``.
        inst: ``(H, W)`` object ids (any, renumbered on writing) or ``None``.
        type: ``(H, W)`` object types or ``None``.
        source: the raw file the labels came from (named in error messages).
    """

    name: str
    image: np.ndarray
    sem: np.ndarray | None = None
    inst: np.ndarray | None = None
    type: np.ndarray | None = None
    source: str = ""

    def kinds(self) -> tuple[str, ...]:
        """The label kinds present, in :data:`LABEL_KINDS` order."""
        return tuple(k for k in LABEL_KINDS if getattr(self, k) is not None)


def generic_class_names(max_id: int, prefix: str) -> dict[str, str]:
    """``{"0": "background", "1": "<prefix>_1", ...}`` up to ``max_id``."""
    return {str(i): ("background" if i == 0 else f"{prefix}_{i}") for i in range(max_id + 1)}


@dataclass
class _Stats:
    images: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLIT_NAMES, 0))
    sem_pixels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    objects_per_type: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    max_sem: int = 0
    max_type: int = 0
    without_objects: int = 0
    without_regions: int = 0

    def add_counts(self, attr: str, counts: np.ndarray) -> None:
        cur = getattr(self, attr)
        n = max(len(cur), len(counts))
        out = np.zeros(n, dtype=np.int64)
        out[: len(cur)] += cur
        out[: len(counts)] += counts
        setattr(self, attr, out)


class LayoutWriter:
    """Write samples into the layout; use as a context manager, call :meth:`add` per sample, then :meth:`finish`.

    Args:
        out_dir: the dataset folder ``DIR`` to create.
        overwrite: replace an existing non-empty ``DIR`` (only after the new one is complete).

    Raises:
        FileExistsError: ``DIR`` exists, is not empty and ``overwrite`` is false (raised at construction,
            before any work).
    """

    def __init__(self, out_dir: str | os.PathLike, *, overwrite: bool = False) -> None:
        self._stage = StagedDir(out_dir, overwrite=overwrite)
        self.out_dir = self._stage.target
        self.overwrite = self._stage.overwrite
        self._tmp: Path | None = None
        self._items: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLIT_NAMES}
        self._names: set[str] = set()
        self._kinds: tuple[str, ...] | None = None
        self.stats = _Stats()

    def __enter__(self) -> LayoutWriter:
        self._tmp = self._stage.__enter__().path
        for sub in LAYOUT_DIRS.values():
            (self._tmp / sub).mkdir()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._tmp = None
        self._stage.__exit__(exc_type, exc, tb)

    def add(self, sample: HistoSample, split: str, group: str, **extra: Any) -> dict[str, Any]:
        """Check and write one sample; return its datalist item.

        Args:
            sample: the sample.
            split: ``"training"``, ``"validation"`` or ``"test"``.
            group: patient / source image (kept in the item).
            **extra: further JSON-serialisable item fields (e.g. ``subset="testA"``).

        Returns:
            The datalist item (paths relative to ``DIR``).

        Raises:
            RuntimeError: called outside the ``with`` block.
            ValueError: unknown split, duplicate or unsafe name, or a sample whose label kinds differ from
                the first sample's.
            InputFileError: inconsistent sample (sizes, dtypes, more than 65535 objects, class ids above
                255, types outside objects or objects without type), naming ``sample.source``.
        """
        if self._tmp is None:
            raise RuntimeError("LayoutWriter.add must be called inside its 'with' block")
        if split not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split!r}")
        name = sample.name
        if not name or any(not (c.isalnum() or c in "._-") for c in name) or name.startswith("."):
            raise ValueError(f"sample name {name!r} must be non-empty and use only letters, digits, '.', '_', '-'")
        if name in self._names:
            raise ValueError(f"duplicate sample name {name!r}")
        kinds = sample.kinds()
        if self._kinds is None:
            self._kinds = kinds
        elif kinds != self._kinds:
            raise ValueError(f"sample {name!r} has labels {kinds}, earlier samples have {self._kinds}")
        sem, inst, type_map = self._checked(sample)
        write_rgb(self._tmp / LAYOUT_DIRS["image"] / f"{name}.png", sample.image)
        item: dict[str, Any] = {DataKeys.IMAGE: f"{LAYOUT_DIRS['image']}/{name}.png"}
        for kind, arr, dtype in (("sem", sem, np.uint8), ("inst", inst, np.uint16), ("type", type_map, np.uint8)):
            if arr is None:
                continue
            rel = f"{LAYOUT_DIRS[kind]}/{name}.png"
            write_label(self._tmp / rel, arr, dtype=dtype)
            item[_ITEM_KEYS[kind]] = rel
        item["group"] = str(group)
        item.update(extra)
        self._items[split].append(item)
        self._names.add(name)
        self._update_stats(split, sem, inst, type_map)
        return item

    def _checked(self, s: HistoSample) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        src = s.source or s.name
        img = s.image
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
            raise InputFileError(src, f"image must be (H, W, 3) uint8, got {getattr(img, 'shape', None)}")
        hw = img.shape[:2]
        out: dict[str, np.ndarray | None] = {}
        for kind in LABEL_KINDS:
            arr = getattr(s, kind)
            if arr is None:
                out[kind] = None
                continue
            arr = np.asarray(arr)
            if arr.shape != hw:
                raise InputFileError(
                    src, f"{kind} label is {arr.shape[1]}x{arr.shape[0]} but the image is {hw[1]}x{hw[0]}"
                )
            if arr.dtype.kind not in "uib":
                raise InputFileError(src, f"{kind} label must hold integers, got {arr.dtype}")
            if arr.size and arr.min() < 0:
                raise InputFileError(src, f"{kind} label has negative values")
            out[kind] = arr
        sem, inst, type_map = out["sem"], out["inst"], out["type"]
        if sem is not None and sem.max() > _MAX_CLASS:
            raise InputFileError(src, f"semantic class {int(sem.max())} exceeds {_MAX_CLASS}")
        if type_map is not None and type_map.max() > _MAX_CLASS:
            raise InputFileError(src, f"object type {int(type_map.max())} exceeds {_MAX_CLASS}")
        if inst is not None:
            inst = relabel_sequential(inst.astype(np.int64, copy=False))[0]
            n = int(inst.max())
            if n > _MAX_INSTANCES:
                raise InputFileError(src, f"{n} objects in one image exceed the uint16 limit of {_MAX_INSTANCES}")
            if type_map is not None:
                untyped = int(np.count_nonzero((inst > 0) & (type_map == 0)))
                if untyped:
                    raise InputFileError(src, f"{untyped} object pixels have type 0 (every object needs a type)")
                stray = int(np.count_nonzero((inst == 0) & (type_map > 0)))
                if stray:
                    raise InputFileError(src, f"{stray} pixels have an object type but lie outside every object")
        return sem, inst, type_map

    def _update_stats(
        self, split: str, sem: np.ndarray | None, inst: np.ndarray | None, type_map: np.ndarray | None
    ) -> None:
        st = self.stats
        st.images[split] += 1
        if sem is not None:
            st.add_counts("sem_pixels", np.bincount(sem.ravel().astype(np.int64)))
            st.max_sem = max(st.max_sem, int(sem.max()))
            st.without_regions += int(sem.max()) == 0
        if inst is not None:
            st.without_objects += int(inst.max()) == 0
        if type_map is not None:
            st.max_type = max(st.max_type, int(type_map.max()))
        if inst is not None and inst.max() > 0:
            n = int(inst.max())
            if type_map is None:
                st.add_counts("objects_per_type", np.array([0, n], dtype=np.int64))
            else:
                # majority type of each object: argmax over a (object, type) contingency table
                fg = inst > 0
                table = np.zeros((n + 1, int(type_map.max()) + 1), dtype=np.int64)
                np.add.at(table, (inst[fg], type_map[fg].astype(np.int64)), 1)
                majority = table[1:].argmax(axis=1)
                st.add_counts("objects_per_type", np.bincount(majority))

    @property
    def label_kinds(self) -> tuple[str, ...]:
        """Label kinds of the samples written so far."""
        return self._kinds or ()

    def finish(self, dataset_info: Mapping[str, Any], datalist_meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Write ``datalist.json`` and ``dataset.json`` and move the folder into place.

        Class-name dictionaries in ``dataset_info`` (``semantic_classes``, ``instance_types``) that are
        ``None`` are filled with generic names up to the largest id seen; given ones must name every id seen.

        Args:
            dataset_info: content of ``dataset.json`` (format, source, class names, ...).
            datalist_meta: extra top-level fields of ``datalist.json``.

        Returns:
            The ``dataset.json`` content written (with ``label_kinds`` and ``statistics`` added).

        Raises:
            RuntimeError: outside the ``with`` block or no sample added.
            ValueError: a class id seen in the data has no name.
        """
        if self._tmp is None:
            raise RuntimeError("LayoutWriter.finish must be called inside its 'with' block")
        if not self._names:
            raise RuntimeError("no sample was added")
        info = dict(dataset_info)
        kinds = self.label_kinds
        st = self.stats
        info["semantic_classes"] = self._names_for(info.get("semantic_classes"), "sem" in kinds, st.max_sem, "class")
        type_seen = st.max_type if "type" in kinds else (1 if "inst" in kinds else 0)
        info["instance_types"] = self._names_for(
            info.get("instance_types"), "inst" in kinds or "type" in kinds, type_seen, "type"
        )
        info["label_kinds"] = list(kinds)
        info["statistics"] = self.summary(info)
        datalist: dict[str, Any] = {s: self._items[s] for s in SPLIT_NAMES}
        datalist.update(
            {
                "numTraining": len(self._items["training"]),
                "numValidation": len(self._items["validation"]),
                "numTest": len(self._items["test"]),
                "label_kinds": list(kinds),
            }
        )
        if datalist_meta:
            datalist.update({k: v for k, v in datalist_meta.items() if k not in SPLIT_NAMES})
        for fname, doc in (("datalist.json", datalist), ("dataset.json", info)):
            write_json(self._tmp / fname, doc, indent=1)
        for kind in LABEL_KINDS:
            if kind not in kinds:
                (self._tmp / LAYOUT_DIRS[kind]).rmdir()
        self._move_into_place()
        return info

    @staticmethod
    def _names_for(names: Mapping[Any, str] | None, present: bool, max_seen: int, prefix: str) -> dict[str, str]:
        if not present:
            return {} if names is None else {str(k): str(v) for k, v in names.items()}
        if names is None:
            return generic_class_names(max_seen, prefix)
        out = {str(k): str(v) for k, v in sorted(names.items(), key=lambda kv: int(kv[0]))}
        missing = [i for i in range(max_seen + 1) if str(i) not in out]
        if missing:
            raise ValueError(f"ids {missing} occur in the labels but have no name in {out}")
        return out

    def summary(self, info: Mapping[str, Any]) -> dict[str, Any]:
        """Images per split, pixels per semantic class, objects per (majority) type, and the images whose
        instance map holds no object (``images_without_objects``) or whose semantic map is all background
        (``images_without_regions``)."""
        st = self.stats
        sem_names = info.get("semantic_classes") or {}
        type_names = info.get("instance_types") or {}
        out: dict[str, Any] = {"images": dict(st.images)}
        if "sem" in self.label_kinds:
            out["semantic_pixels"] = {sem_names.get(str(i), str(i)): int(v) for i, v in enumerate(st.sem_pixels)}
        if "inst" in self.label_kinds:
            out["objects_per_type"] = {
                type_names.get(str(i), str(i)): int(v) for i, v in enumerate(st.objects_per_type) if i > 0
            }
            out["images_without_objects"] = st.without_objects
        if "sem" in self.label_kinds:
            out["images_without_regions"] = st.without_regions
        return out

    def _move_into_place(self) -> None:
        if self._tmp is None:
            raise RuntimeError("nothing to move: the writer is not open")
        self._stage.commit()
        self._tmp = None


def format_summary(info: Mapping[str, Any]) -> str:
    """A short text table of ``info["statistics"]`` (as returned by :meth:`LayoutWriter.finish`)."""
    st = info.get("statistics", {})
    lines = [f"dataset: {info.get('format', '?')}  labels: {', '.join(info.get('label_kinds', []))}"]
    images = st.get("images", {})
    lines.append("images   " + "  ".join(f"{k}={v}" for k, v in images.items()) + f"  total={sum(images.values())}")
    empty = [
        f"{st[key]} {what}"
        for key, what in (("images_without_objects", "without objects"), ("images_without_regions", "all background"))
        if st.get(key)
    ]
    if empty:
        lines.append("empty labels: " + ", ".join(empty))
    for title, key in (("semantic pixels", "semantic_pixels"), ("objects per type", "objects_per_type")):
        table = st.get(key)
        if not table:
            continue
        total = sum(table.values()) or 1
        lines.append(f"{title}:")
        for name, v in table.items():
            lines.append(f"  {name:<24} {v:>14,d}  {100.0 * v / total:6.2f}%")
    return "\n".join(lines)
