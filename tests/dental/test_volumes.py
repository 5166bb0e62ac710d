"""Reading CBCT volumes (NIfTI, MetaImage, NRRD, DICOM series) and every bad input the reader must name."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from coseg.dental.volumes import (
    CbctCase,
    Volume,
    check_volume_pair,
    find_toothfairy2_cases,
    grid_distance,
    read_case,
    read_volume,
)
from coseg.errors import InputFileError

# a RAS affine with a permutation, flips and an origin: voxel (i, j, k) -> (-0.4 k + 5, -0.5 j + 7, 0.3 i - 2)
AFFINE = np.array([[0, 0, -0.4, 5.0], [0, -0.5, 0, 7.0], [0.3, 0, 0, -2.0], [0, 0, 0, 1]])


def _volume(shape=(6, 7, 8), seed=0, dtype=np.int16):
    return np.random.default_rng(seed).integers(-1000, 3000, size=shape).astype(dtype)


def _save_nifti(path, array, affine=AFFINE):
    image = nib.Nifti1Image(array, affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    nib.save(image, path)
    return path


def _save_itk(path, array, affine=AFFINE):
    """ITK writers take numpy (z, y, x); the file's index (i, j, k) is the array reversed."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps / spacing).ravel().tolist())
    image.SetOrigin((np.diag([-1.0, -1.0, 1.0]) @ affine[:3, 3]).tolist())
    sitk.WriteImage(image, str(path))
    return path


def _save_dicom_series(folder, array, spacing=(0.5, 0.6, 0.7), origin=(10.0, -20.0, 30.0)):
    """One axial DICOM series: array (i, j, k) = (columns, rows, slices), identity LPS direction."""
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.42"
    for k in range(array.shape[2]):
        plane = sitk.GetImageFromArray(np.ascontiguousarray(array[:, :, k].T).astype(np.int16))
        position = (origin[0], origin[1], origin[2] + k * spacing[2])
        tags = {
            "0008|0060": "CT",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008|0018": f"{series_uid}.{k + 1}",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1.41",
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.4f}" for v in position),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": f"{spacing[1]:.4f}\\{spacing[0]:.4f}",
            "0018|0050": f"{spacing[2]:.4f}",
        }
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        plane.SetSpacing((spacing[0], spacing[1]))
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(plane)
    return folder


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha", ".nrrd"])
def test_read_formats_keep_array_and_affine(tmp_path, suffix):
    array = _volume()
    path = tmp_path / f"scan{suffix}"
    (_save_nifti if suffix.startswith(".nii") else _save_itk)(path, array)
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.affine, AFFINE, atol=1e-6)
    assert volume.axcodes == ("S", "P", "L")
    np.testing.assert_allclose(volume.spacing, (0.3, 0.5, 0.4))
    assert (volume.nifti_header is not None) == suffix.startswith(".nii")


