"""Readers of raw 2D histology datasets, as their public releases ship them.

Each reader finds its cases (:meth:`HistoFormat.discover`: cheap checks of names and partner files, before
anything is written) and loads one case into a :class:`~coseg.histo.layout.HistoSample` on demand.

Formats:

- ``puma``: PUMA melanoma challenge (Zenodo 14869398): ``<case>.tif`` ROIs (RGB or RGBA, 1024^2 at 40x)
  with ``<case>_tissue.geojson`` and ``<case>_nuclei.geojson`` anywhere below the input folder (the release
  has ``01_training_dataset_tif_ROIs/``, ``01_training_dataset_geojson_tissue/``,
  ``01_training_dataset_geojson_nuclei/``). Class names come from ``properties.classification.name``,
  compared after lower-casing, turning spaces/hyphens into ``_`` and dropping a ``tissue_`` / ``nuclei_``
  prefix. Default maps (the Co-Seg++ paper's setup; override with a class map):

  * tissue: ``tumor`` -> 1 tumour, ``stroma`` -> 2 stroma; ``blood_vessel``, ``epidermis``, ``necrosis``,
    ``white_background`` -> 0 background. Regions are painted in file order (later ones win).
  * nuclei: ``tumor`` -> 1 tumour; ``lymphocyte``, ``plasma_cell`` -> 2 TIL; ``histiocyte``,
    ``melanophage``, ``neutrophil``, ``stroma``, ``endothelium``, ``epithelium``, ``apoptosis`` -> 3 other.
    Polygons become instances by the rule of :mod:`coseg.histo.geojson` (each polygon its own id; overlaps
    go to the smaller nucleus; optional 1-pixel gap).

  A class name the map does not know is an error naming the file and the name, unless the map has a
  ``"*"`` entry. Nuclei mapped to 0 are dropped. When the input has no tissue (or no nuclei) GeoJSON at
  all, that label kind is absent; when only some cases lack one, it is an error. A GeoJSON file without any
  feature (an empty ``FeatureCollection`` or list) is an error too, as a missing file is: it usually means a
  failed or unfinished export, and would silently teach the model that the ROI holds no nuclei (or only
  background). ``allow_empty`` (``--allow-empty``) accepts such files with a warning; the summary counts
  the images without objects / regions.
- ``glas``: GlaS 2015 (Warwick QU release): ``<name>.bmp`` with ``<name>_anno.bmp`` (instance-labelled
  glands) and an optional ``Grade.csv`` (``name, patient ID, grade (GlaS), ...``; headers and values are
  stripped). Semantic 1 = gland; instances = glands; type 1 = gland, or with ``gland_types="grade"``
  1 = benign / 2 = malignant gland from Grade.csv. Groups: ``patient_<ID>`` when Grade.csv is present.
  Official subsets: the name prefixes ``train``, ``testA``, ``testB``. Every GlaS image holds glands, so
  an annotation without any (all pixels 0) is an error unless ``allow_empty``.
- ``crag``: CRAG (MILD-Net): ``<split>/Images/*.png`` with ``<split>/Annotation(s)/*.png`` instance maps,
  ``<split>`` being ``train`` and ``valid`` (or ``test``), folder names matched case-insensitively, at the
  input folder or one level below. Same label meaning as GlaS (type 1 = gland). Official subsets: the
  split folders. As for GlaS, an annotation without any gland is an error unless ``allow_empty``.
- ``consep_tiles``: ``images/NAME.(jpg|png)``, ``inst/NAME.png``, ``type/NAME.png``, optional
  ``classes.json`` (``type_names``, ``source``). Tiles ``<image>_<tile>`` are grouped by ``<image>``.
- ``folder``: any images with optional semantic / instance / type maps in sub-folders (default names
  ``images``, ``sem``, ``inst``, ``type``) matched by file stem, optional ``classes.json``
  (``semantic_classes``, ``instance_types`` or ``type_names``). Integer values are kept unless a class map
  says otherwise; a type mapped to 0 removes its objects.

``consep_tiles`` and ``folder`` accept all-zero label maps without ``allow_empty``: tiles cut from larger images
(and many generic datasets) legitimately hold no object or only background. Every format's summary
(``dataset.json`` ``statistics``) counts the images without objects and without any semantic region.

Class maps (``--class-map FILE.json``)::

    {"semantic": {"classes": {"0": "background", "1": "tumour", "2": "stroma"},
                  "map": {"tumor": 1, "stroma": 2, "*": 0}},
     "instance": {"classes": {"0": "background", "1": "tumour", "2": "TIL", "3": "other"},
                  "map": {"tumor": 1, "lymphocyte": 2, "plasma_cell": 2, "*": 3}}}

Either section may be left out (the format's default is used). ``map`` keys are raw class names (PUMA) or
raw integer values as strings (``consep_tiles``, ``folder``); ``"*"`` catches everything else; targets must
be ids listed in ``classes``, which must include ``"0"``.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from coseg.errors import InputFileError
from coseg.histo.geojson import (
    feature_class_name,
    feature_polygons,
    load_features,
    rasterize_instances,
    rasterize_regions,
)
from coseg.histo.layout import HistoSample
from coseg.io import read_label, read_rgb

__all__ = [
    "ClassMap",
    "FormatOptions",
    "RawCase",
    "HistoFormat",
    "PumaFormat",
    "GlasFormat",
    "CragFormat",
    "ConsepTilesFormat",
    "FolderFormat",
    "FORMATS",
    "normalize_class_name",
    "PUMA_TISSUE_MAP",
    "PUMA_NUCLEI_MAP",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LABEL_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")
GLAND_TYPE_OPTIONS = ("gland", "grade")


def normalize_class_name(name: str) -> str:
    """Lower-case, spaces/hyphens to ``_``, and drop one ``tissue_`` / ``nuclei_`` prefix."""
    n = re.sub(r"[\s\-]+", "_", str(name).strip().lower())
    for prefix in ("tissue_", "nuclei_"):
        if n.startswith(prefix) and len(n) > len(prefix):
            return n[len(prefix) :]
    return n


@dataclass(frozen=True)
class ClassMap:
    """Raw class (name or integer) -> output class id, plus the output class names.

    Attributes:
        names: output id -> name, including ``0``.
        mapping: normalised raw key -> output id; ``None`` keeps integer values as they are (identity).
        default: output id for raw keys not in ``mapping`` (the ``"*"`` entry); ``None`` makes them errors.
    """

    names: dict[int, str] | None
    mapping: dict[str, int] | None = None
    default: int | None = None

    @classmethod
    def from_json(cls, obj: Any, *, what: str, by_name: bool) -> ClassMap:
        """Build from a class-map section ``{"classes": {...}, "map": {...}}``.

        Args:
            obj: the parsed JSON section.
            what: ``"semantic"`` or ``"instance"`` (for messages).
            by_name: keys are class names (normalised) rather than integers.

        Raises:
            ValueError: malformed section, missing ``"0"`` class, or a target that is not a listed class.
        """
        if not isinstance(obj, Mapping) or not isinstance(obj.get("classes"), Mapping):
            raise ValueError(f"class map '{what}' must be an object with a 'classes' object")
        try:
            names = {int(k): str(v) for k, v in obj["classes"].items()}
        except (TypeError, ValueError) as exc:
            raise ValueError(f"class map '{what}': 'classes' keys must be integers as strings") from exc
        if 0 not in names or min(names) < 0:
            raise ValueError(f"class map '{what}': 'classes' must name class 0 (background) and no negative ids")
        raw_map = obj.get("map")
        if raw_map is None:
            if by_name:
                raise ValueError(f"class map '{what}': a 'map' from class names to ids is required")
            return cls(names=names)
        if not isinstance(raw_map, Mapping):
            raise ValueError(f"class map '{what}': 'map' must be an object")
        mapping: dict[str, int] = {}
        default = None
        for key, target in raw_map.items():
            if isinstance(target, bool) or not isinstance(target, int) or target not in names:
                raise ValueError(f"class map '{what}': target of {key!r} must be one of the ids {sorted(names)}")
            if key == "*":
                default = target
                continue
            if by_name:
                mapping[normalize_class_name(key)] = target
            else:
                try:
                    mapping[str(int(key))] = target
                except ValueError as exc:
                    raise ValueError(f"class map '{what}': key {key!r} must be an integer as a string") from exc
        return cls(names=names, mapping=mapping, default=default)

    def target(self, raw: str | int, path: str | Path) -> int:
        """Output id of a raw class; raises :class:`InputFileError` naming ``path`` for unknown ones."""
        if self.mapping is None:
            return int(raw)
        key = normalize_class_name(raw) if isinstance(raw, str) else str(int(raw))
        if key in self.mapping:
            return self.mapping[key]
        if self.default is not None:
            return self.default
        known = ", ".join(sorted(self.mapping))
        raise InputFileError(path, f"unknown class {raw!r} (known: {known}); add it to the class map or use '*'")

    def apply(self, values: np.ndarray, path: str | Path) -> np.ndarray:
        """Map an integer label array (0 stays 0 unless the map says otherwise).

        Without a ``map`` the values are kept; when ``names`` are given (``classes.json``, a class map without
        ``map``) every value must be one of their ids.

        Raises:
            InputFileError: naming ``path``, for a value that is not a known class.
        """
        if self.mapping is None and self.default is None:
            if self.names is not None:
                unnamed = sorted(int(v) for v in np.unique(values) if int(v) not in self.names)
                if unnamed:
                    known = ", ".join(f"{k} {v}" for k, v in sorted(self.names.items()))
                    raise InputFileError(
                        path, f"label id(s) {unnamed} have no class name (classes: {known}); name them in classes.json"
                    )
            return values
        uniq = np.unique(values)
        lut = np.zeros(int(uniq.max()) + 1, dtype=np.int64)
        for v in uniq:
            v = int(v)
            if v == 0 and "0" not in (self.mapping or {}):
                continue
            lut[v] = self.target(v, path)
        return lut[values]

    def to_json(self) -> dict[str, Any]:
        """The JSON form (as accepted by :meth:`from_json`), recorded in ``dataset.json``."""
        out: dict[str, Any] = {"classes": {str(k): v for k, v in sorted((self.names or {}).items())}}
        if self.mapping is not None or self.default is not None:
            m: dict[str, int] = dict(self.mapping or {})
            if self.default is not None:
                m["*"] = self.default
            out["map"] = m
        return out


#: PUMA tissue classes -> paper's semantic classes (tumour, stroma; everything else background)
PUMA_TISSUE_MAP = ClassMap(
    names={0: "background", 1: "tumour", 2: "stroma"},
    mapping={
        "tumor": 1,
        "stroma": 2,
        "blood_vessel": 0,
        "epidermis": 0,
        "necrosis": 0,
        "white_background": 0,
    },
)
#: PUMA nucleus classes -> paper's 3 types (tumour, TIL = lymphocyte + plasma cell, other)
PUMA_NUCLEI_MAP = ClassMap(
    names={0: "background", 1: "tumour", 2: "TIL", 3: "other"},
    mapping={
        "tumor": 1,
        "lymphocyte": 2,
        "plasma_cell": 2,
        "histiocyte": 3,
        "melanophage": 3,
        "neutrophil": 3,
        "stroma": 3,
        "endothelium": 3,
        "epithelium": 3,
        "apoptosis": 3,
    },
)


@dataclass
class FormatOptions:
    """Options of the readers (all have defaults; each format uses the ones that concern it).

    Attributes:
        class_map: parsed class-map JSON (``{"semantic": ..., "instance": ...}``) or ``None``.
        gland_types: ``glas``: ``"gland"`` (type 1) or ``"grade"`` (1 benign, 2 malignant).
        group_regex: regular expression applied to a case name (``re.match``); its first group (or the whole
            match) is the case's group. Default: format-specific (tiles by source image; else the name).
        images_dir / sem_dir / inst_dir / type_dir: ``folder`` sub-folder names.
        touching_gap: ``puma``: leave a 1-pixel gap between touching nuclei.
        allow_empty: ``puma``, ``glas``, ``crag``: accept annotation files without any object or region (a
            GeoJSON without features, an all-zero gland map) with a warning instead of an error.
    """

    class_map: Mapping[str, Any] | None = None
    gland_types: str = "gland"
    group_regex: str | None = None
    images_dir: str = "images"
    sem_dir: str = "sem"
    inst_dir: str = "inst"
    type_dir: str = "type"
    touching_gap: bool = False
    allow_empty: bool = False

    def __post_init__(self) -> None:
        if self.gland_types not in GLAND_TYPE_OPTIONS:
            raise ValueError(f"gland_types must be one of {GLAND_TYPE_OPTIONS}, got {self.gland_types!r}")
        if self.class_map is not None:
            if not isinstance(self.class_map, Mapping):
                raise ValueError("class_map must be a JSON object with 'semantic' and/or 'instance'")
            unknown = set(self.class_map) - {"semantic", "instance"}
            if unknown:
                raise ValueError(f"class_map has unknown sections {sorted(unknown)}; use 'semantic' and 'instance'")
        if self.group_regex is not None:
            try:
                re.compile(self.group_regex)
            except re.error as exc:
                raise ValueError(f"group_regex {self.group_regex!r} is not a valid regular expression: {exc}") from exc


@dataclass
class RawCase:
    """A case found in the raw data: its output name, group, official subset and a loader."""

    name: str
    group: str
    subset: str | None
    load: Callable[[], HistoSample]
    files: tuple[Path, ...] = field(default_factory=tuple)


class HistoFormat(ABC):
    """Base of the readers.

    Args:
        root: the raw dataset folder.
        options: reader options.

    Raises:
        InputFileError: ``root`` is not a folder.
        ValueError: options this format cannot use.
    """

    name: ClassVar[str] = ""
    #: official subset -> split name ("training" or "test"); empty when the format has no official split
    official_subsets: ClassVar[dict[str, str]] = {}
    magnification: ClassVar[str | None] = None
    source: ClassVar[str] = ""
    object_name: ClassVar[str] = "object"
    default_group_regex: ClassVar[str | None] = None

    def __init__(self, root: str | Path, options: FormatOptions | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputFileError(self.root, "input folder does not exist")
        self.options = options or FormatOptions()
        self.provides: tuple[str, ...] = ()

    @abstractmethod
    def discover(self) -> list[RawCase]:
        """Find all cases and check that their files are there; sets :attr:`provides`."""

    @abstractmethod
    def dataset_info(self) -> dict[str, Any]:
        """``dataset.json`` fields known from the format: source, magnification, class names, class maps."""

    def group_of(self, name: str, default: str | None = None) -> str:
        """Group of a case: from ``group_regex`` (option, else the format's default), else ``default``/name."""
        regex = self.options.group_regex or self.default_group_regex
        if regex is None:
            return default if default is not None else name
        m = re.match(regex, name)
        if m is None:
            if self.options.group_regex is not None:
                raise ValueError(f"group_regex {regex!r} does not match the case name {name!r}")
            return default if default is not None else name
        return m.group(1) if m.groups() else m.group(0)

    def _class_map(self, section: str, default: ClassMap, *, by_name: bool) -> ClassMap:
        cm = self.options.class_map
        if cm is None or section not in cm:
            return default
        return ClassMap.from_json(cm[section], what=section, by_name=by_name)

    def _empty_annotation(self, path: Path, consequence: str) -> None:
        """Refuse an annotation file without any object or region, or with ``allow_empty`` warn about it."""
        if not self.options.allow_empty:
            raise InputFileError(
                path,
                f"annotation is empty: {consequence}; a missing annotation is an error, so an empty one is too "
                "(pass --allow-empty / allow_empty=True if the image really has none)",
            )
        logger.warning("%s: annotation is empty (%s); accepted because allow_empty is set", path, consequence)

    def _no_class_map(self) -> None:
        if self.options.class_map is not None:
            raise ValueError(f"format {self.name!r} has no class names to map; drop the class map")


def _files_by_stem(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."):
            if p.stem in out:
                raise InputFileError(p, f"two files with the stem {p.stem!r} ({out[p.stem].name} and {p.name})")
            out[p.stem] = p
    return out


def _child_ci(folder: Path, names: Sequence[str]) -> Path | None:
    """The sub-folder of ``folder`` whose name equals one of ``names`` ignoring case."""
    wanted = {n.lower() for n in names}
    hits = [p for p in sorted(folder.iterdir()) if p.is_dir() and p.name.lower() in wanted]
    if len(hits) > 1:
        raise InputFileError(folder, f"several sub-folders match {list(names)}: {[p.name for p in hits]}")
    return hits[0] if hits else None


def _safe_name(name: str, path: Path) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", name):
        raise InputFileError(path, f"file stem {name!r} must use only letters, digits, '.', '_', '-' (output name)")
    return name


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(path, f"cannot be read as JSON ({exc})") from exc


def _names_from_json(obj: Any, path: Path, key: str) -> dict[int, str] | None:
    if obj is None:
        return None
    if not isinstance(obj, Mapping):
        raise InputFileError(path, f"'{key}' must be an object of id -> name")
    try:
        return {int(k): str(v) for k, v in obj.items()}
    except (TypeError, ValueError) as exc:
        raise InputFileError(path, f"'{key}' keys must be integers as strings") from exc


def _polygons(feature: Mapping[str, Any], path: Path, index: int) -> list:
    try:
        return feature_polygons(feature)
    except ValueError as exc:
        raise InputFileError(path, f"feature {index}: {exc}") from exc


def _touches_image(polygons: Sequence, shape: tuple[int, int]) -> bool:
    if not polygons:
        return False
    pts = np.concatenate([p[0] for p in polygons], axis=0)
    (xmin, ymin), (xmax, ymax) = pts.min(axis=0), pts.max(axis=0)
    return xmax > 0 and ymax > 0 and xmin < shape[1] and ymin < shape[0]


class PumaFormat(HistoFormat):
    """PUMA melanoma ROIs with tissue and nuclei GeoJSON (see the module docstring)."""

    name = "puma"
    magnification = "40x"
    source = "PUMA (Schuiveling et al., GigaScience 2025; Zenodo 14869398)"
    object_name = "nucleus"

    def __init__(self, root: str | Path, options: FormatOptions | None = None) -> None:
        super().__init__(root, options)
        self.tissue_map = self._class_map("semantic", PUMA_TISSUE_MAP, by_name=True)
        self.nuclei_map = self._class_map("instance", PUMA_NUCLEI_MAP, by_name=True)

    def discover(self) -> list[RawCase]:
        images: dict[str, Path] = {}
        geo: dict[str, Path] = {}
        for p in sorted(self.root.rglob("*")):
            if not p.is_file() or p.name.startswith("."):
                continue
            suffix = p.suffix.lower()
            table = images if suffix in (".tif", ".tiff") else geo if suffix == ".geojson" else None
            if table is None:
                continue
            if p.stem in table:
                raise InputFileError(p, f"the stem {p.stem!r} occurs twice (also {table[p.stem]})")
            table[p.stem] = p
        if not images:
            raise InputFileError(self.root, "no .tif/.tiff ROI images found (PUMA layout expected)")
        have_tissue = any(s.endswith("_tissue") for s in geo)
        have_nuclei = any(s.endswith("_nuclei") for s in geo)
        if not have_tissue and not have_nuclei:
            raise InputFileError(self.root, "no <case>_tissue.geojson or <case>_nuclei.geojson files found")
        for stem, p in geo.items():
            base, _, kind = stem.rpartition("_")
            if kind not in ("tissue", "nuclei") or base not in images:
                raise InputFileError(p, "GeoJSON without a matching ROI image (<case>_tissue/_nuclei.geojson)")
        cases = []
        for stem, img in images.items():
            tissue = geo.get(f"{stem}_tissue")
            nuclei = geo.get(f"{stem}_nuclei")
            for wanted, found, kind in ((have_tissue, tissue, "tissue"), (have_nuclei, nuclei, "nuclei")):
                if wanted and found is None:
                    raise InputFileError(img, f"no {stem}_{kind}.geojson found below {self.root}")
            name = _safe_name(stem, img)
            files = tuple(p for p in (img, tissue, nuclei) if p is not None)
            cases.append(
                RawCase(name, self.group_of(name), None, partial(self._load, name, img, tissue, nuclei), files)
            )
        self.provides = tuple(k for k, ok in (("sem", have_tissue), ("inst", have_nuclei), ("type", have_nuclei)) if ok)
        return cases

    def dataset_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"format": self.name, "source": self.source, "magnification": self.magnification}
        if "sem" in self.provides:
            info["semantic_classes"] = {str(k): v for k, v in sorted(self.tissue_map.names.items())}
        if "inst" in self.provides:
            info["instance_types"] = {str(k): v for k, v in sorted(self.nuclei_map.names.items())}
        info["class_map"] = {"semantic": self.tissue_map.to_json(), "instance": self.nuclei_map.to_json()}
        info["rasterization"] = {
            "rule": "pixel centre inside polygon; overlaps go to the smaller nucleus",
            "touching_gap": self.options.touching_gap,
        }
        return info

    def _load(self, name: str, img: Path, tissue: Path | None, nuclei: Path | None) -> HistoSample:
        image = read_rgb(img)
        shape = image.shape[:2]
        sample = HistoSample(name=name, image=image, source=str(nuclei or tissue or img))
        if tissue is not None:
            sample.sem = self._tissue(tissue, shape)
        if nuclei is not None:
            sample.inst, sample.type = self._nuclei(nuclei, shape)
        return sample

    def _tissue(self, path: Path, shape: tuple[int, int]) -> np.ndarray:
        regions = []
        touching = 0
        features = load_features(path)
        if not features:
            self._empty_annotation(path, "the GeoJSON holds no tissue region, the whole ROI would be background")
        for i, feat in enumerate(features):
            cls_name = feature_class_name(feat)
            if cls_name is None:
                raise InputFileError(path, f"feature {i} has no properties.classification.name")
            polys = _polygons(feat, path, i)
            touching += _touches_image(polys, shape)
            regions.append((polys, self.tissue_map.target(cls_name, path)))
        if regions and not touching:
            raise InputFileError(path, f"no tissue polygon overlaps the {shape[1]}x{shape[0]} image (other frame?)")
        return rasterize_regions(regions, shape)

    def _nuclei(self, path: Path, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        objects, types = [], []
        degenerate = 0
        outside = 0
        features = load_features(path)
        if not features:
            self._empty_annotation(path, "the GeoJSON holds no nucleus, the ROI would have no nuclei")
        for i, feat in enumerate(features):
            cls_name = feature_class_name(feat)
            if cls_name is None:
                raise InputFileError(path, f"feature {i} has no properties.classification.name")
            t = self.nuclei_map.target(cls_name, path)
            polys = _polygons(feat, path, i)
            if not polys:
                degenerate += 1
                continue
            if not _touches_image(polys, shape):
                outside += 1
                continue
            if t == 0:
                continue
            objects.append(polys)
            types.append(t)
        if outside and not objects and not degenerate:
            raise InputFileError(path, f"no nucleus polygon overlaps the {shape[1]}x{shape[0]} image (other frame?)")
        inst, src = rasterize_instances(objects, shape, gap=self.options.touching_gap)
        lost = len(objects) - len(src)
        if degenerate or outside or lost:
            logger.warning(
                "%s: %d degenerate polygons skipped, %d outside the image, %d left without pixels "
                "(sub-pixel or covered by overlapping nuclei)",
                path,
                degenerate,
                outside,
                lost,
            )
        lut = np.concatenate([[0], np.asarray(types, dtype=np.int64)[src]]).astype(np.uint8)
        return inst, lut[inst]


class GlasFormat(HistoFormat):
    """GlaS 2015: ``<name>.bmp`` + ``<name>_anno.bmp`` + ``Grade.csv``."""

    name = "glas"
    official_subsets = {"train": "training", "testA": "test", "testB": "test"}
    magnification = "20x"
    source = "GlaS (Sirinukunwattana et al., Medical Image Analysis 2017)"
    object_name = "gland"

    def __init__(self, root: str | Path, options: FormatOptions | None = None) -> None:
        super().__init__(root, options)
        self._no_class_map()
        self.grades: dict[str, dict[str, str]] = {}

    def discover(self) -> list[RawCase]:
        bmps = [p for p in sorted(self.root.rglob("*")) if p.is_file() and p.suffix.lower() == ".bmp"]
        images = {p.stem: p for p in bmps if not p.stem.endswith("_anno")}
        annos = {p.stem[: -len("_anno")]: p for p in bmps if p.stem.endswith("_anno")}
        if len(images) + len(annos) != len(bmps):
            raise InputFileError(self.root, "the same GlaS file name occurs in two folders")
        if not images:
            raise InputFileError(self.root, "no GlaS .bmp images found")
        for stem, p in annos.items():
            if stem not in images:
                raise InputFileError(p, f"annotation without its image {stem}.bmp")
        grade_files = [p for p in self.root.rglob("*") if p.is_file() and p.name.lower() == "grade.csv"]
        if len(grade_files) > 1:
            raise InputFileError(self.root, f"several Grade.csv files: {[str(p) for p in grade_files]}")
        if grade_files:
            self.grades = self._read_grades(grade_files[0])
        elif self.options.gland_types == "grade":
            raise InputFileError(self.root, "gland_types='grade' needs Grade.csv, which was not found")
        cases = []
        for stem, img in images.items():
            anno = annos.get(stem)
            if anno is None:
                raise InputFileError(img, f"no annotation {stem}_anno.bmp beside the image")
            row = self.grades.get(stem)
            if self.grades and row is None:
                raise InputFileError(grade_files[0], f"no row for image {stem!r}")
            subset = stem.split("_")[0] if stem.split("_")[0] in self.official_subsets else None
            group = self.group_of(stem, f"patient_{row['patient id']}" if row else stem)
            grade = row.get("grade (glas)", "") if row else ""
            load = partial(self._load, _safe_name(stem, img), img, anno, grade)
            cases.append(RawCase(stem, group, subset, load, (img, anno)))
        self.provides = ("sem", "inst", "type")
        return cases

    @staticmethod
    def _read_grades(path: Path) -> dict[str, dict[str, str]]:
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                rows = list(csv.reader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise InputFileError(path, f"cannot be read as CSV ({exc})") from exc
        if not rows:
            raise InputFileError(path, "empty CSV")
        header = [h.strip().lower() for h in rows[0]]
        for col in ("name", "patient id", "grade (glas)"):
            if col not in header:
                raise InputFileError(path, f"missing column {col!r} (columns: {rows[0]})")
        out = {}
        for line, row in enumerate(rows[1:], start=2):
            if not any(c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise InputFileError(path, f"line {line} has {len(row)} fields, the header {len(header)}")
            rec = {h: c.strip() for h, c in zip(header, row)}
            grade = rec["grade (glas)"].lower()
            if grade not in ("benign", "malignant"):
                raise InputFileError(path, f"line {line}: grade {rec['grade (glas)']!r} is not benign/malignant")
            rec["grade (glas)"] = grade
            out[rec["name"]] = rec
        return out

    def dataset_info(self) -> dict[str, Any]:
        types = {"0": "background", "1": "gland"}
        if self.options.gland_types == "grade":
            types = {"0": "background", "1": "benign gland", "2": "malignant gland"}
        return {
            "format": self.name,
            "source": self.source,
            "magnification": self.magnification,
            "semantic_classes": {"0": "background", "1": "gland"},
            "instance_types": types,
            "gland_types": self.options.gland_types,
        }

    def _load(self, name: str, img: Path, anno: Path, grade: str) -> HistoSample:
        image = read_rgb(img)
        inst = read_label(anno)
        if not inst.any():
            self._empty_annotation(anno, "every pixel is 0, no gland is annotated")
        t = 2 if (self.options.gland_types == "grade" and grade == "malignant") else 1
        fg = inst > 0
        return HistoSample(
            name=name,
            image=image,
            sem=fg.astype(np.uint8),
            inst=inst,
            type=(fg * t).astype(np.uint8),
            source=str(anno),
        )


class CragFormat(HistoFormat):
    """CRAG: ``train/Images`` + ``train/Annotation`` and ``valid/...`` (case-insensitive)."""

    name = "crag"
    official_subsets = {"train": "training", "valid": "test", "test": "test"}
    magnification = "20x"
    source = "CRAG (Graham et al., MILD-Net, Medical Image Analysis 2019)"
    object_name = "gland"

    def __init__(self, root: str | Path, options: FormatOptions | None = None) -> None:
        super().__init__(root, options)
        self._no_class_map()

    def _split_dirs(self) -> dict[str, Path]:
        for base in [self.root] + [p for p in sorted(self.root.iterdir()) if p.is_dir()]:
            found = {}
            for sub in ("train", "valid", "test"):
                d = _child_ci(base, [sub])
                if d is not None and _child_ci(d, ["images"]) is not None:
                    found[sub] = d
            if found:
                return found
        raise InputFileError(self.root, "no train/valid/test folders with an Images sub-folder found (CRAG layout)")

    def discover(self) -> list[RawCase]:
        cases = []
        names: dict[str, Path] = {}
        for subset, d in self._split_dirs().items():
            img_dir = _child_ci(d, ["images"])
            ann_dir = _child_ci(d, ["annotation", "annotations"])
            if ann_dir is None:
                raise InputFileError(d, "no Annotation(s) folder beside Images")
            images = _files_by_stem(img_dir, IMAGE_SUFFIXES)
            annos = _files_by_stem(ann_dir, LABEL_SUFFIXES)
            for stem, p in annos.items():
                if stem not in images:
                    raise InputFileError(p, f"annotation without an image {stem}.* in {img_dir}")
            for stem, img in images.items():
                if stem not in annos:
                    raise InputFileError(img, f"no annotation {stem}.png in {ann_dir}")
                name = _safe_name(stem, img)
                if name in names:
                    name = f"{subset}_{stem}"
                if name in names:
                    raise InputFileError(img, f"name {name!r} also used by {names[name]}")
                names[name] = img
                load = partial(self._load, name, img, annos[stem])
                cases.append(RawCase(name, self.group_of(name), subset, load, (img, annos[stem])))
        if not cases:
            raise InputFileError(self.root, "no CRAG images found")
        self.provides = ("sem", "inst", "type")
        return cases

    def dataset_info(self) -> dict[str, Any]:
        return {
            "format": self.name,
            "source": self.source,
            "magnification": self.magnification,
            "semantic_classes": {"0": "background", "1": "gland"},
            "instance_types": {"0": "background", "1": "gland"},
        }

    def _load(self, name: str, img: Path, anno: Path) -> HistoSample:
        image = read_rgb(img)
        inst = read_label(anno)
        if not inst.any():
            self._empty_annotation(anno, "every pixel is 0, no gland is annotated")
        fg = inst > 0
        return HistoSample(name, image, fg.astype(np.uint8), inst, fg.astype(np.uint8), str(anno))


class FolderFormat(HistoFormat):
    """Images with optional semantic / instance / type maps in sub-folders, matched by stem."""

    name = "folder"
    object_name = "nucleus"

    def __init__(self, root: str | Path, options: FormatOptions | None = None) -> None:
        super().__init__(root, options)
        self.dirs = {
            "image": self.options.images_dir,
            "sem": self.options.sem_dir,
            "inst": self.options.inst_dir,
            "type": self.options.type_dir,
        }
        self.classes_file = self.root / "classes.json"
        meta = _read_json(self.classes_file) if self.classes_file.is_file() else {}
        if not isinstance(meta, Mapping):
            raise InputFileError(self.classes_file, "must be a JSON object")
        self.meta = meta
        sem_names = _names_from_json(meta.get("semantic_classes"), self.classes_file, "semantic_classes")
        type_key = "instance_types" if "instance_types" in meta else "type_names"
        type_names = _names_from_json(meta.get(type_key), self.classes_file, type_key)
        self.sem_map = self._class_map("semantic", ClassMap(sem_names), by_name=False)
        self.types_map = self._class_map("instance", ClassMap(type_names), by_name=False)

    def discover(self) -> list[RawCase]:
        img_dir = self.root / self.dirs["image"]
        if not img_dir.is_dir():
            raise InputFileError(img_dir, "image folder does not exist")
        images = _files_by_stem(img_dir, IMAGE_SUFFIXES)
        if not images:
            raise InputFileError(img_dir, "no images found")
        label_files: dict[str, dict[str, Path]] = {}
        for kind in ("sem", "inst", "type"):
            d = self.root / self.dirs[kind]
            if not d.is_dir():
                continue
            files = _files_by_stem(d, LABEL_SUFFIXES)
            for stem, p in files.items():
                if stem not in images:
                    raise InputFileError(p, f"label without an image {stem}.* in {img_dir}")
            for stem, img in images.items():
                if stem not in files:
                    raise InputFileError(d / f"{stem}.png", f"missing {kind} label for image {img.name}")
            label_files[kind] = files
        if not label_files:
            wanted = ", ".join(self.dirs[k] for k in ("sem", "inst", "type"))
            raise InputFileError(self.root, f"no label folder found (looked for {wanted})")
        if "type" in label_files and "inst" not in label_files:
            raise InputFileError(self.root / self.dirs["type"], "type maps need instance maps beside them")
        self.provides = tuple(k for k in ("sem", "inst", "type") if k in label_files)
        cases = []
        for stem, img in images.items():
            name = _safe_name(stem, img)
            paths = {k: files[stem] for k, files in label_files.items()}
            cases.append(RawCase(name, self.group_of(name), None, partial(self._load, name, img, paths), (img,)))
        return cases

    def dataset_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "format": self.name,
            "source": str(self.meta.get("source", self.source or str(self.root))),
            "magnification": self.meta.get("magnification", self.magnification),
        }
        if "sem" in self.provides:
            info["semantic_classes"] = _str_keys(self.sem_map.names)
        if "type" in self.provides:
            info["instance_types"] = _str_keys(self.types_map.names)
        elif "inst" in self.provides:
            info["instance_types"] = {"0": "background", "1": self.object_name}
        if self.options.class_map is not None:
            info["class_map"] = {k: m.to_json() for k, m in (("semantic", self.sem_map), ("instance", self.types_map))}
        return info

    def _load(self, name: str, img: Path, paths: Mapping[str, Path]) -> HistoSample:
        image = read_rgb(img)
        sample = HistoSample(name=name, image=image, source=str(paths.get("inst", paths.get("sem", img))))
        labels = {k: read_label(p) for k, p in paths.items()}
        for k, arr in labels.items():
            if arr.shape != image.shape[:2]:
                h, w = image.shape[:2]
                raise InputFileError(paths[k], f"label is {arr.shape[1]}x{arr.shape[0]} but the image is {w}x{h}")
        if "sem" in labels:
            sample.sem = self.sem_map.apply(labels["sem"], paths["sem"])
        if "inst" in labels:
            inst = labels["inst"].astype(np.int64)
            if "type" in labels:
                t = self.types_map.apply(labels["type"], paths["type"])
                inst[t == 0] = 0  # objects whose type maps to 0 are removed
                sample.type = t
            sample.inst = inst
        return sample


class ConsepTilesFormat(FolderFormat):
    """CoNSeP re-tiled: ``images/``, ``inst/``, ``type/``, ``classes.json``; tiles grouped by source image."""

    name = "consep_tiles"
    magnification = "40x"
    source = "CoNSeP (Graham et al., HoVer-Net, Medical Image Analysis 2019)"
    default_group_regex = r"^(.+)_\d+$"

    def __init__(self, root: str | Path, options: FormatOptions | None = None) -> None:
        opts = options or FormatOptions()
        fixed = FormatOptions(
            class_map=opts.class_map,
            group_regex=opts.group_regex,
            images_dir="images",
            sem_dir="sem",
            inst_dir="inst",
            type_dir="type",
            allow_empty=opts.allow_empty,
        )
        super().__init__(root, fixed)

    def discover(self) -> list[RawCase]:
        cases = super().discover()
        if "inst" not in self.provides:
            raise InputFileError(self.root / "inst", "consep_tiles needs the inst/ folder")
        return cases


def _str_keys(names: Mapping[int, str] | None) -> dict[str, str] | None:
    return None if names is None else {str(k): v for k, v in sorted(names.items())}


#: format name -> reader class
FORMATS: dict[str, type[HistoFormat]] = {
    f.name: f for f in (PumaFormat, GlasFormat, CragFormat, ConsepTilesFormat, FolderFormat)
}
