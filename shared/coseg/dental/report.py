"""Dental CBCT evaluation on volumes and slices, in the layout of the paper's Tables 2, 4 and 6."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed as dist
from ignite.engine import Engine, Events

from coseg.dental.inference import as_volume, unpack_tooth_types
from coseg.errors import InputFileError
from coseg.io import jsonable, source_name, write_json, write_text
from coseg.metrics.aggregate import pct

__all__ = ["DentalEvaluationReport"]

logger = logging.getLogger(__name__)


class DentalEvaluationReport:
    """Evaluate volume predictions against ToothFairy2 label volumes; write per-case metrics and the tables.

    Ground truth: each item's ``label`` file mapped by name with the raw ``dataset_json`` (as
    ``coseg.dental.prepare`` maps it). Metrics:

    - regions (lower jawbone, upper jawbone, pharynx) on volumes: Dice, IoU, Hausdorff distance and HD95 in mm;
      panoptic quality of the regions (connected components);
    - teeth (upper / lower): detection F1, AJI and PQ both **per slice** (2D, as the paper; slices along the
      slicing axis, per-image mean and pooled over slices) and **per volume** (3D: one instance per tooth).

    Files in ``output_dir``: ``per_case.csv``, ``metrics.json`` and ``tables.md`` (Table 2: regions Dice / mIoU
    / HD mm; Table 4: teeth F1 / AJI; Table 6: PQ of regions and teeth), rank 0 only under torch.distributed.
    """

    def __init__(self, output_dir: str | os.PathLike, *, axis: str = "axial") -> None:
        self.output_dir = os.fspath(output_dir)
        self.axis = axis
        self.records: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda e: self.records.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def case_record(
        self, image_path: str, label_path: str, dataset_json: str, pred: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Statistics of one case."""
        from coseg.dental.geometry import slice_geometry
        from coseg.dental.labels import build_label_map, read_dataset_json
        from coseg.dental.volumes import read_volume
        from coseg.metrics import per_class_instance_stats, semantic_stats, tissue_panoptic_stats

        label = read_volume(label_path, kind="label")
        gt_sem, gt_inst, gt_type = build_label_map(read_dataset_json(dataset_json)).apply(label.array, path=label_path)
        p_sem = as_volume(pred["semantic"]).astype(np.int64)
        p_teeth = as_volume(pred["teeth"]).astype(np.int64)
        types = unpack_tooth_types(pred["tooth_types"])
        lut = np.zeros(int(p_teeth.max(initial=0)) + 1, np.int64)
        for k, v in types.items():
            if k < len(lut):
                lut[k] = v
        p_type = lut[p_teeth]
        if p_sem.shape != gt_sem.shape:
            raise InputFileError(label_path, f"label grid {gt_sem.shape} differs from the prediction {p_sem.shape}")
        spacing = [float(s) for s in label.spacing]
        sem = semantic_stats(gt_sem[None].astype(np.int64), p_sem[None], num_classes=4, spacing=spacing)
        vol_teeth = per_class_instance_stats(gt_inst, p_teeth, gt_type, p_type, num_classes=3)
        regions = tissue_panoptic_stats(gt_sem.astype(np.int64), p_sem, num_classes=4, min_area=0, closing_size=0)
        geometry = slice_geometry(gt_sem.shape, label.affine, axis=self.axis, size=max(gt_sem.shape))
        canon = [geometry.to_canonical(a) for a in (gt_inst, p_teeth, gt_type, p_type)]
        per_slice = {1: [], 2: []}
        for z in range(canon[0].shape[0]):
            stats = per_class_instance_stats(canon[0][z], canon[1][z], canon[2][z], canon[3][z], num_classes=3)
            for k in (1, 2):
                per_slice[k].append(stats[k].to_array())
        return {
            "case": Path(image_path).name,
            "sem": {k: getattr(sem, k) for k in ("inter", "gt_count", "pred_count", "hd", "hd95")},
            "teeth_volume": {k: v.to_array() for k, v in vol_teeth.items()},
            "teeth_slices": {k: np.stack(v) for k, v in per_slice.items()},
            "regions": {k: v.to_array() for k, v in regions.items()},
        }

    def _collect(self, engine: Engine) -> None:
        items = engine.state.output
        batch = engine.state.batch
        for i, item in enumerate([items] if isinstance(items, Mapping) else items or []):
            src = batch[i] if isinstance(batch, (list, tuple)) else batch
            label_path = item.get("label") or (src.get("label") if isinstance(src, Mapping) else None)
            ds_json = item.get("dataset_json") or (src.get("dataset_json") if isinstance(src, Mapping) else None)
            if not label_path or not ds_json:
                raise KeyError(
                    "DentalEvaluationReport needs 'label' and 'dataset_json' entries (coseg.dental.cbct_cases)"
                )
            self.records.append(
                self.case_record(source_name(item["image"], ""), _first(label_path), _first(ds_json), item)
            )

    def summarize(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        from coseg.metrics import InstanceAccumulator, SemanticAccumulator
        from coseg.metrics.instance import InstanceStats
        from coseg.metrics.semantic import SemanticStats

        semacc, vol_acc, slice_acc, reg_acc = (
            SemanticAccumulator(),
            InstanceAccumulator(),
            InstanceAccumulator(),
            InstanceAccumulator(),
        )
        for r in records:
            semacc.add(SemanticStats(**r["sem"]))
            vol_acc.add(per_class={k: InstanceStats.from_array(v) for k, v in r["teeth_volume"].items()})
            reg_acc.add(per_class={k: InstanceStats.from_array(v) for k, v in r["regions"].items()})
            n = len(r["teeth_slices"][1])
            for z in range(n):
                slice_acc.add(per_class={k: InstanceStats.from_array(r["teeth_slices"][k][z]) for k in (1, 2)})
        return {
            "num_cases": len(records),
            "regions_semantic_volume": semacc.compute_all(),
            "regions_panoptic_volume": reg_acc.compute_all(),
            "teeth_per_volume": vol_acc.compute_all(),
            "teeth_per_slice": slice_acc.compute_all(),
            "units": {"hd": "mm", "dice_iou_f1_aji_pq": "fraction in [0, 1]"},
            "classes": {
                "regions": {1: "lower jawbone", 2: "upper jawbone", 3: "pharynx"},
                "teeth": {1: "upper teeth", 2: "lower teeth"},
            },
        }

    def _write(self, engine: Engine) -> None:
        records = list(self.records)
        if dist.is_available() and dist.is_initialized():
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, records)
            records = [r for p in parts for r in p]
            if dist.get_rank() != 0:
                return

        os.makedirs(self.output_dir, exist_ok=True)
        summary = self.summarize(records)
        write_json(os.path.join(self.output_dir, "metrics.json"), jsonable(summary))
        write_text(os.path.join(self.output_dir, "tables.md"), _dental_tables(summary))
        logger.info("dental evaluation of %d cases written to %s", len(records), self.output_dir)


