"""Whole-slide inference: plan, stream, post-process, persist, merge and write, resumable and distributed.

:class:`WholeSlideInferer` takes the same objects as the bundle's ``inference.json`` (network, sliding-window
inferer, preprocessing, watershed settings, class names), so the whole-image and the whole-slide paths cannot drift
apart: the windows, their blending, the input normalisation and the watershed settings are the configured ones. Its
own settings come in three frozen, self-checking groups (:mod:`coseg.wsi.settings`): ``reading``, ``tiling`` and
``outputs``. This module only orchestrates the steps below; each lives in its own module.

For each input image or slide:

1. **Plan**: the working resolution and region (:class:`~coseg.wsi.reader.WorkingImage`), the tiles and network
   windows (:class:`~coseg.wsi.tiling.TilePlan`), the tiles holding tissue (:mod:`coseg.wsi.tissue`), and what an
   earlier run left (:func:`~coseg.wsi.parts.prepare_parts`: finished outputs are kept, a run with the same settings
   continues, one with other settings is refused unless ``overwrite``, and temporaries a killed run left are
   removed).
2. **Tiles**: the network streams strip by strip in this process (:meth:`WholeSlideInferer._tile_maps`,
   :class:`~coseg.wsi.stream.WindowStream`); every tile whose context is final is handed to a worker process
   (:func:`coseg.wsi.pipeline.process_tiles`; :mod:`coseg.wsi.workers`: ``tiling.workers`` of them, a bounded
   number of tiles in flight), which post-processes it (:func:`~coseg.wsi.merge.process_tile`: watershed,
   outlines, GeoJSON geometry) and saves it as ``<output>/.<name>.parts/tile_<row>_<col>.npz``
   (:mod:`coseg.wsi.parts`), while the network goes on.
3. **Merge and write** (once every tile is saved; :func:`coseg.wsi.pipeline.write_outputs`): pieces are joined
   across tile borders (:func:`~coseg.wsi.merge.merge_tiles`) and the outputs are written (:mod:`coseg.wsi.writer`;
   the label TIFFs and the nuclei's features by the worker processes, the rest here, concurrently):
   ``<name>_inst.tif`` / ``<name>_type.tif`` / ``<name>_sem.tif`` (tiled pyramidal TIFFs of the region at the
   working resolution), ``<name>.geojson`` (every nucleus as a QuPath detection with its type, tissue regions as
   annotations, level-0 pixel coordinates; :func:`coseg.histo.geojson.write_geojson`), ``<name>_instances.csv``,
   ``<name>_overlay.png`` and ``<name>_summary.json`` (counts per type and tissue class, tissue areas, nuclei per
   mm²).

Under ``torch.distributed`` (e.g. ``torchrun``), every process takes a contiguous share of the remaining tiles of
each slide (:func:`~coseg.wsi.tiling.split_among_ranks`), all write their records into the same parts folder (a
shared file system across nodes), and rank 0 merges and writes after a barrier.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.handlers import Checkpoint
from monai.transforms import Compose, LoadImage, LoadImaged

from coseg.errors import InputFileError
from coseg.io import atomic_write_path
from coseg.postprocess import WatershedParams
from coseg.transforms import CheckRGBd, SAM2Normalized
from coseg.wsi.merge import reduce_outputs
from coseg.wsi.parts import SlideFiles, prepare_parts, records_in
from coseg.wsi.pipeline import TileWork, process_tiles, write_outputs
from coseg.wsi.reader import SlideReader, WorkingImage
from coseg.wsi.settings import OutputSettings, ReadSettings, TileSettings, WindowSettings
from coseg.wsi.stream import WindowStream
from coseg.wsi.tiling import Box, Placement, TilePlan, contiguous_runs, split_among_ranks
from coseg.wsi.tissue import active_tiles, tissue_mask
from coseg.wsi.workers import TileJob, WorkerPool, default_workers

__all__ = ["WholeSlideInferer", "SlideResult", "load_network_weights"]

logger = logging.getLogger(__name__)

PLAN_VERSION = 2  # 2: records hold rendered GeoJSON geometry (outlines traced by OpenCV)


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


def _class_names(names: Mapping[Any, str], what: str, meaning: str) -> dict[int, str]:
    out = {int(k): str(v) for k, v in names.items()}
    if sorted(out) != list(range(len(out))) or len(out) < 2:
        raise ValueError(f"{what} must name {meaning} 0..{len(out) - 1} (at least 2), got {dict(names)}")
    return out


def _settings_of(value: Any, cls: type, name: str) -> Any:
    if value is None:
        return cls()
    if isinstance(value, Mapping):
        return cls(**value)
    if not isinstance(value, cls):
        raise TypeError(f"{name} must be a {cls.__name__} (or a mapping of its fields), got {type(value).__name__}")
    return value


class WholeSlideInferer:
    """Run Co-Seg++ over images and slides of any size (module docstring).

    Args:
        network: the Co-Seg++ network (``inference.json``: ``network``).
        inferer: the configured :class:`~coseg.inferers.CoSegSlidingWindowInferer` (window size, overlap, blending,
            batch); its settings drive the streamed windows (:class:`~coseg.wsi.settings.WindowSettings`).
        watershed: the watershed settings (``inference.json``: ``watershed``, the object the whole-image
            post-processing uses too). Their ``mpp`` (set from the config's ``magnification``) is the resolution the
            model was trained at: the default working resolution, and slides read at another resolution get the
            settings scaled to it. Without ``mpp``: level 0 by default, settings used as they are.
        sem_classes, inst_types: class names by index, background included (``inference.json``).
        output_dir: where the outputs go (one set of files per input, named after it).
        preprocessing: the configured preprocessing; its loaders are dropped, the rest (RGB check, SAM2
            normalisation) is applied to every window band. Default: ``CheckRGBd`` + ``SAM2Normalized``.
        sem_min_size: semantic regions smaller than this are absorbed by their neighbours (``inference.json``:
            ``sem_min_size``, as the whole-image post-processing).
        checkpoint: network weights to load before the first slide (``inference.json``: ``ckpt_path``).
        device: where the network runs; default the network's device.
        amp, amp_kwargs: autocast as in the bundle's evaluator.
        reading: what to read (:class:`~coseg.wsi.settings.ReadSettings`: level or mpp, region, backend).
        tiling: how to tile (:class:`~coseg.wsi.settings.TileSettings`: tile size, margin, tissue detection, memory,
            workers, tiles per run).
        outputs: what to write and keep (:class:`~coseg.wsi.settings.OutputSettings`: TIFF tile, overview, region
            outlines, ``keep_parts``, ``overwrite``).
        progress: show a progress bar (tiles, tiles/s) on rank 0.

    The three settings groups also accept a mapping of their fields.

    Raises:
        ValueError: for inconsistent or out-of-range settings (e.g. a tile size that is not a multiple of the output
            tile).
        TypeError: an inferer that is not a sliding-window inferer, or settings of the wrong type.
    """

    def __init__(
        self,
        *,
        network: torch.nn.Module,
        inferer: Any,
        watershed: WatershedParams,
        sem_classes: Mapping[Any, str],
        inst_types: Mapping[Any, str],
        output_dir: str | os.PathLike,
        preprocessing: Any = None,
        sem_min_size: int = 1,
        checkpoint: str | os.PathLike | None = None,
        device: torch.device | str | None = None,
        amp: bool = False,
        amp_kwargs: Mapping[str, Any] | None = None,
        reading: ReadSettings | Mapping[str, Any] | None = None,
        tiling: TileSettings | Mapping[str, Any] | None = None,
        outputs: OutputSettings | Mapping[str, Any] | None = None,
        progress: bool = True,
    ) -> None:
        self.network = network
        self.windows = WindowSettings.from_inferer(inferer)
        if not isinstance(watershed, WatershedParams):
            raise TypeError(f"watershed must be a WatershedParams, got {type(watershed).__name__}")
        self.watershed = watershed
        self.sem_classes = _class_names(sem_classes, "sem_classes", "classes")
        self.inst_types = _class_names(inst_types, "inst_types", "types")
        self.output_dir = Path(output_dir)
        self.transforms = _image_transforms(preprocessing)
        if isinstance(sem_min_size, bool) or not isinstance(sem_min_size, (int, np.integer)) or sem_min_size < 1:
            raise ValueError(f"sem_min_size must be an integer >= 1, got {sem_min_size!r}")
        self.sem_min_size = int(sem_min_size)
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self._weights_loaded = checkpoint is None
        if device is None:
            first = next(iter(network.parameters()), None)
            device = first.device if first is not None else "cpu"
        self.device = torch.device(device)
        self.amp = bool(amp)
        self.amp_kwargs = dict(amp_kwargs or {})
        self.reading = _settings_of(reading, ReadSettings, "reading")
        self.tiling = _settings_of(tiling, TileSettings, "tiling")
        self.outputs = _settings_of(outputs, OutputSettings, "outputs")
        if self.tiling.tile_size % self.outputs.output_tile:
            raise ValueError(
                f"tile_size ({self.tiling.tile_size}) must be a multiple of output_tile ({self.outputs.output_tile})"
            )
        self.progress = bool(progress)
        #: worker processes of the post-processing and the label TIFFs (``tiling.workers``, or
        #: :func:`~coseg.wsi.workers.default_workers`)
        self.workers = self.tiling.workers if self.tiling.workers is not None else default_workers()

    # ---- per slide: settings and plan -------------------------------------------------------------------------

    def _prepare_network(self) -> None:
        if not self._weights_loaded:
            load_network_weights(self.network, self.checkpoint, device=self.device)
            self._weights_loaded = True
        self.network.to(self.device).eval()

    def _watershed_for(self, image: WorkingImage) -> WatershedParams:
        """The watershed settings for the working resolution (scaled when it differs by more than 5 %)."""
        mpp, model_mpp = image.mpp, self.watershed.mpp
        if mpp is None and model_mpp is not None:
            logger.warning(
                "%s does not record its pixel size: read at level 0 as if at the model's %.3f um/px (if it is not, "
                "pass --slide-mpp with its pixel size)",
                image.reader.path,
                model_mpp,
            )
        if mpp is None or model_mpp is None:
            return self.watershed
        ratio = model_mpp / mpp[1]
        if abs(ratio - 1.0) <= 0.05:
            return self.watershed
        logger.warning(
            "working at %.3f um/px while the model was trained at %.3f um/px: watershed settings scaled by %.2f",
            mpp[1],
            model_mpp,
            ratio,
        )
        return dataclasses.replace(self.watershed.scaled(ratio), mpp=mpp[1])

    def _plan(self, image: WorkingImage, watershed: WatershedParams) -> TilePlan:
        tiling, windows, output_tile = self.tiling, self.windows, self.outputs.output_tile
        margin = tiling.margin if tiling.margin is not None else max(16, 3 * watershed.sobel_kernel_size)
        tile = tiling.tile_size
        if max(image.height, image.width) <= tile:
            # one tile: round up to whole output tiles so the record's bands line up with the TIFF tiles
            tile = math.ceil(max(image.height, image.width) / output_tile) * output_tile
        margin = min(margin, tile)
        channels = len(self.sem_classes) + 4 + len(self.inst_types) + 1
        interval = max(1, int(windows.roi_size[0] * (1 - windows.overlap[0])))
        per_column = (windows.roi_size[0] + interval) * channels * 4 + (tile + 2 * margin) * 14
        strip_width = max(tile, int(tiling.memory_budget_mb * 2**20 // per_column))
        return TilePlan(
            height=image.height,
            width=image.width,
            tile_size=tile,
            margin=margin,
            roi_size=windows.roi_size,
            overlap=windows.overlap,
            strip_tiles=max(1, strip_width // tile),
        )

    def _settings(self, path: Path, image: WorkingImage, plan: TilePlan, watershed: WatershedParams) -> dict[str, Any]:
        """What the results depend on: a resumed run must match it (stored in ``plan.json`` and the summary)."""
        low_step = max(1, math.ceil(max(plan.height, plan.width) / self.outputs.region_max_size))
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
            "roi_size": list(self.windows.roi_size),
            "overlap": list(self.windows.overlap),
            "blend": [self.windows.blend_mode, _plain(self.windows.sigma_scale)],
            "watershed": dataclasses.asdict(watershed),
            "sem_min_size": self.sem_min_size,
            "sem_classes": self.sem_classes,
            "inst_types": self.inst_types,
            "low_step": low_step,
            "region_min_um2": self.outputs.region_min_um2,
            "output_tile": self.outputs.output_tile,
            "tissue_detection": self.tiling.tissue_detection,
            "tissue_min_fraction": self.tiling.tissue_min_fraction,
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
        files = SlideFiles.of(self.output_dir, path)
        outputs = {k: str(v) for k, v in files.outputs.items()}
        self._prepare_network()
        reading = self.reading
        with SlideReader(path, backend=reading.backend, slide_mpp=reading.slide_mpp) as reader:
            image = WorkingImage.from_reader(
                reader, level=reading.level, mpp=reading.mpp, default_mpp=self.watershed.mpp, roi_level0=reading.roi
            )
            watershed = self._watershed_for(image)
            plan = self._plan(image, watershed)
            reader.limit_cache(_reader_cache_bytes(plan, image.scale))
            settings = self._settings(path, image, plan, watershed)
            thumbnail = _Once(lambda: image.thumbnail(self.outputs.overview_size))

            # rank 0 checks earlier work and decides which tiles hold tissue; the others follow
            def prepare() -> tuple[list[tuple[int, int]], dict[str, Any] | None]:
                return prepare_parts(
                    files,
                    settings,
                    overwrite=self.outputs.overwrite,
                    find_active=lambda: self._active_tiles(plan, settings, thumbnail),
                )

            if dist is None:
                active, finished = prepare()
            else:
                message: list[Any] = [None, None, None]
                if rank == 0:
                    try:
                        message = [None, *prepare()]
                    except (ValueError, InputFileError) as exc:  # tell the other ranks, then fail everywhere
                        message = [f"{type(exc).__name__}: {exc}", None, None]
                device = self.device if self.device.type == "cuda" else None
                dist.broadcast_object_list(message, src=0, device=device)
                error, active, finished = message
                if error is not None:
                    raise ValueError(error)
            if finished is not None:
                logger.info("%s: outputs exist and match the settings; skipped", path)
                return SlideResult(str(path), True, outputs, finished, 0, 0)
            active = [tuple(t) for t in active]

            done = set(records_in(files.parts))
            todo = [t for t in active if t not in done]
            mine = split_among_ranks(todo, world)[rank]
            if self.tiling.max_tiles is not None:
                mine = mine[: self.tiling.max_tiles]
            with WorkerPool(self.workers) as pool:
                tiles_start = time.perf_counter()
                job = TileJob(
                    plan=plan,
                    watershed=watershed,
                    num_types=len(self.inst_types),
                    num_sem_classes=len(self.sem_classes),
                    sem_min_size=self.sem_min_size,
                    low_step=settings["low_step"],
                    placement=Placement.of(image),
                    parts=files.parts,
                    band_height=self.outputs.output_tile,
                )
                work = self._process_tiles(image, plan, mine, job, pool, label=files.name)
                tiles_s = time.perf_counter() - tiles_start
                if dist is not None:
                    dist.barrier()
                remaining = [t for t in active if t not in records_in(files.parts)]
                if remaining:
                    if rank == 0:
                        logger.info(
                            "%s: %d of %d tiles remain; run again to continue", path, len(remaining), len(active)
                        )
                    return SlideResult(str(path), False, {}, {}, work.done, len(remaining))
                if rank != 0:
                    return SlideResult(str(path), True, {}, {}, work.done, 0)
                start = time.perf_counter()
                summary = write_outputs(
                    path,
                    plan,
                    files,
                    settings,
                    placement=Placement.of(image),
                    thumbnail=thumbnail,
                    pool=pool,
                    active=len(active),
                    sem_classes=self.sem_classes,
                    inst_types=self.inst_types,
                    outputs_settings=self.outputs,
                )
                summary["timing"]["finalise_s"] = round(time.perf_counter() - start, 3)
            # this process's tiles in this call (with several processes or a resumed run, a share of the slide)
            timing = summary["timing"]
            timing["tiles_s"] = round(tiles_s, 3)
            timing["tiles_done"] = work.done
            timing["tiles_per_s"] = round(work.done / tiles_s, 3) if work.done and tiles_s > 0 else None
            timing["workers"] = self.workers
            timing["postprocess_cpu_s"] = round(work.cpu_s, 3)
            timing["worker_peak_rss_mb"] = None if work.peak_rss_mb is None else round(work.peak_rss_mb)
            timing["tiles_in_flight_max"] = work.peak_pending
            with atomic_write_path(files.outputs["summary"]) as tmp:
                tmp.write_text(json.dumps(summary, indent=1), encoding="utf-8")
        if not self.outputs.keep_parts:
            shutil.rmtree(files.parts, ignore_errors=True)
        return SlideResult(str(path), True, outputs, summary, work.done, 0)

    # ---- steps ------------------------------------------------------------------------------------------------

    def _active_tiles(
        self, plan: TilePlan, settings: Mapping[str, Any], thumbnail: Callable[[], tuple[np.ndarray, float]]
    ) -> list[tuple[int, int]]:
        """The tiles to process: those holding tissue, or all."""
        if self.tiling.tissue_detection:
            thumb, factor = thumbnail()
            active = active_tiles(plan, tissue_mask(thumb), factor, min_fraction=self.tiling.tissue_min_fraction)
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
        return active

    def _reader_fn(self, image: WorkingImage) -> Callable[[Box], torch.Tensor]:
        height, width = image.height, image.width
        cval, padding_mode = self.windows.cval, self.windows.padding_mode

        def read(box: Box) -> torch.Tensor:
            out = torch.full((3, box.height, box.width), cval, dtype=torch.float32)
            y0, x0, y1, x1 = max(0, box.y0), max(0, box.x0), min(height, box.y1), min(width, box.x1)
            if y0 < y1 and x0 < x1:
                if (y0, x0, y1, x1) != tuple(box) and padding_mode != "constant":
                    raise ValueError(
                        f"padding mode {padding_mode!r} is not supported for regions smaller than a window"
                    )
                rgb = image.read(y0, x0, y1, x1)
                tensor = torch.from_numpy(rgb).permute(2, 0, 1).contiguous().float()
                data = self.transforms({"image": tensor})
                out[:, y0 - box.y0 : y1 - box.y0, x0 - box.x0 : x1 - box.x0] = torch.as_tensor(data["image"])
            return out

        return read

    def _tile_maps(
        self, image: WorkingImage, plan: TilePlan, tiles: Sequence[tuple[int, int]]
    ) -> Iterator[tuple[tuple[int, int], dict[str, np.ndarray]]]:
        """The network's reduced maps of each tile's context (:func:`~coseg.wsi.merge.reduce_outputs`), streamed
        strip by strip (:class:`~coseg.wsi.stream.WindowStream`), as soon as each context is final.

        This is the network side of the pipeline, run in the main process; :meth:`_process_tiles` hands each tile
        to the post-processing. (``benchmarks/bench_wsi.py`` replaces it by precomputed maps to measure the CPU
        side alone.)

        Yields:
            ``(tile, maps)`` in the order of ``tiles`` (consecutive runs of one strip, as they come).
        """
        windows = self.windows
        stream = WindowStream(
            self.network,
            roi_size=windows.roi_size,
            keep=windows.keep,
            reduce=reduce_outputs,
            sw_batch_size=windows.sw_batch_size,
            mode=windows.blend_mode,
            sigma_scale=windows.sigma_scale,
            device=self.device,
            amp=self.amp,
            amp_kwargs=self.amp_kwargs,
        )
        read = self._reader_fn(image)
        for run in contiguous_runs(plan, tiles):
            for tile, _, maps in stream.run(plan, run, read):
                yield tile, maps

    def _process_tiles(
        self,
        image: WorkingImage,
        plan: TilePlan,
        tiles: Sequence[tuple[int, int]],
        job: TileJob,
        pool: WorkerPool,
        *,
        label: str,
    ) -> TileWork:
        """Stream the network over ``tiles`` and have ``pool`` post-process each tile and save its record as soon as
        its context is final (:func:`coseg.wsi.pipeline.process_tiles`)."""
        if not tiles:
            return TileWork()
        _, rank, _ = _dist()
        return process_tiles(
            self._tile_maps(image, plan, tiles),
            job,
            pool,
            total=len(tiles),
            label=label,
            progress=self.progress and rank == 0,
        )


class _Once:
    """A value computed on first use and kept (the slide thumbnail serves tissue detection and the overlay)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make
        self.value: Any = None

    def __call__(self) -> Any:
        if self.value is None:
            self.value = self.make()
        return self.value


def _reader_cache_bytes(plan: TilePlan, scale: float) -> int:
    """Decoded input tiles worth keeping: what one band of windows of a strip reads (the strip's contexts and a
    window either side, two windows high), with the file's tiles that overlap its edges (up to 512 px), RGBA, in
    level pixels; at least 16 MiB, at most 256 MiB (the strip width follows ``memory_budget_mb``). Windows re-read
    only the band above them, so a cache of the whole slide would only grow with it (memory flat in slide size)."""
    roi_h, roi_w = plan.roi_size
    width = min(plan.strip_tiles * plan.tile_size, plan.width) + 2 * plan.margin + 2 * roi_w + 1024
    rows = 2 * roi_h + 1024
    need = 4 * width * rows * max(1.0, scale) ** 2
    return int(min(256 * 2**20, max(16 * 2**20, need)))


def _plain(value: Any) -> Any:
    """A number or a sequence of numbers as JSON-ready floats."""
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return float(value)
