"""ToothFairy2 label schemes mapped by name to the Co-Seg++ tasks: region classes, teeth by FDI number, jaw types.

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
- instance types, in one of two schemes (:data:`TOOTH_TYPE_SCHEMES`): ``"jaw"`` (:data:`INSTANCE_TYPES`, the
  paper's setting): 0 background, 1 upper teeth (FDI 1x, 2x), 2 lower teeth (3x, 4x); ``"fdi"``
  (:data:`FDI_INSTANCE_TYPES`): 0 background and one class per FDI number, ``k`` = ``FDI_TEETH[k - 1]`` (1 = tooth
  11 ... 32 = tooth 48). Both are functions of the FDI number (:func:`tooth_type_lut`, the one definition).

Tooth voxels carry semantic class 0: teeth are the instance task's objects, the regions are the jawbones and
the pharynx. Every other structure (canals, sinuses, bridges, crowns, implants, placeholders) goes to the
background unless ``overrides`` send it elsewhere (see :func:`parse_label_target`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import ndimage

from coseg.errors import InputFileError

__all__ = [
    "FDI_TEETH",
    "FDI_INSTANCE_TYPES",
    "TOOTH_TYPE_SCHEMES",
    "tooth_type_names",
    "tooth_type_lut",
    "fdi_class_lut",
    "mirror_fdi",
    "mirror_type_lut",
    "TOOTHFAIRY2_LABELS",
    "SEMANTIC_CLASSES",
    "INSTANCE_TYPES",
    "TOOTHFAIRY2_REGION_IDS",
    "TOOTH_WIDTHS_MM",
    "normalize_label_name",
    "parse_tooth_name",
    "fdi_type",
    "LabelTarget",
    "parse_label_target",
    "CbctLabelMap",
    "read_dataset_json",
    "build_label_map",
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

#: Co-Seg++ instance types of the ``"fdi"`` scheme: one class per FDI number, in :data:`FDI_TEETH` order.
FDI_INSTANCE_TYPES: dict[int, str] = {0: "background", **{k: f"tooth {fdi}" for k, fdi in enumerate(FDI_TEETH, 1)}}

#: The tooth type schemes: ``"jaw"`` (upper / lower teeth, the paper's) and ``"fdi"`` (one type per FDI number).
TOOTH_TYPE_SCHEMES: tuple[str, ...] = ("jaw", "fdi")

#: ToothFairy2 id of each semantic class (for writing predictions in ToothFairy2 ids).
TOOTHFAIRY2_REGION_IDS: dict[int, int] = {1: 1, 2: 2, 3: 7}

#: Average mesio-distal crown widths (mm) of tooth positions 1..8 (central incisor .. third molar), per instance
#: type (1 upper, 2 lower): the template of the FDI numbering heuristic and the slots of the synthetic phantom.
TOOTH_WIDTHS_MM: dict[int, tuple[float, ...]] = {
    1: (8.5, 6.5, 7.5, 7.0, 6.5, 10.0, 9.0, 8.5),
    2: (5.0, 5.5, 7.0, 7.0, 7.0, 11.0, 10.5, 10.0),
}


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


def _check_scheme(tooth_types: str) -> str:
    if tooth_types not in TOOTH_TYPE_SCHEMES:
        raise ValueError(f"tooth_types must be one of {TOOTH_TYPE_SCHEMES}, got {tooth_types!r}")
    return tooth_types


def tooth_type_names(tooth_types: str) -> dict[int, str]:
    """The instance type names of a scheme (the bundles' ``inst_types``).

    Args:
        tooth_types: ``"jaw"`` or ``"fdi"``.

    Returns:
        :data:`INSTANCE_TYPES` or :data:`FDI_INSTANCE_TYPES` (a copy).

    Raises:
        ValueError: an unknown scheme.
    """
    return dict(INSTANCE_TYPES if _check_scheme(tooth_types) == "jaw" else FDI_INSTANCE_TYPES)


def tooth_type_lut(tooth_types: str) -> np.ndarray:
    """Look-up table from an FDI number to its instance type in a scheme: THE definition of both schemes.

    Args:
        tooth_types: ``"jaw"`` (1 upper, 2 lower) or ``"fdi"`` (``k`` for ``FDI_TEETH[k - 1]``).

    Returns:
        ``(49,)`` uint8, index = FDI number (0 and non-teeth map to 0).

    Raises:
        ValueError: an unknown scheme.
    """
    scheme = _check_scheme(tooth_types)
    lut = np.zeros(max(FDI_TEETH) + 1, dtype=np.uint8)
    for k, fdi in enumerate(FDI_TEETH, start=1):
        lut[fdi] = fdi_type(fdi) if scheme == "jaw" else k
    return lut


def fdi_class_lut(tooth_types: str) -> np.ndarray:
    """Look-up table from an ``"fdi"`` type class (0..32) to the type of a scheme (identity for ``"fdi"``).

    Args:
        tooth_types: the target scheme.

    Returns:
        ``(33,)`` uint8.

    Raises:
        ValueError: an unknown scheme.
    """
    return tooth_type_lut(tooth_types)[np.array((0, *FDI_TEETH))]


def mirror_fdi(fdi: int) -> int:
    """The FDI number of the same tooth on the other side (a left-right mirror): 1x <-> 2x, 3x <-> 4x.

    Raises:
        ValueError: if ``fdi`` is not in :data:`FDI_TEETH`.
    """
    if int(fdi) not in FDI_TEETH:
        raise ValueError(f"{fdi} is not a permanent-tooth FDI number")
    quadrant, tooth = divmod(int(fdi), 10)
    return 10 * {1: 2, 2: 1, 3: 4, 4: 3}[quadrant] + tooth


def mirror_type_lut(tooth_types: str) -> np.ndarray:
    """Look-up table of instance types under a left-right mirror: identity for ``"jaw"``, 1x <-> 2x and 3x <-> 4x
    for ``"fdi"``.

    Args:
        tooth_types: the scheme.

    Returns:
        ``(T,)`` uint8, ``T`` = number of types of the scheme, background included.

    Raises:
        ValueError: an unknown scheme.
    """
    names = tooth_type_names(tooth_types)
    lut = np.arange(len(names), dtype=np.uint8)
    if tooth_types == "fdi":
        to_type = tooth_type_lut("fdi")
        for k, fdi in enumerate(FDI_TEETH, start=1):
            lut[k] = to_type[mirror_fdi(fdi)]
    return lut


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
        self, label: np.ndarray, *, path: str | os.PathLike | None = None, tooth_types: str = "jaw"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Map a source label volume to the three Co-Seg++ label volumes.

        Args:
            label: ``(I, J, K)`` (or any shape) non-negative integer source labels.
            path: the label file, named in the error when the volume holds an id the map does not know.
            tooth_types: the scheme of the returned types (:data:`TOOTH_TYPE_SCHEMES`).

        Returns:
            ``(sem, inst, type)`` of the input's shape: ``sem`` uint8 semantic classes
            (:data:`SEMANTIC_CLASSES`), ``inst`` uint16 tooth instances (id = FDI number), ``type`` uint8
            instance types of the scheme (:func:`tooth_type_lut` of ``inst``).

        Raises:
            InputFileError: if the volume holds ids that the ``dataset.json`` does not list.
            ValueError: if ``label`` is not a non-negative integer array, or an unknown scheme.
        """
        type_lut = tooth_type_lut(tooth_types)
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
