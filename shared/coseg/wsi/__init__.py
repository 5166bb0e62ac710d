"""Whole-slide and large-image inference: tiles streamed through the network, nuclei merged across tile borders.

- :class:`WholeSlideInferer`: the entry point the bundle (``inference.json``) and ``python -m coseg.wsi`` use; it
  only orchestrates the modules below.
- :mod:`coseg.wsi.settings`: its settings, in frozen, self-checking groups (:class:`ReadSettings`,
  :class:`TileSettings`, :class:`OutputSettings`) and the window settings read from the configured inferer.
- :mod:`coseg.wsi.reader`: pyramidal TIFF / SVS / NDPI / plain images through MONAI's ``WSIReader`` backends, at a
  level or a target microns-per-pixel, with a region of interest.
- :mod:`coseg.wsi.tiling`: network windows (exactly MONAI's) and processing tiles.
- :mod:`coseg.wsi.stream`: MONAI's sliding-window blending streamed strip by strip with bounded memory.
- :mod:`coseg.wsi.merge`: per-tile post-processing and the union-find merge of pieces across tile borders.
- :mod:`coseg.wsi.parts`: the per-tile records and the parts folder that makes a run resumable.
- :mod:`coseg.wsi.workers`: the worker processes that post-process tiles beside the network and write the outputs
  (:class:`WorkerPool`, a bounded queue; a dead worker raises :class:`WorkerError`).
- :mod:`coseg.wsi.writer`: pyramidal label TIFFs, the instance table, the slide's QuPath features (written by
  :func:`coseg.histo.geojson.write_geojson`), the summary counts, the overlay.
- :mod:`coseg.wsi.tissue`: tissue detection to skip empty glass.
- :mod:`coseg.wsi.routing`: routing of large inputs in the bundle and building the inferer from a bundle config.
"""

from coseg.wsi.merge import MergeResult, merge_tiles, process_tile, reduce_outputs
from coseg.wsi.parts import SlideFiles, TileRecord
from coseg.wsi.reader import LevelInfo, SlideReader, TiledTiffFileWSIReader, WorkingImage, image_size
from coseg.wsi.routing import InputRoute, route_inputs, run_inference, wsi_inferer_from_bundle
from coseg.wsi.run import SlideResult, WholeSlideInferer, load_network_weights
from coseg.wsi.settings import OutputSettings, ReadSettings, TileSettings, WindowSettings, group_options
from coseg.wsi.stream import WindowStream
from coseg.wsi.tiling import Box, TilePlan, WindowGrid, contiguous_runs, split_among_ranks, window_grid
from coseg.wsi.tissue import active_tiles, tissue_mask
from coseg.wsi.workers import WorkerError, WorkerPool, default_workers
from coseg.wsi.writer import write_label_pyramid

__all__ = [
    "Box",
    "InputRoute",
    "LevelInfo",
    "MergeResult",
    "OutputSettings",
    "ReadSettings",
    "SlideFiles",
    "SlideReader",
    "SlideResult",
    "TilePlan",
    "TileRecord",
    "TileSettings",
    "TiledTiffFileWSIReader",
    "WholeSlideInferer",
    "WindowGrid",
    "WindowSettings",
    "WindowStream",
    "WorkerError",
    "WorkerPool",
    "WorkingImage",
    "active_tiles",
    "contiguous_runs",
    "default_workers",
    "group_options",
    "image_size",
    "load_network_weights",
    "merge_tiles",
    "process_tile",
    "reduce_outputs",
    "route_inputs",
    "run_inference",
    "split_among_ranks",
    "tissue_mask",
    "window_grid",
    "write_label_pyramid",
    "wsi_inferer_from_bundle",
]
