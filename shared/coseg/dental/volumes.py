"""Reading CBCT volumes with checks, and finding ToothFairy2 cases.

Volumes are read as MONAI's readers read them (array in file index order, RAS affine kept exactly: nibabel for
NIfTI like :class:`monai.data.NibabelReader`, SimpleITK for MetaImage, NRRD and DICOM series folders with the
LPS-to-RAS conversion of :class:`monai.data.ITKReader`) without importing MONAI, which takes seconds.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np

from coseg.errors import InputFileError
from coseg.io import metaimage_size_problem

__all__ = [
    "VOLUME_SUFFIXES",
    "GRID_ATOL_MM",
    "Volume",
    "read_volume",
    "check_volume_pair",
    "grid_distance",
    "CbctCase",
    "read_case",
    "find_toothfairy2_cases",
]

#: Largest distance (mm) allowed between corresponding voxel centres of an image and its label (1/30 of a
#: 0.3 mm CBCT voxel; float32 header rounding stays far below it).
GRID_ATOL_MM = 0.01

#: File endings accepted as volumes (a folder is read as a DICOM series).
VOLUME_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


@dataclass(frozen=True)
class Volume:
    """A 3D volume and where it lies in space.

    Attributes:
        array: ``(I, J, K)`` voxels in the file's index order.
        affine: ``(4, 4)`` float64 map from voxel index ``(i, j, k, 1)`` to RAS millimetres (MONAI's affine).
        path: the file (or DICOM folder) it came from.
        nifti_header: the NIfTI header when read from NIfTI (outputs copy it so that sform/qform codes survive).
    """

    array: np.ndarray
    affine: np.ndarray
    path: str
    nifti_header: nib.Nifti1Header | None = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along ``(i, j, k)``."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def axcodes(self) -> tuple[str, str, str]:
        """Anatomical direction of increasing ``i, j, k`` (nibabel's ``aff2axcodes``), e.g. ``('L', 'P', 'S')``."""
        return tuple(nib.aff2axcodes(self.affine))


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in VOLUME_SUFFIXES if name.endswith(s)), "")


