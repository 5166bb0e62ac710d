"""Whole-slide inference: plan, stream, post-process, persist, merge and write, resumable and distributed.

:class:`WholeSlideInferer` takes the same objects as the bundle's ``inference.json`` (network, sliding-window
inferer, preprocessing, watershed settings, class names), so the whole-image and the whole-slide paths cannot drift
apart: the windows, their blending, the input normalisation and the watershed settings are the configured ones.

For each input image or slide:

1. **Plan**: the working resolution and region (:class:`~coseg.wsi.reader.WorkingImage`), the tiles and network
   windows (:class:`~coseg.wsi.tiling.TilePlan`), the tiles holding tissue (:mod:`coseg.wsi.tissue`).
2. **Tiles**: the network streams strip by strip (:class:`~coseg.wsi.stream.WindowStream`); every tile whose
   context is final is post-processed (:func:`~coseg.wsi.merge.process_tile`, in a worker thread, overlapping the
   network) and saved as ``<output>/.<name>.parts/tile_<row>_<col>.npz``. These records make the run resumable: a
   rerun with the same settings skips the tiles already saved (``plan.json`` holds the settings; a rerun with
   different settings is refused unless ``overwrite``).
3. **Merge and write** (once every tile is saved): pieces are joined across tile borders
   (:func:`~coseg.wsi.merge.merge_tiles`) and the outputs are written: ``<name>_inst.tif`` / ``<name>_type.tif`` /
   ``<name>_sem.tif`` (tiled pyramidal TIFFs of the region at the working resolution), ``<name>.geojson`` (every
   nucleus as a QuPath detection with its type, tissue regions as annotations, level-0 pixel coordinates),
   ``<name>_instances.csv``, ``<name>_overlay.png`` and ``<name>_summary.json`` (counts per type and tissue class,
   tissue areas, nuclei per mm²).

Under ``torch.distributed`` (e.g. ``torchrun``), every process takes a contiguous share of the remaining tiles of
each slide (:func:`~coseg.wsi.tiling.split_among_ranks`), all write their records into the same parts folder (a
shared file system across nodes), and rank 0 merges and writes after a barrier.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import numbers
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.handlers import Checkpoint
from monai.transforms import Compose, LoadImage, LoadImaged
from PIL import Image
from tqdm import tqdm

from coseg.errors import InputFileError
from coseg.histo.geojson import qupath_feature, write_geojson
from coseg.inferers import FULL_RESOLUTION_OUTPUTS
from coseg.io import atomic_write_path
from coseg.postprocess import WatershedParams, remove_small_regions
from coseg.transforms import CheckRGBd, SAM2Normalized
from coseg.wsi.merge import (
    MergeResult,
    TileRecord,
    group_polygons,
    load_record,
    merge_tiles,
    process_tile,
    record_name,
    records_in,
    reduce_outputs,
    save_record,
)
from coseg.wsi.reader import SlideReader, WorkingImage
from coseg.wsi.stream import WindowStream
from coseg.wsi.tiling import Box, TilePlan, contiguous_runs, split_among_ranks
from coseg.wsi.tissue import active_tiles, tissue_mask
from coseg.wsi.writer import draw_overlay, region_polygons, write_label_pyramid

__all__ = ["WholeSlideInferer", "SlideResult", "load_network_weights"]

logger = logging.getLogger(__name__)

PLAN_VERSION = 1


@dataclass
class SlideResult:
    """What :meth:`WholeSlideInferer.run_slide` did for one input.

    Attributes:
        image: the input file.
        complete: all tiles are processed and the outputs written.
        outputs: ``{kind: path}`` of the written files (empty when not complete).
        summary: the content of ``<name>_summary.json`` (empty when not complete).
        tiles_done_now: tiles this process computed in this call.
        tiles_remaining: active tiles without a record after this call (all processes).
    """

    image: str
    complete: bool
    outputs: dict[str, str]
    summary: dict[str, Any]
    tiles_done_now: int
    tiles_remaining: int


def load_network_weights(network: torch.nn.Module, path: str | os.PathLike, *, device: torch.device | str) -> None:
    """Load a bundle checkpoint into ``network`` the way the bundle's ``CheckpointLoader`` does (a state dict, or
    a dict holding it under ``"model"``; strict).

    Raises:
        InputFileError: the file is missing or holds no matching state dict.
    """
    p = Path(path)
    if not p.is_file():
        raise InputFileError(p, "checkpoint does not exist (train the bundle first or pass --checkpoint)")
    try:
        state = torch.load(p, map_location=device, weights_only=True)
        if not isinstance(state, Mapping):
            raise TypeError(f"checkpoint holds a {type(state).__name__}, not a state dict")
        if "model" not in state:
            state = {"model": state}
        Checkpoint.load_objects(to_load={"model": network}, checkpoint=state, strict=True)
    except Exception as exc:  # torch.load raises many types (UnpicklingError, RuntimeError, zip errors, ...)
        raise InputFileError(p, f"cannot load the network weights ({type(exc).__name__}: {exc})") from exc


def _file_identity(path: str | os.PathLike | None) -> dict[str, Any] | None:
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        return {"path": str(p)}
    st = p.stat()
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _dist() -> tuple[Any, int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed, torch.distributed.get_rank(), torch.distributed.get_world_size()
    return None, 0, 1


def _image_transforms(preprocessing: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The configured preprocessing without its loader (the slide reader replaces it)."""
    if preprocessing is None:
        return Compose([CheckRGBd(keys="image"), SAM2Normalized(keys="image")])
    transforms = getattr(preprocessing, "transforms", None)
    if transforms is None:
        return preprocessing
    return Compose([t for t in transforms if not isinstance(t, (LoadImage, LoadImaged))])


