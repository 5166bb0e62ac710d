"""Co-Seg++: mutual prompt-guided collaborative semantic and instance segmentation.

Sub-packages (dependencies point one way: ops <- networks; losses, postprocess, metrics, data beside them;
engines use all of them; the bundles only wire):

- :mod:`coseg.ops`          selective scan (mamba_ssm kernel on CUDA when installed, pure PyTorch otherwise)
- :mod:`coseg.networks`     SAM2-Hiera image encoder with adapters, SSP-Encoder, MTC-Decoder, CoSegPlusPlus
- :mod:`coseg.losses`       targets from label maps and the Co-Seg++ training objective
- :mod:`coseg.postprocess`  instance maps from binary + HV outputs, semantic clean-up
- :mod:`coseg.metrics`      Dice / mIoU / Hausdorff, AJI / PQ / F1 and their MONAI/ignite wrappers
- :mod:`coseg.data`         dataset converters, readers and synthetic samples
- :mod:`coseg.engines`      MONAI/ignite glue used by the bundle configs
- :mod:`coseg.bundle`       exporting self-contained bundle packages, MONAI Label adapters
- :mod:`coseg.wsi`          whole-slide / large-image inference (tiled, streamed, resumable, distributed)
"""

__version__ = "0.1.0"

_SUBPACKAGES = (
    "bundle",
    "constants",
    "data",
    "engines",
    "keys",
    "losses",
    "metrics",
    "networks",
    "ops",
    "postprocess",
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
