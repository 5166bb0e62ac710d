"""3D dental predictions: FDI numbering heuristic, reassembly from slices, summaries, montage, atomic writing."""

from __future__ import annotations

import json
import os
import stat

import cv2
import nibabel as nib
import numpy as np
import pytest

from coseg.dental import outputs as outputs_module
from coseg.dental.assemble import DentalPrediction, assemble_dental_prediction, combined_toothfairy2, structure_summary
from coseg.dental.fdi import number_teeth_fdi
from coseg.dental.geometry import slice_geometry
from coseg.dental.labels import FDI_TEETH, TOOTHFAIRY2_LABELS, build_label_map, fdi_type, tooth_type_lut
from coseg.dental.outputs import render_montage, write_dental_outputs
from coseg.dental.report import tooth_identification
from coseg.dental.synthetic import make_phantom
from coseg.dental.volumes import Volume

SHAPE = (40, 64, 64)
LABEL_MAP = build_label_map({v: k for k, v in TOOTHFAIRY2_LABELS.items()})


def _scrambled_teeth(label, seed=0):
    """Phantom teeth with arbitrary ids 1..n, and the true FDI of each id."""
    fdis = [int(v) for v in np.unique(label) if v in FDI_TEETH]
    ids = np.random.default_rng(seed).permutation(len(fdis)) + 1
    lut = np.zeros(256, dtype=np.int32)
    lut[fdis] = ids
    return lut[label], {int(i): f for i, f in zip(ids, fdis)}


@pytest.mark.parametrize("seed, missing", [(0, []), (1, [14, 36]), (2, [18, 28, 38, 48]), (3, [11, 25, 47])])
def test_fdi_heuristic_recovers_phantom_numbers(seed, missing):
    phantom = make_phantom(SHAPE, seed=seed, missing_teeth=missing)
    teeth, truth = _scrambled_teeth(phantom.label, seed)
    types = {i: fdi_type(f) for i, f in truth.items()}
    assert number_teeth_fdi(teeth, types, phantom.affine) == truth


def test_fdi_heuristic_uses_world_coordinates():
    """The same phantom stored with a different index order and flips gets the same numbers."""
    phantom = make_phantom(SHAPE, seed=4, missing_teeth=[])
    teeth, truth = _scrambled_teeth(phantom.label)
    stored = teeth.transpose(2, 0, 1)[::-1]  # (w reversed, d, h)
    affine = phantom.affine[:, [2, 0, 1, 3]].copy()
    affine[:3, 3] += affine[:3, 0] * (SHAPE[2] - 1)
    affine[:3, 0] *= -1
    types = {i: fdi_type(f) for i, f in truth.items()}
    assert number_teeth_fdi(stored, types, affine) == truth


def test_untyped_teeth_join_the_nearer_jaw():
    phantom = make_phantom(SHAPE, seed=5, missing_teeth=[])
    teeth, truth = _scrambled_teeth(phantom.label)
    types = {i: (0 if f in (13, 44) else fdi_type(f)) for i, f in truth.items()}
    assert number_teeth_fdi(teeth, types, phantom.affine) == truth


def test_more_than_eight_teeth_on_a_side():
    """An upper arch (identity affine: RAS = voxel index) with 8 teeth on the right and 10 on the left."""
    teeth = np.zeros((41, 41, 3), dtype=np.int32)
    tooth_id = 0
    for side, count in ((1, 8), (-1, 10)):
        for k in range(count):
            x = 20 + side * 1.8 * (k + 0.5)
            tooth_id += 1
            teeth[round(x), round(38 - 0.1 * (x - 20) ** 2), 1] = tooth_id
    numbers = number_teeth_fdi(teeth, {i: 1 for i in range(1, 19)}, np.eye(4))
    assert [numbers[i] for i in range(1, 9)] == list(range(11, 19))
    assert [numbers[i] for i in range(9, 19)] == list(range(21, 29)) + [None, None]


def test_bad_types_rejected():
    with pytest.raises(ValueError):
        number_teeth_fdi(np.zeros((2, 2, 2), dtype=int), {1: 3}, np.eye(4))


