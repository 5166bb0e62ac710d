"""Fixtures of the post-processing tests: a panoptic-quality function."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch


def _panoptic_quality(gt: np.ndarray, pred: np.ndarray) -> float:
    """PQ at IoU 0.5: the project's metric when it is importable, MONAI's otherwise."""
    try:
        from coseg.metrics import panoptic_quality
    except ImportError:
        panoptic_quality = None
    if panoptic_quality is not None:
        return float(panoptic_quality(gt, pred, match_iou=0.5)[2])
    from monai.metrics.panoptic_quality import compute_panoptic_quality

    return float(
        compute_panoptic_quality(
            torch.as_tensor(pred.astype(np.int64)),
            torch.as_tensor(gt.astype(np.int64)),
            metric_name="pq",
            remap=True,
            match_iou_threshold=0.5,
        )
    )


@pytest.fixture(scope="session")
def pq() -> Callable[[np.ndarray, np.ndarray], float]:
    return _panoptic_quality
