"""Putting slice predictions back together as a dental prediction on the input voxel grid, and summarising it."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from coseg.dental.fdi import UNNUMBERED_TOOTH_BASE, number_teeth_fdi
from coseg.dental.geometry import SliceGeometry
from coseg.dental.labels import FDI_TEETH, SEMANTIC_CLASSES, TOOTHFAIRY2_LABELS, TOOTHFAIRY2_REGION_IDS
from coseg.dental.link3d import link_instances_3d, voxel_stats

__all__ = ["DentalPrediction", "assemble_dental_prediction", "combined_toothfairy2", "structure_summary"]


@dataclass(frozen=True)
class DentalPrediction:
    """A dental CBCT prediction on the input voxel grid.

    Attributes:
        semantic: ``(I, J, K)`` uint8 classes of :data:`coseg.dental.labels.SEMANTIC_CLASSES`.
        teeth: ``(I, J, K)`` uint16 tooth ids: FDI numbers, or ``UNNUMBERED_TOOTH_BASE + k`` for teeth the FDI
            heuristic could not number.
        tooth_types: tooth id -> type (1 upper, 2 lower, 0 unknown).
    """

    semantic: np.ndarray
    teeth: np.ndarray
    tooth_types: dict[int, int]


def assemble_dental_prediction(
    sem_slices: np.ndarray,
    inst_slices: np.ndarray,
    type_slices: np.ndarray,
    geometry: SliceGeometry,
    affine: np.ndarray,
    *,
    min_overlap: float = 0.3,
    max_gap: int = 1,
    merge_young: int = 2,
    min_tooth_voxels: int = 0,
) -> DentalPrediction:
    """Turn per-slice model outputs into a 3D prediction on the input grid.

    Model-size label maps are resized back (nearest) to canonical slices, per-slice tooth instances are linked
    in 3D along the slicing axis (:func:`link_instances_3d`), the volumes are put back on the input grid and the
    teeth numbered (:func:`number_teeth_fdi`).

    Args:
        sem_slices: ``(N, size, size)`` semantic classes per slice.
        inst_slices: ``(N, size, size)`` per-slice instance ids.
        type_slices: ``(N, size, size)`` per-pixel instance types (1 upper, 2 lower).
        geometry: the slicing geometry of the volume.
        affine: ``(4, 4)`` voxel-to-RAS affine of the input volume.
        min_overlap, max_gap, merge_young: see :func:`link_instances_3d`.
        min_tooth_voxels: 3D teeth smaller than this (input-grid voxels after reassembly) are dropped.

    Returns:
        :class:`DentalPrediction`.

    Raises:
        ValueError: on shape mismatches or bad parameters.
    """
    if (
        isinstance(min_tooth_voxels, bool)
        or not isinstance(min_tooth_voxels, (int, np.integer))
        or min_tooth_voxels < 0
    ):
        raise ValueError(f"min_tooth_voxels must be an integer >= 0, got {min_tooth_voxels!r}")
    for name, arr in (("sem_slices", sem_slices), ("inst_slices", inst_slices), ("type_slices", type_slices)):
        if np.asarray(arr).shape != (geometry.num_slices, geometry.size, geometry.size):
            raise ValueError(f"{name} must be {(geometry.num_slices, geometry.size, geometry.size)}, got {arr.shape}")
    semantic = geometry.from_model(np.asarray(sem_slices).astype(np.uint8, copy=False))
    inst_c = geometry.model_to_canonical(np.asarray(inst_slices))
    type_c = geometry.model_to_canonical(np.asarray(type_slices))
    linked = link_instances_3d(inst_c, type_c, min_overlap=min_overlap, max_gap=max_gap, merge_young=merge_young)
    teeth_ids = geometry.from_canonical(linked.labels)
    types = dict(linked.types)
    if min_tooth_voxels > 0:
        sizes = np.bincount(teeth_ids.ravel(), minlength=len(linked.types) + 1)
        lut = np.arange(len(sizes), dtype=np.int32)
        for i in [i for i in types if sizes[i] < min_tooth_voxels]:
            lut[i] = 0
            del types[i]
        teeth_ids = lut[teeth_ids]
    numbers = number_teeth_fdi(teeth_ids, types, affine)
    lut = np.zeros(len(linked.types) + 1, dtype=np.uint16)
    final_types: dict[int, int] = {}
    spare = UNNUMBERED_TOOTH_BASE
    for i in sorted(types):
        fdi = numbers.get(i)
        if fdi is None:
            spare += 1
            fdi = spare
        lut[i] = fdi
        final_types[fdi] = types[i]
    return DentalPrediction(semantic=semantic, teeth=lut[teeth_ids], tooth_types=final_types)


def combined_toothfairy2(semantic: np.ndarray, teeth: np.ndarray) -> np.ndarray:
    """One label volume in ToothFairy2 ids: 1 lower jawbone, 2 upper jawbone, 7 pharynx, teeth by FDI number.

    Teeth take precedence over regions; teeth without an FDI number (ids > 48) are left out.

    Args:
        semantic: ``(I, J, K)`` semantic classes 0..3.
        teeth: ``(I, J, K)`` tooth ids (FDI numbers).

    Returns:
        ``(I, J, K)`` uint8.

    Raises:
        ValueError: on mismatched shapes or semantic classes outside 0..3.
    """
    semantic, teeth = np.asarray(semantic), np.asarray(teeth)
    if semantic.shape != teeth.shape:
        raise ValueError(f"semantic {semantic.shape} and teeth {teeth.shape} shapes differ")
    if semantic.size and (semantic.min() < 0 or semantic.max() >= len(SEMANTIC_CLASSES)):
        raise ValueError(f"semantic classes must lie in 0..{len(SEMANTIC_CLASSES) - 1}")
    region_lut = np.zeros(len(SEMANTIC_CLASSES), dtype=np.uint8)
    for cls, tf2 in TOOTHFAIRY2_REGION_IDS.items():
        region_lut[cls] = tf2
    out = region_lut[semantic]
    tooth_lut = np.zeros(int(teeth.max(initial=0)) + 1, dtype=np.uint8)
    for fdi in FDI_TEETH:
        if fdi < len(tooth_lut):
            tooth_lut[fdi] = fdi
    numbered = tooth_lut[teeth]
    out[numbered > 0] = numbered[numbered > 0]
    return out


_TF2_NAMES = {v: k for k, v in TOOTHFAIRY2_LABELS.items()}


def _to_world(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ affine[:3, :3].T + affine[:3, 3]


def structure_summary(semantic: np.ndarray, teeth: np.ndarray, affine: np.ndarray) -> dict[str, Any]:
    """Per-structure statistics of a dental prediction.

    Args:
        semantic: ``(I, J, K)`` semantic classes.
        teeth: ``(I, J, K)`` tooth ids (FDI, or > 100 unnumbered).
        affine: ``(4, 4)`` voxel-to-RAS affine.

    Returns:
        ``{"shape", "spacing_mm", "voxel_volume_mm3", "fdi_numbering", "structures": [...]}``; each structure has
        ``name``, ``kind`` (``region``/``tooth``), ``id`` (its value in the written volume), ``toothfairy2_id``
        (``None`` for unnumbered teeth), ``voxels``, ``volume_mm3``, ``centroid_mm`` (RAS), ``bbox_voxels``
        (``min``/``max`` inclusive voxel indices) and ``bbox_mm`` (RAS box enclosing the voxels' corners).

    Raises:
        ValueError: on mismatched shapes.
    """
    semantic, teeth = np.asarray(semantic), np.asarray(teeth)
    if semantic.shape != teeth.shape:
        raise ValueError(f"semantic {semantic.shape} and teeth {teeth.shape} shapes differ")
    affine = np.asarray(affine, dtype=np.float64)
    voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))
    structures: list[dict[str, Any]] = []
    for kind, labels in (("region", semantic), ("tooth", teeth)):
        counts, sums, boxes = voxel_stats(labels)
        for value in np.flatnonzero(counts).tolist():
            if value == 0:
                continue
            if kind == "region":
                tf2: int | None = TOOTHFAIRY2_REGION_IDS.get(value)
                name = SEMANTIC_CLASSES.get(value, f"class {value}")
            else:
                tf2 = value if value in FDI_TEETH else None
                name = _TF2_NAMES[value] if tf2 is not None else f"unnumbered tooth {value - UNNUMBERED_TOOTH_BASE}"
            box = boxes[value - 1]
            low = np.array([s.start for s in box], dtype=float)
            high = np.array([s.stop - 1 for s in box], dtype=float)
            corners = np.array(list(itertools.product(*zip(low - 0.5, high + 0.5))))
            world = _to_world(affine, corners)
            structures.append(
                {
                    "name": name,
                    "kind": kind,
                    "id": int(value),
                    "toothfairy2_id": tf2,
                    "voxels": int(counts[value]),
                    "volume_mm3": round(float(counts[value]) * voxel_mm3, 3),
                    "centroid_mm": [round(float(v), 3) for v in _to_world(affine, sums[:, value] / counts[value])],
                    "bbox_voxels": {"min": [int(v) for v in low], "max": [int(v) for v in high]},
                    "bbox_mm": {
                        "min": [round(float(v), 3) for v in world.min(axis=0)],
                        "max": [round(float(v), 3) for v in world.max(axis=0)],
                    },
                }
            )
    return {
        "shape": [int(v) for v in semantic.shape],
        "spacing_mm": [round(float(v), 6) for v in np.linalg.norm(affine[:3, :3], axis=0)],
        "voxel_volume_mm3": voxel_mm3,
        "fdi_numbering": "heuristic: jaw from the predicted tooth type, side from the arch midline, "
        "order along the arch from the midline outward (a missing tooth shifts the numbers behind it)",
        "structures": structures,
    }
