"""Dental CBCT volumes: reading with checks, and ToothFairy2 labels mapped by name to the Co-Seg++ tasks.

ToothFairy2 (Bolelli et al., CVPR 2025) ships in nnU-Net's raw layout::

    ROOT/imagesTr/<case>_0000.mha     (some copies: .nii.gz)
    ROOT/labelsTr/<case>.mha
    ROOT/dataset.json                 {"labels": {"background": 0, "Lower Jawbone": 1, ...}}

Its label volumes hold 42 structures: jawbones, inferior alveolar canals, maxillary sinuses, pharynx,
bridges, crowns, implants and every tooth by FDI number (the ids 19, 20, 29, 30, 39, 40 are placeholders
named ``NA1`` ... ``NA6`` so that nnU-Net sees consecutive ids). Copies exist that re-index the ids, so
this module maps labels BY NAME, never by id:

- semantic classes (:data:`SEMANTIC_CLASSES`): 0 background, 1 lower jawbone, 2 upper jawbone, 3 pharynx;
- instances: one per tooth, the instance id is the tooth's FDI number (11-18, 21-28, 31-38, 41-48);
- instance types (:data:`INSTANCE_TYPES`): 0 background, 1 upper teeth (FDI 1x, 2x), 2 lower teeth (3x, 4x).

Tooth voxels carry semantic class 0: teeth are the instance task's objects, the regions are the jawbones and
the pharynx. Every other structure (canals, sinuses, bridges, crowns, implants, placeholders) goes to the
background unless ``overrides`` send it elsewhere (see :func:`parse_label_target`).

Volumes are read as MONAI's readers read them (array in file index order, RAS affine kept exactly: nibabel for
NIfTI like :class:`monai.data.NibabelReader`, SimpleITK for MetaImage, NRRD and DICOM series folders with the
LPS-to-RAS conversion of :class:`monai.data.ITKReader`) without importing MONAI, which takes seconds.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
from scipy import ndimage

from coseg.data.errors import InputFileError

__all__ = [
    "TOOTHFAIRY2_LABELS",
    "SEMANTIC_CLASSES",
    "INSTANCE_TYPES",
    "TOOTHFAIRY2_REGION_IDS",
    "TOOTH_WIDTHS_MM",
    "FDI_TEETH",
    "VOLUME_SUFFIXES",
    "LabelTarget",
    "CbctLabelMap",
    "Volume",
    "CbctCase",
    "normalize_label_name",
    "parse_tooth_name",
    "parse_label_target",
    "fdi_type",
    "read_dataset_json",
    "build_label_map",
    "read_volume",
    "read_case",
    "check_volume_pair",
    "find_toothfairy2_cases",
]

logger = logging.getLogger(__name__)

_QUADRANT_NAMES = {1: "Upper Right", 2: "Upper Left", 3: "Lower Left", 4: "Lower Right"}
_TOOTH_NAMES = {
    1: "Central Incisor",
    2: "Lateral Incisor",
    3: "Canine",
    4: "First Premolar",
    5: "Second Premolar",
    6: "First Molar",
    7: "Second Molar",
    8: "Third Molar (Wisdom Tooth)",
}

#: Valid permanent-tooth FDI numbers, quadrant by quadrant.
FDI_TEETH: tuple[int, ...] = tuple(10 * q + t for q in (1, 2, 3, 4) for t in range(1, 9))


def _official_labels() -> dict[str, int]:
    labels = {
        "background": 0,
        "Lower Jawbone": 1,
        "Upper Jawbone": 2,
        "Left Inferior Alveolar Canal": 3,
        "Right Inferior Alveolar Canal": 4,
        "Left Maxillary Sinus": 5,
        "Right Maxillary Sinus": 6,
        "Pharynx": 7,
        "Bridge": 8,
        "Crown": 9,
        "Implant": 10,
    }
    placeholder = 1
    for quadrant in (1, 2, 3, 4):
        for tooth in range(1, 9):
            labels[f"{_QUADRANT_NAMES[quadrant]} {_TOOTH_NAMES[tooth]}"] = 10 * quadrant + tooth
        if quadrant < 4:  # ids 19-20, 29-30, 39-40 are unused placeholders in the public dataset.json
            for gap in (9, 10):
                labels[f"NA{placeholder}"] = 10 * quadrant + gap
                placeholder += 1
    return dict(sorted(labels.items(), key=lambda kv: kv[1]))


#: ``dataset.json`` labels of the public ToothFairy2 release (nnU-Net v2 style: name -> id).
TOOTHFAIRY2_LABELS: dict[str, int] = _official_labels()

#: Co-Seg++ semantic classes for dental CBCT.
SEMANTIC_CLASSES: dict[int, str] = {0: "background", 1: "lower jawbone", 2: "upper jawbone", 3: "pharynx"}

#: Co-Seg++ instance (object) types for dental CBCT.
INSTANCE_TYPES: dict[int, str] = {0: "background", 1: "upper teeth", 2: "lower teeth"}

#: ToothFairy2 id of each semantic class (for writing predictions in ToothFairy2 ids).
TOOTHFAIRY2_REGION_IDS: dict[int, int] = {1: 1, 2: 2, 3: 7}

#: Average mesio-distal crown widths (mm) of tooth positions 1..8 (central incisor .. third molar), per instance
#: type (1 upper, 2 lower): the template of the FDI numbering heuristic and the slots of the synthetic phantom.
TOOTH_WIDTHS_MM: dict[int, tuple[float, ...]] = {
    1: (8.5, 6.5, 7.5, 7.0, 6.5, 10.0, 9.0, 8.5),
    2: (5.0, 5.5, 7.0, 7.0, 7.0, 11.0, 10.5, 10.0),
}

#: File endings accepted as volumes (a folder is read as a DICOM series).
VOLUME_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")

_REGION_SYNONYMS: dict[str, int] = {
    "lower jawbone": 1,
    "lower jaw": 1,
    "mandible": 1,
    "upper jawbone": 2,
    "upper jaw": 2,
    "maxilla": 2,
    "pharynx": 3,
}

# Structures that are known to the ToothFairy family and go to the background unless overridden.
_KNOWN_BACKGROUND = re.compile(
    r"^(background|(left |right )?inferior alveolar canal|(left |right )?maxillary sinus|bridge|crown|implant"
    r"|na ?\d+)$"
)

_TOOTH_KINDS: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"\bcentral incisor\b"), 1),
    (re.compile(r"\blateral incisor\b"), 2),
    (re.compile(r"\b(first|1st) (premolar|bicuspid)\b"), 4),
    (re.compile(r"\b(second|2nd) (premolar|bicuspid)\b"), 5),
    (re.compile(r"\b(canine|cuspid)\b"), 3),
    (re.compile(r"\b(first|1st) molar\b"), 6),
    (re.compile(r"\b(second|2nd) molar\b"), 7),
    (re.compile(r"\b((third|3rd) molar|wisdom tooth)\b"), 8),
)
_EXPLICIT_FDI = re.compile(r"\b(?:fdi|tooth) ?(\d{2})\b")


def normalize_label_name(name: str) -> str:
    """Normalise a label name for matching: lower case, ``_``/``-`` as spaces, single spaces, no parentheses.

    Args:
        name: a label name as written in a ``dataset.json``.

    Returns:
        e.g. ``"Lower Left Third Molar (Wisdom Tooth)"`` -> ``"lower left third molar wisdom tooth"``.
    """
    text = re.sub(r"[()\[\]_\-,]", " ", str(name).lower())
    text = re.sub(r"(fdi|tooth)(\d{2})\b", r"\1 \2", text)
    return " ".join(text.split())


def parse_tooth_name(name: str) -> int | None:
    """FDI number of a tooth label name, or ``None`` when the name is not a tooth.

    Understands the ToothFairy2 names ("Upper Right Central Incisor", "Lower Left Third Molar (Wisdom Tooth)")
    and common variants: "maxillary"/"mandibular" for upper/lower, "cuspid"/"bicuspid", "1st"/"2nd"/"3rd",
    an explicit number ("fdi 11", "Tooth_11", "... Fdi11").

    Args:
        name: label name.

    Returns:
        FDI number in :data:`FDI_TEETH`, or ``None`` if the name names no tooth.

    Raises:
        ValueError: if the name is a tooth name that contradicts itself (an explicit FDI number that disagrees
            with the words, or a tooth kind without jaw or side) or an explicit number that is not an FDI tooth.
    """
    text = normalize_label_name(name)
    explicit = _EXPLICIT_FDI.search(text)
    kind = next((value for pattern, value in _TOOTH_KINDS if pattern.search(text)), None)
    if kind is None and explicit is None:
        return None
    words_fdi = None
    if kind is not None:
        upper = re.search(r"\b(upper|maxillary)\b", text) is not None
        lower = re.search(r"\b(lower|mandibular)\b", text) is not None
        right = re.search(r"\bright\b", text) is not None
        left = re.search(r"\bleft\b", text) is not None
        if upper == lower or right == left:
            if explicit is None:
                raise ValueError(f"tooth label {name!r} does not name exactly one jaw (upper/lower) and one side")
        else:
            quadrant = {(True, True): 1, (True, False): 2, (False, False): 3, (False, True): 4}[(upper, right)]
            words_fdi = 10 * quadrant + kind
    if explicit is not None:
        number = int(explicit.group(1))
        if number not in FDI_TEETH:
            raise ValueError(f"label {name!r} carries {number}, which is not a permanent-tooth FDI number")
        if words_fdi is not None and words_fdi != number:
            raise ValueError(f"label {name!r}: its words mean FDI {words_fdi} but it says {number}")
        return number
    return words_fdi


def fdi_type(fdi: int) -> int:
    """Instance type of an FDI tooth: 1 upper teeth (quadrants 1, 2), 2 lower teeth (quadrants 3, 4).

    Args:
        fdi: FDI number.

    Returns:
        1 or 2.

    Raises:
        ValueError: if ``fdi`` is not in :data:`FDI_TEETH`.
    """
    if int(fdi) not in FDI_TEETH:
        raise ValueError(f"{fdi} is not a permanent-tooth FDI number")
    return 1 if int(fdi) // 10 in (1, 2) else 2


@dataclass(frozen=True)
class LabelTarget:
    """Where the voxels of one source label go.

    Attributes:
        kind: ``"background"``; ``"region"`` (``value`` = semantic class 1..3); ``"tooth"`` (``value`` = FDI
            number); ``"attach"`` (each connected piece joins the tooth it touches most, e.g. a crown joins the
            tooth whose root it sits on; pieces touching no tooth go to the background).
        value: semantic class or FDI number; 0 for ``background`` and ``attach``.
    """

    kind: Literal["background", "region", "tooth", "attach"]
    value: int = 0


def parse_label_target(value: str | int | LabelTarget) -> LabelTarget:
    """Read a mapping override value.

    Accepted values: ``"background"``; a semantic class name (``"lower jawbone"``/``"mandible"``,
    ``"upper jawbone"``/``"maxilla"``, ``"pharynx"``); a tooth (FDI ``int`` such as ``16``, or a name such as
    ``"Upper Right First Molar"`` or ``"fdi 16"``); ``"attach"`` (join the touching tooth).

    Args:
        value: the override value.

    Returns:
        the :class:`LabelTarget`.

    Raises:
        ValueError: if the value names none of the above.
        TypeError: if the value is neither ``str``, ``int`` nor :class:`LabelTarget`.
    """
    if isinstance(value, LabelTarget):
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"label target must be a str or an FDI int, got {type(value).__name__}")
    if isinstance(value, int):
        if value not in FDI_TEETH:
            raise ValueError(f"integer label target {value} is not an FDI tooth number")
        return LabelTarget("tooth", value)
    text = normalize_label_name(value)
    if text == "background":
        return LabelTarget("background")
    if text in ("attach", "attach to tooth", "nearest tooth"):
        return LabelTarget("attach")
    if text in _REGION_SYNONYMS:
        return LabelTarget("region", _REGION_SYNONYMS[text])
    fdi = parse_tooth_name(text)
    if fdi is None:
        raise ValueError(
            f"unknown label target {value!r}: use 'background', 'attach', a region "
            f"({', '.join(sorted(_REGION_SYNONYMS))}) or a tooth (FDI number or name)"
        )
    return LabelTarget("tooth", fdi)


def _default_target(name: str) -> LabelTarget | None:
    text = normalize_label_name(name)
    if text in _REGION_SYNONYMS:
        return LabelTarget("region", _REGION_SYNONYMS[text])
    if _KNOWN_BACKGROUND.match(text):
        return LabelTarget("background")
    fdi = parse_tooth_name(text)
    if fdi is not None:
        return LabelTarget("tooth", fdi)
    return None


def _target_to_json(target: LabelTarget) -> str | int:
    if target.kind == "region":
        return SEMANTIC_CLASSES[target.value]
    if target.kind == "tooth":
        return target.value
    return target.kind


@dataclass(frozen=True)
class CbctLabelMap:
    """A resolved mapping from the ids of one dataset's label volumes to (semantic class, tooth FDI).

    Build it with :func:`build_label_map`; apply it with :meth:`apply`.

    Attributes:
        names: source id -> label name (from the ``dataset.json``).
        targets: source id -> :class:`LabelTarget`.
    """

    names: dict[int, str]
    targets: dict[int, LabelTarget]
    _sem_lut: np.ndarray = field(init=False, repr=False, compare=False)
    _inst_lut: np.ndarray = field(init=False, repr=False, compare=False)
    _known: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if set(self.names) != set(self.targets):
            raise ValueError("CbctLabelMap: names and targets must cover the same ids")
        if any(i < 0 for i in self.names):
            raise ValueError("CbctLabelMap: label ids must be >= 0")
        size = max(self.names, default=0) + 1
        sem = np.zeros(size, dtype=np.uint8)
        inst = np.zeros(size, dtype=np.uint16)
        known = np.zeros(size, dtype=bool)
        for i, target in self.targets.items():
            known[i] = True
            if target.kind == "region":
                sem[i] = target.value
            elif target.kind == "tooth":
                inst[i] = target.value
        object.__setattr__(self, "_sem_lut", sem)
        object.__setattr__(self, "_inst_lut", inst)
        object.__setattr__(self, "_known", known)

    def describe(self) -> dict[str, str | int]:
        """JSON-friendly summary ``{source name: target}`` (target: class name, FDI number, or kind)."""
        return {self.names[i]: _target_to_json(self.targets[i]) for i in sorted(self.names)}

    def apply(
        self, label: np.ndarray, *, path: str | os.PathLike | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Map a source label volume to the three Co-Seg++ label volumes.

        Args:
            label: ``(I, J, K)`` (or any shape) non-negative integer source labels.
            path: the label file, named in the error when the volume holds an id the map does not know.

        Returns:
            ``(sem, inst, type)`` of the input's shape: ``sem`` uint8 semantic classes
            (:data:`SEMANTIC_CLASSES`), ``inst`` uint16 tooth instances (id = FDI number), ``type`` uint8
            instance types (:data:`INSTANCE_TYPES`).

        Raises:
            InputFileError: if the volume holds ids that the ``dataset.json`` does not list.
            ValueError: if ``label`` is not a non-negative integer array.
        """
        label = np.asarray(label)
        if not np.issubdtype(label.dtype, np.integer):
            raise ValueError(f"label volume must be an integer array, got {label.dtype}")
        source = os.fspath(path) if path is not None else "<label array>"
        if label.size == 0:
            raise InputFileError(source, "label volume is empty")
        low, high = int(label.min()), int(label.max())
        if low < 0:
            raise InputFileError(source, f"label volume holds negative id {low}")
        counts = np.bincount(label.ravel(), minlength=len(self._known))
        present = np.flatnonzero(counts)
        unknown = [int(i) for i in present if i >= len(self._known) or not self._known[i]]
        if unknown:
            raise InputFileError(source, f"label ids {unknown} are not listed in dataset.json (max id {high})")
        sem = self._sem_lut[label]
        inst = self._inst_lut[label]
        attach = [i for i, t in self.targets.items() if t.kind == "attach" and i < len(counts) and counts[i] > 0]
        for source_id in attach:
            _attach_to_teeth(label == source_id, inst)
        type_lut = np.zeros(max(FDI_TEETH) + 1, dtype=np.uint8)
        for fdi in FDI_TEETH:
            type_lut[fdi] = fdi_type(fdi)
        return sem, inst, type_lut[inst]


