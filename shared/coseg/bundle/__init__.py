"""Packaging of the bundles: self-contained bundle zips with a vendored ``coseg``, metadata checks, and the
single-tensor network view MONAI's tools expect.

``python -m coseg.bundle export bundles/coseg_histo dist/`` writes ``dist/coseg_histo_v<version>.zip``;
``python -m coseg.bundle check bundles/coseg_histo`` lists metadata problems.
"""

from coseg.bundle.export import (
    VENDORED_FILE,
    apply_overrides,
    code_digest,
    export_bundle,
    package_files,
    parse_override,
)
from coseg.bundle.metadata import REQUIRED_METADATA_KEYS, check_class_map, check_metadata, expected_channel_def
from coseg.bundle.monailabel import MONAILabelPredd
from coseg.bundle.network import ClassMapProbabilities

__all__ = [
    "REQUIRED_METADATA_KEYS",
    "VENDORED_FILE",
    "ClassMapProbabilities",
    "MONAILabelPredd",
    "apply_overrides",
    "check_class_map",
    "check_metadata",
    "code_digest",
    "expected_channel_def",
    "export_bundle",
    "package_files",
    "parse_override",
]
