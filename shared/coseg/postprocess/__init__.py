"""Post-processing of the network outputs: instances from binary + HV maps, semantic clean-up.

- :func:`postprocess_outputs`: the whole output dict (one image or a batch) to label maps and tables.
- :func:`instances_from_outputs`, :func:`hv_watershed`, :func:`instance_table`: HoVer-Net's watershed and
  per-instance properties (type vote, centroid, box, area, contour) for one image.
- :class:`WatershedParams`, :func:`params_for_resolution`, :func:`watershed_settings`: settings, 40x defaults
  scaled to other resolutions and object sizes.
- :func:`semantic_map`, :func:`remove_small_regions`: argmax and small-region removal.
- :class:`CoSegPostProcessd`: all of it as a MONAI dictionary transform for the bundles' evaluators.
- :mod:`coseg.postprocess.synthetic`: synthetic instance maps and perfect outputs for tests and benchmarks.

Nothing here imports a network or a loss.
"""

from coseg.postprocess.batch import PostprocessResult, postprocess_outputs
from coseg.postprocess.instances import (
    REFERENCE_MAGNIFICATION,
    REFERENCE_MPP,
    InstanceResult,
    InstanceTable,
    WatershedParams,
    hv_watershed,
    instance_table,
    instances_from_outputs,
    params_for_resolution,
    watershed_settings,
)
from coseg.postprocess.semantic import remove_small_regions, semantic_map
from coseg.postprocess.transforms import CoSegPostProcessd, PredKeys

__all__ = [
    "CoSegPostProcessd",
    "PredKeys",
    "REFERENCE_MAGNIFICATION",
    "REFERENCE_MPP",
    "InstanceResult",
    "InstanceTable",
    "PostprocessResult",
    "WatershedParams",
    "hv_watershed",
    "instance_table",
    "instances_from_outputs",
    "params_for_resolution",
    "postprocess_outputs",
    "remove_small_regions",
    "semantic_map",
    "watershed_settings",
]
