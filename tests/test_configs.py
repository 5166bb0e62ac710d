"""Bundle config files parse and are plain ASCII.

MONAI opens config files in the locale's encoding; ITK/SimpleITK may switch the process locale to plain C/ASCII,
after which a non-ASCII character in a config (a name with an umlaut, a Greek letter) fails to decode.
"""

from __future__ import annotations

import json

import pytest

from .conftest import REPO_ROOT

CONFIGS = sorted((REPO_ROOT / "bundles").glob("*/configs/**/*.json"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_config_is_ascii_json(path):
    raw = path.read_bytes()
    bad = [i for i, b in enumerate(raw) if b > 127]
    assert not bad, f"{path}: non-ASCII byte at offset {bad[0]} (escape it as \\uXXXX)"
    json.loads(raw.decode("ascii"))


def test_both_bundles_have_the_model_zoo_file_set():
    for bundle in ("coseg_histo", "coseg_cbct"):
        root = REPO_ROOT / "bundles" / bundle
        for rel in (
            "LICENSE",
            "configs/metadata.json",
            "configs/train.json",
            "configs/evaluate.json",
            "configs/inference.json",
            "configs/multi_gpu_train.json",
            "configs/multi_gpu_evaluate.json",
            "configs/logging.conf",
            "configs/quickstart.json",
            "docs/README.md",
            "docs/data_license.txt",
        ):
            assert (root / rel).is_file(), f"{bundle} lacks {rel}"
