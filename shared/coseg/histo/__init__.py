"""Histopathology (H&E): dataset formats and converters, QuPath GeoJSON, the synthetic sample, datalists,
stain augmentation, inference outputs and the evaluation report (the paper's Tables 1, 3, 5).

Converter: ``python -m coseg.histo.prepare`` (PUMA, GlaS, CRAG, CoNSeP tiles, folders).
"""

from __future__ import annotations

from coseg._lazy import attach

#: public name -> module that defines it (imported on first use: :func:`coseg._lazy.attach`)
_EXPORTS = {
    "ClassMap": "coseg.histo.formats",
    "ConsepTilesFormat": "coseg.histo.formats",
    "CragFormat": "coseg.histo.formats",
    "EvaluationReport": "coseg.histo.report",
    "FORMATS": "coseg.histo.formats",
    "FolderFormat": "coseg.histo.formats",
    "FormatOptions": "coseg.histo.formats",
    "GlasFormat": "coseg.histo.formats",
    "HistoFormat": "coseg.histo.formats",
    "HistoInferenceWriter": "coseg.histo.inference",
    "HistoSample": "coseg.histo.layout",
    "IMAGE_SUFFIXES": "coseg.histo.datalist",
    "LABEL_KINDS": "coseg.histo.layout",
    "LAYOUT_DIRS": "coseg.histo.layout",
    "LayoutWriter": "coseg.histo.layout",
    "PUMA_NUCLEI_MAP": "coseg.histo.formats",
    "PUMA_TISSUE_MAP": "coseg.histo.formats",
    "PumaFormat": "coseg.histo.formats",
    "QUPATH_OBJECT_TYPES": "coseg.histo.geojson",
    "RandHEDJitterd": "coseg.histo.transforms",
    "RawCase": "coseg.histo.formats",
    "SPLIT_NAMES": "coseg.histo.layout",
    "SYNTHETIC_INSTANCE_TYPES": "coseg.histo.synthetic",
    "SYNTHETIC_SEMANTIC_CLASSES": "coseg.histo.synthetic",
    "feature_class_name": "coseg.histo.geojson",
    "feature_polygons": "coseg.histo.geojson",
    "format_summary": "coseg.histo.layout",
    "generic_class_names": "coseg.histo.layout",
    "histo_datalist": "coseg.histo.datalist",
    "image_datalist": "coseg.histo.datalist",
    "instances_to_features": "coseg.histo.geojson",
    "load_features": "coseg.histo.geojson",
    "make_sample": "coseg.histo.synthetic",
    "mask_to_polygons": "coseg.histo.geojson",
    "normalize_class_name": "coseg.histo.formats",
    "polygon_mask": "coseg.histo.geojson",
    "polygons_geometry": "coseg.histo.geojson",
    "qupath_feature": "coseg.histo.geojson",
    "rasterize_instances": "coseg.histo.geojson",
    "rasterize_regions": "coseg.histo.geojson",
    "regions_to_features": "coseg.histo.geojson",
    "write_geojson": "coseg.histo.geojson",
    "write_histo_outputs": "coseg.histo.inference",
    "write_synthetic_dataset": "coseg.histo.synthetic",
}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
