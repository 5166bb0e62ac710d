"""Writing the per-image outputs of histology inference: label maps, instance table, GeoJSON, overlay."""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from coseg.histo.geojson import instances_to_features, regions_to_features, write_geojson
from coseg.io import atomic_write_path, source_name, write_label, write_rgb
from coseg.keys import DataKeys
from coseg.postprocess import InstanceTable
from coseg.postprocess.transforms import PredKeys
from coseg.visualize import denormalize, overlay

__all__ = ["HistoInferenceWriter", "write_histo_outputs"]

logger = logging.getLogger(__name__)


def _np(x: Any) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return a[0] if a.ndim == 3 and a.shape[0] == 1 else a


def instance_csv(table: InstanceTable, type_names: Mapping[int, str]) -> str:
    """The instance table as CSV: id, type, type name, type probability, centroid, area, bounding box."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        ["id", "type", "type_name", "type_prob", "centroid_x", "centroid_y", "area", "x_min", "y_min", "x_max", "y_max"]
    )
    for r in table.to_records():
        w.writerow(
            [
                r["id"],
                r["type"],
                type_names.get(r["type"], str(r["type"])),
                f"{r['type_prob']:.3f}",
                f"{r['centroid'][0]:.1f}",
                f"{r['centroid'][1]:.1f}",
                r["area"],
                *r["bbox"],
            ]
        )
    return buf.getvalue()


def _properties(table: InstanceTable) -> dict[int, dict[str, Any]]:
    """GeoJSON properties of each instance by id, named as whole-slide inference names them (:mod:`coseg.wsi`):
    the centroid in QuPath's pixel convention (pixel ``(i, j)`` covers ``[j, j + 1) x [i, i + 1)``)."""
    return {
        int(table.ids[i]): {
            "id": int(table.ids[i]),
            "type": int(table.types[i]),
            "type_prob": round(float(table.type_probs[i]), 4),
            "centroid": [round(float(c) + 0.5, 2) for c in table.centroids[i]],
            "area_px": int(table.areas[i]),
        }
        for i in range(len(table))
    }


def write_histo_outputs(
    output_dir: str | os.PathLike,
    name: str,
    *,
    rgb: np.ndarray,
    sem: np.ndarray,
    inst: np.ndarray,
    types: np.ndarray,
    pred: np.ndarray,
    table: InstanceTable,
    sem_classes: Mapping[int, str],
    inst_types: Mapping[int, str],
) -> dict[str, str]:
    """Write every output of one image; returns ``{kind: path}``.

    Files: ``<name>_sem.png`` (uint8 region classes), ``<name>_inst.tif`` (uint32 instance ids),
    ``<name>_type.png`` (uint8 object types), ``<name>_pred.png`` (the class map MONAI Label shows),
    ``<name>_instances.csv``, ``<name>.geojson`` (objects as QuPath detections with their type as
    classification, regions as annotations, pixel-edge outlines, level-0 pixel coordinates;
    :mod:`coseg.histo.geojson`) and ``<name>_overlay.png``.
    """
    out = os.fspath(output_dir)
    os.makedirs(out, exist_ok=True)
    paths = {
        "sem": os.path.join(out, f"{name}_sem.png"),
        "inst": os.path.join(out, f"{name}_inst.tif"),
        "type": os.path.join(out, f"{name}_type.png"),
        "pred": os.path.join(out, f"{name}_pred.png"),
        "instances": os.path.join(out, f"{name}_instances.csv"),
        "geojson": os.path.join(out, f"{name}.geojson"),
        "overlay": os.path.join(out, f"{name}_overlay.png"),
    }
    write_label(paths["sem"], sem.astype(np.uint8))
    write_label(paths["inst"], inst.astype(np.uint32), dtype=np.uint32)
    write_label(paths["type"], types.astype(np.uint8))
    write_label(paths["pred"], pred)
    with atomic_write_path(paths["instances"]) as tmp:
        tmp.write_text(instance_csv(table, inst_types), encoding="utf-8")
    regions = regions_to_features(sem, {int(k): v for k, v in sem_classes.items()}, object_type="annotation")
    nuclei = instances_to_features(
        inst, type_map=types, type_names={int(k): v for k, v in inst_types.items()}, properties=_properties(table)
    )
    write_geojson(paths["geojson"], regions + nuclei)
    write_rgb(paths["overlay"], overlay(rgb, sem, inst, types))
    return paths


class HistoInferenceWriter:
    """Ignite handler: write :func:`write_histo_outputs` for every item an inference evaluator produces.

    Args:
        output_dir: where to write.
        sem_classes, inst_types: class names (background included), for the CSV, GeoJSON and logs.
    """

    def __init__(
        self, output_dir: str | os.PathLike, *, sem_classes: Mapping[Any, str], inst_types: Mapping[Any, str]
    ) -> None:
        self.output_dir = os.fspath(output_dir)
        self.sem_classes = {int(k): v for k, v in sem_classes.items()}
        self.inst_types = {int(k): v for k, v in inst_types.items()}
        self.written: list[dict[str, str]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._write)

    def _write(self, engine: Engine) -> None:
        items = engine.state.output
        for item in [items] if isinstance(items, Mapping) else items or []:
            image = item[DataKeys.IMAGE]
            name = os.path.splitext(os.path.basename(source_name(image, f"image_{len(self.written)}")))[0]
            paths = write_histo_outputs(
                self.output_dir,
                name,
                rgb=denormalize(_np(image)),
                sem=_np(item[PredKeys.SEM]),
                inst=_np(item[PredKeys.INST]),
                types=_np(item[PredKeys.TYPE]),
                pred=_np(item[DataKeys.PRED]),
                table=item[PredKeys.INSTANCES],
                sem_classes=self.sem_classes,
                inst_types=self.inst_types,
            )
            self.written.append(paths)
            counts = np.bincount(np.asarray(item[PredKeys.INSTANCES].types, np.int64), minlength=len(self.inst_types))
            summary = ", ".join(f"{self.inst_types[t]}={int(counts[t])}" for t in range(1, len(self.inst_types)))
            logger.info("%s: %d objects (%s) -> %s", name, len(item[PredKeys.INSTANCES]), summary, self.output_dir)
