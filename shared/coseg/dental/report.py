"""Dental CBCT evaluation on volumes and slices: the paper's Tables 2, 4 and 6, and teeth by FDI number as the
ToothFairy2 challenge scores them (per-class Dice and HD95, tooth identification, left/right and upper/lower swaps),
for the bundle's numbering and, on the same predicted teeth, for the positional heuristic."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed as dist
from ignite.engine import Engine, Events

from coseg.dental.inference import as_volume, unpack_tooth_types
from coseg.dental.labels import FDI_TEETH, tooth_type_lut
from coseg.errors import InputFileError
from coseg.io import jsonable, source_name, write_json, write_text
from coseg.metrics.aggregate import pct

__all__ = [
    "DentalEvaluationReport",
    "IDENTIFICATION_KEYS",
    "fdi_class_stats",
    "tooth_identification",
    "heuristic_teeth",
    "summarize_fdi",
]

#: counts of :func:`tooth_identification`
IDENTIFICATION_KEYS: tuple[str, ...] = (
    "gt_teeth",
    "pred_teeth",
    "matched",
    "correct",
    "left_right_swaps",
    "upper_lower_swaps",
    "unnumbered",
)


def _side(fdi: int) -> tuple[int, int]:
    """(jaw, side) of an FDI number: jaw 1 upper / 2 lower, side 0 patient right / 1 patient left."""
    quadrant = int(fdi) // 10
    return (1 if quadrant in (1, 2) else 2), (1 if quadrant in (2, 3) else 0)


def tooth_identification(gt_teeth: np.ndarray, pred_teeth: np.ndarray, *, match_iou: float = 0.5) -> dict[str, int]:
    """Match predicted teeth to ground-truth teeth and count how their FDI numbers agree.

    Teeth are matched one to one when their IoU exceeds ``match_iou`` (above 0.5 a match is unique). A matched
    tooth is *correct* when its predicted id is the ground truth's FDI number; otherwise, when it has an FDI number:
    a *left/right swap* when it names the other side of the same jaw (e.g. 11 read as 21 or 22), an
    *upper/lower swap* when it names the other jaw; a matched tooth without a number (id not in
    :data:`~coseg.dental.labels.FDI_TEETH`) counts as *unnumbered*.

    Args:
        gt_teeth: ``(I, J, K)`` ground-truth tooth ids = FDI numbers (0 background).
        pred_teeth: ``(I, J, K)`` predicted tooth ids (FDI numbers; other positive ids are unnumbered teeth).
        match_iou: IoU a match must exceed, in ``[0.5, 1)``.

    Returns:
        the counts of :data:`IDENTIFICATION_KEYS`.

    Raises:
        ValueError: mismatched shapes, negative ids or a bad ``match_iou``.
    """
    gt, pred = np.asarray(gt_teeth).astype(np.int64), np.asarray(pred_teeth).astype(np.int64)
    if gt.shape != pred.shape:
        raise ValueError(f"gt_teeth {gt.shape} and pred_teeth {pred.shape} shapes differ")
    if (gt.size and gt.min() < 0) or (pred.size and pred.min() < 0):
        raise ValueError("tooth ids must be >= 0")
    if not 0.5 <= float(match_iou) < 1.0:
        raise ValueError(f"match_iou must lie in [0.5, 1), got {match_iou}")
    gt_ids = np.unique(gt[gt > 0])
    pred_ids = np.unique(pred[pred > 0])
    counts = dict.fromkeys(IDENTIFICATION_KEYS, 0)
    counts["gt_teeth"], counts["pred_teeth"] = len(gt_ids), len(pred_ids)
    if not len(gt_ids) or not len(pred_ids):
        return counts
    g_index = np.searchsorted(gt_ids, gt)
    p_index = np.searchsorted(pred_ids, pred)
    both = (gt > 0) & (pred > 0)
    n_p = len(pred_ids)
    inter = np.bincount(g_index[both] * n_p + p_index[both], minlength=len(gt_ids) * n_p).reshape(-1, n_p)
    g_size = np.bincount(g_index[gt > 0], minlength=len(gt_ids))
    p_size = np.bincount(p_index[pred > 0], minlength=n_p)
    iou = inter / np.maximum(g_size[:, None] + p_size[None, :] - inter, 1)
    fdi = set(FDI_TEETH)
    for gi, pi in zip(*np.nonzero(iou > match_iou)):
        true, said = int(gt_ids[gi]), int(pred_ids[pi])
        counts["matched"] += 1
        if said == true:
            counts["correct"] += 1
        elif said not in fdi:
            counts["unnumbered"] += 1
        elif _side(said)[0] != _side(true)[0]:
            counts["upper_lower_swaps"] += 1
        elif _side(said)[1] != _side(true)[1]:
            counts["left_right_swaps"] += 1
    return counts


def fdi_class_stats(
    gt_teeth: np.ndarray, pred_teeth: np.ndarray, *, spacing: Sequence[float] | None = None
) -> dict[str, np.ndarray]:
    """Per-FDI-class overlap counts and HD95 of two tooth volumes (each FDI number one class, as ToothFairy2).

    Args:
        gt_teeth: ``(I, J, K)`` ground-truth tooth ids = FDI numbers.
        pred_teeth: ``(I, J, K)`` predicted tooth ids (ids that are not FDI numbers count as background).
        spacing: voxel size in mm per array axis (``None``: voxels).

    Returns:
        ``{"inter", "gt_count", "pred_count", "hd95"}``, each ``(32,)`` in :data:`FDI_TEETH` order; ``hd95`` is NaN
        unless the class is on both sides.

    Raises:
        ValueError: mismatched shapes.
    """
    from coseg.metrics import semantic_stats

    gt, pred = np.asarray(gt_teeth), np.asarray(pred_teeth)
    if gt.shape != pred.shape:
        raise ValueError(f"gt_teeth {gt.shape} and pred_teeth {pred.shape} shapes differ")
    lut = tooth_type_lut("fdi").astype(np.int64)

    def classes(teeth: np.ndarray) -> np.ndarray:
        ids = teeth.astype(np.int64)
        return np.where((ids >= 0) & (ids < len(lut)), lut[np.clip(ids, 0, len(lut) - 1)], 0)

    stats = semantic_stats(classes(gt)[None], classes(pred)[None], num_classes=len(FDI_TEETH) + 1, spacing=spacing)
    return {
        "inter": stats.inter[0, 1:].astype(np.int64),
        "gt_count": stats.gt_count[0, 1:].astype(np.int64),
        "pred_count": stats.pred_count[0, 1:].astype(np.int64),
        "hd95": stats.hd95[0, 1:].astype(np.float64),
    }


def heuristic_teeth(pred_teeth: np.ndarray, tooth_types: Mapping[int, int], affine: np.ndarray) -> np.ndarray:
    """The same predicted teeth numbered by the positional heuristic (:func:`coseg.dental.fdi.number_teeth_fdi`).

    Args:
        pred_teeth: ``(I, J, K)`` predicted tooth ids.
        tooth_types: id -> jaw type (1 upper, 2 lower, 0 unknown) of the predicted teeth.
        affine: ``(4, 4)`` voxel-to-RAS affine.

    Returns:
        ``(I, J, K)`` int64 tooth ids: heuristic FDI numbers, ``UNNUMBERED_TOOTH_BASE + k`` where it gives none.
    """
    from coseg.dental.fdi import UNNUMBERED_TOOTH_BASE, number_teeth_fdi

    pred = np.asarray(pred_teeth).astype(np.int64)
    ids = [int(i) for i in np.unique(pred[pred > 0])]
    numbers = number_teeth_fdi(pred, {i: int(tooth_types.get(i, 0)) for i in ids}, affine)
    lut = np.zeros(int(pred.max(initial=0)) + 1, dtype=np.int64)
    spare = UNNUMBERED_TOOTH_BASE
    for i in ids:
        if numbers.get(i) is None:
            spare += 1
        lut[i] = numbers[i] if numbers.get(i) is not None else spare
    return lut[pred]


def summarize_fdi(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-FDI-class Dice / HD95 and identification counts over cases (one numbering).

    Args:
        records: per case ``{"classes": fdi_class_stats(...), "identification": tooth_identification(...)}``.

    Returns:
        ``{"per_class": {fdi: {"dice", "hd95_mm", "cases"}}, "mean_dice", "mean_hd95_mm", "identification"}``:
        a class's Dice is the mean over the cases where it is on either side (0 where it is on one side only),
        its HD95 the mean over the cases where it is on both; ``mean_*`` average the classes that have a value;
        ``identification`` sums the counts and adds ``accuracy`` (correct / matched, ``None`` without matches).
    """
    per_class: dict[int, dict[str, Any]] = {}
    for c, fdi in enumerate(FDI_TEETH):
        dices, hds = [], []
        for r in records:
            st = r["classes"]
            total = float(st["gt_count"][c] + st["pred_count"][c])
            if total > 0:
                dices.append(2.0 * float(st["inter"][c]) / total)
            if np.isfinite(st["hd95"][c]):
                hds.append(float(st["hd95"][c]))
        per_class[fdi] = {
            "dice": float(np.mean(dices)) if dices else None,
            "hd95_mm": float(np.mean(hds)) if hds else None,
            "cases": len(dices),
        }
    ident = {k: int(sum(r["identification"][k] for r in records)) for k in IDENTIFICATION_KEYS}
    ident["accuracy"] = ident["correct"] / ident["matched"] if ident["matched"] else None
    dice_values = [v["dice"] for v in per_class.values() if v["dice"] is not None]
    hd_values = [v["hd95_mm"] for v in per_class.values() if v["hd95_mm"] is not None]
    return {
        "per_class": per_class,
        "mean_dice": float(np.mean(dice_values)) if dice_values else None,
        "mean_hd95_mm": float(np.mean(hd_values)) if hd_values else None,
        "identification": ident,
    }


