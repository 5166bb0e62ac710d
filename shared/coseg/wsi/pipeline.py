"""Driving the worker processes of a whole-slide run: the tiles as the network yields them, and the nuclei's
features once the tiles are merged.

:mod:`coseg.wsi.run` decides what to do for a slide (plan, resume, merge, outputs); this module hands the work to a
:class:`~coseg.wsi.workers.WorkerPool` and collects what comes back:

- :func:`process_tiles`: every tile's maps (from the network stream, in order) go to the pool through shared memory
  (:class:`~coseg.wsi.workers.SharedArrays`), a bounded number in flight; a worker post-processes the tile and saves
  its record (:func:`~coseg.wsi.workers.finish_tile`); the block is freed as soon as the tile is done or the run
  fails. The costs come back as a :class:`TileWork`.
- :func:`write_outputs`: once every tile is saved, the merge (:func:`~coseg.wsi.merge.merge_tiles`) and the outputs
  (:mod:`coseg.wsi.writer`): the label TIFFs and the nuclei's rendering in the workers, the table, the GeoJSON and
  the overview here, concurrently.
- :func:`render_nuclei` and :func:`nucleus_features` (used by :func:`write_outputs`): the tiles' nuclei rendered
  by the pool (:func:`~coseg.wsi.writer.tile_features`) and turned into the slide's GeoJSON features in this
  process, outlined on the overview; instances of several pieces once their last piece is read.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from coseg.histo.geojson import write_geojson
from coseg.io import atomic_write_path
from coseg.wsi.merge import MergeResult, assemble_low, geometry_text, group_polygons, merge_tiles
from coseg.wsi.parts import SlideFiles, load_record, records_in
from coseg.wsi.settings import OutputSettings
from coseg.wsi.tiling import Placement, TilePlan
from coseg.wsi.workers import OrderedResults, SharedArrays, TaskStats, TileJob, WorkerPool, finish_tile
from coseg.wsi.workers import result as worker_result
from coseg.wsi.writer import (
    LABEL_MAPS,
    FeatureJob,
    NucleusFeatures,
    TileFeatures,
    draw_overlay,
    draw_rings,
    overview_rings,
    region_features,
    summarise_nuclei,
    tile_features,
    write_instance_table,
    write_label_map,
)

__all__ = ["TileWork", "process_tiles", "render_nuclei", "nucleus_features", "write_outputs", "release_free_memory"]


@dataclass
class TileWork:
    """What the post-processing of a run's tiles cost.

    Attributes:
        done: tiles finished.
        cpu_s: CPU seconds of their post-processing and records (in the processes that ran them).
        peak_rss_mb: the largest peak resident memory of those processes (Linux).
        peak_pending: the most tiles in flight at once.
        pids: the processes that ran them.
    """

    done: int = 0
    cpu_s: float = 0.0
    peak_rss_mb: float | None = None
    peak_pending: int = 0
    pids: set[int] = field(default_factory=set)

    def add(self, stats: TaskStats) -> None:
        """Count one finished tile."""
        self.done += 1
        self.cpu_s += stats.cpu_s
        self.pids.add(stats.pid)
        if stats.peak_rss_mb is not None:
            self.peak_rss_mb = max(self.peak_rss_mb or 0.0, stats.peak_rss_mb)


def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return None


_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Give the C heap's free pages back to the OS (glibc's ``malloc_trim``; nothing elsewhere).

    glibc raises its mmap threshold each time a large block is freed, so later blocks of that size (window batches,
    tile maps) come from the heap, and what they leave free stays resident: the main process's resident memory grew
    with the number of tiles (1.15 GB at 8192² against 0.85 GB at 2048²; 0.70 GB at both with a fixed threshold).
    Called after each tile, it keeps the resident memory flat in slide size, for about a millisecond.
    """
    if _TRIM is not None:
        _TRIM(0)