def _attach_to_teeth(mask: np.ndarray, inst: np.ndarray) -> None:
    """Give each connected piece of ``mask`` (26-connected) the tooth id it touches most, in place."""
    pieces, count = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    boxes = ndimage.find_objects(pieces)
    ring_structure = ndimage.generate_binary_structure(mask.ndim, 1)
    for index, box in enumerate(boxes, start=1):
        grown = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, mask.shape))
        piece = pieces[grown] == index
        ring = ndimage.binary_dilation(piece, structure=ring_structure) & ~piece
        touching = inst[grown][ring]
        touching = touching[touching > 0]
        if touching.size == 0:
            continue  # a crown or bridge on no labelled tooth stays background
        values, freq = np.unique(touching, return_counts=True)
        inst[grown][piece] = values[np.argmax(freq)]
    logger.debug("attached %d pieces to teeth", count)


def read_dataset_json(path: str | os.PathLike) -> dict[int, str]:
    """Label names of an nnU-Net ``dataset.json`` (v2 ``{name: id}`` or v1 ``{"id": name}``).

    Args:
        path: the ``dataset.json`` file.

    Returns:
        id -> name.

    Raises:
        InputFileError: if the file is missing, not JSON, has no ``labels`` dict, uses nnU-Net region labels
            (lists of ids), has non-integer or duplicate ids, or duplicate names.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "dataset.json is missing")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputFileError(path, f"cannot be read as JSON ({exc})") from exc
    labels = content.get("labels") if isinstance(content, dict) else None
    if not isinstance(labels, dict) or not labels:
        raise InputFileError(path, "has no non-empty 'labels' object")
    is_v1 = all(re.fullmatch(r"\d+", str(k)) for k in labels) and all(isinstance(v, str) for v in labels.values())
    out: dict[int, str] = {}
    for key, value in labels.items():
        name, raw_id = (value, key) if is_v1 else (key, value)
        if isinstance(raw_id, (list, tuple)):
            raise InputFileError(path, f"label {name!r} is an nnU-Net region (list of ids); not supported")
        if isinstance(raw_id, bool) or not (
            isinstance(raw_id, int) or (isinstance(raw_id, str) and re.fullmatch(r"\d+", raw_id))
        ):
            raise InputFileError(path, f"label {name!r} has id {raw_id!r}, expected a non-negative integer")
        label_id = int(raw_id)
        if label_id < 0:
            raise InputFileError(path, f"label {name!r} has id {raw_id!r}, expected a non-negative integer")
        if label_id in out:
            raise InputFileError(path, f"label id {label_id} is used by both {out[label_id]!r} and {name!r}")
        out[label_id] = str(name)
    normalized = [normalize_label_name(n) for n in out.values()]
    if len(set(normalized)) != len(normalized):
        raise InputFileError(path, "two labels have the same name")
    return dict(sorted(out.items()))


def build_label_map(
    labels: str | os.PathLike | Mapping[int, str],
    *,
    overrides: Mapping[str, str | int | LabelTarget] | None = None,
    unknown: Literal["error", "background"] = "error",
) -> CbctLabelMap:
    """Resolve label names to targets.

    Args:
        labels: a ``dataset.json`` path, or id -> name.
        overrides: label name -> target (see :func:`parse_label_target`), e.g. ``{"Crown": "attach"}`` or
            ``{"Implant": "background", "Bridge": "upper jawbone"}``. Names are matched after
            :func:`normalize_label_name`; every override must name a label of the dataset.
        unknown: what to do with names that are neither a known structure nor a tooth: ``"error"`` or send them
            to the ``"background"``.

    Returns:
        the :class:`CbctLabelMap`.

    Raises:
        InputFileError: (for a ``dataset.json`` path) on unreadable files or unknown names with
            ``unknown="error"``; with a dict, the same problems raise ``ValueError``.
        ValueError: on a bad ``unknown`` value, overrides that name no label, bad override targets, or two
            labels named as the same tooth (an override onto an existing tooth merges into it on purpose).
    """
    if unknown not in ("error", "background"):
        raise ValueError(f"unknown must be 'error' or 'background', got {unknown!r}")
    source = os.fspath(labels) if isinstance(labels, (str, os.PathLike)) else None
    names = read_dataset_json(labels) if source is not None else {int(k): str(v) for k, v in dict(labels).items()}

    def fail(problem: str) -> Exception:
        return InputFileError(source, problem) if source is not None else ValueError(problem)

    by_name = {normalize_label_name(n): i for i, n in names.items()}
    parsed_overrides: dict[int, LabelTarget] = {}
    for name, value in (overrides or {}).items():
        key = normalize_label_name(name)
        if key not in by_name:
            raise ValueError(f"override {name!r} names no label of the dataset (labels: {sorted(names.values())})")
        parsed_overrides[by_name[key]] = parse_label_target(value)
    targets: dict[int, LabelTarget] = {}
    problems: list[str] = []
    for label_id, name in names.items():
        if label_id in parsed_overrides:
            targets[label_id] = parsed_overrides[label_id]
            continue
        try:
            target = _default_target(name)
        except ValueError as exc:
            raise fail(str(exc)) from exc
        if target is None:
            if unknown == "error":
                problems.append(name)
                continue
            logger.warning("label %r (id %d) is unknown; mapped to background", name, label_id)
            target = LabelTarget("background")
        targets[label_id] = target
    if problems:
        raise fail(f"unknown label names {problems}: pass overrides or unknown='background'")
    if 0 in targets and targets[0].kind != "background":
        raise fail(f"label id 0 ({names[0]!r}) must be the background")
    # two labels NAMED as the same tooth is an inconsistent dataset; an override onto a tooth merges on purpose
    teeth = [t.value for i, t in targets.items() if t.kind == "tooth" and i not in parsed_overrides]
    duplicated = sorted({v for v in teeth if teeth.count(v) > 1})
    if duplicated:
        raise fail(f"several labels name the same tooth FDI {duplicated}")
    return CbctLabelMap(names=names, targets=targets)


@dataclass(frozen=True)
class Volume:
    """A 3D volume and where it lies in space.

    Attributes:
        array: ``(I, J, K)`` voxels in the file's index order.
        affine: ``(4, 4)`` float64 map from voxel index ``(i, j, k, 1)`` to RAS millimetres (MONAI's affine).
        path: the file (or DICOM folder) it came from.
        nifti_header: the NIfTI header when read from NIfTI (outputs copy it so that sform/qform codes survive).
    """

    array: np.ndarray
    affine: np.ndarray
    path: str
    nifti_header: nib.Nifti1Header | None = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along ``(i, j, k)``."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def axcodes(self) -> tuple[str, str, str]:
        """Anatomical direction of increasing ``i, j, k`` (nibabel's ``aff2axcodes``), e.g. ``('L', 'P', 'S')``."""
        return tuple(nib.aff2axcodes(self.affine))


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in VOLUME_SUFFIXES if name.endswith(s)), "")


