"""Ignite handlers for the bundles: loss-term logging, overlay pictures of validation images, progress; the
checkpoint handlers are in :mod:`coseg.engines.checkpoints`."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar as _IgniteProgressBar
from monai.handlers import CheckpointSaver

from coseg.engines.checkpoints import BestModelSaver, TrainingCheckpointSaver
from coseg.io import source_name, write_rgb
from coseg.keys import DataKeys
from coseg.postprocess.transforms import PredKeys
from coseg.visualize import denormalize, overlay

__all__ = [
    "rank_zero_handlers",
    "loss_value",
    "LossTermsHandler",
    "OverlayWriter",
    "ProgressBar",
]

logger = logging.getLogger(__name__)


class LossTermsHandler:
    """Average each term of the loss over the epoch and publish it as ``engine.state.metrics[prefix + term]``.

    MONAI's ``StatsHandler`` and ``TensorBoardStatsHandler`` then log the terms with the other epoch metrics.

    Args:
        loss_function: an object with a ``last_terms`` dict of tensors (:class:`coseg.losses.CoSegLoss`).
        prefix: prefix of the metric names.
    """

    def __init__(self, loss_function: Any, prefix: str = "train_") -> None:
        if not hasattr(loss_function, "last_terms"):
            raise TypeError("loss_function has no `last_terms`; use coseg.losses.CoSegLoss")
        self.loss_function = loss_function
        self.prefix = prefix
        self._sums: dict[str, torch.Tensor] = {}
        self._count = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._publish)

    def _reset(self, engine: Engine) -> None:
        self._sums, self._count = {}, 0

    def _accumulate(self, engine: Engine) -> None:
        for k, v in self.loss_function.last_terms.items():
            self._sums[k] = self._sums.get(k, 0.0) + v.detach()
        self._count += 1

    def _publish(self, engine: Engine) -> None:
        for k, v in self._sums.items():
            engine.state.metrics[self.prefix + k] = float(v) / max(self._count, 1)


class OverlayWriter:
    """Write overlay PNGs (image | prediction | ground truth) for the first ``num_images`` items of each run.

    Attach it to an evaluator whose post-processing produced ``pred_sem``/``pred_inst``/``pred_type`` (see
    :class:`coseg.postprocess.transforms.CoSegPostProcessd`); files go to
    ``output_dir/epoch_<e>/<image name>.png`` (``epoch`` is the trainer's epoch when run by a
    ``ValidationHandler``).

    Args:
        output_dir: where to write.
        num_images: items per run.
        with_ground_truth: add a third panel with the labels when present.
    """

    def __init__(self, output_dir: str | os.PathLike, num_images: int = 4, with_ground_truth: bool = True) -> None:
        self.output_dir = os.fspath(output_dir)
        self.num_images = int(num_images)
        self.with_ground_truth = with_ground_truth
        self._written = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._written = 0

    def _write(self, engine: Engine) -> None:
        items = engine.state.output
        if isinstance(items, Mapping):
            items = [items]
        folder = os.path.join(self.output_dir, f"epoch_{engine.state.epoch}")
        for item in items or []:
            if self._written >= self.num_images:
                return
            if not isinstance(item, Mapping) or PredKeys.INST not in item:
                continue
            image = item[DataKeys.IMAGE]
            rgb = denormalize(_np(image))
            panels = [
                rgb,
                overlay(rgb, _np2(item.get(PredKeys.SEM)), _np2(item[PredKeys.INST]), _np2(item.get(PredKeys.TYPE))),
            ]
            if self.with_ground_truth and PredKeys.GT_INST in item:
                panels.append(
                    overlay(
                        rgb,
                        _np2(item.get(PredKeys.GT_SEM)),
                        _np2(item[PredKeys.GT_INST]),
                        _np2(item.get(PredKeys.GT_TYPE)),
                    )
                )
            sep = np.full((rgb.shape[0], 4, 3), 255, np.uint8)
            canvas = np.concatenate([p for panel in panels for p in (panel, sep)][:-1], axis=1)
            name = os.path.splitext(os.path.basename(source_name(image, f"image_{self._written}")))[0]
            os.makedirs(folder, exist_ok=True)
            write_rgb(os.path.join(folder, f"{name}.png"), canvas)
            self._written += 1


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _np2(x: Any) -> np.ndarray | None:
    """``(1, H, W)`` or ``(H, W)`` map -> ``(H, W)``; ``None`` stays ``None``."""
    if x is None:
        return None
    a = _np(x)
    return a[0] if a.ndim == 3 else a


class ProgressBar(_IgniteProgressBar):
    """ignite's tqdm progress bar showing the running loss (``engine.state.output[output_key]``).

    Args:
        output_key: key of the loss in the engine output (MONAI engines: ``"loss"``).
        kwargs: passed to ``ignite.handlers.ProgressBar`` (e.g. ``persist=True``).
    """

    def __init__(self, output_key: str = "loss", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.output_key = output_key

    def attach(self, engine: Engine, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        def loss(output: Any) -> dict[str, float]:
            if isinstance(output, Mapping) and self.output_key in output:
                return {self.output_key: float(output[self.output_key].detach())}
            return {}

        kwargs.setdefault("output_transform", loss)
        super().attach(engine, *args, **kwargs)


def loss_value(output: Any) -> float:
    """The scalar loss of a MONAI trainer's output dict (an ``output_transform`` for stats handlers)."""
    return float(output["loss"].detach())


def rank_zero_handlers(handlers: list[Any] | None) -> list[Any]:
    """The handlers a process keeps under ``torch.distributed``: all of them on rank 0; on the other ranks only
    those that must run everywhere (learning-rate schedules, validation, checkpoint loading, loss terms, and
    reports that gather results across ranks) — no logging, progress bars, TensorBoard, overlays or checkpoint
    saving, so that only rank 0 writes.
    """
    import torch.distributed as dist
    from monai.handlers import MetricsSaver, StatsHandler, TensorBoardStatsHandler

    handlers = list(handlers or [])
    if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:
        return handlers
    writers = (
        CheckpointSaver,
        TrainingCheckpointSaver,
        BestModelSaver,
        StatsHandler,
        TensorBoardStatsHandler,
        MetricsSaver,
        OverlayWriter,
        _IgniteProgressBar,
    )
    return [h for h in handlers if not isinstance(h, writers)]


def finish_distributed() -> None:
    """End a ``torch.distributed`` run: wait until every rank is done (rank 0 may still be writing reports or
    checkpoints), then destroy the process group, so that no rank tears the group down under a busy peer.

    It cannot release a group that something else still holds: a DDP wrapper keeps the Gloo group alive until
    interpreter shutdown, where its threads can abort the process ("terminate called without an active
    exception"); that is why the evaluation configs run the plain network.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
