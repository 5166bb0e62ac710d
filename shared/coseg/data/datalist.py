"""Datalists of prepared 2D datasets (``datalist.json``: histology images or CBCT slices) and their class lists."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from coseg.errors import InputFileError, InputNotFoundError

__all__ = ["dataset_classes", "read_datalist", "PATH_KEYS", "check_dataset_classes"]

logger = logging.getLogger(__name__)


def dataset_classes(dataset_dir: str | os.PathLike) -> dict[str, Any]:
    """The class names of a prepared dataset (its ``dataset.json``), or ``{}`` when it has none."""
    path = Path(dataset_dir) / "dataset.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_datalist(
    dataset_dir: str | os.PathLike, split: str, *, fraction: float = 1.0, fraction_seed: int = 0
) -> list[dict[str, Any]]:
    """Items of one split of a prepared 2D dataset's ``datalist.json`` (histology images or CBCT slices).

    Args:
        dataset_dir: the prepared dataset folder.
        split: ``"training"``, ``"validation"`` or ``"test"``.
        fraction: keep this fraction of the split (nested seeded subsets: the 10 % subset is inside the 30 %
            one), for limited-annotation experiments.
        fraction_seed: seed of that subsampling.

    Returns:
        MONAI datalist items with absolute paths.

    Raises:
        InputNotFoundError: no ``datalist.json`` (a ``FileNotFoundError``).
        InputFileError: an unknown split (a ``ValueError``).
        ValueError: a fraction outside (0, 1].
    """
    root = Path(dataset_dir).expanduser()
    datalist = root / "datalist.json"
    if not datalist.is_file():
        raise InputNotFoundError(root, "no datalist.json (prepare the dataset first)")
    content = json.loads(datalist.read_text(encoding="utf-8"))
    if split not in content:
        raise InputFileError(
            datalist, f"no split {split!r}; it has {[k for k in content if isinstance(content[k], list)]}"
        )
    items = [_absolute(item, root) for item in content[split]]
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction < 1.0 and items:
        order = np.random.default_rng(fraction_seed).permutation(len(items))
        keep = max(1, int(round(fraction * len(items))))
        items = [items[i] for i in sorted(order[:keep])]
    return items


#: datalist entries that hold file paths (relative to the dataset folder)
PATH_KEYS = ("image", "label", "label_sem", "label_inst", "label_type")


def _absolute(item: dict[str, Any], root: Path) -> dict[str, Any]:
    out = dict(item)
    for key in PATH_KEYS:
        if isinstance(out.get(key), str):
            out[key] = str((root / out[key]).resolve())
    return out


def check_dataset_classes(
    dataset_dir: str | os.PathLike, sem_classes: dict[Any, str], inst_types: dict[Any, str]
) -> None:
    """Fail early when a prepared dataset's class lists (``dataset.json``) differ from the bundle's.

    Raises:
        InputFileError: the numbers of classes differ (names may differ; they are only logged).
    """
    info = dataset_classes(dataset_dir)
    for key, ours in (("semantic_classes", sem_classes), ("instance_types", inst_types)):
        theirs = info.get(key)
        if theirs is None:
            continue
        if len(theirs) != len(ours):
            raise InputFileError(
                Path(dataset_dir) / "dataset.json",
                f"has {len(theirs)} {key} {dict(theirs)} but the bundle is configured for {len(ours)} {dict(ours)}; "
                "override sem_classes / inst_types to match the data",
            )
        if [str(v) for v in theirs.values()] != [str(v) for v in ours.values()]:
            logger.warning("class names of %s differ from the bundle's: %s vs %s", key, dict(theirs), dict(ours))