def _load_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Voxels in file index order and the RAS affine, as MONAI's readers return them.

    NIfTI goes through nibabel exactly as :class:`monai.data.NibabelReader` does (``dataobj`` with scaling,
    ``img.affine``); ITK formats and DICOM folders through SimpleITK with the index order reversed to
    ``(i, j, k)`` and the LPS geometry turned into a RAS affine, as :class:`monai.data.ITKReader` does. Importing
    MONAI costs seconds; the readers' results are the same (checked in the tests).
    """
    if _suffix(path) in (".nii", ".nii.gz"):
        image = nib.load(os.fspath(path))
        return np.asanyarray(image.dataobj), np.array(image.affine, dtype=np.float64)
    import SimpleITK as sitk

    if path.is_dir():
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(os.fspath(path))
        if not series:
            raise ValueError("the folder holds no DICOM series")
        if len(series) > 1:
            raise ValueError(f"the folder holds {len(series)} DICOM series; give the folder of one series")
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(os.fspath(path), series[0]))
        image = reader.Execute()
    else:
        image = sitk.ReadImage(os.fspath(path))
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"voxels have {image.GetNumberOfComponentsPerPixel()} components; expected a scalar volume")
    dim = image.GetDimension()
    array = sitk.GetArrayFromImage(image).transpose(tuple(range(dim - 1, -1, -1)))
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(dim, dim)
    affine = np.eye(4)
    n = min(dim, 3)
    affine[:n, :n] = (direction * np.array(image.GetSpacing(), dtype=np.float64))[:n, :n]
    affine[:n, 3] = np.array(image.GetOrigin(), dtype=np.float64)[:n]
    return array, np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def read_volume(path: str | os.PathLike, *, kind: Literal["image", "label"] = "image") -> Volume:
    """Read a 3D CBCT/CT image or label volume with checks.

    NIfTI is read with nibabel; MetaImage (``.mha``/``.mhd``), NRRD and DICOM series folders with SimpleITK;
    array order and RAS affine are those of MONAI's ``NibabelReader`` / ``ITKReader``. Trailing singleton
    dimensions beyond the third are dropped (``(I, J, K, 1)`` NIfTI files are 3D).

    Args:
        path: the file, or a folder holding one DICOM series.
        kind: ``"image"`` (any real dtype; must not be constant or hold NaN) or ``"label"`` (integer values
            >= 0, returned as the smallest unsigned dtype that holds them).

    Returns:
        the :class:`Volume`.

    Raises:
        InputFileError: if the path is missing or of an unknown type, cannot be read, is not 3D (2D, 4D), has a
            single slice along an axis, a singular affine, a constant (image) / all-zero (label) content,
            non-finite values, or (labels) negative or fractional values.
        ValueError: on a bad ``kind``.
    """
    if kind not in ("image", "label"):
        raise ValueError(f"kind must be 'image' or 'label', got {kind!r}")
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "does not exist")
    if not path.is_dir() and not _suffix(path):
        raise InputFileError(path, f"unknown volume type (expected one of {', '.join(VOLUME_SUFFIXES)} or a folder)")
    if path.is_file() and path.stat().st_size == 0:
        raise InputFileError(path, "file is empty (0 bytes)")
    # a short MetaImage file is found from its header before ITK reads it (ITK prints its own complaint to stderr
    # and reports a leftover errno)
    problem = metaimage_size_problem(path) if path.is_file() and _suffix(path) in (".mha", ".mhd") else None
    if problem is not None:
        raise InputFileError(path, problem)
    try:
        array, affine = _load_volume(path)
    except Exception as exc:  # the readers raise many types (RuntimeError, ImageFileError, OSError, EOFError ...)
        reason = " ".join(str(exc).split()) or "no reason given"  # ITK's messages span several lines
        if isinstance(exc, EOFError):
            reason = f"file is truncated ({reason})"
        raise InputFileError(path, f"cannot be read as a volume ({type(exc).__name__}: {reason})") from exc
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise InputFileError(path, f"is {array.ndim}D with shape {tuple(array.shape)}; expected one 3D volume")
    if min(array.shape) < 2:
        raise InputFileError(path, f"has shape {tuple(array.shape)}: a single slice, expected a 3D volume")
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputFileError(path, "has a singular or non-finite voxel-to-world affine")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputFileError(path, f"has non-numeric voxels ({array.dtype})")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise InputFileError(path, "holds NaN or infinite voxels")
    low, high = array.min(), array.max()
    if kind == "image":
        if low == high:
            raise InputFileError(path, f"is constant (every voxel = {low}); an empty scan")
    else:
        array = _as_label_array(path, array, low, high)
    header = None
    if _suffix(path) in (".nii", ".nii.gz"):
        header = nib.load(os.fspath(path)).header.copy()
    return Volume(array=array, affine=affine, path=os.fspath(path), nifti_header=header)


def _as_label_array(path: Path, array: np.ndarray, low: Any, high: Any) -> np.ndarray:
    if np.issubdtype(array.dtype, np.floating):
        if not np.array_equal(array, np.round(array)):
            raise InputFileError(path, "label volume holds fractional values; expected integer ids")
    if low < 0:
        raise InputFileError(path, f"label volume holds negative id {low}")
    if high == 0:
        raise InputFileError(path, "label volume is empty (all voxels are 0)")
    dtype = np.uint8 if high < 2**8 else np.uint16 if high < 2**16 else np.uint32
    return array.astype(dtype, copy=False)


def grid_distance(shape: tuple[int, ...], affine_a: np.ndarray, affine_b: np.ndarray) -> float:
    """Largest distance (mm) between the centres of the same voxel index under two voxel-to-world affines.

    The distance ``|(A - B) @ (i, j, k, 1)|`` is a convex function of the index, so over the grid it is largest
    at one of the 8 corner voxels. Unlike the largest affine-entry difference, it grows with the grid: a spacing
    of 0.5 mm instead of 0.6 mm on 111 voxels puts the far corner 11 mm away.

    Args:
        shape: the grid size ``(I, J, K)`` (further axes are ignored).
        affine_a, affine_b: ``(4, 4)`` voxel-to-world affines.

    Returns:
        The largest distance in the affines' units (mm).
    """
    diff = np.asarray(affine_a, dtype=np.float64) - np.asarray(affine_b, dtype=np.float64)
    last = [max(int(n) - 1, 0) for n in tuple(shape)[:3]]
    corners = np.array([[i, j, k, 1.0] for i in (0, last[0]) for j in (0, last[1]) for k in (0, last[2])])
    return float(np.linalg.norm(corners @ diff[:3].T, axis=1).max())


def _mm(values: tuple[float, ...]) -> str:
    return " x ".join(f"{v:.4g}" for v in values)


def check_volume_pair(image: Volume, label: Volume, *, atol: float = GRID_ATOL_MM) -> None:
    """Check that a label volume lies on its image's voxel grid.

    Args:
        image: the image.
        label: its label volume.
        atol: largest allowed distance (mm) between the centres of corresponding voxels of the two grids
            (see :func:`grid_distance`).

    Raises:
        InputFileError: naming the label file, if shapes differ or the grids lie more than ``atol`` apart; the
            message gives the largest distance and the two spacings when they differ.
    """
    if image.array.shape != label.array.shape:
        raise InputFileError(
            label.path, f"label shape {label.array.shape} differs from image shape {image.array.shape} ({image.path})"
        )
    worst = grid_distance(image.array.shape, image.affine, label.affine)
    if worst > atol:
        spacing = ""
        if not np.allclose(image.spacing, label.spacing, rtol=0.0, atol=1e-6):
            spacing = f"; label spacing {_mm(label.spacing)} mm, image spacing {_mm(image.spacing)} mm"
        raise InputFileError(
            label.path,
            f"label lies on a different voxel grid than the image ({image.path}): corresponding voxel centres are "
            f"up to {worst:.4g} mm apart (allowed {atol:g} mm){spacing}",
        )


@dataclass(frozen=True)
class CbctCase:
    """One case of an nnU-Net raw dataset: ``case_id``, the image file and the label file (``None`` if absent)."""

    case_id: str
    image: Path
    label: Path | None


def read_case(case: CbctCase, *, atol: float = GRID_ATOL_MM) -> tuple[Volume, Volume]:
    """Read and check an image/label pair.

    Args:
        case: the case.
        atol: affine tolerance, see :func:`check_volume_pair`.

    Returns:
        ``(image, label)`` volumes on the same grid.

    Raises:
        InputFileError: for any problem of :func:`read_volume` or :func:`check_volume_pair`, or a missing label.
    """
    if case.label is None:
        raise InputFileError(case.image, "has no label file in labelsTr")
    image = read_volume(case.image, kind="image")
    label = read_volume(case.label, kind="label")
    check_volume_pair(image, label, atol=atol)
    return image, label


def find_toothfairy2_cases(root: str | os.PathLike, *, require_labels: bool = True) -> list[CbctCase]:
    """List the cases of an nnU-Net raw dataset folder (``imagesTr/<case>_0000.<ext>``, ``labelsTr/<case>.<ext>``).

    Args:
        root: dataset folder holding ``imagesTr`` (and ``labelsTr``).
        require_labels: if true, every image needs a label and every label an image.

    Returns:
        cases sorted by id.

    Raises:
        InputFileError: if ``imagesTr`` is missing or empty, a case has extra channels (``_0001``) or two files
            in different formats, a partner file is missing (with ``require_labels``), or a file name does not
            follow the layout.
    """
    root = Path(root)
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not root.is_dir():
        raise InputFileError(root, "dataset folder does not exist")
    if not images_dir.is_dir():
        raise InputFileError(root, "has no imagesTr folder (expected nnU-Net raw layout)")
    images: dict[str, Path] = {}
    for path in sorted(images_dir.iterdir()):
        suffix = _suffix(path)
        if not suffix or path.name.startswith("."):
            continue
        match = re.fullmatch(r"(.+)_(\d{4})", path.name[: -len(suffix)])
        if match is None:
            raise InputFileError(path, "image name does not end in _0000 (nnU-Net channel suffix)")
        case_id, channel = match.groups()
        if channel != "0000":
            raise InputFileError(path, "extra image channel; CBCT cases have one channel (_0000)")
        if case_id in images:
            raise InputFileError(path, f"case {case_id} has two image files ({images[case_id].name})")
        images[case_id] = path
    if not images:
        raise InputFileError(images_dir, f"holds no volumes ({', '.join(VOLUME_SUFFIXES)})")
    labels: dict[str, Path] = {}
    if labels_dir.is_dir():
        for path in sorted(labels_dir.iterdir()):
            suffix = _suffix(path)
            if not suffix or path.name.startswith("."):
                continue
            case_id = path.name[: -len(suffix)]
            if case_id in labels:
                raise InputFileError(path, f"case {case_id} has two label files ({labels[case_id].name})")
            labels[case_id] = path
    elif require_labels:
        raise InputFileError(root, "has no labelsTr folder")
    if require_labels:
        for case_id, path in images.items():
            if case_id not in labels:
                raise InputFileError(path, f"has no label file labelsTr/{case_id}.<ext>")
        for case_id, path in labels.items():
            if case_id not in images:
                raise InputFileError(path, f"has no image file imagesTr/{case_id}_0000.<ext>")
    return [CbctCase(case_id=c, image=images[c], label=labels.get(c)) for c in sorted(images)]
