"""ValidationHistory: one record per validation, atomic rewrite, resumed curves continue, fresh ones restart."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from ignite.engine import Engine, Events

from coseg.engines.history import ValidationHistory, read_validation_history


def _validation(epoch: int, metrics: dict) -> SimpleNamespace:
    """What the handler sees of a MONAI evaluator run by a ValidationHandler: the trainer's epoch, the metrics."""
    return SimpleNamespace(state=SimpleNamespace(epoch=epoch, metrics=metrics))


def test_records_every_validation_and_reads_back(tmp_path):
    path = tmp_path / "eval" / "validation_history.json"
    history = ValidationHistory(path)
    history(_validation(1, {"val_mpq": 0.25, "val_hd": torch.tensor(3.0), "val_nan": math.nan, "note": "text"}))
    first = json.loads(path.read_text(encoding="utf-8"))
    assert first["epochs"] == [{"epoch": 1, "metrics": {"val_hd": 3.0, "val_mpq": 0.25, "val_nan": None}}]
    history(_validation(3, {"val_mpq": 0.5}))
    curves = read_validation_history(path)
    assert curves["epoch"] == [1.0, 3.0]
    assert curves["val_mpq"] == [0.25, 0.5]
    assert curves["val_hd"][0] == 3.0 and math.isnan(curves["val_hd"][1])  # only recorded at epoch 1
    assert not list(path.parent.glob("*.tmp"))


def test_attached_to_an_engine_it_runs_after_the_metrics(tmp_path):
    path = tmp_path / "h.json"
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def _metrics(e):  # registered first, as MONAI evaluators attach their metrics before the val_handlers
        e.state.metrics["val_mpq"] = 0.125

    ValidationHistory(path).attach(engine)
    engine.run([0], max_epochs=1)
    assert read_validation_history(path) == {"epoch": [1.0], "val_mpq": [0.125]}


def test_a_resumed_training_continues_and_a_fresh_one_restarts(tmp_path):
    path = tmp_path / "h.json"
    path.write_text(
        json.dumps({"format": 1, "epochs": [{"epoch": e, "metrics": {"m": e / 10}} for e in (1, 2, 3, 4)]}),
        encoding="utf-8",
    )
    ValidationHistory(path, metric_names=["m"])(_validation(3, {"m": 0.9, "other": 1.0}))
    assert read_validation_history(path) == {"epoch": [1.0, 2.0, 3.0], "m": [0.1, 0.2, 0.9]}  # 4 is dropped
    ValidationHistory(path)(_validation(1, {"m": 0.7}))
    assert read_validation_history(path) == {"epoch": [1.0], "m": [0.7]}


def test_bad_files_and_arguments(tmp_path):
    with pytest.raises(TypeError, match="list of names"):
        ValidationHistory(tmp_path / "h.json", metric_names="val_mpq")
    with pytest.raises(FileNotFoundError, match="no validation history"):
        read_validation_history(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"epochs": [{"epoch": "one"}]}), encoding="utf-8")
    with pytest.raises(ValueError, match="not a validation history"):
        read_validation_history(bad)