def test_assemble_reconstructs_the_phantom_from_slices():
    """Ground-truth slices with per-slice ids scrambled -> linked, numbered, back on the input grid: exact."""
    phantom = make_phantom(SHAPE, seed=6, missing_teeth=[15, 37])
    sem, inst, types = LABEL_MAP.apply(phantom.label)
    geometry = slice_geometry(SHAPE, phantom.affine, axis="axial", size=80)
    inst_slices = geometry.to_model(inst, kind="label").astype(np.int32)
    rng = np.random.default_rng(0)
    for n in range(geometry.num_slices):
        lut = np.zeros(49, dtype=np.int32)
        lut[1:] = rng.permutation(48) + 1
        inst_slices[n] = lut[inst_slices[n]]
    prediction = assemble_dental_prediction(
        geometry.to_model(sem, kind="label"),
        inst_slices,
        geometry.to_model(types, kind="label"),
        geometry,
        phantom.affine,
    )
    np.testing.assert_array_equal(prediction.semantic, sem)
    np.testing.assert_array_equal(prediction.teeth, inst)
    assert prediction.tooth_types == {f: fdi_type(f) for f in np.unique(inst)[1:].tolist()}


@pytest.mark.parametrize("numbering", ["heuristic", "learned"])
def test_assemble_keeps_upper_teeth_when_crowns_bleed_into_the_occlusal_gap(numbering):
    """A network that paints the lower crowns into the empty slices between the jaws (as the smoothed phantom
    shows them) must not fuse each upper tooth with the lower tooth under it: the upper teeth would vanish."""
    phantom = make_phantom(SHAPE, seed=6, missing_teeth=[])
    sem, inst, _ = LABEL_MAP.apply(phantom.label)
    scheme = "fdi" if numbering == "learned" else "jaw"
    types = tooth_type_lut(scheme)[inst]
    geometry = slice_geometry(SHAPE, phantom.affine, axis="axial", size=80)
    inst_m = geometry.to_model(inst, kind="label").astype(np.int32)
    type_m = geometry.to_model(types, kind="label")
    lower = [z for z in range(len(inst_m)) if np.isin(inst_m[z], range(31, 49)).any()]
    upper = [z for z in range(len(inst_m)) if np.isin(inst_m[z], range(11, 29)).any()]
    for z in range(max(lower) + 1, min(upper)):  # the gap: the top lower crowns painted again
        inst_m[z], type_m[z] = inst_m[max(lower)], type_m[max(lower)]
    prediction = assemble_dental_prediction(
        geometry.to_model(sem, kind="label"), inst_m, type_m, geometry, phantom.affine, numbering=numbering
    )
    found = {fdi_type(int(f)) for f in np.unique(prediction.teeth) if f in FDI_TEETH}
    assert found == {1, 2}
    n_upper = sum(1 for f in np.unique(inst) if 11 <= f <= 28)
    assert sum(1 for t in prediction.tooth_types.values() if t == 1) == n_upper
    assert tooth_identification(inst, prediction.teeth)["matched"] == len(np.unique(inst)) - 1


def test_assemble_drops_small_teeth_and_checks_shapes():
    geometry = slice_geometry((10, 12, 8), np.eye(4), axis="axial", size=16)
    sem = np.zeros((8, 16, 16), dtype=np.uint8)
    inst = np.zeros((8, 16, 16), dtype=np.int32)
    types = np.zeros_like(inst)
    inst[1:7, 2:14, 2:9] = 1
    types[1:7, 2:14, 2:9] = 1
    inst[3, 14, 12] = 2
    types[3, 14, 12] = 2
    prediction = assemble_dental_prediction(sem, inst, types, geometry, np.eye(4), min_tooth_voxels=3)
    assert sorted(np.unique(prediction.teeth).tolist()) == [0, 21]  # a lone tooth sits on the midline: left
    assert prediction.tooth_types == {21: 1}
    with pytest.raises(ValueError, match="inst_slices"):
        assemble_dental_prediction(sem, inst[:, :8], types, geometry, np.eye(4))


def test_combined_toothfairy2_ids():
    semantic = np.array([[[0, 1, 2, 3, 1, 2]]], dtype=np.uint8)
    teeth = np.array([[[0, 0, 0, 0, 36, 101]]], dtype=np.uint16)
    np.testing.assert_array_equal(combined_toothfairy2(semantic, teeth), [[[0, 1, 2, 7, 36, 2]]])
    with pytest.raises(ValueError):
        combined_toothfairy2(semantic + 3, teeth)


