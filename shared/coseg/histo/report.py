"""Evaluation report: per-image metrics and dataset tables laid out like the paper's Tables 1, 3 and 5."""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events

from coseg.engines.metrics import metric_slug
from coseg.inferers import INPUT_MODES
from coseg.io import jsonable, source_name, write_json, write_text
from coseg.keys import DataKeys
from coseg.metrics import (
    InstanceAccumulator,
    SemanticAccumulator,
    instance_stats,
    per_class_instance_stats,
    semantic_stats,
    tissue_panoptic_stats,
)
from coseg.metrics.aggregate import pct
from coseg.metrics.instance import InstanceStats
from coseg.postprocess.transforms import PredKeys

__all__ = ["EvaluationReport"]

logger = logging.getLogger(__name__)


def _np(x: Any) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return a[0] if a.ndim == 3 and a.shape[0] == 1 else a


class EvaluationReport:
    """Collect per-image statistics in an evaluator and write the report when it completes (rank 0).

    Files in ``output_dir``: ``per_image.csv`` (one row per image, every metric), ``metrics.json`` (both
    reductions: per-image mean and pooled, stated in the file), ``tables.md`` and ``tables.csv`` (the paper's
    layout: Table 1 semantic Dice / mIoU / HD per region class, Table 3 instance F1 / AJI per object type,
    Table 5 panoptic quality of regions and objects). Values in the tables are percentages except HD (pixels, or
    ``spacing`` units).

    Args:
        output_dir: where to write.
        sem_classes: ``{0: "background", 1: ..., ...}``.
        inst_types: ``{0: "background", 1: ..., ...}``.
        spacing: pixel size for Hausdorff distances (``None``: pixels).
        tissue_min_area, tissue_closing: tissue-PQ settings for predicted regions (released code: 200, 5).
        table_reduction: which reduction fills the tables (``"per_image_mean"`` as HoVer-Net, or ``"pooled"``).
        input_mode: how the images met the network (the bundle's ``input_mode``, :data:`coseg.inferers.INPUT_MODES`):
            recorded in ``metrics.json`` and ``tables.md``, since the paper's tables resize every image (``"resize"``)
            and whole-resolution sliding windows (``"crop"``) give other numbers. ``None``: not recorded.
        patch_size: the network's input size (``patch_size``), recorded with ``input_mode``.

    Raises:
        ValueError: an unknown ``input_mode``.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        *,
        sem_classes: Mapping[int | str, str],
        inst_types: Mapping[int | str, str],
        spacing: float | None = None,
        tissue_min_area: int = 200,
        tissue_closing: int = 5,
        table_reduction: str = "per_image_mean",
        input_mode: str | None = None,
        patch_size: int | None = None,
    ) -> None:
        if input_mode is not None and input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode must be one of {INPUT_MODES} or None, got {input_mode!r}")
        self.input_mode = input_mode
        self.patch_size = None if patch_size is None else int(patch_size)
        self.output_dir = os.fspath(output_dir)
        self.sem = {int(k): str(v) for k, v in sem_classes.items()}
        self.types = {int(k): str(v) for k, v in inst_types.items()}
        self.spacing = spacing
        self.tissue_min_area, self.tissue_closing = tissue_min_area, tissue_closing
        self.table_reduction = table_reduction
        self.records: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda e: self.records.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    # --- collection --------------------------------------------------------------------------------------
    def _collect(self, engine: Engine) -> None:
        items = engine.state.output
        for item in [items] if isinstance(items, Mapping) else items or []:
            if PredKeys.GT_SEM not in item or PredKeys.SEM not in item:
                raise KeyError("EvaluationReport needs the predicted and ground-truth maps (gt_sem, gt_inst, gt_type)")
            self.records.append(self.image_record(item))

    def image_record(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """Statistics of one post-processed item (numbers and :class:`InstanceStats` arrays, picklable)."""
        gs, ps = _np(item[PredKeys.GT_SEM]).astype(np.int64), _np(item[PredKeys.SEM]).astype(np.int64)
        gi, pi = _np(item[PredKeys.GT_INST]).astype(np.int64), _np(item[PredKeys.INST]).astype(np.int64)
        gt_t, pt = _np(item[PredKeys.GT_TYPE]).astype(np.int64), _np(item[PredKeys.TYPE]).astype(np.int64)
        ns, nt = len(self.sem), len(self.types)
        sem = semantic_stats(gs[None], ps[None], num_classes=ns, spacing=self.spacing)
        per_type = per_class_instance_stats(gi, pi, gt_t, pt, num_classes=nt)
        tissue = tissue_panoptic_stats(
            gs, ps, num_classes=ns, min_area=self.tissue_min_area, closing_size=self.tissue_closing
        )
        return {
            "image": os.path.basename(source_name(item.get(DataKeys.IMAGE), f"image_{len(self.records)}")),
            "sem": {k: getattr(sem, k) for k in ("inter", "gt_count", "pred_count", "hd", "hd95")},
            "overall": instance_stats(gi, pi).to_array(),
            "per_type": {k: v.to_array() for k, v in per_type.items()},
            "tissue": {k: v.to_array() for k, v in tissue.items()},
        }

    # --- reduction and writing ------------------------------------------------------------------------------
    def _gathered(self) -> list[dict[str, Any]]:
        if dist.is_available() and dist.is_initialized():
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, self.records)
            return [r for part in parts for r in part]
        return list(self.records)

    def summarize(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Both reductions of every metric over ``records``."""
        from coseg.metrics.semantic import SemanticStats

        semacc = SemanticAccumulator()
        inst, tissue = InstanceAccumulator(), InstanceAccumulator()
        for r in records:
            semacc.add(SemanticStats(**r["sem"]))
            inst.add(
                overall=InstanceStats.from_array(r["overall"]),
                per_class={k: InstanceStats.from_array(v) for k, v in r["per_type"].items()},
            )
            tissue.add(per_class={k: InstanceStats.from_array(v) for k, v in r["tissue"].items()})
        return {
            "num_images": len(records),
            "input": self.input_description(),
            "semantic": semacc.compute_all(),
            "instance": inst.compute_all(),
            "tissue_panoptic": tissue.compute_all(),
            "class_names": {"semantic": self.sem, "instance": self.types},
            "units": {
                "dice_iou_f1_aji_pq": "fraction in [0, 1]",
                "hd": "pixels" if self.spacing is None else "spacing",
            },
        }

    def input_description(self) -> dict[str, Any] | None:
        """How the images met the network (``metrics.json`` ``"input"``), or ``None`` when not given."""
        if self.input_mode is None:
            return None
        size = self.patch_size
        how = {
            "resize": "each image resized to the network's input size and the outputs resized back to its own grid "
            "(the paper's setting, §4.1.2); metrics on the original grid",
            "crop": "a sliding window of the network's input size over each whole image at its own resolution; "
            "metrics on the original grid",
        }[self.input_mode]
        return {"input_mode": self.input_mode, "patch_size": size, "description": how}

    def per_image_rows(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from coseg.metrics.semantic import SemanticStats

        rows = []
        for r in records:
            row: dict[str, Any] = {"image": r["image"]}
            scores = SemanticStats(**r["sem"]).scores()
            for k in range(1, len(self.sem)):
                for m in ("dice", "iou", "hd", "hd95"):
                    row[f"sem_{metric_slug(self.sem[k])}_{m}"] = float(scores[m][0, k])
            overall = InstanceStats.from_array(r["overall"]).scores()
            for m in ("f1", "aji", "pq"):
                row[f"inst_{m}"] = overall[m]
            for k, v in r["per_type"].items():
                s = InstanceStats.from_array(v).scores()
                for m in ("f1", "aji", "pq"):
                    row[f"inst_{metric_slug(self.types[k])}_{m}"] = s[m]
            for k, v in r["tissue"].items():
                row[f"tissue_{metric_slug(self.sem[k])}_pq"] = InstanceStats.from_array(v).scores()["pq"]
            rows.append(row)
        return rows

    def tables(self, summary: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """Tables 1, 3 and 5 of the paper as lists of rows."""
        red = self.table_reduction
        sem = summary["semantic"][red]["per_class"]
        inst = summary["instance"][red]["per_class"]
        tissue = summary["tissue_panoptic"][red]["per_class"]
        hd = sem.get("hd")
        t1 = [
            {
                "class": self.sem[k],
                "Dice": pct(sem["dice"][k]),
                "mIoU": pct(sem["iou"][k]),
                "HD": _round(hd[k] if hd else None),
            }
            for k in range(1, len(self.sem))
        ]
        t3 = [{"type": self.types[k], "F1": pct(inst[k]["f1"]), "AJI": pct(inst[k]["aji"])} for k in sorted(inst)]
        t5 = [{"kind": "region", "class": self.sem[k], "PQ": pct(tissue[k]["pq"])} for k in sorted(tissue)]
        t5 += [{"kind": "object", "class": self.types[k], "PQ": pct(inst[k]["pq"])} for k in sorted(inst)]
        return {"table1_semantic": t1, "table3_instance": t3, "table5_panoptic": t5}

    def _write(self, engine: Engine) -> None:
        records = self._gathered()
        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return
        os.makedirs(self.output_dir, exist_ok=True)
        summary = self.summarize(records)
        rows = self.per_image_rows(records)
        tables = self.tables(summary)
        write_json(os.path.join(self.output_dir, "metrics.json"), jsonable(summary))
        write_text(os.path.join(self.output_dir, "per_image.csv"), _csv(rows))
        write_text(os.path.join(self.output_dir, "tables.csv"), "\n".join(_csv(t, name) for name, t in tables.items()))
        write_text(
            os.path.join(self.output_dir, "tables.md"),
            _markdown(tables, self.table_reduction, len(records), summary["input"]),
        )
        logger.info("evaluation report of %d images written to %s", len(records), self.output_dir)


def _round(v: Any) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else round(float(v), 2)


def _csv(rows: list[dict[str, Any]], title: str | None = None) -> str:
    buf = io.StringIO()
    if title:
        buf.write(f"# {title}\n")
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def _markdown(tables: dict[str, list[dict[str, Any]]], reduction: str, n: int, given: dict[str, Any] | None) -> str:
    titles = {
        "table1_semantic": "Table 1 layout: semantic segmentation (Dice, mIoU in %, HD)",
        "table3_instance": "Table 3 layout: instance segmentation (detection F1, AJI in %)",
        "table5_panoptic": "Table 5 layout: panoptic quality in % (regions: connected components per class)",
    }
    out = [f"Evaluation of {n} images; reduction: {reduction}.", ""]
    if given is not None:
        size = given["patch_size"]
        at = f" {size}x{size}" if size else ""
        out[1:1] = [f"Input mode: {given['input_mode']}{at} -- {given['description']}.", ""]
    for name, rows in tables.items():
        out += [f"### {titles[name]}", ""]
        if rows:
            cols = list(rows[0])
            out.append("| " + " | ".join(cols) + " |")
            out.append("|" + "---|" * len(cols))
            out += ["| " + " | ".join("–" if r[c] is None else str(r[c]) for c in cols) + " |" for r in rows]
        out.append("")
    return "\n".join(out)