def test_read_dicom_series_folder(tmp_path):
    array = _volume((5, 4, 3))
    folder = _save_dicom_series(tmp_path / "series", array)
    volume = read_volume(folder)
    np.testing.assert_array_equal(volume.array, array)
    expected = np.array([[-0.5, 0, 0, -10.0], [0, -0.6, 0, 20.0], [0, 0, 0.7, 30.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(volume.affine, expected, atol=1e-4)


def test_same_result_as_monai_readers(tmp_path):
    """The reader avoids importing MONAI; its arrays and affines equal MONAI's LoadImage results."""
    from monai.data import ITKReader, NibabelReader
    from monai.transforms import LoadImage

    array = _volume()
    for path, reader in (
        (_save_itk(tmp_path / "a.mha", array), ITKReader()),
        (_save_nifti(tmp_path / "a.nii.gz", array), NibabelReader()),
    ):
        ours = read_volume(path)
        theirs = LoadImage(reader=reader, image_only=True, dtype=None)(str(path))
        np.testing.assert_array_equal(ours.array, np.asarray(theirs))
        np.testing.assert_allclose(ours.affine, np.asarray(theirs.affine), atol=1e-9)


def test_trailing_singleton_dimension_is_dropped(tmp_path):
    array = _volume()
    volume = read_volume(_save_nifti(tmp_path / "a.nii.gz", array[..., None]))
    assert volume.array.shape == array.shape


def test_label_volume_dtype(tmp_path):
    label = np.zeros((6, 7, 8), dtype=np.float32)
    label[2:4, 2:4, 2:4] = 41
    volume = read_volume(_save_nifti(tmp_path / "l.nii.gz", label), kind="label")
    assert volume.array.dtype == np.uint8 and volume.array.max() == 41


def _bad(tmp_path, what):
    if what == "2d":
        return _save_nifti(tmp_path / "flat.nii.gz", _volume((6, 7, 1))[..., 0])
    if what == "4d":
        return _save_nifti(tmp_path / "multi.nii.gz", _volume((6, 7, 8, 2)))
    if what == "single slice":
        return _save_nifti(tmp_path / "slice.nii.gz", _volume((6, 7, 1)))
    if what == "constant":
        return _save_nifti(tmp_path / "const.nii.gz", np.full((6, 7, 8), 5, dtype=np.int16))
    if what == "nan":
        array = _volume().astype(np.float32)
        array[1, 1, 1] = np.nan
        return _save_nifti(tmp_path / "nan.nii.gz", array)
    if what == "corrupt":
        path = tmp_path / "broken.mha"
        path.write_bytes(b"ObjectType = Image\nNDims = 3\nthis is not a volume")
        return path
    if what == "suffix":
        path = tmp_path / "scan.png"
        path.write_bytes(b"\x89PNG")
        return path
    raise AssertionError(what)


@pytest.mark.parametrize(
    "what, problem",
    [
        ("2d", "2D"),
        ("4d", "4D"),
        ("single slice", "single slice"),
        ("constant", "constant"),
        ("nan", "NaN"),
        ("corrupt", "cannot be read"),
        ("suffix", "unknown volume type"),
    ],
)
def test_bad_images_name_the_file(tmp_path, what, problem):
    path = _bad(tmp_path, what)
    with pytest.raises(InputFileError, match=problem) as info:
        read_volume(path)
    assert info.value.path == str(path)


def test_missing_file(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        read_volume(tmp_path / "nothing.mha")


@pytest.mark.parametrize(
    "content, problem",
    [("zero", "all voxels are 0"), ("fraction", "fractional"), ("negative", "negative")],
)
def test_bad_label_volumes(tmp_path, content, problem):
    label = np.zeros((6, 7, 8), dtype=np.float32)
    if content == "fraction":
        label[1, 1, 1] = 1.5
    if content == "negative":
        label[1, 1, 1] = -1
    path = _save_nifti(tmp_path / "label.nii.gz", label)
    with pytest.raises(InputFileError, match=problem) as info:
        read_volume(path, kind="label")
    assert info.value.path == str(path)


def _pair(tmp_path, label_shape=(6, 7, 8), label_affine=AFFINE):
    image = _save_nifti(tmp_path / "case_0000.nii.gz", _volume())
    label = np.zeros(label_shape, dtype=np.uint8)
    label[1:3, 1:3, 1:3] = 1
    label_path = _save_nifti(tmp_path / "case.nii.gz", label, label_affine)
    return CbctCase("case", image, label_path)


def test_pair_checks(tmp_path):
    image, label = read_case(_pair(tmp_path))
    assert image.array.shape == label.array.shape
    with pytest.raises(InputFileError, match="label shape") as info:
        read_case(_pair(tmp_path, label_shape=(6, 7, 9)))
    assert info.value.path.endswith("case.nii.gz")
    shifted = AFFINE.copy()
    shifted[0, 3] += 0.5
    with pytest.raises(InputFileError, match=r"different voxel grid .* up to 0\.5 mm apart"):
        read_case(_pair(tmp_path, label_affine=shifted))
    with pytest.raises(InputFileError, match="no label"):
        read_case(CbctCase("case", tmp_path / "case_0000.nii.gz", None))


def test_grid_mismatch_reports_the_drift_between_voxel_centres_not_the_affine_entries():
    # spacing 0.6 mm -> 0.5 mm along i on 111 voxels: the affines differ by 0.1 in one entry, but voxel 110 lies
    # 110 * 0.1 = 11 mm away from where the image has it
    shape = (111, 4, 5)
    image_affine = np.diag([0.6, 0.6, 0.6, 1.0])
    label_affine = np.diag([0.5, 0.6, 0.6, 1.0])
    assert grid_distance(shape, image_affine, label_affine) == pytest.approx(11.0)
    image = Volume(np.ones(shape, np.int16), image_affine, "img_0000.nii.gz")
    label = Volume(np.ones(shape, np.uint8), label_affine, "lab.nii.gz")
    with pytest.raises(InputFileError, match=r"up to 11 mm apart .* label spacing 0\.5 x 0\.6 x 0\.6 mm") as info:
        check_volume_pair(image, label)
    assert info.value.path == "lab.nii.gz"
    # a rotation about the grid's first voxel: the entries change by < 0.01 but the far corner moves by ~0.8 mm
    angle = np.deg2rad(0.5)
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    rotated = rot @ image_affine
    assert np.abs(rotated - image_affine).max() < 0.01
    assert grid_distance(shape, image_affine, rotated) == pytest.approx(
        np.linalg.norm((rotated - image_affine)[:3] @ [110, 3, 4, 1])
    )
    with pytest.raises(InputFileError, match="different voxel grid"):
        check_volume_pair(image, Volume(label.array, rotated, "lab.nii.gz"))
    check_volume_pair(image, Volume(label.array, image_affine + 1e-5, "lab.nii.gz"))  # float32 header rounding


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_metaimage_reports_the_size_mismatch(tmp_path, compress):
    path = tmp_path / "scan_0000.mha"
    sitk.WriteImage(sitk.GetImageFromArray(_volume().transpose(2, 1, 0)), str(path), compress)
    data = path.read_bytes()
    path.write_bytes(data[:-50])
    with pytest.raises(InputFileError, match="file is truncated: the header .* needs .* bytes of voxel data") as info:
        read_volume(path)
    assert info.value.path == str(path)
    assert "No such file or directory" not in str(info.value)


def test_detached_metaimage_data_file(tmp_path):
    path = tmp_path / "scan_0000.mhd"
    sitk.WriteImage(sitk.GetImageFromArray(_volume().transpose(2, 1, 0)), str(path))
    raw = next(tmp_path.glob("*.raw"))
    raw.write_bytes(raw.read_bytes()[:-10])
    with pytest.raises(InputFileError, match=f"truncated.*in {raw.name}"):
        read_volume(path)
    raw.unlink()
    with pytest.raises(InputFileError, match="does not exist beside it"):
        read_volume(path)


@pytest.mark.parametrize("name", ["scan_0000.nii.gz", "scan_0000.nii"])
def test_truncated_nifti_names_the_file(tmp_path, name):
    path = _save_nifti(tmp_path / name, _volume())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match="cannot be read as a volume") as info:
        read_volume(path)
    assert info.value.path == str(path)


def _layout(tmp_path, images=("a_0000.mha", "b_0000.mha"), labels=("a.mha", "b.mha")):
    root = tmp_path / "tf2"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for name in images:
        (root / "imagesTr" / name).write_bytes(b"")
    for name in labels:
        (root / "labelsTr" / name).write_bytes(b"")
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0}}), encoding="utf-8")
    return root


