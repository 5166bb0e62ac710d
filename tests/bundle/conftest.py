"""Fixtures for the packaging and MONAI Label tests: copies of the histology and CBCT bundles with micro-model
weights, sample images and sample CBCT volumes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HISTO = REPO / "bundles" / "coseg_histo"
CBCT = REPO / "bundles" / "coseg_cbct"

#: export overrides that make the packaged bundle run the micro model on 64x64 images quickly on a CPU (its encoder
#: trains from random weights: the micro preset has no SAM2 checkpoint)
MICRO_OVERRIDES = {
    "model_preset": "micro",
    "allow_random_encoder": True,
    "patch_size": 64,
    "num_workers": 0,
    "cache_rate": 0.0,
    "batch_size": 2,
    "val_interval": 1,
}


#: the same for the CBCT bundle (slices of 64x64 for the network, 4 slices per network call)
CBCT_MICRO_OVERRIDES = {**MICRO_OVERRIDES, "slice_batch_size": 4}

#: the CBCT sample volumes: (D, H, W) of the phantom before cropping, and the crop (off-centre, so that a label
#: flipped along any axis differs from the right one)
CBCT_PHANTOM_SHAPE = (24, 60, 52)
CBCT_CROP = (slice(1, 21), slice(3, 57), slice(0, 44))


def make_source_bundle(dest: Path, *, seed: int = 0, bundle: Path = HISTO) -> Path:
    """Copy a bundle's configs, docs and LICENSE to ``dest`` (no weights, outputs or data of the working tree) and
    write ``models/model.pt``: a seeded, untrained micro model with the bundle's classes (histology: 3 regions and
    4 nucleus types; CBCT: 4 regions and 3 tooth types)."""
    import torch

    from coseg.networks import CoSegPlusPlus

    dest.mkdir(parents=True)
    for item in ("configs", "docs"):
        shutil.copytree(bundle / item, dest / item, ignore=shutil.ignore_patterns("monailabel_*"))
    shutil.copy(bundle / "LICENSE", dest / "LICENSE")
    (dest / "models").mkdir()
    torch.manual_seed(seed)
    classes = (4, 3) if bundle == CBCT else (3, 4)
    net = CoSegPlusPlus.from_preset(
        "micro", num_sem_classes=classes[0], num_inst_types=classes[1], freeze_encoder=False
    )
    torch.save(net.state_dict(), dest / "models" / "model.pt")
    return dest


def write_cbct_volumes(folder: Path, seeds=(0, 1), *, labels: Path | None = None) -> list[Path]:
    """Write one synthetic CBCT phantom per seed as ``cbct_<seed>.nii.gz`` (HU, int16): cropped off-centre to
    :data:`CBCT_CROP` from :data:`CBCT_PHANTOM_SHAPE`, anisotropic voxels (0.45 x 0.4 x 0.5 mm), voxel axes
    pointing left, posterior and superior (LPS, as scanners write them), the crop's origin shift in the affine.
    With ``labels``, also its label volume in ToothFairy2 ids (uint8, same grid) as ``labels/cbct_<seed>.nii.gz``."""
    import nibabel as nib
    import numpy as np

    from coseg.dental.synthetic import make_phantom

    folder.mkdir(parents=True, exist_ok=True)
    if labels is not None:
        labels.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        phantom = make_phantom(CBCT_PHANTOM_SHAPE, spacing=(0.5, 0.4, 0.45), seed=seed)
        start = np.array([s.start for s in CBCT_CROP] + [1.0])
        affine = phantom.affine.copy()
        affine[:3, 3] = (phantom.affine @ start)[:3]
        outputs = [(phantom.image, folder)] + ([(phantom.label, labels)] if labels is not None else [])
        for array, dest in outputs:
            # (D, H, W) -> NIfTI voxel order (W, H, D), as coseg.dental.synthetic writes its phantoms
            data = np.ascontiguousarray(array[CBCT_CROP].transpose(2, 1, 0))
            nifti = nib.Nifti1Image(data, affine[:, [2, 1, 0, 3]])
            nifti.set_sform(affine[:, [2, 1, 0, 3]], code=1)
            nifti.set_qform(affine[:, [2, 1, 0, 3]], code=1)
            nib.save(nifti, dest / f"cbct_{seed}.nii.gz")
        paths.append(folder / f"cbct_{seed}.nii.gz")
    return paths


@pytest.fixture(scope="session")
def source_bundle(tmp_path_factory) -> Path:
    """A bundle folder like ``bundles/coseg_histo`` with micro-model weights in ``models/model.pt``."""
    return make_source_bundle(tmp_path_factory.mktemp("source") / "coseg_histo")


@pytest.fixture(scope="session")
def sample_images(tmp_path_factory) -> Path:
    """A synthetic prepared histology dataset: 8 images of 64x64 with their label maps."""
    from coseg.histo.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("ecosystem_data") / "synthetic"
    write_synthetic_dataset(root, num_images=8, size=64, seed=11)
    return root


@pytest.fixture(scope="session")
def cbct_source_bundle(tmp_path_factory) -> Path:
    """A bundle folder like ``bundles/coseg_cbct`` with micro-model weights in ``models/model.pt``."""
    return make_source_bundle(tmp_path_factory.mktemp("source_cbct") / "coseg_cbct", bundle=CBCT)


@pytest.fixture(scope="session")
def cbct_volumes(tmp_path_factory) -> list[Path]:
    """Two synthetic CBCT volumes (NIfTI, 44x54x20 voxels, LPS affine) in one folder."""
    return write_cbct_volumes(tmp_path_factory.mktemp("cbct_volumes") / "volumes")
