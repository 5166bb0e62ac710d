"""Writing a dental prediction: NIfTI volumes on the input's exact grid and header, a JSON summary, a PNG montage.

Every file is written to a temporary name and renamed only once all of them are complete.
"""

from __future__ import annotations

import colorsys
import contextlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import nibabel as nib
import numpy as np

from coseg.dental.assemble import DentalPrediction, combined_toothfairy2, structure_summary
from coseg.dental.geometry import make_model_slices, slice_geometry
from coseg.dental.volumes import Volume
from coseg.io import atomic_write_path, temporary_sibling, write_bytes

__all__ = ["render_montage", "write_nifti_like", "write_png", "write_dental_outputs"]


def _label_color(value: int) -> tuple[int, int, int]:
    fixed = {1: (230, 190, 60), 2: (90, 170, 240), 7: (200, 80, 220)}
    if value in fixed:
        return fixed[value]
    hue = (value * 0.618034) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 1.0)
    return int(255 * r), int(255 * g), int(255 * b)


def render_montage(
    image: np.ndarray,
    labels: np.ndarray,
    affine: np.ndarray,
    *,
    num_slices: int = 6,
    columns: int = 3,
    tile_size: int = 256,
    window: Sequence[float] = (-1000.0, 4000.0),
    alpha: float = 0.45,
) -> np.ndarray:
    """A grid of axial slices with labels drawn over the windowed scan.

    Slices are spread evenly over the labelled extent (the whole volume when nothing is labelled), shown in
    the canonical axial orientation (anterior up, patient right on the left).

    Args:
        image: ``(I, J, K)`` intensities.
        labels: ``(I, J, K)`` label ids (colours: fixed for ToothFairy2 regions, one hue per other id).
        affine: ``(4, 4)`` voxel-to-RAS affine.
        num_slices: number of tiles, >= 1.
        columns: tiles per row, >= 1.
        tile_size: tile side in pixels, >= 8.
        window: intensity window.
        alpha: label opacity in ``[0, 1]``.

    Returns:
        ``(rows * tile_size, columns * tile_size, 3)`` uint8 RGB.

    Raises:
        ValueError: on bad parameters or mismatched shapes.
    """
    image, labels = np.asarray(image), np.asarray(labels)
    if image.shape != labels.shape or image.ndim != 3:
        raise ValueError(f"image {image.shape} and labels {labels.shape} must be equal 3D shapes")
    if num_slices < 1 or columns < 1:
        raise ValueError(f"num_slices and columns must be >= 1, got {num_slices}, {columns}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    geometry = slice_geometry(image.shape, affine, axis="axial", size=tile_size)
    canon_labels = geometry.to_canonical(labels)
    labelled = np.flatnonzero(canon_labels.reshape(geometry.num_slices, -1).any(axis=1))
    first, last = (labelled[0], labelled[-1]) if labelled.size else (0, geometry.num_slices - 1)
    picks = np.unique(np.linspace(first, last, num_slices + 2)[1:-1].round().astype(int))
    grey = make_model_slices(image, geometry, window=window, channels="repeat", slice_indices=picks.tolist())
    lab = geometry.canonical_to_model(canon_labels[picks], kind="label")
    palette = np.zeros((int(labels.max(initial=0)) + 1, 3), dtype=np.float32)
    for value in range(1, len(palette)):
        palette[value] = _label_color(value)
    rows = math.ceil(len(picks) / columns)
    out = np.zeros((rows * tile_size, columns * tile_size, 3), dtype=np.uint8)
    for k, n in enumerate(picks):
        tile = grey[k].astype(np.float32)
        mask = lab[k] > 0
        tile[mask] = (1 - alpha) * tile[mask] + alpha * palette[lab[k][mask]]
        tile = np.ascontiguousarray(tile.round().astype(np.uint8))
        cv2.putText(tile, f"slice {n}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        r, c = divmod(k, columns)
        out[r * tile_size : (r + 1) * tile_size, c * tile_size : (c + 1) * tile_size] = tile
    return out


def _nifti_image(array: np.ndarray, reference: Volume) -> nib.Nifti1Image:
    if reference.nifti_header is not None:
        header = reference.nifti_header.copy()
        header.set_data_dtype(array.dtype)
        header.set_slope_inter(1.0, 0.0)
        header["cal_min"], header["cal_max"] = 0.0, 0.0
        image = nib.Nifti1Image(array, reference.affine, header=header)
    else:
        image = nib.Nifti1Image(array, reference.affine)
        image.set_sform(reference.affine, code=1)
        image.set_qform(reference.affine, code=1)
        image.header.set_xyzt_units("mm")
    image.header.set_intent("label")
    return image


def _check_on_grid(array: np.ndarray, reference: Volume) -> np.ndarray:
    array = np.asarray(array)
    if array.shape != reference.array.shape:
        raise ValueError(f"array shape {array.shape} differs from the reference volume's {reference.array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"label volumes must be integer arrays, got {array.dtype}")
    high = int(array.max(initial=0))
    dtype = np.uint8 if high < 2**8 else np.uint16 if high < 2**16 else np.uint32
    return np.ascontiguousarray(array.astype(dtype, copy=False))


def write_nifti_like(path: str | os.PathLike, array: np.ndarray, reference: Volume) -> Path:
    """Write a label volume as NIfTI on the reference volume's exact grid, atomically.

    The reference's NIfTI header is reused when it has one (sform/qform and their codes unchanged; scaling
    reset); otherwise sform = qform = the reference's RAS affine with code 1 (scanner).

    Args:
        path: output file ending in ``.nii`` or ``.nii.gz``.
        array: ``(I, J, K)`` integer labels on the reference grid (stored as the smallest unsigned dtype).
        reference: the input volume.

    Returns:
        the written path.

    Raises:
        ValueError: on a bad suffix, shape or dtype.
    """
    path = Path(path)
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        raise ValueError(f"NIfTI output must end in .nii or .nii.gz, got {path.name}")
    image = _nifti_image(_check_on_grid(array, reference), reference)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write_path(path) as tmp:
        nib.save(image, tmp)
    return path


def _png_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8:
        array = array[..., ::-1]  # OpenCV encodes BGR
    elif array.ndim != 2 or array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG data must be (H, W) uint8/uint16 or (H, W, 3) uint8, got {array.shape} {array.dtype}")
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(array))
    if not ok:
        raise ValueError("PNG encoding failed")
    return encoded.tobytes()


def write_png(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write an RGB uint8 image ``(H, W, 3)`` or a uint8/uint16 label map ``(H, W)`` as PNG, atomically.

    Raises:
        ValueError: on other shapes or dtypes.
    """
    path = Path(path)
    write_bytes(path, _png_bytes(array))
    return path


def write_dental_outputs(
    out_dir: str | os.PathLike,
    prediction: DentalPrediction,
    reference: Volume,
    *,
    prefix: str | None = None,
    montage: bool = True,
    window: Sequence[float] = (-1000.0, 4000.0),
) -> dict[str, Path]:
    """Write a dental prediction for users: label volumes on the scan's grid, a JSON summary and a PNG montage.

    Files (``<p>`` = ``prefix``, by default the reference file's case name without ``_0000`` and extension):
    ``<p>_semantic.nii.gz`` (1 lower jawbone, 2 upper jawbone, 3 pharynx), ``<p>_teeth.nii.gz`` (FDI ids),
    ``<p>_toothfairy2.nii.gz`` (:func:`combined_toothfairy2`), ``<p>_summary.json`` (:func:`structure_summary`)
    and ``<p>_montage.png`` (:func:`render_montage`). Everything is computed and written to temporary files
    first; the final names appear only once every file is complete.

    Args:
        out_dir: output folder (created).
        prediction: from :func:`assemble_dental_prediction`.
        reference: the input image volume (grid, affine, header).
        prefix: file name prefix.
        montage: write the PNG montage.
        window: intensity window of the montage.

    Returns:
        kind (``semantic``, ``teeth``, ``toothfairy2``, ``summary``, ``montage``) -> written path.

    Raises:
        ValueError: if the prediction does not lie on the reference grid.
    """
    out_dir = Path(out_dir)
    if prefix is None:
        name = Path(reference.path).name
        for suffix in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr"):
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
        prefix = name[:-5] if name.endswith("_0000") else name
    semantic = _check_on_grid(prediction.semantic, reference)
    teeth = _check_on_grid(prediction.teeth, reference)
    combined = combined_toothfairy2(semantic, teeth)
    summary = structure_summary(semantic, teeth, reference.affine, numbering=prediction.numbering)
    summary["tooth_types"] = {str(k): v for k, v in sorted(prediction.tooth_types.items())}
    payload: dict[str, Any] = {
        "semantic": _nifti_image(semantic, reference),
        "teeth": _nifti_image(teeth, reference),
        "toothfairy2": _nifti_image(combined, reference),
        "summary": (json.dumps(summary, indent=2) + "\n").encode("utf-8"),
    }
    names = {
        "semantic": f"{prefix}_semantic.nii.gz",
        "teeth": f"{prefix}_teeth.nii.gz",
        "toothfairy2": f"{prefix}_toothfairy2.nii.gz",
        "summary": f"{prefix}_summary.json",
    }
    if montage:
        payload["montage"] = _png_bytes(render_montage(reference.array, combined, reference.affine, window=window))
        names["montage"] = f"{prefix}_montage.png"
    out_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        temps: dict[str, Path] = {}
        for key, content in payload.items():
            tmp = stack.enter_context(temporary_sibling(out_dir / names[key]))
            if isinstance(content, bytes):
                tmp.write_bytes(content)
            else:
                nib.save(content, tmp)
            temps[key] = tmp
        for key, tmp in temps.items():
            os.replace(tmp, out_dir / names[key])
    return {key: out_dir / names[key] for key in names}
