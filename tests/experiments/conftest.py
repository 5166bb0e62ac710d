"""Fixtures of the experiment tests: the histology bundle, a 64x64 synthetic dataset, micro-model overrides."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from ..bundles.conftest import histo_bundle, histo_dataset, micro_overrides  # noqa: F401  (shared with the bundle tests)


@pytest.fixture(scope="session")
def second_dataset(tmp_path_factory) -> Path:
    """Another synthetic dataset (other seed; 5 training, 1 validation, 2 test images), an external test set."""
    from coseg.histo.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("external") / "synthetic"
    write_synthetic_dataset(root, num_images=8, size=64, seed=11)
    return root


@pytest.fixture(scope="package", autouse=True)
def _one_thread():
    """One torch thread while these tests run: with pytest -n 2 on two cores, two threads per worker oversubscribe
    the cores and the tiny trainings here became several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _quiet_logs():
    logging.getLogger("ignite").setLevel(logging.WARNING)
    yield
