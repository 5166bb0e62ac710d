"""Fixtures for running the real bundle configs through ``ConfigWorkflow`` on tiny data with the micro model."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def histo_bundle() -> Path:
    return REPO / "bundles" / "coseg_histo"


@pytest.fixture(scope="session")
def histo_dataset(tmp_path_factory) -> Path:
    """A synthetic prepared histology dataset: 8 images of 64x64 (5 train, 1 validation, 2 test)."""
    from coseg.histo.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("histo_data") / "synthetic"
    write_synthetic_dataset(root, num_images=8, size=64, seed=3)
    return root


def micro_overrides(dataset_dir: Path, work: Path | None = None, **extra) -> dict:
    """Overrides that make a bundle train the micro model on 64x64 images quickly (no workers, no cache), writing
    checkpoints and logs into ``work`` when given. The micro preset has no SAM2 checkpoint (none can be downloaded
    here): its encoder trains from random weights, which train.json allows only when told."""
    out = {
        "dataset_dir": str(dataset_dir),
        "model_preset": "micro",
        "allow_random_encoder": True,
        "patch_size": 64,
        "epochs": 1,
        "batch_size": 2,
        "val_interval": 1,
        "num_workers": 0,
        "cache_rate": 0.0,
    }
    if work is not None:
        out.update({"ckpt_dir": str(work / "models"), "output_dir": str(work / "eval")})
    out.update(extra)
    return out


@pytest.fixture(autouse=True)
def _quiet_logs():
    logging.getLogger("ignite").setLevel(logging.WARNING)
    yield
