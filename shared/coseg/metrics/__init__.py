"""Metrics of the Co-Seg++ paper on label maps: exact (HoVer-Net / MONAI / GlaS definitions) and fast.

- :mod:`~coseg.metrics.instance`: AJI, AJI+, PQ (DQ, SQ), detection F1 and DICE1 from one contingency table,
  class-agnostic or per object type.
- :mod:`~coseg.metrics.semantic`: Dice, IoU, Hausdorff distance and HD95 per class (2D / 3D, physical spacing).
- :mod:`~coseg.metrics.stuff`: tissue panoptic quality (connected components per class) and the GlaS object-level
  Dice and Hausdorff distance.
- :mod:`~coseg.metrics.aggregate`: per-image mean and pooled reductions over a dataset.
- :mod:`~coseg.metrics.ignite`: MONAI ``CumulativeIterationMetric`` wrappers for ``IgniteMetricHandler``.

Empty inputs: a metric is ``empty_value`` (default NaN = undefined, skipped by the aggregators) when neither side
has anything to measure, and 0 (overlap metrics) or ``missing_value`` (distances, default inf) when exactly one
side is empty.
"""

from .aggregate import InstanceAccumulator, SemanticAccumulator, nanmean, reduce_instance_stats
from .ignite import InstanceMetric, MissingClassCount, SemanticMetric
from .instance import (
    INSTANCE_METRICS,
    InstanceStats,
    aji,
    aji_plus,
    detection_f1,
    dice_1,
    instance_scores,
    instance_stats,
    instance_types,
    panoptic_quality,
    per_class_instance_scores,
    per_class_instance_stats,
)
from .semantic import (
    SEMANTIC_METRICS,
    SemanticStats,
    dice_per_class,
    hausdorff_per_class,
    iou_per_class,
    semantic_scores,
    semantic_stats,
)
from .stuff import object_dice, object_hausdorff, tissue_instances, tissue_panoptic_quality, tissue_panoptic_stats

__all__ = [
    "INSTANCE_METRICS",
    "SEMANTIC_METRICS",
    "InstanceAccumulator",
    "InstanceMetric",
    "InstanceStats",
    "MissingClassCount",
    "SemanticAccumulator",
    "SemanticMetric",
    "SemanticStats",
    "aji",
    "aji_plus",
    "detection_f1",
    "dice_1",
    "dice_per_class",
    "hausdorff_per_class",
    "instance_scores",
    "instance_stats",
    "instance_types",
    "iou_per_class",
    "nanmean",
    "object_dice",
    "object_hausdorff",
    "panoptic_quality",
    "per_class_instance_scores",
    "per_class_instance_stats",
    "reduce_instance_stats",
    "semantic_scores",
    "semantic_stats",
    "tissue_instances",
    "tissue_panoptic_quality",
    "tissue_panoptic_stats",
]