def process_tiles(
    tile_maps: Iterable[tuple[tuple[int, int], Mapping[str, np.ndarray | None]]],
    job: TileJob,
    pool: WorkerPool,
    *,
    total: int,
    label: str = "",
    progress: bool = False,
) -> TileWork:
    """Have ``pool`` post-process every tile of ``tile_maps`` and save its record, as soon as it comes (at most
    ``pool.max_pending`` tiles in flight: the next tile's maps are drawn only when there is room).

    Args:
        tile_maps: ``(tile, maps)`` in order (the network stream, drawn lazily).
        job: the slide's settings.
        pool: the worker pool (``workers=0``: here, one tile after the other).
        total: tiles expected (the progress bar).
        label: the progress bar's description.
        progress: show a progress bar (tiles, tiles/s).

    Returns:
        the :class:`TileWork`.

    Raises:
        WorkerError: a worker process died (naming the tiles in flight).
    """
    work = TileWork()
    bar = tqdm(total=total, unit="tile", desc=label, disable=not progress, smoothing=0.1)
    shared: dict[tuple[int, int], SharedArrays] = {}  # the maps in flight, in shared memory for the workers

    def items() -> Iterator[tuple[Any, ...]]:
        for tile, maps in tile_maps:
            if pool.workers:
                maps = shared[tile] = SharedArrays(maps)
            yield job, tile, maps

    try:
        for done, stats in pool.imap(finish_tile, items(), describe=lambda item: f"tile {tuple(item[1])}"):
            if done in shared:
                shared.pop(done).unlink()
            work.add(stats)
            release_free_memory()
            bar.update(1)
    finally:
        for handle in shared.values():
            handle.unlink()
        bar.close()
    work.peak_pending = pool.peak_pending
    return work


def render_nuclei(
    records: Mapping[tuple[int, int], Path], merged: MergeResult, job: FeatureJob, pool: WorkerPool
) -> OrderedResults:
    """The tiles' nuclei rendered by ``pool`` (:func:`~coseg.wsi.writer.tile_features`), tile by tile in order, a
    bounded number at a time (nothing is submitted before the result is advanced or filled).

    Args:
        records: the tile records by ``(row, col)``.
        merged: the merged instances.
        job: the rendering settings.
        pool: the worker pool.

    Returns:
        an iterator of ``(TileFeatures, TaskStats)`` per tile, in tile order.
    """
    several = np.zeros(len(merged) + 1, dtype=bool)
    several[[fid for fid, m in merged.members.items() if len(m) > 1]] = True

    def items() -> Iterator[tuple[Any, ...]]:
        for tile in sorted(records):
            lut = merged.luts[tile]
            joined = several[lut]
            joined[0] = False
            single = np.unique(lut[1:][~joined[1:]])
            yield job, records[tile], lut, merged.rows(single - 1), joined

    return pool.imap(tile_features, items(), describe=lambda item: f"the nuclei of {item[1].name}")


def nucleus_features(
    rendered: Iterable[tuple[TileFeatures, TaskStats]],
    merged: MergeResult,
    job: FeatureJob,
    canvas: np.ndarray,
    stats: list[TaskStats],
) -> Iterator[str]:
    """Every nucleus's GeoJSON feature from the rendered tiles (:func:`render_nuclei`; their costs appended to
    ``stats``), outlined on ``canvas``; an instance of several pieces once its last piece is read
    (:func:`~coseg.wsi.merge.group_polygons`).

    Yields:
        each feature's JSON text, in tile order.
    """
    several = {fid: len(m) for fid, m in merged.members.items() if len(m) > 1}
    features = NucleusFeatures(merged, job.placement, sem_classes=job.sem_classes, inst_types=job.inst_types)
    collected: dict[int, list[tuple[np.ndarray, int, int]]] = {}
    for tile, cost in rendered:
        stats.append(cost)
        for t, ring in tile.outlines:
            draw_rings(canvas, [ring], t)
        yield from tile.texts
        for fid, piece in tile.pieces:
            collected.setdefault(fid, []).append(piece)
            if len(collected[fid]) == several[fid]:
                polys = group_polygons(collected.pop(fid))
                draw_rings(canvas, overview_rings(polys, job.factor), int(merged.types[fid - 1]))
                yield features.text(fid - 1, geometry_text(polys, job.placement))


