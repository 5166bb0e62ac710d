"""Putting slice predictions back together as a dental prediction on the input voxel grid, and summarising it."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from coseg.dental.fdi import UNNUMBERED_TOOTH_BASE, number_teeth_fdi
from coseg.dental.geometry import SliceGeometry
from coseg.dental.labels import (
    FDI_TEETH,
    SEMANTIC_CLASSES,
    TOOTHFAIRY2_LABELS,
    TOOTHFAIRY2_REGION_IDS,
    fdi_class_lut,
    fdi_type,
)
from coseg.dental.link3d import link_instances_3d, voxel_stats

__all__ = [
    "NUMBERINGS",
    "DentalPrediction",
    "assemble_dental_prediction",
    "assign_fdi_numbers",
    "fdi_votes",
    "combined_toothfairy2",
    "structure_summary",
]

#: How 3D teeth get their FDI numbers: ``"learned"`` (the voxels' predicted FDI classes vote, one tooth per number)
#: or ``"heuristic"`` (jaw from the predicted type, position along the arch: :func:`coseg.dental.fdi.number_teeth_fdi`).
NUMBERINGS: tuple[str, ...] = ("learned", "heuristic")


@dataclass(frozen=True)
class DentalPrediction:
    """A dental CBCT prediction on the input voxel grid.

    Attributes:
        semantic: ``(I, J, K)`` uint8 classes of :data:`coseg.dental.labels.SEMANTIC_CLASSES`.
        teeth: ``(I, J, K)`` uint16 tooth ids: FDI numbers, or ``UNNUMBERED_TOOTH_BASE + k`` for teeth the FDI
            heuristic could not number.
        tooth_types: tooth id -> jaw type (1 upper, 2 lower, 0 unknown).
        numbering: how the FDI numbers were given (:data:`NUMBERINGS`).
    """

    semantic: np.ndarray
    teeth: np.ndarray
    tooth_types: dict[int, int]
    numbering: str = "heuristic"


def fdi_votes(labels: np.ndarray, fdi_classes: np.ndarray, num_teeth: int) -> np.ndarray:
    """How many voxels of each 3D tooth voted for each FDI class.

    Args:
        labels: ``(...)`` integer 3D tooth ids ``0..num_teeth`` (0 background).
        fdi_classes: same shape, per-voxel FDI class ``0..32`` (``k`` = ``FDI_TEETH[k - 1]``; 0 = no vote).
        num_teeth: the largest tooth id.

    Returns:
        ``(num_teeth + 1, 33)`` int64 counts; row 0 and column 0 are zero.

    Raises:
        ValueError: mismatched shapes or values out of range.
    """
    labels, fdi_classes = np.asarray(labels), np.asarray(fdi_classes)
    if labels.shape != fdi_classes.shape:
        raise ValueError(f"labels {labels.shape} and fdi_classes {fdi_classes.shape} shapes differ")
    n_cls = len(FDI_TEETH) + 1
    if labels.size and (labels.min() < 0 or labels.max() > num_teeth):
        raise ValueError(f"tooth ids must lie in 0..{num_teeth}")
    if fdi_classes.size and (fdi_classes.min() < 0 or fdi_classes.max() >= n_cls):
        raise ValueError(f"FDI classes must lie in 0..{n_cls - 1}")
    fg = labels > 0
    votes = np.bincount(
        labels[fg].astype(np.int64) * n_cls + fdi_classes[fg].astype(np.int64), minlength=(num_teeth + 1) * n_cls
    ).reshape(num_teeth + 1, n_cls)
    votes[:, 0] = 0
    return votes


def assign_fdi_numbers(votes: np.ndarray) -> dict[int, int | None]:
    """FDI numbers for 3D teeth from their voxels' votes, at most one tooth per number.

    Each tooth would take the number most of its voxels voted for; when two teeth want the same number, the
    assignment that maximises the total vote over all teeth wins (:func:`scipy.optimize.linear_sum_assignment`),
    not the order of the slices or of the ids: a large tooth keeps its number against a small fragment, and a
    tooth that loses its first choice takes its next best free number. A tooth left with a number none of its
    voxels voted for (more teeth than numbers with votes) stays unnumbered (``None``).

    Args:
        votes: ``(n + 1, 33)`` counts from :func:`fdi_votes` (row ``i`` = tooth id ``i``; row 0 and column 0
            ignored).

    Returns:
        tooth id (1..n) -> FDI number or ``None``.

    Raises:
        ValueError: a votes array that is not ``(n + 1, 33)`` with non-negative entries.
    """
    votes = np.asarray(votes)
    if votes.ndim != 2 or votes.shape[1] != len(FDI_TEETH) + 1 or votes.shape[0] < 1:
        raise ValueError(f"votes must be (n + 1, {len(FDI_TEETH) + 1}), got {votes.shape}")
    if votes.size and votes.min() < 0:
        raise ValueError("votes must be >= 0")
    numbers: dict[int, int | None] = {i: None for i in range(1, votes.shape[0])}
    if votes.shape[0] == 1:
        return numbers
    score = votes[1:, 1:].astype(np.float64)
    rows, cols = linear_sum_assignment(score, maximize=True)
    for r, c in zip(rows.tolist(), cols.tolist()):
        if score[r, c] > 0:
            numbers[r + 1] = FDI_TEETH[c]
    return numbers


def _jaw_of_votes(votes: np.ndarray) -> int:
    """Jaw type (1 upper, 2 lower, 0 none) with the larger share of a tooth's FDI votes."""
    jaw = fdi_class_lut("jaw")
    upper, lower = float(votes[jaw == 1].sum()), float(votes[jaw == 2].sum())
    return 0 if upper == lower == 0 else (1 if upper >= lower else 2)


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
    numbering: str = "heuristic",
) -> DentalPrediction:
    """Turn per-slice model outputs into a 3D prediction on the input grid.

    Model-size label maps are resized back (nearest) to canonical slices, per-slice tooth instances are linked
    in 3D along the slicing axis (:func:`link_instances_3d`), the volumes are put back on the input grid and the
    teeth numbered: ``"learned"``: every voxel of a 3D tooth votes for its predicted FDI class and the numbers
    go to the teeth by :func:`assign_fdi_numbers` (at most one tooth per number, maximal total vote);
    ``"heuristic"``: :func:`number_teeth_fdi` from the jaw types and the positions along the arch.

    Args:
        sem_slices: ``(N, size, size)`` semantic classes per slice.
        inst_slices: ``(N, size, size)`` per-slice instance ids.
        type_slices: ``(N, size, size)`` per-pixel tooth types: jaw types (1 upper, 2 lower) for ``"heuristic"``,
            FDI classes (``k`` = ``FDI_TEETH[k - 1]``) for ``"learned"``.
        geometry: the slicing geometry of the volume.
        affine: ``(4, 4)`` voxel-to-RAS affine of the input volume.
        min_overlap, max_gap, merge_young: see :func:`link_instances_3d`.
        min_tooth_voxels: 3D teeth smaller than this (input-grid voxels after reassembly) are dropped.
        numbering: ``"learned"`` or ``"heuristic"`` (:data:`NUMBERINGS`).

    Returns:
        :class:`DentalPrediction`; teeth without a number get ids ``UNNUMBERED_TOOTH_BASE + 1, + 2, ...``.

    Raises:
        ValueError: on shape mismatches or bad parameters.
    """
    if numbering not in NUMBERINGS:
        raise ValueError(f"numbering must be one of {NUMBERINGS}, got {numbering!r}")
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
    linked = link_instances_3d(
        inst_c,
        type_c,
        min_overlap=min_overlap,
        max_gap=max_gap,
        merge_young=merge_young,
        groups=fdi_class_lut("jaw") if numbering == "learned" else None,  # teeth of two jaws never link
    )
    teeth_ids = geometry.from_canonical(linked.labels)
    types = dict(linked.types)
    votes = fdi_votes(linked.labels, type_c, len(linked.types)) if numbering == "learned" else None
    if min_tooth_voxels > 0:
        sizes = np.bincount(teeth_ids.ravel(), minlength=len(linked.types) + 1)
        lut = np.arange(len(sizes), dtype=np.int32)
        for i in [i for i in types if sizes[i] < min_tooth_voxels]:
            lut[i] = 0
            del types[i]
            if votes is not None:
                votes[i] = 0
        teeth_ids = lut[teeth_ids]
    if votes is not None:
        numbers = {i: n for i, n in assign_fdi_numbers(votes).items() if i in types}
        types = {i: fdi_type(numbers[i]) if numbers[i] is not None else _jaw_of_votes(votes[i]) for i in types}
    else:
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
    return DentalPrediction(semantic=semantic, teeth=lut[teeth_ids], tooth_types=final_types, numbering=numbering)


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


