"""Slicing geometry: anatomical axes, resize + pad, exact inverse, NIfTI written on the input grid (real CT)."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest

from coseg.dental.geometry import (
    SLICE_AXES,
    SliceGeometry,
    _nearest_index,
    apply_window,
    make_model_slices,
    slice_geometry,
    slices_to_volume,
)
from coseg.dental.outputs import write_nifti_like
from coseg.dental.volumes import read_volume


@pytest.fixture(scope="module")
def real_ct(shared_dir):
    folder = shared_dir / "data" / "ct_nifti"
    return read_volume(folder / "example_ct_sm.nii.gz"), read_volume(folder / "example_seg.nii.gz", kind="label")


def test_nearest_index_hand_computed():
    np.testing.assert_array_equal(_nearest_index(5, 2), [0, 0, 1, 1, 1])  # (r + 0.5) * 2 / 5 = .2 .6 1 1.4 1.8
    np.testing.assert_array_equal(_nearest_index(2, 5), [1, 3])  # (r + 0.5) * 5 / 2 = 1.25, 3.75
    np.testing.assert_array_equal(_nearest_index(4, 4), [0, 1, 2, 3])


def test_tiny_geometry_hand_computed():
    geometry = slice_geometry((2, 3, 4), np.eye(4), axis="axial", size=8)  # RAS identity: i->R, j->A, k->S
    assert geometry.canonical_shape == (4, 3, 2)  # through S (k), rows P (-j), cols L (-i)
    assert geometry.resized_shape == (8, 5) and geometry.pad == (0, 1)  # 3 x 2 mm -> 8 x round(5.33)
    volume = np.arange(24).reshape(2, 3, 4)
    canonical = geometry.to_canonical(volume)
    for n, r, c in itertools.product(range(4), range(3), range(2)):
        assert canonical[n, r, c] == volume[1 - c, 2 - r, n]
    model = geometry.to_model(volume, kind="label")
    assert model.shape == (4, 8, 8)
    assert (model[:, :, 0] == 0).all() and (model[:, :, 6:] == 0).all()  # padding left 1, right 2
    np.testing.assert_array_equal(model[0, :, 1], canonical[0, _nearest_index(8, 3), 0])
    np.testing.assert_array_equal(geometry.from_model(model), volume)


def test_anisotropic_pixels_keep_physical_aspect():
    affine = np.diag([0.5, 0.5, 3.0, 1.0])  # thick axial slices
    geometry = slice_geometry((100, 80, 20), affine, axis="coronal", size=64)
    assert geometry.canonical_shape == (80, 20, 100)  # through A (j), rows I (-k), cols L (-i)
    assert geometry.canonical_spacing == (0.5, 3.0, 0.5)
    assert geometry.resized_shape == (64, 53)  # rows 20 x 3 = 60 mm -> 64 px; cols 100 x 0.5 = 50 mm -> 53.3 px
    assert geometry.pad == (0, 5)


@pytest.mark.parametrize("axis", sorted(SLICE_AXES))
def test_axes_are_anatomical(axis):
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 100, size=(5, 6, 7))
    # the same physical volume stored in two index orders gives the same canonical slices
    affine_a = np.diag([0.7, 0.7, 0.7, 1.0])
    geometry_a = slice_geometry(volume.shape, affine_a, axis=axis, size=16)
    stored_b = volume.transpose(2, 0, 1)[::-1]  # (k reversed, i, j)
    affine_b = affine_a[:, [2, 0, 1, 3]].copy()
    affine_b[:3, 0] *= -1
    affine_b[:3, 3] = affine_a[:3, :3] @ [0, 0, 6]
    geometry_b = slice_geometry(stored_b.shape, affine_b, axis=axis, size=16)
    np.testing.assert_array_equal(geometry_a.to_canonical(volume), geometry_b.to_canonical(stored_b))


def test_real_ct_axial_layout(real_ct):
    image, _ = real_ct
    assert image.axcodes == ("R", "A", "S")
    geometry = slice_geometry(image.array.shape, image.affine, axis="axial", size=256)
    assert geometry.canonical_shape == (30, 101, 122)
    assert geometry.resized_shape == (212, 256) and geometry.pad == (22, 0)
    canonical = geometry.to_canonical(image.array)
    assert canonical[4, 10, 20] == image.array[121 - 20, 100 - 10, 4]


@pytest.mark.parametrize("axis", sorted(SLICE_AXES))
def test_real_ct_round_trip_through_nifti(tmp_path, real_ct, axis):
    """read -> slice -> model size -> reassemble -> write -> read back: identical arrays, affine and header codes."""
    image, label = real_ct
    geometry = slice_geometry(image.array.shape, image.affine, axis=axis, size=256)
    for volume, name in ((image, "image"), (label, "label")):
        slices = geometry.to_model(volume.array, kind="label")  # nearest: values pass through unchanged
        assert slices.shape == (geometry.num_slices, 256, 256)
        restored = slices_to_volume(slices, geometry)
        np.testing.assert_array_equal(restored, volume.array)
        if name == "label":
            path = write_nifti_like(tmp_path / f"{axis}.nii.gz", restored, label)
            back = nib.load(path)
            np.testing.assert_array_equal(np.asanyarray(back.dataobj), label.array)
            np.testing.assert_array_equal(back.affine, label.affine)
            original = label.nifti_header
            assert int(back.header["sform_code"]) == int(original["sform_code"]) == 2
            assert int(back.header["qform_code"]) == int(original["qform_code"]) == 0
            np.testing.assert_array_equal(back.header.get_sform(), original.get_sform())
            np.testing.assert_allclose(back.header.get_zooms(), original.get_zooms())
            assert read_volume(path, kind="label").axcodes == image.axcodes


def test_write_nifti_like_from_itk_input_sets_both_forms(tmp_path, real_ct):
    image, label = real_ct
    reference = type(image)(array=image.array, affine=image.affine, path="scan.mha", nifti_header=None)
    path = write_nifti_like(tmp_path / "out.nii.gz", label.array, reference)
    back = nib.load(path)
    assert int(back.header["sform_code"]) == int(back.header["qform_code"]) == 1
    np.testing.assert_allclose(back.header.get_qform(), image.affine, atol=1e-5)
    np.testing.assert_array_equal(back.affine, image.affine)
    with pytest.raises(ValueError, match="shape"):
        write_nifti_like(tmp_path / "bad.nii.gz", label.array[:-1], reference)
    with pytest.raises(ValueError, match="must end"):
        write_nifti_like(tmp_path / "bad.mha", label.array, reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]  # no temporary files left


def test_downsampled_images_and_linear_inverse(real_ct):
    image, _ = real_ct
    geometry = slice_geometry(image.array.shape, image.affine, axis="axial", size=64)
    assert geometry.resized_shape == (53, 64)
    model = geometry.to_model(image.array.astype(np.float32), kind="image", pad_value=-1000)
    assert model.dtype == np.float32 and (model[:, :5] == -1000).all()
    # area interpolation keeps the mean of a slice closely
    canonical = geometry.to_canonical(image.array)
    content = model[10, 5 : 5 + 53]
    assert abs(content.mean() - canonical[10].mean()) < 5
    back = geometry.from_model(model, mode="linear")
    assert back.shape == image.array.shape and back.dtype == np.float32
    with pytest.raises(ValueError, match="mode"):
        geometry.from_model(model, mode="cubic")


def test_geometry_dict_round_trip(real_ct):
    image, _ = real_ct
    geometry = slice_geometry(image.array.shape, image.affine, axis="sagittal", size=96)
    assert SliceGeometry.from_dict(geometry.to_dict()) == geometry
    broken = geometry.to_dict()
    broken["canonical_shape"] = [1, 2, 3]
    with pytest.raises(ValueError, match="inconsistent"):
        SliceGeometry.from_dict(broken)
    with pytest.raises(ValueError, match="not a slice geometry"):
        SliceGeometry.from_dict({"axis": "axial"})


@pytest.mark.parametrize(
    "kwargs, problem",
    [({"axis": "oblique"}, "axis"), ({"size": 4}, "size"), ({"size": 64.0}, "size"), ({"shape": (3, 4)}, "shape")],
)
def test_bad_geometry_arguments(kwargs, problem):
    arguments = {"shape": (4, 5, 6), "affine": np.eye(4), **kwargs}
    with pytest.raises(ValueError, match=problem):
        slice_geometry(**arguments)


def test_shape_mismatches_raise():
    geometry = slice_geometry((4, 5, 6), np.eye(4), size=16)
    with pytest.raises(ValueError):
        geometry.to_canonical(np.zeros((4, 5, 7)))
    with pytest.raises(ValueError):
        geometry.from_model(np.zeros((6, 16, 15)))
    with pytest.raises(ValueError):
        geometry.to_model(np.zeros((4, 5, 6)), kind="mask")


def test_apply_window_hand_computed():
    out = apply_window(np.array([-2000, -1000, 1500, 4000, 9000]), (-1000, 4000))
    np.testing.assert_allclose(out, [0, 0, 127.5, 255, 255])
    with pytest.raises(ValueError):
        apply_window(np.zeros(3), (10, 10))


def test_model_slices_channels():
    volume = np.stack([np.full((6, 6), v) for v in (-1000, 0, 1000, 4000)], axis=-1)  # 4 axial slices, RAS identity
    geometry = slice_geometry(volume.shape, np.eye(4), axis="axial", size=8)
    repeat = make_model_slices(volume, geometry, window=(-1000, 4000), channels="repeat")
    assert repeat.shape == (4, 8, 8, 3) and repeat.dtype == np.uint8
    np.testing.assert_array_equal(repeat[:, 4, 4, 0], [0, 51, 102, 255])
    assert (repeat[..., 0] == repeat[..., 2]).all()
    adjacent = make_model_slices(volume, geometry, window=(-1000, 4000), channels="adjacent", slice_indices=[0, 2, 3])
    np.testing.assert_array_equal(adjacent[:, 4, 4], [[0, 0, 51], [51, 102, 255], [102, 255, 255]])
    with pytest.raises(ValueError):
        make_model_slices(volume, geometry, channels="rgb")
    with pytest.raises(ValueError):
        make_model_slices(volume, geometry, slice_indices=[4])
