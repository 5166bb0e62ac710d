"""Test-only ignite handlers, added to the bundle's handler lists by an extra config file in the multi-GPU test:
they record, per rank, which images a trainer saw and which metrics an evaluator computed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch.distributed as dist
from ignite.engine import Engine, Events


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class SeenImagesRecorder:
    """Write ``<output_dir>/seen_rank<r>.json``: the image files of every batch of this rank (of a trainer or an
    evaluator), per epoch."""

    def __init__(self, output_dir: str) -> None:
        self.output_dir = Path(output_dir)
        self.seen: dict[int, list[str]] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._record)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _record(self, engine: Engine) -> None:
        # a trainer keeps the collated batch; an evaluator that decollates holds a list of items
        batch = engine.state.batch
        names = []
        for item in batch if isinstance(batch, list) else [batch]:
            found = item["image"].meta["filename_or_obj"]
            names += [found] if isinstance(found, str) else list(found)
        self.seen.setdefault(engine.state.epoch, []).extend(os.path.basename(n) for n in names)

    def _write(self, engine: Engine) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / f"seen_rank{_rank()}.json").write_text(json.dumps(self.seen), encoding="utf-8")


class MetricsRecorder:
    """Write ``<output_dir>/metrics_rank<r>.json``: the evaluator's metrics each time it completes."""

    def __init__(self, output_dir: str) -> None:
        self.output_dir = Path(output_dir)
        self.runs: list[dict[str, float]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _write(self, engine: Engine) -> None:
        self.runs.append({k: float(v) for k, v in engine.state.metrics.items()})
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / f"metrics_rank{_rank()}.json").write_text(json.dumps(self.runs), encoding="utf-8")
