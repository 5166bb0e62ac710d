"""Tooth type schemes on load, left-right flips that swap the FDI sides, the dataset check, and scans stored with
flipped or permuted direction matrices read the right way round."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from coseg.dental.geometry import make_model_slices, slice_geometry
from coseg.dental.labels import (
    FDI_TEETH,
    INSTANCE_TYPES,
    TOOTHFAIRY2_LABELS,
    build_label_map,
    fdi_class_lut,
    mirror_fdi,
    mirror_type_lut,
    tooth_type_lut,
    tooth_type_names,
)
from coseg.dental.prepare import prepare_cbct
from coseg.dental.synthetic import make_phantom, restore_phantom, write_toothfairy2_like
from coseg.dental.transforms import RandLeftRightFlipd, ToothTypesd, check_tooth_types, left_right_axis
from coseg.errors import InputFileError

CLS = {fdi: k for k, fdi in enumerate(FDI_TEETH, start=1)}
LABEL_MAP = build_label_map({v: k for k, v in TOOTHFAIRY2_LABELS.items()})


def test_scheme_tables():
    assert tooth_type_names("jaw") == INSTANCE_TYPES
    fdi = tooth_type_names("fdi")
    assert len(fdi) == 33 and fdi[1] == "tooth 11" and fdi[9] == "tooth 21" and fdi[32] == "tooth 48"
    jaw = tooth_type_lut("jaw")
    assert (jaw[11], jaw[28], jaw[31], jaw[48], jaw[19], jaw[0]) == (1, 1, 2, 2, 0, 0)
    assert [tooth_type_lut("fdi")[f] for f in FDI_TEETH] == list(range(1, 33))
    assert fdi_class_lut("fdi").tolist() == list(range(33))
    assert [mirror_fdi(f) for f in (11, 18, 21, 35, 47)] == [21, 28, 11, 45, 37]
    mirror = mirror_type_lut("fdi")
    assert mirror[CLS[11]] == CLS[21] and mirror[CLS[36]] == CLS[46] and mirror[0] == 0
    assert np.array_equal(mirror[mirror], np.arange(33))  # an involution
    assert mirror_type_lut("jaw").tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="tooth_types"):
        tooth_type_lut("quadrant")


def _types(values) -> MetaTensor:
    t = MetaTensor(torch.tensor(values, dtype=torch.float32)[None])
    t.meta["filename_or_obj"] = "/data/labels_type/case_0001.png"
    return t


def test_tooth_types_on_load():
    fdi_classes = [[0, CLS[11], CLS[28]], [CLS[31], CLS[48], 0]]
    jaw = ToothTypesd(tooth_types="jaw")({"label_type": _types(fdi_classes)})["label_type"]
    assert isinstance(jaw, MetaTensor) and jaw.dtype == torch.float32
    assert jaw[0].tolist() == [[0, 1, 1], [2, 2, 0]]
    same = ToothTypesd(tooth_types="fdi")({"label_type": _types(fdi_classes)})["label_type"]
    assert same[0].tolist() == fdi_classes
    with pytest.raises(InputFileError, match="case_0001.png.*0..32"):
        ToothTypesd(tooth_types="jaw")({"label_type": _types([[0, 33]])})
    with pytest.raises(ValueError, match="tooth_types"):
        ToothTypesd(tooth_types="FDI")


def test_left_right_axis_of_each_plane():
    assert (left_right_axis("axial"), left_right_axis("coronal"), left_right_axis("sagittal")) == (1, 1, None)
    with pytest.raises(ValueError):
        left_right_axis("oblique")


def _phantom_slice(n=None):
    """An axial model slice of a phantom: image, FDI instance ids and FDI classes (``(1, H, W)`` tensors)."""
    phantom = make_phantom((32, 64, 64), seed=3, missing_teeth=[])
    sem, inst, types = LABEL_MAP.apply(phantom.label, tooth_types="fdi")
    geometry = slice_geometry(phantom.label.shape, phantom.affine, axis="axial", size=64)
    inst_m = geometry.to_model(inst, kind="label")
    n = int(np.argmax((inst_m > 0).sum(axis=(1, 2)))) if n is None else n
    image = make_model_slices(phantom.image, geometry, slice_indices=[n])[0]
    return {
        "image": torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32)),
        "label_inst": torch.from_numpy(inst_m[n][None].astype(np.float32)),
        "label_type": torch.from_numpy(geometry.to_model(types, kind="label")[n][None].astype(np.float32)),
        "label_sem": torch.from_numpy(geometry.to_model(sem, kind="label")[n][None].astype(np.float32)),
    }


def _patient_right_is_image_left(item) -> bool:
    """In the canonical axial frame the patient's right is the left half of the image: quadrants 1 and 4 there."""
    inst = item["label_inst"][0].numpy().astype(int)
    cls = item["label_type"][0].numpy().astype(int)
    cols = np.arange(inst.shape[1])[None].repeat(inst.shape[0], 0)
    for fdi in np.unique(inst[inst > 0]):
        centre = cols[inst == fdi].mean()
        right = fdi // 10 in (1, 4)
        if (centre < inst.shape[1] / 2) != right or not np.all(cls[inst == fdi] == CLS[int(fdi)]):
            return False
    return True


