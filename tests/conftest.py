"""Shared pytest fixtures.

``shared_dir`` is the read-only reference folder beside the repository (``../shared``): paper, fixtures of
official implementations and small real datasets. Tests that need it are skipped with a clear message when
it is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED_DIR / "fixtures").is_dir():
        pytest.skip(f"reference folder {SHARED_DIR} (../shared beside the repository) is absent")
    return SHARED_DIR


def pytest_configure(config) -> None:
    """One torch thread per xdist worker: ``-n 2`` on 2 cores would otherwise oversubscribe the CPU."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