def _positive(name: str, value: Any, *, integer: bool = False, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    kinds = (int, np.integer) if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
        raise ValueError(f"{name} must be a positive {'integer' if integer else 'number'}, got {value!r}")
    return value


class WholeSlideInferer:
    """Run Co-Seg++ over images and slides of any size (module docstring).

    Args:
        network: the Co-Seg++ network (``inference.json``: ``network``).
        inferer: the configured :class:`~coseg.inferers.CoSegSlidingWindowInferer` (window size, overlap, blending,
            batch); its settings drive the streamed windows.
        sem_classes, inst_types: class names by index, background included (``inference.json``).
        output_dir: where the outputs go (one set of files per input, named after it).
        preprocessing: the configured preprocessing; its loaders are dropped, the rest (RGB check, SAM2
            normalisation) is applied to every window band. Default: ``CheckRGBd`` + ``SAM2Normalized``.
        watershed: the watershed settings (``inference.json``: ``watershed``, the object the whole-image
            post-processing uses too). Their ``mpp`` (set from the config's ``magnification``) is the resolution the
            model was trained at: the default working resolution, and slides read at another resolution get the
            settings scaled to it. Without ``mpp``: level 0 by default, settings used as they are.
        sem_min_size: semantic regions smaller than this are absorbed by their neighbours (``inference.json``:
            ``sem_min_size``, as the whole-image post-processing).
        checkpoint: network weights to load before the first slide (``inference.json``: ``ckpt_path``).
        device: where the network runs; default the network's device.
        amp, amp_kwargs: autocast as in the bundle's evaluator.
        level: read this pyramid level as it is.
        mpp: work at this many micrometres per pixel (resampling when no level matches within 5 %).
        roi: ``(x, y, w, h)`` region of interest in level-0 pixels.
        backend: slide reader backend (:class:`~coseg.wsi.reader.SlideReader`).
        slide_mpp: level-0 pixel size for files that do not record it.
        tile_size: tile side in working pixels (a multiple of ``output_tile``).
        margin: context around each tile for post-processing; default three Sobel kernels of the watershed
            (63 px at 40x).
        tissue_detection: skip tiles without tissue (:mod:`coseg.wsi.tissue`).
        tissue_min_fraction: share of a tile's context that must be tissue.
        memory_budget_mb: bound on the network's blending buffers and the streamed rows; sets the strip width.
        output_tile: tile side of the output TIFFs.
        overview_size: longest side of the overlay picture and of the thumbnail used for tissue detection.
        region_max_size: tissue regions are outlined on the semantic map sampled so its longer side is at most this.
        region_min_um2: tissue regions and holes smaller than this (square micrometres) are left out of the outlines.
        max_tiles: stop after this many tiles per process (resume later by running again).
        keep_parts: keep the tile records after the outputs are written.
        overwrite: discard records of an earlier run with other settings, and recompute finished outputs.
        workers: threads that post-process tiles while the network runs (0: in the main thread).
        progress: show a progress bar (tiles, tiles/s) on rank 0.

    Raises:
        ValueError: for inconsistent or out-of-range settings.
    """

    def __init__(
        self,
        *,
        network: torch.nn.Module,
        inferer: Any,
        sem_classes: Mapping[Any, str],
        inst_types: Mapping[Any, str],
        output_dir: str | os.PathLike,
        preprocessing: Any = None,
        watershed: WatershedParams,
        sem_min_size: int = 1,
        checkpoint: str | os.PathLike | None = None,
        device: torch.device | str | None = None,
        amp: bool = False,
        amp_kwargs: Mapping[str, Any] | None = None,
        level: int | None = None,
        mpp: float | None = None,
        roi: Sequence[float] | None = None,
        backend: str = "auto",
        slide_mpp: float | None = None,
        tile_size: int = 2048,
        margin: int | None = None,
        tissue_detection: bool = True,
        tissue_min_fraction: float = 0.0,
        memory_budget_mb: float = 2048,
        output_tile: int = 256,
        overview_size: int = 2048,
        region_max_size: int = 2048,
        region_min_um2: float = 2500.0,
        max_tiles: int | None = None,
        keep_parts: bool = False,
        overwrite: bool = False,
        workers: int = 1,
        progress: bool = True,
    ) -> None:
        self.network = network
        self.sem_classes = {int(k): str(v) for k, v in sem_classes.items()}
        self.inst_types = {int(k): str(v) for k, v in inst_types.items()}
        if sorted(self.sem_classes) != list(range(len(self.sem_classes))) or len(self.sem_classes) < 2:
            raise ValueError(f"sem_classes must name classes 0..S-1 (S >= 2), got {dict(sem_classes)}")
        if sorted(self.inst_types) != list(range(len(self.inst_types))) or len(self.inst_types) < 2:
            raise ValueError(f"inst_types must name types 0..K-1 (K >= 2), got {dict(inst_types)}")
        self.output_dir = Path(output_dir)
        # the window settings of the configured inferer
        roi_size = getattr(inferer, "roi_size", None)
        if roi_size is None:
            raise TypeError(f"inferer must be a MONAI SlidingWindowInferer, got {type(inferer).__name__}")
        roi_size = (roi_size, roi_size) if isinstance(roi_size, (int, np.integer)) else tuple(roi_size)
        if len(roi_size) != 2:
            raise ValueError(f"the inferer's roi_size must be 2D, got {roi_size}")
        overlap = inferer.overlap
        self.overlap = (float(overlap), float(overlap)) if isinstance(overlap, numbers.Real) else tuple(overlap)
        self.roi_size = (int(roi_size[0]), int(roi_size[1]))
        self.sw_batch_size = int(inferer.sw_batch_size)
        self.blend_mode = str(getattr(inferer.mode, "value", inferer.mode))
        self.sigma_scale = inferer.sigma_scale
        self.padding_mode = str(getattr(inferer.padding_mode, "value", inferer.padding_mode))
        self.cval = float(inferer.cval)
        self.keep = tuple(getattr(inferer, "keep", FULL_RESOLUTION_OUTPUTS))
        self.transforms = _image_transforms(preprocessing)
        if not isinstance(watershed, WatershedParams):
            raise TypeError(f"watershed must be a WatershedParams, got {type(watershed).__name__}")
        self.watershed = watershed
        self.sem_min_size = int(_positive("sem_min_size", sem_min_size, integer=True))
        self.model_mpp = watershed.mpp
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self._weights_loaded = checkpoint is None
        if device is None:
            first = next(iter(network.parameters()), None)
            device = first.device if first is not None else "cpu"
        self.device = torch.device(device)
        self.amp = bool(amp)
        self.amp_kwargs = dict(amp_kwargs or {})
        if level is not None and mpp is not None:
            raise ValueError("give a level or a target mpp, not both")
        self.level = None if level is None else int(level)
        self.mpp = _positive("mpp", mpp, allow_none=True)
        if roi is not None and len(roi) != 4:
            raise ValueError(f"roi must be (x, y, w, h) in level-0 pixels, got {roi!r}")
        self.roi = None if roi is None else tuple(float(v) for v in roi)
        self.backend = backend
        self.slide_mpp = _positive("slide_mpp", slide_mpp, allow_none=True)
        self.output_tile = int(_positive("output_tile", output_tile, integer=True))
        if self.output_tile % 16:
            raise ValueError(f"output_tile must be a multiple of 16, got {output_tile}")
        self.tile_size = int(_positive("tile_size", tile_size, integer=True))
        if self.tile_size % self.output_tile:
            raise ValueError(f"tile_size ({tile_size}) must be a multiple of output_tile ({output_tile})")
        self.margin = None if margin is None else int(_positive("margin", margin, integer=True))
        self.tissue_detection = bool(tissue_detection)
        self.tissue_min_fraction = float(tissue_min_fraction)
        self.memory_budget = float(_positive("memory_budget_mb", memory_budget_mb)) * 2**20
        self.overview_size = int(_positive("overview_size", overview_size, integer=True))
        self.region_max_size = int(_positive("region_max_size", region_max_size, integer=True))
        self.region_min_um2 = float(_positive("region_min_um2", region_min_um2))
        self.max_tiles = None if max_tiles is None else int(_positive("max_tiles", max_tiles, integer=True))
        self.keep_parts = bool(keep_parts)
        self.overwrite = bool(overwrite)
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
            raise ValueError(f"workers must be an integer >= 0, got {workers!r}")
        self.workers = int(workers)
        self.progress = bool(progress)

    # ---- setup ------------------------------------------------------------------------------------------------

    def _prepare_network(self) -> None:
        if not self._weights_loaded:
            load_network_weights(self.network, self.checkpoint, device=self.device)
            self._weights_loaded = True
        self.network.to(self.device).eval()

    def _watershed_for(self, image: WorkingImage) -> WatershedParams:
        mpp = image.mpp
        if mpp is None or self.model_mpp is None:
            return self.watershed
        ratio = self.model_mpp / mpp[1]
        if abs(ratio - 1.0) <= 0.05:
            return self.watershed
        logger.warning(
            "working at %.3f um/px while the model was trained at %.3f um/px: watershed settings scaled by %.2f",
            mpp[1],
            self.model_mpp,
            ratio,
        )
        return dataclasses.replace(self.watershed.scaled(ratio), mpp=mpp[1])

    def _plan(self, image: WorkingImage, watershed: WatershedParams) -> TilePlan:
        margin = self.margin if self.margin is not None else max(16, 3 * watershed.sobel_kernel_size)
        tile = self.tile_size
        if max(image.height, image.width) <= tile:
            # one tile: round up to whole output tiles so the record's bands line up with the TIFF tiles
            tile = math.ceil(max(image.height, image.width) / self.output_tile) * self.output_tile
        margin = min(margin, tile)
        channels = len(self.sem_classes) + 4 + len(self.inst_types) + 1
        interval = max(1, int(self.roi_size[0] * (1 - self.overlap[0])))
        per_column = (self.roi_size[0] + interval) * channels * 4 + (tile + 2 * margin) * 14
        strip_width = max(tile, int(self.memory_budget // per_column))
        return TilePlan(
            height=image.height,
            width=image.width,
            tile_size=tile,
            margin=margin,
            roi_size=self.roi_size,
            overlap=self.overlap,
            strip_tiles=max(1, strip_width // tile),
        )

    def _settings(self, path: Path, image: WorkingImage, plan: TilePlan, watershed: WatershedParams) -> dict[str, Any]:
        low_step = max(1, math.ceil(max(plan.height, plan.width) / self.region_max_size))
        return {
            "version": PLAN_VERSION,
            "input": _file_identity(path),
            "checkpoint": _file_identity(self.checkpoint),
            "network": self._network_digest(),
            "level": image.level,
            "scale": image.scale,
            "roi": list(image.roi),
            "tile_size": plan.tile_size,
            "margin": plan.margin,
            "strip_tiles": plan.strip_tiles,
            "roi_size": list(self.roi_size),
            "overlap": list(self.overlap),
            "blend": [self.blend_mode, _plain(self.sigma_scale)],
            "watershed": {k: getattr(watershed, k) for k in watershed.__dataclass_fields__},
            "sem_min_size": self.sem_min_size,
            "sem_classes": self.sem_classes,
            "inst_types": self.inst_types,
            "low_step": low_step,
            "region_min_um2": self.region_min_um2,
            "output_tile": self.output_tile,
            "tissue_detection": self.tissue_detection,
            "tissue_min_fraction": self.tissue_min_fraction,
        }

    def _network_digest(self) -> str:
        """A fingerprint of the network's weights (a resumed run must use the same ones)."""
        h = hashlib.sha1()
        for name, tensor in sorted(self.network.state_dict().items()):
            h.update(name.encode())
            t = tensor.detach().float().cpu().flatten()
            h.update(np.asarray([t.numel(), float(t.sum()), float(t.abs().sum())], np.float64).tobytes())
        return h.hexdigest()

    # ---- public ------------------------------------------------------------------------------------------------

    def __call__(self, inputs: str | os.PathLike | Sequence[Any]) -> list[SlideResult]:
        """Run on one path, a list of paths, or datalist items ``{"image": path}``.

        Returns:
            one :class:`SlideResult` per input.
        """
        if isinstance(inputs, (str, os.PathLike)):
            inputs = [inputs]
        paths = [item["image"] if isinstance(item, Mapping) else item for item in inputs]
        return [self.run_slide(p) for p in paths]

    def run_slide(self, path: str | os.PathLike) -> SlideResult:
        """Process one image or slide (module docstring).

        Args:
            path: the input file.

        Returns:
            the :class:`SlideResult`.

        Raises:
            InputFileError: an unreadable input or checkpoint.
            ValueError: a parts folder holding a run with other settings (without ``overwrite``), or settings that
                do not fit the input (a level it lacks, a region outside it, an mpp it does not record).
        """
        dist, rank, world = _dist()
        path = Path(path)
        name = path.stem[:-4] if path.stem.lower().endswith(".ome") else path.stem
        outputs = {
            "inst": self.output_dir / f"{name}_inst.tif",
            "type": self.output_dir / f"{name}_type.tif",
            "sem": self.output_dir / f"{name}_sem.tif",
            "geojson": self.output_dir / f"{name}.geojson",
            "instances": self.output_dir / f"{name}_instances.csv",
            "overlay": self.output_dir / f"{name}_overlay.png",
            "summary": self.output_dir / f"{name}_summary.json",
        }
        parts = self.output_dir / f".{name}.parts"
        self._prepare_network()
        with SlideReader(path, backend=self.backend, slide_mpp=self.slide_mpp) as reader:
            image = WorkingImage.from_reader(
                reader, level=self.level, mpp=self.mpp, default_mpp=self.model_mpp, roi_level0=self.roi
            )
            watershed = self._watershed_for(image)
            plan = self._plan(image, watershed)
            settings = self._settings(path, image, plan, watershed)
            thumbnail = _Once(lambda: image.thumbnail(self.overview_size))

            # rank 0 checks earlier work and decides which tiles hold tissue; the others follow
            if dist is None:
                _, active, finished = self._prepare_parts(parts, outputs, plan, settings, thumbnail)
            else:
                message: list[Any] = [None, None, None]
                if rank == 0:
                    try:
                        message = self._prepare_parts(parts, outputs, plan, settings, thumbnail)
                    except (ValueError, InputFileError) as exc:  # tell the other ranks, then fail everywhere
                        message = [f"{type(exc).__name__}: {exc}", None, None]
                device = self.device if self.device.type == "cuda" else None
                dist.broadcast_object_list(message, src=0, device=device)
                error, active, finished = message
                if error is not None:
                    raise ValueError(error)
            if finished is not None:
                logger.info("%s: outputs exist and match the settings; skipped", path)
                return SlideResult(str(path), True, {k: str(v) for k, v in outputs.items()}, finished, 0, 0)
            active = [tuple(t) for t in active]

            done = set(records_in(parts))
            todo = [t for t in active if t not in done]
            mine = split_among_ranks(todo, world)[rank]
            if self.max_tiles is not None:
                mine = mine[: self.max_tiles]
            tiles_start = time.perf_counter()
            computed = self._process_tiles(image, plan, mine, parts, watershed, settings, label=name)
            tiles_s = time.perf_counter() - tiles_start
            if dist is not None:
                dist.barrier()
            remaining = [t for t in active if t not in records_in(parts)]
            if remaining:
                if rank == 0:
                    logger.info("%s: %d of %d tiles remain; run again to continue", path, len(remaining), len(active))
                return SlideResult(str(path), False, {}, {}, computed, len(remaining))
            if rank != 0:
                return SlideResult(str(path), True, {}, {}, computed, 0)
            start = time.perf_counter()
            summary = self._finalise(path, image, plan, parts, outputs, settings, active, thumbnail)
            summary["timing"]["finalise_s"] = round(time.perf_counter() - start, 3)
            # this process's tiles in this call (with several processes or a resumed run, a share of the slide)
            summary["timing"]["tiles_s"] = round(tiles_s, 3)
            summary["timing"]["tiles_done"] = computed
            summary["timing"]["tiles_per_s"] = round(computed / tiles_s, 3) if computed and tiles_s > 0 else None
            with atomic_write_path(outputs["summary"]) as tmp:
                tmp.write_text(json.dumps(summary, indent=1), encoding="utf-8")
        if not self.keep_parts:
            shutil.rmtree(parts, ignore_errors=True)
        return SlideResult(str(path), True, {k: str(v) for k, v in outputs.items()}, summary, computed, 0)

    # ---- steps ------------------------------------------------------------------------------------------------

    def _prepare_parts(
        self,
        parts: Path,
        outputs: Mapping[str, Path],
        plan: TilePlan,
        settings: dict[str, Any],
        thumbnail: Callable[[], tuple[np.ndarray, float]],
    ) -> list[Any]:
        """Rank 0: reuse, refuse or reset the parts folder; returns ``[error, active tiles, finished summary]``."""
        plan_file = parts / "plan.json"
        summary_file = outputs["summary"]
        if not self.overwrite and summary_file.is_file():
            old = json.loads(summary_file.read_text(encoding="utf-8"))
            if old.get("settings") != json.loads(json.dumps(settings)):
                raise ValueError(
                    f"{summary_file} is from a run with other settings; pass overwrite=True (--overwrite) to replace "
                    "its outputs, or choose another output folder"
                )
            if all(p.is_file() for p in outputs.values()):
                return [None, [], old]
        if plan_file.is_file():
            old = json.loads(plan_file.read_text(encoding="utf-8"))
            if old.get("settings") == json.loads(json.dumps(settings)):
                return [None, old["active"], None]
            if not self.overwrite:
                changed = sorted(
                    k for k in settings if old.get("settings", {}).get(k) != json.loads(json.dumps(settings[k]))
                )
                raise ValueError(
                    f"{parts} holds an unfinished run with other settings ({', '.join(changed)} differ); "
                    "pass overwrite=True (--overwrite) to discard it, or choose another output folder"
                )
            shutil.rmtree(parts)
        elif parts.exists() and self.overwrite:
            shutil.rmtree(parts)
        if self.tissue_detection:
            thumb, factor = thumbnail()
            active = active_tiles(plan, tissue_mask(thumb), factor, min_fraction=self.tissue_min_fraction)
        else:
            active = plan.tiles()
        logger.info(
            "%s: %d x %d px (level %d, scale %.3g), %d of %d tiles hold tissue, %d strip(s)",
            settings["input"]["path"],
            plan.height,
            plan.width,
            settings["level"],
            settings["scale"],
            len(active),
            plan.n_rows * plan.n_cols,
            plan.n_strips,
        )
        parts.mkdir(parents=True, exist_ok=True)
        with atomic_write_path(plan_file) as tmp:
            tmp.write_text(
                json.dumps({"settings": settings, "active": [list(t) for t in active]}, indent=1), encoding="utf-8"
            )
        return [None, [list(t) for t in active], None]

    def _reader_fn(self, image: WorkingImage) -> Callable[[Box], torch.Tensor]:
        height, width = image.height, image.width

        def read(box: Box) -> torch.Tensor:
            out = torch.full((3, box.height, box.width), self.cval, dtype=torch.float32)
            y0, x0, y1, x1 = max(0, box.y0), max(0, box.x0), min(height, box.y1), min(width, box.x1)
            if y0 < y1 and x0 < x1:
                if (y0, x0, y1, x1) != tuple(box) and self.padding_mode != "constant":
                    raise ValueError(
                        f"padding mode {self.padding_mode!r} is not supported for regions smaller than a window"
                    )
                rgb = image.read(y0, x0, y1, x1)
                tensor = torch.from_numpy(rgb).permute(2, 0, 1).contiguous().float()
                data = self.transforms({"image": tensor})
                out[:, y0 - box.y0 : y1 - box.y0, x0 - box.x0 : x1 - box.x0] = torch.as_tensor(data["image"])
            return out

        return read

    def _process_tiles(
        self,
        image: WorkingImage,
        plan: TilePlan,
        tiles: Sequence[tuple[int, int]],
        parts: Path,
        watershed: WatershedParams,
        settings: Mapping[str, Any],
        *,
        label: str,
    ) -> int:
        if not tiles:
            return 0
        _, rank, _ = _dist()
        stream = WindowStream(
            self.network,
            roi_size=self.roi_size,
            keep=self.keep,
            reduce=reduce_outputs,
            sw_batch_size=self.sw_batch_size,
            mode=self.blend_mode,
            sigma_scale=self.sigma_scale,
            device=self.device,
            amp=self.amp,
            amp_kwargs=self.amp_kwargs,
        )
        read = self._reader_fn(image)

        def finish(tile: tuple[int, int], maps: dict[str, np.ndarray]) -> None:
            record = process_tile(
                maps,
                plan=plan,
                tile=tile,
                watershed=watershed,
                num_types=len(self.inst_types),
                num_sem_classes=len(self.sem_classes),
                sem_min_size=self.sem_min_size,
                low_step=settings["low_step"],
            )
            save_record(parts / record_name(tile), record, band_height=self.output_tile)

        bar = tqdm(total=len(tiles), unit="tile", desc=label, disable=not self.progress or rank != 0, smoothing=0.1)
        pool = ThreadPoolExecutor(max_workers=self.workers) if self.workers else None
        pending: deque[Future] = deque()
        done = 0
        try:
            for run in contiguous_runs(plan, tiles):
                for tile, _, maps in stream.run(plan, run, read):
                    if pool is None:
                        finish(tile, maps)
                        done += 1
                        bar.update(1)
                        continue
                    pending.append(pool.submit(finish, tile, maps))
                    while len(pending) > 2 * self.workers or (pending and pending[0].done()):
                        pending.popleft().result()
                        done += 1
                        bar.update(1)
            while pending:
                pending.popleft().result()
                done += 1
                bar.update(1)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
        return done

    def _finalise(
        self,
        path: Path,
        image: WorkingImage,
        plan: TilePlan,
        parts: Path,
        outputs: Mapping[str, Path],
        settings: dict[str, Any],
        active: Sequence[tuple[int, int]],
        thumbnail: Callable[[], tuple[np.ndarray, float]],
    ) -> dict[str, Any]:
        timing: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timing[name] = round(now - clock, 3)
            clock = now

        files = records_in(parts)
        headers = {t: load_record(p, maps=False, geometry=False) for t, p in files.items()}
        merged = merge_tiles(plan, headers)
        lap("merge_s")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        low_step = settings["low_step"]
        sem_low = self._assemble_low(plan, headers, low_step)
        sy, sx = image.to_level0
        oy, ox = image.roi[0], image.roi[1]
        mpp = image.mpp
        self._write_csv(outputs["instances"], merged, image)
        lap("table_s")
        thumb, factor = thumbnail()
        canvas, draw = draw_overlay(thumb, sem_low, low_step=low_step, factor=factor)
        region_scale = (sy * low_step, sx * low_step)

        def features() -> Iterator[dict[str, Any]]:
            regions = self._region_map(sem_low, low_step, mpp)
            for c in range(1, len(self.sem_classes)):
                polys = region_polygons(regions == c)
                if polys:
                    yield qupath_feature(
                        polys,
                        object_type="annotation",
                        class_name=self.sem_classes[c],
                        class_index=c,
                        scale=region_scale,
                        offset=(oy / low_step, ox / low_step),
                        decimals=2,
                    )
            for fid, polys in self._instance_polygons(files, merged):
                i = fid - 1
                draw(polys, int(merged.types[i]))
                yield self._nucleus_feature(merged, i, polys, scale=(sy, sx), offset=(oy, ox), mpp=mpp)

        write_geojson(outputs["geojson"], features())
        lap("geojson_s")
        with atomic_write_path(outputs["overlay"]) as tmp:
            Image.fromarray(canvas).save(tmp, format="PNG", compress_level=1)  # fast; a picture to look at
        lap("overlay_s")
        self._write_maps(plan, files, merged, outputs, mpp)
        lap("label_tiffs_s")

        counts = (
            np.bincount(merged.types, minlength=len(self.inst_types))
            if len(merged)
            else np.zeros(len(self.inst_types), np.int64)
        )
        pixels = sum((h.sem_pixels for h in headers.values()), np.zeros(len(self.sem_classes), np.int64))
        px_area_mm2 = None if mpp is None else mpp[0] * mpp[1] * 1e-6
        tissue: dict[str, Any] = {}
        for c, cname in self.sem_classes.items():
            sel = merged.tissue == c
            per_type = (
                np.bincount(merged.types[sel], minlength=len(self.inst_types))
                if sel.any()
                else np.zeros(len(self.inst_types), np.int64)
            )
            area_mm2 = None if px_area_mm2 is None else float(pixels[c]) * px_area_mm2
            entry = {
                "area_px": int(pixels[c]),
                "area_mm2": area_mm2,
                "nuclei": {self.inst_types[t]: int(per_type[t]) for t in range(1, len(self.inst_types))},
                "nuclei_total": int(per_type[1:].sum()),
            }
            if area_mm2:
                entry["density_per_mm2"] = {
                    self.inst_types[t]: float(per_type[t]) / area_mm2 for t in range(1, len(self.inst_types))
                }
                entry["density_per_mm2"]["all"] = float(per_type[1:].sum()) / area_mm2
            tissue[cname] = entry
        return {
            "image": str(path),
            "settings": json.loads(json.dumps(settings)),
            "working_mpp": None if mpp is None else list(mpp),
            "to_level0": [sy, sx],
            "region_level0": [ox * sx, oy * sy, plan.width * sx, plan.height * sy],
            "region_size": [plan.height, plan.width],
            "tiles": {"grid": [plan.n_rows, plan.n_cols], "active": len(active), "strips": plan.n_strips},
            "nuclei": len(merged),
            "joined_across_tiles": merged.joins,
            "counts": {self.inst_types[t]: int(counts[t]) for t in range(1, len(self.inst_types))},
            "tissue": tissue,
            "outputs": {k: str(v) for k, v in outputs.items()},
            "timing": timing,
        }

    def _region_map(self, sem_low: np.ndarray, step: int, mpp: tuple[float, float] | None) -> np.ndarray:
        """The sampled semantic map without regions or holes smaller than ``region_min_um2`` (64 samples when the
        pixel size is unknown), so that tissue annotations outline tissue, not every speck."""
        if mpp is None:
            min_size = 64
        else:
            min_size = max(1, int(round(self.region_min_um2 / (mpp[0] * mpp[1] * step * step))))
        return remove_small_regions(sem_low, min_size=min_size, include_background=True)

    def _assemble_low(self, plan: TilePlan, headers: Mapping[tuple[int, int], TileRecord], step: int) -> np.ndarray:
        low = np.zeros((math.ceil(plan.height / step), math.ceil(plan.width / step)), np.uint8)
        for (row, col), rec in headers.items():
            core = plan.core(row, col)
            y, x = -(-core.y0 // step), -(-core.x0 // step)
            h, w = rec.sem_low.shape
            low[y : y + h, x : x + w] = rec.sem_low
        return low

    def _instance_polygons(self, files: Mapping[tuple[int, int], Path], merged: MergeResult):
        """Yield ``(instance id, polygons)`` for every instance, reading the tiles' geometry one tile at a time."""
        remaining = {fid: len(members) for fid, members in merged.members.items()}
        collected: dict[int, list[tuple[np.ndarray, int, int]]] = {}
        for tile in sorted(files):
            rec = load_record(files[tile], maps=False, geometry=True)
            lut = merged.luts[tile]
            for local in range(1, rec.n + 1):
                fid = int(lut[local])
                if fid not in remaining:
                    yield fid, rec.polygons[local - 1]
                    continue
                members = merged.members[fid]
                if len(members) == 1:
                    del remaining[fid]
                    yield fid, rec.polygons[local - 1]
                    continue
                collected.setdefault(fid, []).append(rec.masks[local])
                remaining[fid] -= 1
                if remaining[fid] == 0:
                    del remaining[fid]
                    yield fid, group_polygons(collected.pop(fid))

    def _nucleus_feature(
        self,
        merged: MergeResult,
        i: int,
        polygons: Sequence[Any],
        *,
        scale: tuple[float, float],
        offset: tuple[float, float],
        mpp: tuple[float, float] | None,
    ) -> dict[str, Any]:
        sy, sx = scale
        oy, ox = offset
        t = int(merged.types[i])
        cx, cy = merged.centroid[i]
        props: dict[str, Any] = {
            "id": int(merged.ids[i]),
            "type": t,
            "type_prob": round(float(merged.type_probs[i]), 4),
            "tissue": self.sem_classes.get(int(merged.tissue[i]), str(int(merged.tissue[i]))),
            "centroid": [round((cx + 0.5 + ox) * sx, 2), round((cy + 0.5 + oy) * sy, 2)],
            "area_px": int(merged.area[i]),
        }
        if mpp is not None:
            props["measurements"] = {"Area um^2": round(float(merged.area[i]) * mpp[0] * mpp[1], 3)}
        return qupath_feature(
            polygons,
            object_type="detection",
            class_name=self.inst_types.get(t, f"type_{t}") if t > 0 else None,
            class_index=t,
            properties=props,
            scale=scale,
            offset=offset,
            decimals=2,
        )

    def _write_csv(self, path: Path, merged: MergeResult, image: WorkingImage) -> None:
        sy, sx = image.to_level0
        oy, ox = image.roi[0], image.roi[1]
        mpp = image.mpp
        with atomic_write_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(
                [
                    "id",
                    "type",
                    "type_name",
                    "type_prob",
                    "tissue",
                    "tissue_name",
                    "centroid_x",
                    "centroid_y",
                    "area_px",
                    "area_um2",
                    "x_min",
                    "y_min",
                    "x_max",
                    "y_max",
                ]
            )
            for i in range(len(merged)):
                t, c = int(merged.types[i]), int(merged.tissue[i])
                x0, y0, x1, y1 = merged.bbox[i]
                w.writerow(
                    [
                        int(merged.ids[i]),
                        t,
                        self.inst_types.get(t, str(t)),
                        f"{merged.type_probs[i]:.3f}",
                        c,
                        self.sem_classes.get(c, str(c)),
                        f"{(merged.centroid[i, 0] + 0.5 + ox) * sx:.2f}",
                        f"{(merged.centroid[i, 1] + 0.5 + oy) * sy:.2f}",
                        int(merged.area[i]),
                        "" if mpp is None else f"{merged.area[i] * mpp[0] * mpp[1]:.2f}",
                        f"{(x0 + ox) * sx:.1f}",
                        f"{(y0 + oy) * sy:.1f}",
                        f"{(x1 + ox) * sx:.1f}",
                        f"{(y1 + oy) * sy:.1f}",
                    ]
                )

    def _write_maps(
        self,
        plan: TilePlan,
        files: Mapping[tuple[int, int], Path],
        merged: MergeResult,
        outputs: Mapping[str, Path],
        mpp: tuple[float, float] | None,
    ) -> None:
        n = len(merged)
        inst_dtype = np.uint16 if n < 2**16 else np.uint32
        type_lut = np.concatenate([[0], merged.types]).astype(np.uint8)
        luts = {t: lut for t, lut in merged.luts.items()}
        for kind, dtype in (("inst", inst_dtype), ("type", np.uint8), ("sem", np.uint8)):
            key = "sem" if kind == "sem" else "inst"

            def mapping(tile: tuple[int, int], band: np.ndarray, kind: str = kind) -> np.ndarray:
                if kind == "sem":
                    return band
                ids = luts[tile][band]
                return type_lut[ids] if kind == "type" else ids

            write_label_pyramid(
                outputs[kind],
                _bands(plan, files, key, self.output_tile, mapping, dtype),
                shape=(plan.height, plan.width),
                dtype=dtype,
                tile=self.output_tile,
                mpp=mpp,
                description=f"coseg {kind} map",
            )


def _bands(
    plan: TilePlan,
    files: Mapping[tuple[int, int], Path],
    key: str,
    band_height: int,
    mapping: Callable[[tuple[int, int], np.ndarray], np.ndarray],
    dtype: Any,
):
    """Rows of a label map, ``band_height`` at a time, assembled from the tile records' stored bands."""
    for row in range(plan.n_rows):
        y0, y1 = plan.core(row, 0).y0, plan.core(row, 0).y1
        handles = {}
        try:
            for col in range(plan.n_cols):
                if (row, col) in files:
                    handles[col] = np.load(files[(row, col)])
            for b, y in enumerate(range(y0, y1, band_height)):
                band = np.zeros((min(band_height, y1 - y), plan.width), dtype)
                for col, data in handles.items():
                    core = plan.core(row, col)
                    band[:, core.x0 : core.x1] = mapping((row, col), data[f"{key}_{b}"])
                yield band
        finally:
            for data in handles.values():
                data.close()


class _Once:
    """A value computed on first use and kept (the slide thumbnail serves tissue detection and the overlay)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make
        self.value: Any = None

    def __call__(self) -> Any:
        if self.value is None:
            self.value = self.make()
        return self.value


def _plain(value: Any) -> Any:
    """A number or a sequence of numbers as JSON-ready floats."""
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return float(value)
