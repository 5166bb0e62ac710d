"""Checks of a bundle's ``configs/metadata.json`` that do not need MONAI's schema (which cannot be downloaded offline).

MONAI's ``verify_metadata`` validates against ``meta_schema_20240725.json`` fetched from the network. These checks
cover what the schema requires plus what MONAI's own tools read from the file (``verify_net_in_out``, MONAI Label),
so a bundle exported from this repository is known to load there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from coseg.data.label_codec import class_map_names

__all__ = ["REQUIRED_METADATA_KEYS", "check_metadata", "check_class_map", "expected_channel_def"]

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


def expected_channel_def(sem_classes: Mapping[Any, str], inst_types: Mapping[Any, str]) -> dict[str, str]:
    """The ``pred`` ``channel_def`` a Co-Seg++ bundle with these classes must declare: the class map's names.

    Args:
        sem_classes: ``{0: "background", 1: region, ...}`` (keys may be strings, as in JSON configs).
        inst_types: ``{0: "background", 1: type, ...}``.

    Returns:
        ``{"0": "background", "1": region 1, ..., str(S - 1 + t): type t, ...}`` (:func:`class_map_names`);
        :func:`check_class_map` accepts object names that start with the type name (``"TIL nucleus"``).
    """
    sems = {int(k): str(v) for k, v in sem_classes.items()}
    types = {int(k): str(v) for k, v in inst_types.items()}
    return class_map_names(sems, types)


def check_class_map(
    meta: Mapping[str, Any], sem_classes: Mapping[Any, str], inst_types: Mapping[Any, str]
) -> list[str]:
    """Problems between the class lists of a config and the ``pred`` ``channel_def`` of the metadata.

    MONAI Label names its labels after ``channel_def``; the bundle's ``pred`` holds the class map of
    :mod:`coseg.data.label_codec`. The two must list the same classes in the same order: region ``k`` at ``k``,
    object type ``t`` at ``S - 1 + t`` (object names may carry a suffix such as ``" nucleus"``).

    Args:
        meta: the parsed ``metadata.json``.
        sem_classes: the config's ``sem_classes``.
        inst_types: the config's ``inst_types``.

    Returns:
        One sentence per problem (empty when they agree).
    """
    try:
        channel_def = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    except (KeyError, TypeError):
        return ["network_data_format.outputs.pred.channel_def is missing"]
    expected = expected_channel_def(sem_classes, inst_types)
    have = {str(k): str(v) for k, v in channel_def.items()}
    problems = []
    if set(have) != set(expected):
        problems.append(
            f"pred.channel_def has channels {sorted(have, key=int)} but the class lists give "
            f"{sorted(expected, key=int)} ({len(sem_classes)} region classes + {len(inst_types) - 1} object types)"
        )
        return problems
    for key, name in expected.items():
        if not have[key].lower().startswith(name.lower()):
            problems.append(f"pred.channel_def[{key}] is {have[key]!r} but the class lists put {name!r} there")
    return problems
