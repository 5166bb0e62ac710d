"""Packaging of the bundles: self-contained bundle zips with a vendored ``coseg``, metadata checks, and the
single-tensor network view MONAI's tools expect.

``python -m coseg.bundle export bundles/coseg_histo dist/`` writes ``dist/coseg_histo_v<version>.zip`` (likewise
``bundles/coseg_cbct``); ``python -m coseg.bundle check bundles/coseg_histo`` lists metadata problems;
``python -m coseg.bundle extract coseg_histo_v<version>.zip DIR`` installs a zip after checking its members.
"""

from coseg.bundle.archive import check_bundle_zip, extract_bundle
from coseg.bundle.export import (
    VENDORED_FILE,
    apply_overrides,
    code_digest,
    export_bundle,
    package_files,
    parse_override,
)
from coseg.bundle.metadata import (
    PRED_SCHEMES,
    REQUIRED_METADATA_KEYS,
    TOOTHFAIRY2_PRED_IDS,
    check_class_map,
    check_metadata,
    config_class_problems,
    expected_channel_def,
    pred_scheme,
)
from coseg.bundle.monailabel import MONAILabelPredd
from coseg.bundle.network import ClassMapProbabilities, LabelVolumeOneHot

__all__ = [
    "PRED_SCHEMES",
    "REQUIRED_METADATA_KEYS",
    "TOOTHFAIRY2_PRED_IDS",
    "VENDORED_FILE",
    "ClassMapProbabilities",
    "LabelVolumeOneHot",
    "MONAILabelPredd",
    "apply_overrides",
    "check_bundle_zip",
    "check_class_map",
    "check_metadata",
    "code_digest",
    "config_class_problems",
    "expected_channel_def",
    "export_bundle",
    "extract_bundle",
    "package_files",
    "parse_override",
    "pred_scheme",
]
