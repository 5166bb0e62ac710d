"""Checks of a bundle's ``configs/metadata.json`` that do not need MONAI's schema (which cannot be downloaded offline).

MONAI's ``verify_metadata`` validates against ``meta_schema_20240725.json`` fetched from the network. These checks
cover what the schema requires plus what MONAI's own tools read from the file (``verify_net_in_out``, MONAI Label),
so a bundle exported from this repository is known to load there.

Two label schemes number the classes of a bundle's ``pred`` (declared by ``inference.json``'s ``pred_scheme``;
``"class_map"`` when absent):

- ``"class_map"`` (coseg_histo): the class map of :mod:`coseg.data.label_codec`, region ``k`` at ``k`` and object
  type ``t`` at ``S - 1 + t``;
- ``"toothfairy2"`` (coseg_cbct): ToothFairy2 ids, regions 1 lower jawbone, 2 upper jawbone, 7 pharynx
  (:data:`coseg.dental.labels.TOOTHFAIRY2_REGION_IDS`) and one id per tooth, its FDI number (11-48), whatever its type.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from coseg.data.label_codec import class_map_names
from coseg.dental.labels import (
    FDI_TEETH,
    SEMANTIC_CLASSES,
    TOOTH_TYPE_SCHEMES,
    TOOTHFAIRY2_LABELS,
    TOOTHFAIRY2_REGION_IDS,
    tooth_type_names,
)

__all__ = [
    "PRED_SCHEMES",
    "REQUIRED_METADATA_KEYS",
    "TOOTHFAIRY2_PRED_IDS",
    "check_metadata",
    "check_class_map",
    "config_class_problems",
    "expected_channel_def",
    "pred_scheme",
]

#: label schemes of a bundle's ``pred`` (``inference.json``'s ``pred_scheme``)
PRED_SCHEMES: tuple[str, ...] = ("class_map", "toothfairy2")

#: the values a ``"toothfairy2"`` ``pred`` can hold, ascending: background, the region ids, the FDI teeth
TOOTHFAIRY2_PRED_IDS: tuple[int, ...] = tuple(sorted({0, *TOOTHFAIRY2_REGION_IDS.values(), *FDI_TEETH}))

#: top-level keys MONAI's metadata schema requires
REQUIRED_METADATA_KEYS: tuple[str, ...] = (
    "version",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
)

_SEMVER = re.compile(r"^\d+\.\d+\.\d+$")
_BUNDLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _io_problems(section: Mapping[str, Any], kind: str, first: str, fields: tuple[str, ...]) -> list[str]:
    problems: list[str] = []
    if not isinstance(section, Mapping) or not section:
        return [f"network_data_format.{kind} is missing or empty"]
    name = next(iter(section))
    if name != first:
        problems.append(
            f"the first entry of network_data_format.{kind} is {name!r}; MONAI Label and verify_net_in_out take "
            f"the first one, name it {first!r}"
        )
    entry = section.get(first)
    if not isinstance(entry, Mapping):
        return problems
    for field in fields:
        if field not in entry:
            problems.append(f"network_data_format.{kind}.{first} has no {field!r}")
    channels = entry.get("num_channels")
    if "num_channels" in entry and (isinstance(channels, bool) or not isinstance(channels, int) or channels < 1):
        problems.append(f"network_data_format.{kind}.{first}.num_channels must be a positive int, got {channels!r}")
    channel_def = entry.get("channel_def")
    if isinstance(channel_def, Mapping) and isinstance(channels, int) and len(channel_def) != channels:
        problems.append(
            f"network_data_format.{kind}.{first} has num_channels={channels} but {len(channel_def)} channel_def entries"
        )
    shape = entry.get("spatial_shape")
    if "spatial_shape" in entry and (not isinstance(shape, list) or len(shape) not in (2, 3)):
        problems.append(
            f"network_data_format.{kind}.{first}.spatial_shape must list 2 or 3 sizes (MONAI Label takes the image "
            f"dimension from its length), got {shape!r}"
        )
    return problems


def check_metadata(meta: Mapping[str, Any], *, require_name: bool = True) -> list[str]:
    """Problems of a bundle's metadata, in words; an empty list when it is fine.

    Checked: the keys MONAI's schema requires (:data:`REQUIRED_METADATA_KEYS`) are present and not empty; ``version``
    is ``MAJOR.MINOR.PATCH`` and has a ``changelog`` entry; ``name`` (used for the package's folder and file name) is
    an identifier; the first input is ``image`` with ``num_channels``, ``spatial_shape`` and ``dtype`` and the first
    output is ``pred`` with ``num_channels`` and ``dtype`` (what ``verify_net_in_out`` and MONAI Label read), with as
    many ``channel_def`` entries as channels.

    Args:
        meta: the parsed ``metadata.json``.
        require_name: also require a ``name`` (needed to package the bundle).

    Returns:
        One sentence per problem.

    Raises:
        TypeError: ``meta`` is not a mapping.
    """
    if not isinstance(meta, Mapping):
        raise TypeError(f"metadata must be a mapping, got {type(meta).__name__}")
    problems = [f"required key {key!r} is missing or empty" for key in REQUIRED_METADATA_KEYS if not meta.get(key)]
    version = meta.get("version")
    if version and not (isinstance(version, str) and _SEMVER.match(version)):
        problems.append(f"version must be MAJOR.MINOR.PATCH, got {version!r}")
    changelog = meta.get("changelog")
    if version and (not isinstance(changelog, Mapping) or version not in changelog):
        problems.append(f"changelog has no entry for version {version!r}")
    if require_name:
        name = meta.get("name")
        if not (isinstance(name, str) and _BUNDLE_NAME.match(name)):
            problems.append(f"name must be an identifier (letters, digits, underscores), got {name!r}")
    fmt = meta.get("network_data_format")
    if isinstance(fmt, Mapping):
        problems += _io_problems(fmt.get("inputs", {}), "inputs", "image", ("num_channels", "spatial_shape", "dtype"))
        problems += _io_problems(fmt.get("outputs", {}), "outputs", "pred", ("num_channels", "dtype", "channel_def"))
    elif fmt:
        problems.append("network_data_format must be a mapping with 'inputs' and 'outputs'")
    return problems


def _check_scheme(scheme: str) -> None:
    if scheme not in PRED_SCHEMES:
        raise ValueError(f"scheme must be one of {PRED_SCHEMES}, got {scheme!r}")


def expected_channel_def(
    sem_classes: Mapping[Any, str], inst_types: Mapping[Any, str], *, scheme: str = "class_map"
) -> dict[str, str]:
    """The ``pred`` ``channel_def`` a Co-Seg++ bundle with these classes must declare.

    Args:
        sem_classes: ``{0: "background", 1: region, ...}`` (keys may be strings, as in JSON configs).
        inst_types: ``{0: "background", 1: type, ...}``.
        scheme: ``"class_map"``: the class map's names, ``{"0": "background", "1": region 1, ..., str(S - 1 + t):
            type t, ...}`` (:func:`class_map_names`); ``"toothfairy2"``: ``{"0": "background", "1": region 1,
            "2": region 2, "7": region 3, "11": "Upper Right Central Incisor", ..., "48": ...}`` (region names from
            ``sem_classes``, tooth names from ToothFairy2's ``dataset.json``). :func:`check_class_map` accepts names
            that start with the expected one (``"TIL nucleus"`` for ``"TIL"``), in any letter case.

    Returns:
        ``{str(value): name}`` in ascending order of value.

    Raises:
        ValueError: an unknown scheme, or (``"toothfairy2"``) a region class that has no ToothFairy2 id.
    """
    _check_scheme(scheme)
    sems = {int(k): str(v) for k, v in sem_classes.items()}
    types = {int(k): str(v) for k, v in inst_types.items()}
    if scheme == "class_map":
        return class_map_names(sems, types)
    unmapped = sorted(k for k in sems if k > 0 and k not in TOOTHFAIRY2_REGION_IDS)
    if unmapped:
        raise ValueError(
            f"region classes {unmapped} have no ToothFairy2 id (the scheme maps {dict(TOOTHFAIRY2_REGION_IDS)})"
        )
    names = {value: name for name, value in TOOTHFAIRY2_LABELS.items()}
    out = {0: sems.get(0, "background")}
    out.update({TOOTHFAIRY2_REGION_IDS[k]: v for k, v in sems.items() if k > 0})
    out.update({fdi: names[fdi] for fdi in FDI_TEETH})
    return {str(k): out[k] for k in sorted(out)}


def _toothfairy2_class_problems(sem_classes: Mapping[Any, str], inst_types: Mapping[Any, str]) -> list[str]:
    """The toothfairy2 scheme is what :func:`coseg.dental.assemble.combined_toothfairy2` writes: its classes are fixed
    (regions lower jawbone, upper jawbone, pharynx; teeth typed upper / lower or by FDI number, the two tooth type
    schemes of :func:`coseg.dental.labels.tooth_type_names`)."""
    problems = []
    have = {int(k): str(v).lower() for k, v in sem_classes.items()}
    if have != {k: v.lower() for k, v in SEMANTIC_CLASSES.items()}:
        problems.append(
            f"sem_classes is {dict(sem_classes)} but pred_scheme 'toothfairy2' writes the dental classes "
            f"{dict(SEMANTIC_CLASSES)}"
        )
    have = {int(k): str(v).lower() for k, v in inst_types.items()}
    schemes = {s: tooth_type_names(s) for s in TOOTH_TYPE_SCHEMES}
    if all(have != {k: v.lower() for k, v in names.items()} for names in schemes.values()):
        problems.append(
            f"inst_types is {dict(inst_types)} but pred_scheme 'toothfairy2' writes the dental classes, teeth typed "
            f"by one of the schemes {', '.join(f'{s!r}: {dict(n)}' for s, n in schemes.items())}"
        )
    return problems


def check_class_map(
    meta: Mapping[str, Any],
    sem_classes: Mapping[Any, str],
    inst_types: Mapping[Any, str],
    *,
    scheme: str = "class_map",
) -> list[str]:
    """Problems between the class lists of a config and the ``pred`` ``channel_def`` of the metadata.

    MONAI Label names its labels after ``channel_def``, and ``verify_net_in_out`` counts its channels. The bundle's
    ``pred`` holds either the class map of :mod:`coseg.data.label_codec` (``scheme="class_map"``: region ``k`` at
    ``k``, object type ``t`` at ``S - 1 + t``) or ToothFairy2 ids (``scheme="toothfairy2"``: regions at 1, 2, 7,
    teeth at their FDI numbers; the config's classes must then be the dental ones). The metadata must list the same
    values with matching names (:func:`expected_channel_def`).

    Args:
        meta: the parsed ``metadata.json``.
        sem_classes: the config's ``sem_classes``.
        inst_types: the config's ``inst_types``.
        scheme: ``"class_map"`` or ``"toothfairy2"`` (:data:`PRED_SCHEMES`).

    Returns:
        One sentence per problem (empty when they agree).

    Raises:
        ValueError: an unknown scheme.
    """
    _check_scheme(scheme)
    try:
        channel_def = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    except (KeyError, TypeError):
        return ["network_data_format.outputs.pred.channel_def is missing"]
    if scheme == "toothfairy2":
        problems = _toothfairy2_class_problems(sem_classes, inst_types)
        if problems:
            return problems
        what = "ToothFairy2 ids of the dental classes (regions 1, 2, 7; teeth by FDI number)"
    else:
        what = f"class lists ({len(sem_classes)} region classes + {len(inst_types) - 1} object types)"
    expected = expected_channel_def(sem_classes, inst_types, scheme=scheme)
    have = {str(k): str(v) for k, v in channel_def.items()}
    if set(have) != set(expected):
        missing = sorted(set(expected) - set(have), key=int)
        extra = sorted(set(have) - set(expected), key=int)
        return [
            f"pred.channel_def has channels {sorted(have, key=int)} but the {what} give {sorted(expected, key=int)}"
            f" (missing {missing}, unexpected {extra})"
        ]
    problems = []
    for key, name in expected.items():
        if not have[key].lower().startswith(name.lower()):
            problems.append(f"pred.channel_def[{key}] is {have[key]!r} but the {scheme} scheme puts {name!r} there")
    return problems


def pred_scheme(inference: Mapping[str, Any]) -> str:
    """The label scheme of ``pred`` that an ``inference.json`` declares: its ``pred_scheme``, ``"class_map"`` when
    it has none.

    Raises:
        ValueError: a value that is not one of :data:`PRED_SCHEMES`.
    """
    scheme = inference.get("pred_scheme", "class_map") if isinstance(inference, Mapping) else "class_map"
    if scheme not in PRED_SCHEMES:
        raise ValueError(f"pred_scheme must be one of {PRED_SCHEMES}, got {scheme!r}")
    return str(scheme)


def config_class_problems(configs: Mapping[str, Any]) -> dict[str, list[str]]:
    """Check the class lists of a bundle's configs against its metadata's ``pred`` ``channel_def``.

    Args:
        configs: ``{file name: parsed content}`` of the bundle's ``configs/`` with ``"metadata.json"``; the class
            lists (``sem_classes``, ``inst_types``) of ``inference.json`` and ``train.json`` are checked, both in
            the scheme ``inference.json`` declares (:func:`pred_scheme`); ``inst_types`` computed from a dental
            ``tooth_types`` (``"jaw"`` / ``"fdi"``) are that scheme's names.

    Returns:
        ``{config file name: problems}`` for the configs that have problems.

    Raises:
        KeyError: no ``"metadata.json"`` in ``configs``.
        ValueError: an unknown ``pred_scheme``.
    """
    meta = configs["metadata.json"]
    scheme = pred_scheme(configs.get("inference.json", {}))
    found: dict[str, list[str]] = {}
    for name in ("inference.json", "train.json"):
        content = configs.get(name)
        if not isinstance(content, Mapping):
            continue
        sem, types = content.get("sem_classes"), content.get("inst_types")
        if not isinstance(types, Mapping) and content.get("tooth_types") in TOOTH_TYPE_SCHEMES:
            types = tooth_type_names(content["tooth_types"])  # inst_types computed from the dental tooth_types
        if isinstance(sem, Mapping) and isinstance(types, Mapping):
            problems = check_class_map(meta, sem, types, scheme=scheme)
            if problems:
                found[name] = problems
    return found
