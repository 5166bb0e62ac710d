"""Teeth by FDI number, evaluated like the ToothFairy2 challenge, on hand-made volumes: per-class Dice and HD95,
identification, left/right and upper/lower swaps, the heuristic baseline, the report's files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from coseg.dental.inference import pack_tooth_types
from coseg.dental.labels import FDI_TEETH, TOOTHFAIRY2_LABELS, build_label_map, fdi_type
from coseg.dental.report import (
    DentalEvaluationReport,
    fdi_class_stats,
    heuristic_teeth,
    summarize_fdi,
    tooth_identification,
)
from coseg.dental.synthetic import make_phantom, write_toothfairy2_like
from coseg.dental.volumes import read_volume

C = {fdi: k for k, fdi in enumerate(FDI_TEETH)}  # FDI number -> index in the per-class arrays


def _cubes(ids: dict[int, tuple[slice, slice, slice]], shape=(10, 20, 40)) -> np.ndarray:
    volume = np.zeros(shape, dtype=np.int64)
    for value, box in ids.items():
        volume[box] = value
    return volume


BOXES = {
    11: (slice(1, 5), slice(2, 6), slice(2, 6)),
    21: (slice(1, 5), slice(2, 6), slice(10, 14)),
    36: (slice(5, 9), slice(2, 6), slice(18, 22)),
    46: (slice(5, 9), slice(2, 6), slice(26, 30)),
    47: (slice(5, 9), slice(10, 14), slice(26, 30)),
}


def test_identification_counts_swaps():
    gt = _cubes(BOXES)
    # 11 and 21 read the other way round (2 left/right swaps), 36 read as 26 (upper/lower), 46 right, 47 missed,
    # a false tooth 101 where there is none
    pred = _cubes({21: BOXES[11], 11: BOXES[21], 26: BOXES[36], 46: BOXES[46], 101: (slice(0, 1),) * 3})
    counts = tooth_identification(gt, pred)
    assert counts == {
        "gt_teeth": 5,
        "pred_teeth": 5,
        "matched": 4,
        "correct": 1,
        "left_right_swaps": 2,
        "upper_lower_swaps": 1,
        "unnumbered": 0,
    }
    # a tooth read with the mirrored quadrant AND a neighbour's position is still a side error
    assert tooth_identification(gt, _cubes({22: BOXES[11]}))["left_right_swaps"] == 1
    # an unnumbered tooth over 47 is matched but has no number
    assert tooth_identification(gt, _cubes({102: BOXES[47]}))["unnumbered"] == 1


def test_identification_needs_iou_above_one_half():
    gt = _cubes({11: (slice(0, 4), slice(0, 4), slice(0, 4))})  # 64 voxels
    half = _cubes({11: (slice(0, 4), slice(0, 4), slice(0, 2))})  # IoU 32 / 64 = 0.5: not above
    assert tooth_identification(gt, half)["matched"] == 0
    more = _cubes({11: (slice(0, 4), slice(0, 4), slice(0, 3))})  # IoU 0.75
    assert tooth_identification(gt, more)["correct"] == 1
    with pytest.raises(ValueError):
        tooth_identification(gt, more[:-1])
    with pytest.raises(ValueError):
        tooth_identification(gt, more, match_iou=0.3)


def test_per_class_dice_and_hd95_hand_computed():
    gt = _cubes({11: (slice(0, 2), slice(0, 2), slice(0, 4)), 36: (slice(5, 7), slice(0, 2), slice(0, 2))})
    pred = _cubes({11: (slice(0, 2), slice(0, 2), slice(0, 2)), 46: (slice(5, 7), slice(0, 2), slice(0, 2))})
    stats = fdi_class_stats(gt, pred, spacing=(1.0, 1.0, 0.5))
    assert (stats["inter"][C[11]], stats["gt_count"][C[11]], stats["pred_count"][C[11]]) == (8, 16, 8)
    assert stats["gt_count"][C[36]] == 8 and stats["pred_count"][C[36]] == 0
    assert stats["pred_count"][C[46]] == 8 and stats["gt_count"][C[46]] == 0
    # 11: the GT's far column lies 2 voxels (1 mm) beyond the prediction; both missing classes: no HD95
    assert stats["hd95"][C[11]] == pytest.approx(1.0)
    assert np.isnan(stats["hd95"][C[36]]) and np.isnan(stats["hd95"][C[46]]) and np.isnan(stats["hd95"][C[21]])
    summary = summarize_fdi([{"classes": stats, "identification": tooth_identification(gt, pred)}])
    assert summary["per_class"][11] == {"dice": pytest.approx(2 * 8 / 24), "hd95_mm": pytest.approx(1.0), "cases": 1}
    assert summary["per_class"][36]["dice"] == 0.0 and summary["per_class"][46]["dice"] == 0.0
    assert summary["per_class"][21] == {"dice": None, "hd95_mm": None, "cases": 0}
    assert summary["mean_dice"] == pytest.approx((2 / 3 + 0 + 0) / 3)
    # 11 overlaps its GT with IoU 8 / 16 = 0.5 (not matched); 36 read as 46 (IoU 1): a left/right swap
    ident = summary["identification"]
    assert (ident["matched"], ident["correct"], ident["left_right_swaps"], ident["accuracy"]) == (1, 0, 1, 0.0)
    assert ident["upper_lower_swaps"] == 0


def test_heuristic_teeth_relabels_the_same_teeth():
    phantom = make_phantom((40, 64, 64), seed=2, missing_teeth=[])
    inst = np.where(np.isin(phantom.label, FDI_TEETH), phantom.label, 0).astype(np.int64)
    scrambled = np.where(inst > 0, inst + 100, 0)  # unnumbered ids, right jaws
    types = {int(i): fdi_type(int(i) - 100) for i in np.unique(scrambled[scrambled > 0])}
    np.testing.assert_array_equal(heuristic_teeth(scrambled, types, phantom.affine), inst)


@pytest.fixture(scope="module")
def one_case(tmp_path_factory):
    root = write_toothfairy2_like(tmp_path_factory.mktemp("tf2"), num_cases=1, shape=(32, 64, 64), seed=5)
    return root / "imagesTr" / "ToothFairy2F_001_0000.mha", root / "labelsTr" / "ToothFairy2F_001.mha", root


def test_report_files_compare_the_numbering_with_the_heuristic(one_case, tmp_path):
    image, label_path, root = one_case
    label = read_volume(label_path, kind="label")
    sem, inst, types = build_label_map({v: k for k, v in TOOTHFAIRY2_LABELS.items()}).apply(label.array)
    teeth = inst.astype(np.int64).copy()
    teeth[inst == 11], teeth[inst == 21] = 21, 11  # the "learned" numbering swaps the central incisors
    jaw = {int(f): fdi_type(int(f)) for f in np.unique(teeth[teeth > 0])}
    pred = {"semantic": torch.from_numpy(sem), "teeth": torch.from_numpy(teeth), "tooth_types": pack_tooth_types(jaw)}
    report = DentalEvaluationReport(tmp_path / "eval", numbering="learned")
    record = report.case_record(str(image), str(label_path), str(root / "dataset.json"), pred)
    summary = report.write([record])
    learned, heuristic = summary["teeth_fdi"]["learned"], summary["teeth_fdi"]["heuristic"]
    n = len(np.unique(inst)) - 1
    assert learned["identification"]["matched"] == n and learned["identification"]["left_right_swaps"] == 2
    assert learned["identification"]["accuracy"] == pytest.approx((n - 2) / n)
    assert learned["per_class"][11]["dice"] == 0.0 and learned["per_class"][16]["dice"] == 1.0
    # the heuristic numbers the same predicted teeth from their positions: all right on this phantom
    assert heuristic["identification"]["correct"] == n and heuristic["identification"]["left_right_swaps"] == 0
    assert heuristic["mean_dice"] == 1.0
    assert summary["regions_semantic_volume"]["per_image_mean"]["per_class"]["dice"][3] == 1.0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["teeth_fdi"]["numbering"] == "learned"
    assert metrics["teeth_fdi"]["learned"]["per_class"]["11"]["dice"] == 0.0
    rows = list(csv.DictReader((tmp_path / "eval" / "per_case.csv").open(encoding="utf-8")))
    assert len(rows) == 1 and rows[0]["case"] == image.name
    assert rows[0]["learned_left_right_swaps"] == "2" and rows[0]["heuristic_left_right_swaps"] == "0"
    assert float(rows[0]["dice_pharynx"]) == 1.0
    tables = (tmp_path / "eval" / "tables.md").read_text(encoding="utf-8")
    assert "ToothFairy2 layout" in tables and "| learned |" in tables and "| heuristic |" in tables
    assert "| 11 | 0.0 |" in tables and "| 16 | 100.0 | 0.0 | 100.0 | 0.0 |" in tables  # learned, then heuristic


def test_report_of_a_heuristic_bundle_has_one_numbering(one_case, tmp_path):
    image, label_path, root = one_case
    label = read_volume(label_path, kind="label")
    sem, inst, _ = build_label_map(root / "dataset.json").apply(label.array)
    jaw = {int(f): fdi_type(int(f)) for f in np.unique(inst[inst > 0])}
    pred = {"semantic": sem, "teeth": inst, "tooth_types": pack_tooth_types(jaw)}
    report = DentalEvaluationReport(tmp_path / "eval")
    summary = report.write([report.case_record(str(image), str(label_path), str(root / "dataset.json"), pred)])
    assert set(summary["teeth_fdi"]) == {"numbering", "heuristic"}
    assert summary["teeth_fdi"]["heuristic"]["identification"]["accuracy"] == 1.0
    with pytest.raises(ValueError, match="numbering"):
        DentalEvaluationReport(tmp_path, numbering="voted")
