"""Domain-free data helpers: datalists of prepared datasets, the label codec of class-map labels, splits, instance
maps kept whole through resampling.

Histology formats live in :mod:`coseg.histo`, dental CBCT in :mod:`coseg.dental`.
"""

from __future__ import annotations

from coseg._lazy import attach

#: public name -> module that defines it (imported on first use: :func:`coseg._lazy.attach`)
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
    "keep_instances_whole": "coseg.data.resize",
    "label_capacity": "coseg.data.label_codec",
    "read_datalist": "coseg.data.datalist",
    "split_groups": "coseg.data.split",
}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
