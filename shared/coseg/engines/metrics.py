"""The validation metrics of the bundles as MONAI ``IgniteMetricHandler`` objects, named after the classes.

Hausdorff distances where a class is on one side only (in the GT but not predicted, or the reverse) are undefined:
they are left out of the HD means (NaN-aware means, as MONAI's ``do_metric_reduction`` skips NaN) instead of
making them ``inf``, and ``<prefix>hd_undefined`` counts the (image, class) pairs left out. Dice and IoU count
those pairs as 0, so a missed class still lowers the overlap scores.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from monai.handlers import IgniteMetricHandler, from_engine

from coseg.metrics import InstanceMetric, MissingClassCount, SemanticMetric
from coseg.postprocess.transforms import PredKeys

__all__ = ["validation_metrics", "metric_slug"]


def metric_slug(name: str) -> str:
    """``"Tumour nucleus"`` -> ``"tumour_nucleus"`` (names usable as metric keys and file names)."""
    return re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_") or "class"


def validation_metrics(
    *,
    sem_classes: Mapping[int | str, str],
    inst_types: Mapping[int | str, str],
    prefix: str = "val_",
    per_class: bool = True,
    hausdorff: bool = True,
    reduction: str = "per_image_mean",
    part: str = "all",
    key: str = "mpq",
    per_type: bool | None = None,
) -> dict[str, IgniteMetricHandler]:
    """Dice, mIoU and HD per region class; F1, AJI and PQ per object type; their means.

    Keys: ``<prefix>mean_dice``, ``<prefix>miou``, ``<prefix>mean_hd``, ``<prefix>hd_undefined`` (number of
    (image, region class) pairs whose HD is undefined because the class is on one side only; left out of the HD
    means), ``<prefix>mpq`` (mean PQ over object types), ``<prefix>pq`` / ``<prefix>f1`` / ``<prefix>aji``
    (class-agnostic), and with ``per_class`` ``<prefix>sem_<class>_dice|iou|hd`` and
    ``<prefix>inst_<type>_f1|aji|pq``.

    Args:
        sem_classes: ``{0: "background", 1: ..., ...}`` region class names (background included).
        inst_types: ``{0: "background", 1: ..., ...}`` object type names (background included).
        prefix: prefix of every key.
        per_class: add the per-class entries.
        hausdorff: include HD (slower).
        reduction: ``"per_image_mean"`` or ``"pooled"`` for the instance and overlap metrics.
        part: ``"key"`` (only the key metric, for ``key_val_metric``), ``"additional"`` (all but the key metric,
            for ``additional_metrics``) or ``"all"``.
        key: the key metric's name without prefix (default ``"mpq"``, the mean panoptic quality of the objects).
        per_type: add the per-type instance entries (default: as ``per_class``); off for many types (32 FDI tooth
            classes would add 96 metrics, each scoring every image again).

    Returns:
        ``{name: IgniteMetricHandler}``.

    Raises:
        ValueError: unknown ``part`` or ``key``.
    """
    if part not in ("key", "additional", "all"):
        raise ValueError(f"part must be 'key', 'additional' or 'all', got {part!r}")
    sems = {int(k): v for k, v in sem_classes.items()}
    types = {int(k): v for k, v in inst_types.items()}
    ns, nt = len(sems), len(types)
    sem_io = from_engine([PredKeys.SEM, PredKeys.GT_SEM])
    inst_io = from_engine([PredKeys.PANOPTIC, PredKeys.GT_PANOPTIC])
    out: dict[str, IgniteMetricHandler] = {}

    def sem(name: str, metric: str, class_index: int | None) -> None:
        red = reduction if metric in ("dice", "iou") else "per_image_mean"
        fn = SemanticMetric(metric, num_classes=ns, class_index=class_index, reduction=red, missing_value=math.nan)
        out[prefix + name] = IgniteMetricHandler(metric_fn=fn, output_transform=sem_io, save_details=False)

    def inst(name: str, metric: str, class_index: int | str | None) -> None:
        fn = InstanceMetric(metric, class_index=class_index, num_classes=nt, reduction=reduction)
        out[prefix + name] = IgniteMetricHandler(metric_fn=fn, output_transform=inst_io, save_details=False)

    inst("mpq", "pq", "mean")
    for metric in ("pq", "f1", "aji"):
        inst(metric, metric, None)
    sem("mean_dice", "dice", None)
    sem("miou", "iou", None)
    if hausdorff:
        sem("mean_hd", "hd", None)
        out[prefix + "hd_undefined"] = IgniteMetricHandler(
            metric_fn=MissingClassCount(num_classes=ns), output_transform=sem_io, save_details=False
        )
    if per_class:
        for k in range(1, ns):
            for metric in ("dice", "iou") + (("hd",) if hausdorff else ()):
                sem(f"sem_{metric_slug(sems[k])}_{metric}", metric, k)
    if per_class if per_type is None else per_type:
        for t in range(1, nt):
            for metric in ("f1", "aji", "pq"):
                inst(f"inst_{metric_slug(types[t])}_{metric}", metric, t)
    if prefix + key not in out:
        raise ValueError(f"unknown key metric {key!r}; choose one of {sorted(k[len(prefix) :] for k in out)}")
    if part == "key":
        return {prefix + key: out[prefix + key]}
    if part == "additional":
        out.pop(prefix + key)
    return out