def test_a_flip_swaps_the_fdi_sides_with_the_pixels():
    item = _phantom_slice()
    assert _patient_right_is_image_left(item)
    keys = ["image", "label_inst", "label_type", "label_sem"]
    flipped = RandLeftRightFlipd(keys, prob=1.0, tooth_types="fdi")(dict(item))
    for key in ("image", "label_sem"):
        torch.testing.assert_close(flipped[key], torch.flip(item[key], dims=[2]))
    # the flipped slice shows a mirrored patient whose labels still follow the anatomy
    assert _patient_right_is_image_left(flipped)
    moved = torch.flip(item["label_inst"], dims=[2])[0].numpy().astype(int)
    assert {mirror_fdi(f) for f in np.unique(moved[moved > 0])} == set(
        np.unique(flipped["label_inst"][flipped["label_inst"] > 0].numpy().astype(int))
    )
    # a plain flip (what RandFlipd did) puts the right teeth on the image right: it contradicts the anatomy
    plain = {k: torch.flip(v, dims=[2]) for k, v in item.items()}
    assert not _patient_right_is_image_left(plain)


def test_jaw_types_only_move_and_sagittal_slices_do_not_flip():
    item = _phantom_slice()
    jaw = dict(item, label_type=torch.from_numpy(fdi_class_lut("jaw")[item["label_type"].numpy().astype(int)]))
    flipped = RandLeftRightFlipd(["image", "label_type"], prob=1.0, tooth_types="jaw", inst_key=None)(dict(jaw))
    torch.testing.assert_close(flipped["label_type"], torch.flip(jaw["label_type"], dims=[2]))
    kept = RandLeftRightFlipd(["image", "label_type"], prob=1.0, slice_axis="sagittal", tooth_types="fdi")(dict(item))
    torch.testing.assert_close(kept["label_type"], item["label_type"])
    never = RandLeftRightFlipd(["image", "label_type"], prob=0.0, tooth_types="fdi")(dict(item))
    torch.testing.assert_close(never["label_type"], item["label_type"])


def test_unnumbered_instance_ids_are_kept_by_the_flip():
    inst = torch.tensor([[[11.0, 0.0, 150.0, 46.0]]])
    out = RandLeftRightFlipd(["label_inst"], prob=1.0, tooth_types="fdi", type_key=None)({"label_inst": inst})
    assert out["label_inst"][0, 0].tolist() == [36.0, 150.0, 0.0, 21.0]


def _dataset_json(path, **content):
    path.mkdir(parents=True, exist_ok=True)
    (path / "dataset.json").write_text(json.dumps(content), encoding="utf-8")
    return path