logger = logging.getLogger(__name__)


class DentalEvaluationReport:
    """Evaluate volume predictions against ToothFairy2 label volumes; write per-case metrics and the tables.

    Ground truth: each item's ``label`` file mapped by name with the raw ``dataset_json`` (as
    ``coseg.dental.prepare`` maps it). Metrics:

    - regions (lower jawbone, upper jawbone, pharynx) on volumes: Dice, IoU, Hausdorff distance and HD95 in mm;
      panoptic quality of the regions (connected components);
    - teeth (upper / lower): detection F1, AJI and PQ both **per slice** (2D, as the paper; slices along the
      slicing axis, per-image mean and pooled over slices) and **per volume** (3D: one instance per tooth);
    - teeth by FDI number, as the ToothFairy2 challenge (every FDI number its own class): Dice and HD95 (mm) per
      class on volumes (:func:`fdi_class_stats`), tooth identification accuracy (teeth whose predicted number is
      right / teeth matched at IoU > 0.5), left/right and upper/lower swaps (:func:`tooth_identification`), for
      the bundle's numbering (``numbering``) and, on the same predicted teeth, for the positional heuristic
      (:func:`heuristic_teeth`), the baseline.

    Files in ``output_dir``: ``per_case.csv`` (one row per case: region Dice, teeth found, identification and swaps
    of each numbering), ``metrics.json`` and ``tables.md`` (Table 2: regions Dice / mIoU / HD mm; Table 4: teeth F1
    / AJI; Table 6: PQ of regions and teeth; the FDI tables), rank 0 only under torch.distributed.

    Args:
        output_dir: where the files go.
        axis: the slicing plane of the per-slice metrics.
        numbering: how the inferer numbered the teeth (``"learned"`` or ``"heuristic"``: the inferer's
            ``numbering``).
        match_iou: IoU above which a predicted tooth matches a ground-truth tooth (identification).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        *,
        axis: str = "axial",
        numbering: str = "heuristic",
        match_iou: float = 0.5,
    ) -> None:
        from coseg.dental.assemble import NUMBERINGS

        if numbering not in NUMBERINGS:
            raise ValueError(f"numbering must be one of {NUMBERINGS}, got {numbering!r}")
        if not 0.5 <= float(match_iou) < 1.0:
            raise ValueError(f"match_iou must lie in [0.5, 1), got {match_iou}")
        self.output_dir = os.fspath(output_dir)
        self.axis = axis
        self.numbering = numbering
        self.match_iou = float(match_iou)
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
        numbered = {self.numbering: p_teeth}
        if self.numbering != "heuristic":
            numbered["heuristic"] = heuristic_teeth(p_teeth, types, label.affine)
        fdi = {
            name: {
                "classes": fdi_class_stats(gt_inst, teeth, spacing=spacing),
                "identification": tooth_identification(gt_inst, teeth, match_iou=self.match_iou),
            }
            for name, teeth in numbered.items()
        }
        return {
            "case": Path(image_path).name,
            "sem": {k: getattr(sem, k) for k in ("inter", "gt_count", "pred_count", "hd", "hd95")},
            "teeth_volume": {k: v.to_array() for k, v in vol_teeth.items()},
            "teeth_slices": {k: np.stack(v) for k, v in per_slice.items()},
            "regions": {k: v.to_array() for k, v in regions.items()},
            "fdi": fdi,
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
        numberings = [self.numbering] + (["heuristic"] if self.numbering != "heuristic" else [])
        return {
            "num_cases": len(records),
            "regions_semantic_volume": semacc.compute_all(),
            "regions_panoptic_volume": reg_acc.compute_all(),
            "teeth_per_volume": vol_acc.compute_all(),
            "teeth_per_slice": slice_acc.compute_all(),
            "teeth_fdi": {
                "numbering": self.numbering,
                **{name: summarize_fdi([r["fdi"][name] for r in records]) for name in numberings},
            },
            "per_case": [_case_row(r, numberings) for r in records],
            "units": {"hd": "mm", "hd95_mm": "mm", "dice_iou_f1_aji_pq_accuracy": "fraction in [0, 1]"},
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
        self.write(records)

    def write(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Summarise per-case records (:meth:`case_record`) and write ``metrics.json``, ``per_case.csv`` and
        ``tables.md``; returns the summary."""
        os.makedirs(self.output_dir, exist_ok=True)
        summary = self.summarize(records)
        write_json(os.path.join(self.output_dir, "metrics.json"), jsonable(summary))
        write_text(os.path.join(self.output_dir, "per_case.csv"), _per_case_csv(summary["per_case"]))
        write_text(os.path.join(self.output_dir, "tables.md"), _dental_tables(summary))
        logger.info("dental evaluation of %d cases written to %s", len(records), self.output_dir)
        return summary