def _load_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Voxels in file index order and the RAS affine, as MONAI's readers return them.

    NIfTI goes through nibabel exactly as :class:`monai.data.NibabelReader` does (``dataobj`` with scaling,
    ``img.affine``); ITK formats and DICOM folders through SimpleITK with the index order reversed to
    ``(i, j, k)`` and the LPS geometry turned into a RAS affine, as :class:`monai.data.ITKReader` does. Importing
    MONAI costs seconds; the readers' results are the same (checked in the tests).
    """
    if _suffix(path) in (".nii", ".nii.gz"):
        image = nib.load(os.fspath(path))
        return np.asanyarray(image.dataobj), np.array(image.affine, dtype=np.float64)
    import SimpleITK as sitk

    if path.is_dir():
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(os.fspath(path))
        if not series:
            raise ValueError("the folder holds no DICOM series")
        if len(series) > 1:
            raise ValueError(f"the folder holds {len(series)} DICOM series; give the folder of one series")
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(os.fspath(path), series[0]))
        image = reader.Execute()
    else:
        image = sitk.ReadImage(os.fspath(path))
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"voxels have {image.GetNumberOfComponentsPerPixel()} components; expected a scalar volume")
    dim = image.GetDimension()
    array = sitk.GetArrayFromImage(image).transpose(tuple(range(dim - 1, -1, -1)))
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(dim, dim)
    affine = np.eye(4)
    n = min(dim, 3)
    affine[:n, :n] = (direction * np.array(image.GetSpacing(), dtype=np.float64))[:n, :n]
    affine[:n, 3] = np.array(image.GetOrigin(), dtype=np.float64)[:n]
    return array, np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def read_volume(path: str | os.PathLike, *, kind: Literal["image", "label"] = "image") -> Volume:
    """Read a 3D CBCT/CT image or label volume with checks.

    NIfTI is read with nibabel; MetaImage (``.mha``/``.mhd``), NRRD and DICOM series folders with SimpleITK;
    array order and RAS affine are those of MONAI's ``NibabelReader`` / ``ITKReader``. Trailing singleton
    dimensions beyond the third are dropped (``(I, J, K, 1)`` NIfTI files are 3D).

    Args:
        path: the file, or a folder holding one DICOM series.
        kind: ``"image"`` (any real dtype; must not be constant or hold NaN) or ``"label"`` (integer values
            >= 0, returned as the smallest unsigned dtype that holds them).

    Returns:
        the :class:`Volume`.

    Raises:
        InputFileError: if the path is missing or of an unknown type, cannot be read, is not 3D (2D, 4D), has a
            single slice along an axis, a singular affine, a constant (image) / all-zero (label) content,
            non-finite values, or (labels) negative or fractional values.
        ValueError: on a bad ``kind``.
    """
    if kind not in ("image", "label"):
        raise ValueError(f"kind must be 'image' or 'label', got {kind!r}")
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "does not exist")
    if not path.is_dir() and not _suffix(path):
        raise InputFileError(path, f"unknown volume type (expected one of {', '.join(VOLUME_SUFFIXES)} or a folder)")
    try:
        array, affine = _load_volume(path)
    except Exception as exc:  # the readers raise many types (RuntimeError, ImageFileError, OSError ...)
        raise InputFileError(path, f"cannot be read as a volume ({type(exc).__name__}: {exc})") from exc
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise InputFileError(path, f"is {array.ndim}D with shape {tuple(array.shape)}; expected one 3D volume")
    if min(array.shape) < 2:
        raise InputFileError(path, f"has shape {tuple(array.shape)}: a single slice, expected a 3D volume")
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputFileError(path, "has a singular or non-finite voxel-to-world affine")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputFileError(path, f"has non-numeric voxels ({array.dtype})")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise InputFileError(path, "holds NaN or infinite voxels")
    low, high = array.min(), array.max()
    if kind == "image":
        if low == high:
            raise InputFileError(path, f"is constant (every voxel = {low}); an empty scan")
    else:
        array = _as_label_array(path, array, low, high)
    header = None
    if _suffix(path) in (".nii", ".nii.gz"):
        header = nib.load(os.fspath(path)).header.copy()
    return Volume(array=array, affine=affine, path=os.fspath(path), nifti_header=header)


def _as_label_array(path: Path, array: np.ndarray, low: Any, high: Any) -> np.ndarray:
    if np.issubdtype(array.dtype, np.floating):
        if not np.array_equal(array, np.round(array)):
            raise InputFileError(path, "label volume holds fractional values; expected integer ids")
    if low < 0:
        raise InputFileError(path, f"label volume holds negative id {low}")
    if high == 0:
        raise InputFileError(path, "label volume is empty (all voxels are 0)")
    dtype = np.uint8 if high < 2**8 else np.uint16 if high < 2**16 else np.uint32
    return array.astype(dtype, copy=False)


def check_volume_pair(image: Volume, label: Volume, *, atol: float = 1e-3) -> None:
    """Check that a label volume lies on its image's voxel grid.

    Args:
        image: the image.
        label: its label volume.
        atol: largest allowed difference between the two affines' entries (mm).

    Raises:
        InputFileError: naming the label file, if shapes or affines differ.
    """
    if image.array.shape != label.array.shape:
        raise InputFileError(
            label.path, f"label shape {label.array.shape} differs from image shape {image.array.shape} ({image.path})"
        )
    if not np.allclose(image.affine, label.affine, rtol=0.0, atol=atol):
        worst = float(np.abs(image.affine - label.affine).max())
        raise InputFileError(
            label.path, f"label affine differs from the image's ({image.path}) by up to {worst:.4g} mm"
        )


@dataclass(frozen=True)
class CbctCase:
    """One case of an nnU-Net raw dataset: ``case_id``, the image file and the label file (``None`` if absent)."""

    case_id: str
    image: Path
    label: Path | None


def read_case(case: CbctCase, *, atol: float = 1e-3) -> tuple[Volume, Volume]:
    """Read and check an image/label pair.

    Args:
        case: the case.
        atol: affine tolerance, see :func:`check_volume_pair`.

    Returns:
        ``(image, label)`` volumes on the same grid.

    Raises:
        InputFileError: for any problem of :func:`read_volume` or :func:`check_volume_pair`, or a missing label.
    """
    if case.label is None:
        raise InputFileError(case.image, "has no label file in labelsTr")
    image = read_volume(case.image, kind="image")
    label = read_volume(case.label, kind="label")
    check_volume_pair(image, label, atol=atol)
    return image, label


def find_toothfairy2_cases(root: str | os.PathLike, *, require_labels: bool = True) -> list[CbctCase]:
    """List the cases of an nnU-Net raw dataset folder (``imagesTr/<case>_0000.<ext>``, ``labelsTr/<case>.<ext>``).

    Args:
        root: dataset folder holding ``imagesTr`` (and ``labelsTr``).
        require_labels: if true, every image needs a label and every label an image.

    Returns:
        cases sorted by id.

    Raises:
        InputFileError: if ``imagesTr`` is missing or empty, a case has extra channels (``_0001``) or two files
            in different formats, a partner file is missing (with ``require_labels``), or a file name does not
            follow the layout.
    """
    root = Path(root)
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not root.is_dir():
        raise InputFileError(root, "dataset folder does not exist")
    if not images_dir.is_dir():
        raise InputFileError(root, "has no imagesTr folder (expected nnU-Net raw layout)")
    images: dict[str, Path] = {}
    for path in sorted(images_dir.iterdir()):
        suffix = _suffix(path)
        if not suffix or path.name.startswith("."):
            continue
        match = re.fullmatch(r"(.+)_(\d{4})", path.name[: -len(suffix)])
        if match is None:
            raise InputFileError(path, "image name does not end in _0000 (nnU-Net channel suffix)")
        case_id, channel = match.groups()
        if channel != "0000":
            raise InputFileError(path, "extra image channel; CBCT cases have one channel (_0000)")
        if case_id in images:
            raise InputFileError(path, f"case {case_id} has two image files ({images[case_id].name})")
        images[case_id] = path
    if not images:
        raise InputFileError(images_dir, f"holds no volumes ({', '.join(VOLUME_SUFFIXES)})")
    labels: dict[str, Path] = {}
    if labels_dir.is_dir():
        for path in sorted(labels_dir.iterdir()):
            suffix = _suffix(path)
            if not suffix or path.name.startswith("."):
                continue
            case_id = path.name[: -len(suffix)]
            if case_id in labels:
                raise InputFileError(path, f"case {case_id} has two label files ({labels[case_id].name})")
            labels[case_id] = path
    elif require_labels:
        raise InputFileError(root, "has no labelsTr folder")
    if require_labels:
        for case_id, path in images.items():
            if case_id not in labels:
                raise InputFileError(path, f"has no label file labelsTr/{case_id}.<ext>")
        for case_id, path in labels.items():
            if case_id not in images:
                raise InputFileError(path, f"has no image file imagesTr/{case_id}_0000.<ext>")
    return [CbctCase(case_id=c, image=images[c], label=labels.get(c)) for c in sorted(images)]