def test_check_tooth_types(tmp_path):
    sem = {"0": "background", "1": "lower jawbone", "2": "upper jawbone", "3": "pharynx"}
    fdi_names = {str(k): v for k, v in tooth_type_names("fdi").items()}
    check_tooth_types(tmp_path / "not_prepared_yet", "jaw", INSTANCE_TYPES, sem)
    prepared = _dataset_json(tmp_path / "new", tooth_types="fdi", instance_types=fdi_names, semantic_classes=sem)
    check_tooth_types(prepared, "jaw", INSTANCE_TYPES, sem)
    check_tooth_types(prepared, "fdi", tooth_type_names("fdi"), sem)
    with pytest.raises(ValueError, match="inst_types"):
        check_tooth_types(prepared, "fdi", INSTANCE_TYPES, sem)
    legacy = _dataset_json(tmp_path / "old", instance_types={"0": "background", "1": "upper teeth", "2": "lower teeth"})
    with pytest.raises(InputFileError, match="old/dataset.json.*records no 'tooth_types'"):
        check_tooth_types(legacy, "jaw", INSTANCE_TYPES, sem)
    jaw_only = _dataset_json(tmp_path / "jaw", tooth_types="jaw")
    check_tooth_types(jaw_only, "jaw", INSTANCE_TYPES)
    with pytest.raises(InputFileError, match="'jaw'"):
        check_tooth_types(jaw_only, "fdi", tooth_type_names("fdi"))
    with pytest.raises(InputFileError, match="semantic classes"):
        check_tooth_types(prepared, "jaw", INSTANCE_TYPES, {**sem, "4": "canal"})


@pytest.mark.parametrize(
    "axis_order, flip_axes",
    [((0, 1, 2), (True, False, True)), ((2, 0, 1), (False, False, False)), ((1, 2, 0), (True, True, False))],
)
def test_phantom_stored_with_other_direction_matrices_keeps_its_anatomy(axis_order, flip_axes):
    phantom = make_phantom((20, 40, 36), seed=1, missing_teeth=[])
    restored = restore_phantom(phantom, axis_order=axis_order, flip_axes=flip_axes)
    assert restored.image.shape == tuple(phantom.image.shape[a] for a in axis_order)
    assert not np.allclose(restored.affine, phantom.affine)  # another direction matrix (and origin)
    # every voxel keeps its world position: the label at a world point is the same
    index = np.array([7, 11, 5])
    world = phantom.affine[:3, :3] @ index + phantom.affine[:3, 3]
    back = np.rint(np.linalg.solve(restored.affine[:3, :3], world - restored.affine[:3, 3])).astype(int)
    assert restored.label[tuple(back)] == phantom.label[tuple(index)]
    # and the canonical slices (what training and inference see) are identical
    for axis in ("axial", "coronal"):
        a = slice_geometry(phantom.image.shape, phantom.affine, axis=axis, size=48)
        b = slice_geometry(restored.image.shape, restored.affine, axis=axis, size=48)
        np.testing.assert_array_equal(make_model_slices(phantom.image, a), make_model_slices(restored.image, b))
        np.testing.assert_array_equal(a.to_model(phantom.label, kind="label"), b.to_model(restored.label, kind="label"))
    with pytest.raises(ValueError):
        restore_phantom(phantom, axis_order=(0, 0, 1))


@pytest.mark.parametrize("fmt", ["mha", "nii.gz"])
def test_prepared_slices_do_not_depend_on_the_direction_matrix(tmp_path, fmt):
    plain = write_toothfairy2_like(tmp_path / "plain", num_cases=1, shape=(16, 32, 32), seed=4, fmt=fmt)
    odd = write_toothfairy2_like(
        tmp_path / "odd", num_cases=1, shape=(16, 32, 32), seed=4, fmt=fmt, axis_order=(2, 0, 1), flip_axes=(1, 0, 1)
    )
    lists = [
        prepare_cbct(src, tmp_path / f"{src.name}_out", size=32, ratios=(1, 0, 0), progress=False)
        for src in (plain, odd)
    ]
    assert [it["image"] for it in lists[0]["training"]] == [it["image"] for it in lists[1]["training"]]
    for item in lists[0]["training"]:
        for key in ("image", "label_sem", "label_inst", "label_type"):
            a = (tmp_path / "plain_out" / item[key]).read_bytes()
            assert a == (tmp_path / "odd_out" / item[key]).read_bytes(), (item[key], key)