def _first(x: Any) -> str:
    return x[0] if isinstance(x, (list, tuple)) else x


def _dental_tables(summary: Mapping[str, Any]) -> str:
    red = "per_image_mean"
    sem = summary["regions_semantic_volume"][red]["per_class"]
    reg = summary["regions_panoptic_volume"][red]["per_class"]
    vol = summary["teeth_per_volume"][red]["per_class"]
    sl = summary["teeth_per_slice"][red]["per_class"]
    names = {1: "lower jawbone", 2: "upper jawbone", 3: "pharynx"}
    teeth = {2: "lower teeth", 1: "upper teeth"}
    lines = [f"Evaluation of {summary['num_cases']} volumes (per-case mean; HD in mm).", ""]
    lines += ["### Table 2 layout: regions (volumes)", "", "| class | Dice | mIoU | HD (mm) |", "|---|---|---|---|"]
    hd = sem.get("hd") or [None] * 4
    for k, n in names.items():
        h = "–" if hd[k] is None or not np.isfinite(hd[k]) else round(hd[k], 2)
        lines.append(f"| {n} | {pct(sem['dice'][k])} | {pct(sem['iou'][k])} | {h} |")
    lines += [
        "",
        "### Table 4 layout: teeth (F1 / AJI in %)",
        "",
        "| class | F1 per slice | AJI per slice | F1 per volume | AJI per volume |",
        "|---|---|---|---|---|",
    ]
    for k, n in teeth.items():
        lines.append(f"| {n} | {pct(sl[k]['f1'])} | {pct(sl[k]['aji'])} | {pct(vol[k]['f1'])} | {pct(vol[k]['aji'])} |")
    lines += [
        "",
        "### Table 6 layout: panoptic quality in %",
        "",
        "| structure | PQ per slice | PQ per volume |",
        "|---|---|---|",
    ]
    for k, n in names.items():
        lines.append(f"| {n} | – | {pct(reg[k]['pq'])} |")
    for k, n in teeth.items():
        lines.append(f"| {n} | {pct(sl[k]['pq'])} | {pct(vol[k]['pq'])} |")
    return "\n".join(lines) + "\n"