def write_outputs(
    path: Path,
    plan: TilePlan,
    files: SlideFiles,
    settings: Mapping[str, Any],
    *,
    placement: Placement,
    thumbnail: Callable[[], tuple[np.ndarray, float]],
    pool: WorkerPool,
    active: int,
    sem_classes: dict[int, str],
    inst_types: dict[int, str],
    outputs_settings: OutputSettings,
) -> dict[str, Any]:
    """Merge a slide's saved tiles and write every output but the summary, which the caller writes last; returns it.

    The three label TIFFs are written by ``pool`` (each by one worker) and the nuclei's features rendered by it, while
    this process writes the table, the GeoJSON and the overview; with ``workers=0`` one after the other, to the same
    bytes.

    Args:
        path: the input (named in the summary).
        plan: the tile plan.
        files: the slide's files (records in ``files.parts``, outputs in ``files.outputs``).
        settings: the run's settings (:meth:`coseg.wsi.WholeSlideInferer.run_slide`; ``low_step`` used here).
        placement: region pixels to level 0.
        thumbnail: the slide's overview picture and its factor (computed once).
        pool: the worker pool.
        active: tiles holding tissue (for the summary).
        sem_classes, inst_types: class names by index.
        outputs_settings: TIFF tile size, smallest tissue region outlined.

    Returns:
        the summary (with ``timing`` per step: ``merge_s``, ``table_s``, ``geojson_s``, ``overlay_s``,
        ``label_tiffs_wait_s`` and the workers' ``features_cpu_s``, ``label_tiffs_cpu_s``).
    """
    timing: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timing[name] = round(now - clock, 3)
        clock = now

    outputs, names = files.outputs, {"sem_classes": sem_classes, "inst_types": inst_types}
    records = records_in(files.parts)
    headers = {t: load_record(p, maps=False, geometry=False) for t, p in records.items()}
    merged = merge_tiles(plan, headers)
    lap("merge_s")
    files.outputs["summary"].parent.mkdir(parents=True, exist_ok=True)

    def label_maps() -> list[tuple[str, Any]]:
        """Start writing the label TIFFs (in the workers; with ``workers=0`` here and now)."""
        return [
            (
                kind,
                pool.submit(
                    functools.partial(
                        write_label_map,
                        outputs[kind],
                        kind,
                        plan=plan,
                        records=records,
                        luts=merged.luts,
                        types=merged.types,
                        tile=outputs_settings.output_tile,
                        mpp=placement.mpp,
                    )
                ),
            )
            for kind in LABEL_MAPS
        ]

    tiffs = label_maps() if pool.workers else []
    low_step = settings["low_step"]
    sem_low = assemble_low(plan, headers, low_step)
    thumb, factor = thumbnail()
    job = FeatureJob(placement=placement, factor=factor, **names)
    # the workers render the first tiles' nuclei while this process writes the table and tints the overview
    rendered = render_nuclei(records, merged, job, pool).fill()
    write_instance_table(outputs["instances"], merged, placement, **names)
    lap("table_s")
    canvas, _ = draw_overlay(thumb, sem_low, low_step=low_step, factor=factor)
    regions = region_features(
        sem_low=sem_low,
        low_step=low_step,
        placement=placement,
        sem_classes=sem_classes,
        region_min_um2=outputs_settings.region_min_um2,
    )
    rendering: list[TaskStats] = []
    nuclei = nucleus_features(rendered, merged, job, canvas, rendering)
    write_geojson(outputs["geojson"], itertools.chain(regions, nuclei))
    lap("geojson_s")
    timing["features_cpu_s"] = round(sum(s.cpu_s for s in rendering), 3)
    with atomic_write_path(outputs["overlay"]) as tmp:
        Image.fromarray(canvas).save(tmp, format="PNG", compress_level=1)  # fast; a picture to look at
    lap("overlay_s")
    if not pool.workers:
        tiffs = label_maps()
    cpu = 0.0
    for kind, future in tiffs:
        cpu += worker_result(future, f"the {kind} label map")[1].cpu_s
    lap("label_tiffs_wait_s")
    timing["label_tiffs_cpu_s"] = round(cpu, 3)
    sem_pixels = sum((h.sem_pixels for h in headers.values()), np.zeros(len(sem_classes), np.int64))
    nuclei = summarise_nuclei(merged, sem_pixels, placement, **names)
    sy, sx = placement.scale
    oy, ox = placement.offset
    return {
        "image": str(path),
        "settings": json.loads(json.dumps(settings)),
        "working_mpp": None if placement.mpp is None else list(placement.mpp),
        "to_level0": [sy, sx],
        "region_level0": [ox * sx, oy * sy, plan.width * sx, plan.height * sy],
        "region_size": [plan.height, plan.width],
        "tiles": {"grid": [plan.n_rows, plan.n_cols], "active": active, "strips": plan.n_strips},
        "nuclei": nuclei["nuclei"],
        "joined_across_tiles": merged.joins,
        "counts": nuclei["counts"],
        "tissue": nuclei["tissue"],
        "outputs": {k: str(v) for k, v in outputs.items()},
        "timing": timing,
    }
