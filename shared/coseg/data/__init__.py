"""Data preparation: dataset converters, readers, label codec, splits, synthetic samples, CBCT volumes.

Command-line converters (run them with ``python -m``): ``coseg.data.prepare_histo`` (PUMA, GlaS, CRAG,
CoNSeP tiles, folders) and ``coseg.data.prepare_cbct`` (ToothFairy2 volumes to 2D slices).

The names below are imported lazily (PEP 562), so that the converters start without importing torch/MONAI.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CBCT_INSTANCE_TYPES": ("coseg.data.cbct", "INSTANCE_TYPES"),
    "CBCT_SEMANTIC_CLASSES": ("coseg.data.cbct", "SEMANTIC_CLASSES"),
    "build_label_map": ("coseg.data.cbct", "build_label_map"),
    "find_toothfairy2_cases": ("coseg.data.cbct", "find_toothfairy2_cases"),
    "read_volume": ("coseg.data.cbct", "read_volume"),
    "InputFileError": ("coseg.data.errors", "InputFileError"),
    "instances_to_features": ("coseg.data.geojson", "instances_to_features"),
    "load_features": ("coseg.data.geojson", "load_features"),
    "regions_to_features": ("coseg.data.geojson", "regions_to_features"),
    "write_geojson": ("coseg.data.geojson", "write_geojson"),
    "read_label": ("coseg.data.io", "read_label"),
    "read_rgb": ("coseg.data.io", "read_rgb"),
    "write_label": ("coseg.data.io", "write_label"),
    "write_rgb": ("coseg.data.io", "write_rgb"),
    "DecodeLabeld": ("coseg.data.label_codec", "DecodeLabeld"),
    "decode": ("coseg.data.label_codec", "decode"),
    "encode": ("coseg.data.label_codec", "encode"),
    "label_capacity": ("coseg.data.label_codec", "label_capacity"),
    "split_groups": ("coseg.data.split", "split_groups"),
    "make_phantom": ("coseg.data.synthetic_cbct", "make_phantom"),
    "write_toothfairy2_like": ("coseg.data.synthetic_cbct", "write_toothfairy2_like"),
    "make_sample": ("coseg.data.synthetic_histo", "make_sample"),
    "write_synthetic_dataset": ("coseg.data.synthetic_histo", "write_synthetic_dataset"),
    "SliceGeometry": ("coseg.data.volume", "SliceGeometry"),
    "assemble_dental_prediction": ("coseg.data.volume", "assemble_dental_prediction"),
    "make_model_slices": ("coseg.data.volume", "make_model_slices"),
    "slice_geometry": ("coseg.data.volume", "slice_geometry"),
    "write_dental_outputs": ("coseg.data.volume", "write_dental_outputs"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'coseg.data' has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
