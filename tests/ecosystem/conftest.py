"""Fixtures for the packaging and MONAI Label tests: a copy of the histology bundle with micro-model weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HISTO = REPO / "bundles" / "coseg_histo"

#: export overrides that make the packaged bundle run the micro model on 64x64 images quickly on a CPU
MICRO_OVERRIDES = {
    "model_preset": "micro",
    "patch_size": 64,
    "num_workers": 0,
    "cache_rate": 0.0,
    "batch_size": 2,
    "val_interval": 1,
}


def make_source_bundle(dest: Path, *, seed: int = 0) -> Path:
    """Copy the histology bundle's configs, docs and LICENSE to ``dest`` (no weights, outputs or data of the working
    tree) and write ``models/model.pt``: a seeded, untrained micro model with the bundle's classes."""
    import torch

    from coseg.networks import CoSegPlusPlus

    dest.mkdir(parents=True)
    for item in ("configs", "docs"):
        shutil.copytree(HISTO / item, dest / item, ignore=shutil.ignore_patterns("monailabel_*"))
    shutil.copy(HISTO / "LICENSE", dest / "LICENSE")
    (dest / "models").mkdir()
    torch.manual_seed(seed)
    net = CoSegPlusPlus.from_preset("micro", num_sem_classes=3, num_inst_types=4, freeze_encoder=False)
    torch.save(net.state_dict(), dest / "models" / "model.pt")
    return dest


@pytest.fixture(scope="session")
def source_bundle(tmp_path_factory) -> Path:
    """A bundle folder like ``bundles/coseg_histo`` with micro-model weights in ``models/model.pt``."""
    return make_source_bundle(tmp_path_factory.mktemp("source") / "coseg_histo")


@pytest.fixture(scope="session")
def sample_images(tmp_path_factory) -> Path:
    """A synthetic prepared histology dataset: 8 images of 64x64 with their label maps."""
    from coseg.data.synthetic_histo import write_synthetic_dataset

    root = tmp_path_factory.mktemp("ecosystem_data") / "synthetic"
    write_synthetic_dataset(root, num_images=8, size=64, seed=11)
    return root