def _first(x: Any) -> str:
    return x[0] if isinstance(x, (list, tuple)) else x


_REGION_NAMES = {1: "lower jawbone", 2: "upper jawbone", 3: "pharynx"}


def _case_row(record: Mapping[str, Any], numberings: Sequence[str]) -> dict[str, Any]:
    """One case of the per-case table: region Dice and, per numbering, tooth Dice and identification."""
    sem = record["sem"]
    row: dict[str, Any] = {"case": record["case"]}
    for k, name in _REGION_NAMES.items():
        total = float(sem["gt_count"][0, k] + sem["pred_count"][0, k])
        row[f"dice_{name.replace(' ', '_')}"] = 2.0 * float(sem["inter"][0, k]) / total if total else None
    for name in numberings:
        fdi = summarize_fdi([record["fdi"][name]])
        ident = fdi["identification"]
        row[name] = {
            "mean_tooth_dice": fdi["mean_dice"],
            "mean_tooth_hd95_mm": fdi["mean_hd95_mm"],
            **{k: ident[k] for k in (*IDENTIFICATION_KEYS, "accuracy")},
        }
    return row


def _per_case_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The per-case rows as CSV (nested numbering columns flattened to ``<numbering>_<key>``)."""
    flat = []
    for row in rows:
        out: dict[str, Any] = {}
        for key, value in row.items():
            if isinstance(value, Mapping):
                out.update({f"{key}_{k}": v for k, v in value.items()})
            else:
                out[key] = value
        flat.append(out)
    columns = list(dict.fromkeys(k for row in flat for k in row))

    def cell(v: Any) -> str:
        if v is None:
            return ""
        return f"{v:.6g}" if isinstance(v, float) else str(v)

    lines = [",".join(columns)] + [",".join(cell(r.get(c)) for c in columns) for r in flat]
    return "\n".join(lines) + "\n"


def _num(v: Any, digits: int = 2) -> Any:
    return "–" if v is None or not np.isfinite(float(v)) else round(float(v), digits)


def _pct(v: Any) -> Any:
    p = pct(v)
    return "–" if p is None else p


def _fdi_tables(fdi: Mapping[str, Any], per_case: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown of the ToothFairy2-style evaluation: numberings side by side, per FDI class, per case."""
    names = [fdi["numbering"]] + (["heuristic"] if fdi["numbering"] != "heuristic" else [])
    lines = [
        "",
        "### ToothFairy2 layout: teeth by FDI number (volumes)",
        "",
        f"The bundle's numbering is {fdi['numbering']!r}; 'heuristic' numbers the same predicted teeth by position "
        "along the arch. Identification: teeth whose predicted number is right / teeth matched (IoU > 0.5).",
        "",
        "| numbering | mean Dice | mean HD95 (mm) | identification | matched / GT teeth | left/right swaps "
        "| upper/lower swaps | unnumbered |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        s, ident = fdi[name], fdi[name]["identification"]
        lines.append(
            f"| {name} | {_pct(s['mean_dice'])} | {_num(s['mean_hd95_mm'])} | {_pct(ident['accuracy'])} "
            f"| {ident['matched']} / {ident['gt_teeth']} | {ident['left_right_swaps']} | {ident['upper_lower_swaps']} "
            f"| {ident['unnumbered']} |"
        )
    lines += ["", "Per FDI class (Dice in %, HD95 in mm; – where undefined):", ""]
    header = "| FDI | " + " | ".join(f"Dice {n} | HD95 {n}" for n in names) + " |"
    lines += [header, "|---|" + "---|---|" * len(names)]
    for tooth in FDI_TEETH:
        cells = []
        for name in names:
            c = fdi[name]["per_class"][tooth]
            cells += [str(_pct(c["dice"])), str(_num(c["hd95_mm"]))]
        lines.append(f"| {tooth} | " + " | ".join(cells) + " |")
    lines += ["", "Per case:", ""]
    header = "| case | Dice lower jawbone | Dice upper jawbone | Dice pharynx | " + " | ".join(
        f"{n}: identification | {n}: L/R swaps | {n}: U/L swaps" for n in names
    )
    lines += [header + " |", "|---|---|---|---|" + "---|---|---|" * len(names)]
    for row in per_case:
        cells = [_pct(row[f"dice_{n.replace(' ', '_')}"]) for n in _REGION_NAMES.values()]
        for name in names:
            r = row[name]
            identified = f"{_pct(r['accuracy'])} ({r['correct']}/{r['matched']})"
            cells += [identified, r["left_right_swaps"], r["upper_lower_swaps"]]
        lines.append(f"| {row['case']} | " + " | ".join(str(c) for c in cells) + " |")
    return lines


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
    if "teeth_fdi" in summary:
        lines += _fdi_tables(summary["teeth_fdi"], summary.get("per_case", []))
    return "\n".join(lines) + "\n"
