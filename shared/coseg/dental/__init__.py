"""Dental CBCT (ToothFairy2): label schemes and volume reading, slicing geometry, 3D tooth linking, FDI
numbering (learned or positional), reassembly of slice predictions, outputs, synthetic phantoms, training transforms
(tooth type schemes, side-swapping flips), volume inference and its report (the paper's Tables 2, 4, 6 and the
ToothFairy2 challenge's per-tooth scores).

Converter: ``python -m coseg.dental.prepare`` (ToothFairy2 volumes to 2D slices).
"""

from __future__ import annotations

from coseg._lazy import attach

#: public name -> module that defines it (imported on first use: :func:`coseg._lazy.attach`)
_EXPORTS = {
    "CbctCase": "coseg.dental.volumes",
    "CbctLabelMap": "coseg.dental.labels",
    "CheckVolumed": "coseg.dental.inference",
    "DentalEvaluationReport": "coseg.dental.report",
    "DentalInferenceWriter": "coseg.dental.inference",
    "DentalPrediction": "coseg.dental.assemble",
    "FDI_INSTANCE_TYPES": "coseg.dental.labels",
    "FDI_TEETH": "coseg.dental.labels",
    "GRID_ATOL_MM": "coseg.dental.volumes",
    "INSTANCE_TYPES": "coseg.dental.labels",
    "LabelTarget": "coseg.dental.labels",
    "LinkedInstances": "coseg.dental.link3d",
    "NUMBERINGS": "coseg.dental.assemble",
    "Phantom": "coseg.dental.synthetic",
    "RandLeftRightFlipd": "coseg.dental.transforms",
    "SEMANTIC_CLASSES": "coseg.dental.labels",
    "SLICE_AXES": "coseg.dental.geometry",
    "SliceGeometry": "coseg.dental.geometry",
    "TOOTHFAIRY2_LABELS": "coseg.dental.labels",
    "TOOTHFAIRY2_REGION_IDS": "coseg.dental.labels",
    "TOOTH_TYPE_SCHEMES": "coseg.dental.labels",
    "TOOTH_WIDTHS_MM": "coseg.dental.labels",
    "ToothTypesd": "coseg.dental.transforms",
    "UNNUMBERED_TOOTH_BASE": "coseg.dental.fdi",
    "VOLUME_SUFFIXES": "coseg.dental.volumes",
    "Volume": "coseg.dental.volumes",
    "VolumeSliceInferer": "coseg.dental.inference",
    "apply_window": "coseg.dental.geometry",
    "assemble_dental_prediction": "coseg.dental.assemble",
    "assign_fdi_numbers": "coseg.dental.assemble",
    "build_label_map": "coseg.dental.labels",
    "cbct_cases": "coseg.dental.inference",
    "cbct_datalist": "coseg.dental.inference",
    "check_tooth_types": "coseg.dental.transforms",
    "check_volume_pair": "coseg.dental.volumes",
    "combined_toothfairy2": "coseg.dental.assemble",
    "dataset_tooth_types": "coseg.dental.transforms",
    "fdi_class_lut": "coseg.dental.labels",
    "fdi_class_stats": "coseg.dental.report",
    "fdi_type": "coseg.dental.labels",
    "fdi_votes": "coseg.dental.assemble",
    "find_toothfairy2_cases": "coseg.dental.volumes",
    "grid_distance": "coseg.dental.volumes",
    "heuristic_teeth": "coseg.dental.report",
    "left_right_axis": "coseg.dental.transforms",
    "link_instances_3d": "coseg.dental.link3d",
    "make_model_slices": "coseg.dental.geometry",
    "make_phantom": "coseg.dental.synthetic",
    "mirror_fdi": "coseg.dental.labels",
    "mirror_type_lut": "coseg.dental.labels",
    "normalize_label_name": "coseg.dental.labels",
    "number_teeth_fdi": "coseg.dental.fdi",
    "parse_label_target": "coseg.dental.labels",
    "parse_tooth_name": "coseg.dental.labels",
    "phantom_affine": "coseg.dental.synthetic",
    "read_case": "coseg.dental.volumes",
    "read_dataset_json": "coseg.dental.labels",
    "read_volume": "coseg.dental.volumes",
    "render_montage": "coseg.dental.outputs",
    "slice_geometry": "coseg.dental.geometry",
    "slices_to_volume": "coseg.dental.geometry",
    "structure_summary": "coseg.dental.assemble",
    "summarize_fdi": "coseg.dental.report",
    "tooth_identification": "coseg.dental.report",
    "tooth_type_lut": "coseg.dental.labels",
    "tooth_type_names": "coseg.dental.labels",
    "volume_datalist": "coseg.dental.inference",
    "write_dental_outputs": "coseg.dental.outputs",
    "write_nifti_like": "coseg.dental.outputs",
    "write_png": "coseg.dental.outputs",
    "write_toothfairy2_like": "coseg.dental.synthetic",
}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
