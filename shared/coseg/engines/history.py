"""Per-epoch record of the validation metrics (the training curves of the paper's Fig. 9) as a JSON file."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events

from coseg.io import write_json

__all__ = ["ValidationHistory", "read_validation_history"]

logger = logging.getLogger(__name__)

#: version of the file layout written by :class:`ValidationHistory`
HISTORY_FORMAT = 1


class ValidationHistory:
    """Append the evaluator's metrics to a JSON file after every validation run.

    Attach it to the validation evaluator (``validate#handlers``). Run by a ``ValidationHandler``, the evaluator's
    ``state.epoch`` is the trainer's epoch, which is what each record holds. The whole file is rewritten
    atomically after every validation, so a curve survives an interrupted training. Records of epochs at or after
    the first one recorded by this process are dropped from an existing file: a resumed training continues the
    curve, a fresh training into the same folder starts a new one. Only rank 0 writes under
    ``torch.distributed`` (the metrics are already reduced over ranks).

    File layout::

        {"format": 1, "epochs": [{"epoch": 1, "metrics": {"val_mpq": 0.41, ...}}, ...]}

    Undefined (NaN) values are written as ``null``, infinities as the strings ``"inf"`` / ``"-inf"``.

    Args:
        filename: the JSON file.
        metric_names: record only these metrics (default: every entry of ``engine.state.metrics`` that is a
            number or a one-element tensor).

    Raises:
        TypeError: ``metric_names`` is a string instead of a list of names.
    """

    def __init__(self, filename: str | os.PathLike, metric_names: list[str] | tuple[str, ...] | None = None) -> None:
        if isinstance(metric_names, str):
            raise TypeError(f"metric_names must be a list of names, got the string {metric_names!r}")
        self.filename = os.fspath(filename)
        self.metric_names = None if metric_names is None else [str(m) for m in metric_names]
        self._records: list[dict[str, Any]] | None = None

    def attach(self, engine: Engine) -> None:
        """Record after every run of ``engine`` (its ``EPOCH_COMPLETED``, after the metrics are computed)."""
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return
        epoch = int(engine.state.epoch)
        if self._records is None:  # first validation of this process: keep the earlier part of an old curve
            self._records = [r for r in _read_records(self.filename) if int(r["epoch"]) < epoch]
        self._records = [r for r in self._records if int(r["epoch"]) != epoch]
        self._records.append({"epoch": epoch, "metrics": self._metrics(engine.state.metrics)})
        self._write()

    def _metrics(self, metrics: Mapping[str, Any]) -> dict[str, float | str | None]:
        names = self.metric_names if self.metric_names is not None else sorted(metrics)
        out: dict[str, float | str | None] = {}
        for name in names:
            if name not in metrics:
                if self.metric_names is not None:
                    logger.warning("ValidationHistory: metric %r is not among the evaluator's metrics", name)
                continue
            value = _scalar(metrics[name])
            if value is not None:
                out[name] = _json_number(value)
        return out

    def _write(self) -> None:
        write_json(self.filename, {"format": HISTORY_FORMAT, "epochs": self._records}, indent=1)


def read_validation_history(filename: str | os.PathLike) -> dict[str, list[float]]:
    """Read a file of :class:`ValidationHistory` as curves.

    Args:
        filename: the JSON file.

    Returns:
        ``{"epoch": [e1, e2, ...], "<metric>": [v1, v2, ...], ...}``, sorted by epoch; a metric missing at an epoch
        is NaN there.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not such a record.
    """
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"{filename}: no validation history (was validate#handlers' ValidationHistory on?)")
    records = sorted(_read_records(filename), key=lambda r: int(r["epoch"]))
    names = sorted({k for r in records for k in r["metrics"]})
    curves: dict[str, list[float]] = {"epoch": [float(r["epoch"]) for r in records]}
    for name in names:
        curves[name] = [_from_json(r["metrics"].get(name)) for r in records]
    return curves


def _read_records(filename: str) -> list[dict[str, Any]]:
    if not os.path.isfile(filename):
        return []
    try:
        with open(filename, encoding="utf-8") as f:
            content = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"{filename}: not a readable validation history ({err})") from err
    records = content.get("epochs") if isinstance(content, dict) else None
    if not isinstance(records, list) or not all(
        isinstance(r, dict) and isinstance(r.get("epoch"), int) and isinstance(r.get("metrics"), dict) for r in records
    ):
        raise ValueError(f"{filename}: not a validation history (expected {{'epochs': [{{'epoch', 'metrics'}}]}})")
    return records


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        return float(value.detach().cpu().reshape(-1)[0]) if value.numel() == 1 else None
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iuf":
        return float(value.reshape(-1)[0])
    return None


def _json_number(v: float) -> float | str | None:
    if math.isnan(v):
        return None
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def _from_json(v: Any) -> float:
    if v is None:
        return math.nan
    return float(v)