def test_structure_summary_hand_computed():
    affine = np.array([[0.5, 0, 0, 10.0], [0, 1.0, 0, 20.0], [0, 0, 2.0, 30.0], [0, 0, 0, 1]])
    semantic = np.zeros((4, 5, 3), dtype=np.uint8)
    semantic[1:3, 2:5, 1] = 3  # 2 x 3 x 1 voxels of pharynx
    teeth = np.zeros_like(semantic, dtype=np.uint16)
    teeth[0, 0, 0] = 21
    summary = structure_summary(semantic, teeth, affine)
    assert summary["voxel_volume_mm3"] == 1.0 and summary["spacing_mm"] == [0.5, 1.0, 2.0]
    pharynx, tooth = summary["structures"]
    assert pharynx["name"] == "pharynx" and pharynx["toothfairy2_id"] == 7
    assert pharynx["voxels"] == 6 and pharynx["volume_mm3"] == 6.0
    assert pharynx["bbox_voxels"] == {"min": [1, 2, 1], "max": [2, 4, 1]}
    assert pharynx["bbox_mm"] == {"min": [10.25, 21.5, 31.0], "max": [11.25, 24.5, 33.0]}
    assert pharynx["centroid_mm"] == [10.75, 23.0, 32.0]
    assert tooth["name"] == "Upper Left Central Incisor" and tooth["kind"] == "tooth" and tooth["voxels"] == 1


def test_render_montage():
    phantom = make_phantom(SHAPE, seed=1)
    montage = render_montage(phantom.image, phantom.label, phantom.affine, num_slices=4, columns=2, tile_size=64)
    assert montage.shape == (128, 128, 3) and montage.dtype == np.uint8
    colourful = np.abs(montage.astype(int) - montage.mean(axis=2, keepdims=True)).max(axis=2) > 30
    assert colourful.mean() > 0.02  # labels are drawn in colour over the grey scan
    with pytest.raises(ValueError):
        render_montage(phantom.image, phantom.label[:-1], phantom.affine)


@pytest.fixture()
def prediction_and_reference():
    phantom = make_phantom((32, 48, 48), seed=2)
    sem, inst, _ = LABEL_MAP.apply(phantom.label)
    types = {int(f): fdi_type(int(f)) for f in np.unique(inst)[1:]}
    reference = Volume(array=phantom.image, affine=phantom.affine, path="/data/ToothFairy2F_009_0000.mha")
    return DentalPrediction(semantic=sem, teeth=inst, tooth_types=types), reference, phantom


def test_write_dental_outputs(tmp_path, prediction_and_reference):
    prediction, reference, phantom = prediction_and_reference
    paths = write_dental_outputs(tmp_path / "out", prediction, reference)
    assert {p.name for p in paths.values()} == {
        f"ToothFairy2F_009_{k}"
        for k in ("semantic.nii.gz", "teeth.nii.gz", "toothfairy2.nii.gz", "summary.json", "montage.png")
    }
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths.values())
    combined = nib.load(paths["toothfairy2"])
    np.testing.assert_allclose(combined.affine, phantom.affine, atol=1e-6)  # NIfTI-1 stores float32 rows
    assert int(combined.header["sform_code"]) == 1 and int(combined.header["qform_code"]) == 1
    expected = np.where(np.isin(phantom.label, [1, 2, 7] + list(FDI_TEETH)), phantom.label, 0)
    np.testing.assert_array_equal(np.asanyarray(combined.dataobj), expected)
    np.testing.assert_array_equal(np.asanyarray(nib.load(paths["teeth"]).dataobj), prediction.teeth)
    summary = json.loads(paths["summary"].read_text(encoding="utf-8"))
    by_id = {(s["kind"], s["id"]): s for s in summary["structures"]}
    assert by_id[("region", 1)]["voxels"] == int((phantom.label == 1).sum())
    assert by_id[("tooth", 11)]["voxels"] == int((phantom.label == 11).sum())
    assert summary["tooth_types"]["11"] == 1
    montage = cv2.imread(str(paths["montage"]))
    assert montage is not None and montage.shape[2] == 3


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_outputs_get_the_umask_modes(tmp_path, prediction_and_reference, mask):
    prediction, reference, _ = prediction_and_reference
    old = os.umask(mask)
    try:
        paths = write_dental_outputs(tmp_path / "out", prediction, reference, montage=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o777 & ~mask
    for path in paths.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path


def test_outputs_are_all_or_nothing(tmp_path, prediction_and_reference, monkeypatch):
    prediction, reference, _ = prediction_and_reference
    out = tmp_path / "out"
    bad = DentalPrediction(prediction.semantic[:-1], prediction.teeth[:-1], prediction.tooth_types)
    with pytest.raises(ValueError, match="shape"):
        write_dental_outputs(out, bad, reference)
    calls = []
    save = nib.save

    def failing_save(image, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        save(image, path)

    monkeypatch.setattr(outputs_module.nib, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_dental_outputs(out, prediction, reference)
    assert not out.exists() or not any(out.iterdir())  # neither finished files nor temporaries
