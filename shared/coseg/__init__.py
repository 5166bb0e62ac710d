"""Co-Seg++: mutual prompt-guided collaborative semantic and instance segmentation.

Layers (imports point down, never up; the bundles' configs only wire):

1. ground floor -- :mod:`coseg.io` (readers, the one atomic writer), :mod:`coseg.errors`, :mod:`coseg.keys`,
   :mod:`coseg.constants` (SAM2 normalisation), :mod:`coseg.ops` (selective scan), :mod:`coseg.metrics`,
   :mod:`coseg.data` (datalists, label codec, splits), :mod:`coseg.visualize` (overlays);
2. model side -- :mod:`coseg.networks` (SAM2-Hiera encoder with adapters, SSP-Encoder, MTC-Decoder,
   CoSegPlusPlus), :mod:`coseg.losses`, :mod:`coseg.postprocess`, :mod:`coseg.transforms` (input checks and
   normalisation as MONAI transforms), :mod:`coseg.inferers`;
3. domains -- :mod:`coseg.histo` (H&E formats, QuPath GeoJSON, synthetic sample, inference outputs, report) and
   :mod:`coseg.dental` (ToothFairy2, slicing geometry, 3D teeth, FDI numbering, volume inference, report);
4. glue and applications -- :mod:`coseg.engines` (generic MONAI/ignite glue), :mod:`coseg.wsi` (whole-slide
   inference), :mod:`coseg.bundle` (packaging, MONAI Label), :mod:`coseg.experiments` (the paper's analyses).
"""

__version__ = "0.1.0"

_SUBPACKAGES = (
    "bundle",
    "constants",
    "data",
    "dental",
    "engines",
    "errors",
    "experiments",
    "histo",
    "inferers",
    "io",
    "keys",
    "losses",
    "metrics",
    "networks",
    "ops",
    "postprocess",
    "transforms",
    "visualize",
    "wsi",
)


def __getattr__(name: str):
    """Import sub-packages on first attribute access (``coseg.engines.X`` works after ``import coseg``)."""
    if name in _SUBPACKAGES:
        import importlib

        module = importlib.import_module(f"coseg.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'coseg' has no attribute {name!r}")