def test_find_cases(tmp_path):
    cases = find_toothfairy2_cases(_layout(tmp_path, images=("b_0000.nii.gz", "a_0000.mha", ".hidden_0000.mha")))
    assert [c.case_id for c in cases] == ["a", "b"]
    assert cases[0].image.name == "a_0000.mha" and cases[0].label.name == "a.mha"


@pytest.mark.parametrize(
    "images, labels, problem",
    [
        (("a_0000.mha",), ("a.mha", "b.mha"), "no image file"),
        (("a_0000.mha", "b_0000.mha"), ("a.mha",), "no label file"),
        (("a_0000.mha", "a_0001.mha"), ("a.mha",), "extra image channel"),
        (("a.mha",), ("a.mha",), "_0000"),
        (("a_0000.mha", "a_0000.nii.gz"), ("a.mha",), "two image files"),
        ((), (), "holds no volumes"),
    ],
)
def test_find_cases_bad_layouts(tmp_path, images, labels, problem):
    with pytest.raises(InputFileError, match=problem):
        find_toothfairy2_cases(_layout(tmp_path, images=images, labels=labels))


def test_find_cases_needs_images_folder(tmp_path):
    with pytest.raises(InputFileError, match="imagesTr"):
        find_toothfairy2_cases(tmp_path)