_NUMBERING_NOTES = {
    "learned": "learned: every voxel of a tooth votes for the FDI class the network predicts there; numbers go to "
    "the teeth with the largest total vote, at most one tooth per number",
    "heuristic": "heuristic: jaw from the predicted tooth type, side from the arch midline, "
    "order along the arch from the midline outward (a missing tooth shifts the numbers behind it)",
}


def structure_summary(
    semantic: np.ndarray, teeth: np.ndarray, affine: np.ndarray, *, numbering: str = "heuristic"
) -> dict[str, Any]:
    """Per-structure statistics of a dental prediction.

    Args:
        semantic: ``(I, J, K)`` semantic classes.
        teeth: ``(I, J, K)`` tooth ids (FDI, or > 100 unnumbered).
        affine: ``(4, 4)`` voxel-to-RAS affine.
        numbering: how the teeth were numbered (:data:`NUMBERINGS`), described under ``fdi_numbering``.

    Returns:
        ``{"shape", "spacing_mm", "voxel_volume_mm3", "fdi_numbering", "structures": [...]}``; each structure has
        ``name``, ``kind`` (``region``/``tooth``), ``id`` (its value in the written volume), ``toothfairy2_id``
        (``None`` for unnumbered teeth), ``voxels``, ``volume_mm3``, ``centroid_mm`` (RAS), ``bbox_voxels``
        (``min``/``max`` inclusive voxel indices) and ``bbox_mm`` (RAS box enclosing the voxels' corners).

    Raises:
        ValueError: on mismatched shapes or an unknown numbering.
    """
    if numbering not in NUMBERINGS:
        raise ValueError(f"numbering must be one of {NUMBERINGS}, got {numbering!r}")
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
        "fdi_numbering": _NUMBERING_NOTES[numbering],
        "structures": structures,
    }
