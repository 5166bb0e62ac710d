"""The synthetic CBCT phantom: anatomy in the right places, separate teeth, HU-like values, files like ToothFairy2."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from coseg.dental.labels import FDI_TEETH, TOOTHFAIRY2_LABELS, build_label_map
from coseg.dental.synthetic import make_phantom, phantom_affine, write_toothfairy2_like
from coseg.dental.volumes import find_toothfairy2_cases, read_case

SHAPE = (40, 64, 64)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(SHAPE, seed=5, missing_teeth=[18, 36], implant_probability=1.0)


def _world_centroid(label, affine, value):
    centre = np.argwhere(label == value).mean(axis=0)
    return affine[:3, :3] @ centre + affine[:3, 3]


def test_shapes_dtypes_affine(phantom):
    assert phantom.image.shape == phantom.label.shape == SHAPE
    assert phantom.image.dtype == np.int16 and phantom.label.dtype == np.uint8
    assert nib.aff2axcodes(phantom.affine) == ("S", "P", "L")
    np.testing.assert_allclose(np.linalg.norm(phantom.affine[:3, :3], axis=0), 0.3)
    np.testing.assert_allclose(phantom_affine(SHAPE, (0.3,) * 3) @ [19.5, 31.5, 31.5, 1], [0, 0, 0, 1])


def test_labels_present(phantom):
    present = set(np.unique(phantom.label).tolist())
    teeth = {t for t in FDI_TEETH if t not in (18, 36)}
    assert teeth <= present and not {18, 36} & present
    assert {1, 2, 3, 4, 5, 6, 7, 10} <= present  # jaws, canals, sinuses, pharynx, implant
    assert present <= set(TOOTHFAIRY2_LABELS.values())


def test_teeth_are_separate_connected_objects(phantom):
    teeth = np.where(np.isin(phantom.label, FDI_TEETH), phantom.label, 0)
    components, count = ndimage.label(teeth > 0, structure=np.ones((3, 3, 3)))
    assert count == len(np.unique(teeth)) - 1  # no two teeth touch, even diagonally
    for value in np.unique(teeth)[1:]:
        assert len(np.unique(components[teeth == value])) == 1  # each tooth is one piece


def test_anatomy_is_where_it_belongs(phantom):
    label, affine = phantom.label, phantom.affine
    z = {v: _world_centroid(label, affine, v)[2] for v in (1, 2, 11, 21, 31, 41)}
    assert z[2] > z[11] > z[31] > z[1] and z[21] > z[41]  # maxilla, upper teeth, lower teeth, mandible
    # RAS x grows to the patient's right: quadrants 1 and 4 are right, 2 and 3 left
    x = {v: _world_centroid(label, affine, v)[0] for v in (16, 26, 37, 46, 3, 4, 5, 6)}
    assert x[16] > 0 > x[26] and x[46] > 0 > x[37]
    assert x[4] > 0 > x[3] and x[6] > 0 > x[5]  # right/left canal, right/left sinus
    y = {v: _world_centroid(label, affine, v)[1] for v in (11, 17, 7)}
    assert y[11] > y[17] > y[7]  # incisors anterior, molars behind, pharynx at the back
    teeth_in_jaws = ndimage.binary_dilation(np.isin(label, [31, 32, 33]), iterations=2)
    assert np.isin(label[teeth_in_jaws], [1]).any() and not np.isin(label[teeth_in_jaws], [2]).any()


def test_intensities_are_hu_like():
    clean = make_phantom(SHAPE, seed=5, noise_hu=0.0, smoothing=0.0)
    image, label = clean.image, clean.label
    assert image[0, 0, 0] == -1000  # air outside the head
    assert np.median(image[label == 7]) == -1000
    soft = image[(label == 0) & (image > -500)]
    assert 0 <= np.median(soft) <= 100
    bone = image[np.isin(label, [1, 2])]
    assert 700 <= np.median(bone) <= 1800
    teeth = image[np.isin(label, FDI_TEETH)]
    assert np.median(teeth) >= 1500 and teeth.max() >= 2800


def test_deterministic_and_seeded():
    a, b = make_phantom(SHAPE, seed=1), make_phantom(SHAPE, seed=1)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    assert not np.array_equal(a.image, make_phantom(SHAPE, seed=2).image)


def test_random_missing_teeth_count():
    label = make_phantom(SHAPE, seed=0, missing_teeth=5).label
    assert len(set(FDI_TEETH) - set(np.unique(label).tolist())) == 5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shape": (8, 64, 64)},
        {"spacing": (0.3, 0.0, 0.3)},
        {"missing_teeth": [19]},
        {"missing_teeth": 33},
        {"implant_probability": 2.0},
        {"noise_hu": -1.0},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        make_phantom(**{"shape": SHAPE, **kwargs})


@pytest.mark.parametrize("fmt", ["mha", "nii.gz"])
def test_write_toothfairy2_like_reads_back(tmp_path, fmt):
    root = write_toothfairy2_like(tmp_path / "tf2", num_cases=2, shape=(24, 48, 48), seed=3, fmt=fmt)
    dataset = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    assert dataset["labels"] == TOOTHFAIRY2_LABELS and dataset["file_ending"] == f".{fmt}"
    cases = find_toothfairy2_cases(root)
    assert [c.case_id for c in cases] == ["ToothFairy2F_001", "ToothFairy2F_002"]
    image, label = read_case(cases[1])
    phantom = make_phantom((24, 48, 48), seed=4)
    # files hold the ITK index order (W, H, D): the same physical volume as the (D, H, W) phantom
    np.testing.assert_array_equal(image.array, phantom.image.transpose(2, 1, 0))
    np.testing.assert_array_equal(label.array, phantom.label.transpose(2, 1, 0))
    np.testing.assert_allclose(image.affine, phantom.affine[:, [2, 1, 0, 3]], atol=1e-6)
    assert image.axcodes == ("L", "P", "S")


def test_reindexed_copy_permutes_ids_consistently(tmp_path):
    plain = write_toothfairy2_like(tmp_path / "plain", num_cases=1, shape=(24, 48, 48), seed=7, fmt="nii.gz")
    permuted = write_toothfairy2_like(
        tmp_path / "perm", num_cases=1, shape=(24, 48, 48), seed=7, fmt="nii.gz", reindex=True
    )
    labels = json.loads((permuted / "dataset.json").read_text(encoding="utf-8"))["labels"]
    assert labels != TOOTHFAIRY2_LABELS and sorted(labels.values()) == sorted(TOOTHFAIRY2_LABELS.values())
    outputs = []
    for root in (plain, permuted):
        _, label = read_case(find_toothfairy2_cases(root)[0])
        outputs.append(build_label_map(root / "dataset.json").apply(label.array))
    assert not np.array_equal(*(read_case(find_toothfairy2_cases(r)[0])[1].array for r in (plain, permuted)))
    for a, b in zip(*outputs):
        np.testing.assert_array_equal(a, b)
