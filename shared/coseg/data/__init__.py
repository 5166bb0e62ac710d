"""Domain-free data helpers: datalists of prepared datasets, the label codec of class-map labels, splits.

Histology formats live in :mod:`coseg.histo`, dental CBCT in :mod:`coseg.dental`.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> module (imported on first use, PEP 562: the converters start without importing torch/MONAI)
_EXPORTS = {
    "DecodeLabeld": "coseg.data.label_codec",
    "PATH_KEYS": "coseg.data.datalist",
    "check_dataset_classes": "coseg.data.datalist",
    "class_map_names": "coseg.data.label_codec",
    "dataset_classes": "coseg.data.datalist",
    "decode": "coseg.data.label_codec",
    "decode_class_map": "coseg.data.label_codec",
    "encode": "coseg.data.label_codec",
    "encode_class_map": "coseg.data.label_codec",
    "label_capacity": "coseg.data.label_codec",
    "read_datalist": "coseg.data.datalist",
    "split_groups": "coseg.data.split",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
