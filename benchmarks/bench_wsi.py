"""Benchmark of whole-slide inference (``coseg.wsi``): the CPU side alone, throughput, the cost of stitching,
agreement with whole-image inference, and memory.

Run from the repository root: ``python benchmarks/bench_wsi.py [--parts ...] [--size 2048] [--checkpoint PATH]``
(``--quick``: a one-minute sanity check, written only with ``--output``). Writes ``benchmarks/results/wsi.json``
(the parts not run keep their last results; no machine paths; CPU count and load averages at the start and end)
and prints tables. The image is a
mosaic of real CoNSeP tiles (40x, ``../shared/data/consep256``; synthetic H&E when absent). Every part records the
load average it ran under: on a shared machine, timings taken under load are not valid.

0. **The CPU side alone** (``cpu_side``; ``--cpu-size 4096 --cpu-tile 1024 --workers 0 1 2``): the network is
   replaced by precomputed maps (the CoNSeP ground truth's exact object probability, HV maps and types; tissue
   regions one class per 256 px CoNSeP tile), so that only what a CPU must do beside a GPU is measured: the
   post-processing of each tile (watershed, outlines, records), the merge and the outputs (pyramidal label TIFFs,
   GeoJSON, CSV, overview). Side by side and interleaved, best of ``--repeat``: *plain tiling* (every tile's context
   through the watershed, the instance table and the semantic clean-up in one process, no merge, no output) and the
   whole-slide pipeline (:class:`MapsInferer`) with 0 (in-process), 1 and 2 worker processes: Mpx/s, per worker
   process, the ratio to plain tiling, the speed-up over one worker, and the CPU seconds of all processes.
   ``projection``: the CPU cores that keep one GPU busy (N ms per 1024² window of the ``paper`` preset: from
   ``--gpu-ms``, gpu_check.sh's inference latency, else from its FLOP count at a stated share of an H100/H200's dense
   bf16 rate; against the measured CPU seconds per Mpx). ``targets``: issue 16's ratios (whole-slide / plain tiling
   >= 0.8, 2 / 1 workers >= 1.7) and whether the machine was quiet when the part started (load average < 1.5).
   The maps of the whole mosaic are held in memory here (a throughput measurement); the memory part (3) reads its
   input lazily from a tiled TIFF, so that it measures the pipeline's own memory.
   ``network_share``: with the ``tiny`` network running on this CPU (trained weights when
   ``bundles/coseg_histo/models/model.pt`` exists, else random; the post-processing sees the exact maps), the share of
   the run's wall time the network is busy, per number of workers.
1. **Throughput** with the ``micro`` Co-Seg++ (64 px windows, overlap 0.25; random weights unless ``--checkpoint``,
   which only changes how many nuclei the post-processing meets), side by side in one process:
   - *whole image*: the bundle's path, ``CoSegSlidingWindowInferer`` over the whole image, ``postprocess_outputs``;
   - *plain tiling*: every tile with its margin through the same inferer and the watershed, independently, no
     merge and no output (what a naive tiler does, duplicating and cutting nuclei);
   - *whole-slide*: :class:`coseg.wsi.WholeSlideInferer` (streamed exact blending, merge, pyramidal TIFFs, GeoJSON,
     CSV, overlay; default workers), timed for the tiles and for the final merge-and-write.
   Tiles/s and the overhead of the whole-slide pipeline over plain tiling are ratios from the same run (best of
   ``--repeat`` interleaved runs of each path). A second row uses the exact-output stand-in of part 2 on the CoNSeP
   ground truth (realistic nuclei counts for the post-processing, the merge and the writers; negligible network
   cost). The PQ column compares the whole-slide and the whole-image instances; with random weights the HV maps are
   noise, which HoVer-Net's per-image min-max normalisation turns into different markers in every tile context, so
   only the ``exact`` row (and part 2) measure agreement.
   With ``--tiny`` and a quickstart-trained ``bundles/coseg_histo/models/model.pt``, the ``tiny`` model too.
2. **Agreement** with whole-image inference on exact nuclei outputs: a stand-in network reads each pixel's object
   probability and HV maps from an image that encodes the CoNSeP ground truth, so the network maps are identical and
   only tiling and post-processing differ. PQ between the tiled and the whole-image instance maps per tile size, with
   the exact HV maps (HoVer-Net's watershed min-max normalises HV maps and gradients per image: each tile normalises
   its own context) and with HV = 0 (objects from the object map only: the post-processing is then local).
3. **Memory**: peak resident memory of a fresh process while it runs the whole-slide pipeline (stand-in network,
   64 MB streaming budget, 1024 px tiles, default workers: the largest worker's peak too) on a tiled TIFF of
   ``size``, ``2 x size`` and ``4 x size`` pixels a side, against the whole-image path on the first two (Linux: the
   high-water mark is reset after the imports).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image
from torch import nn

from coseg.constants import PIXEL_MEAN, PIXEL_STD
from coseg.inferers import CoSegSlidingWindowInferer
from coseg.keys import OutputKeys
from coseg.losses import compute_hv_maps
from coseg.metrics.instance import panoptic_quality
from coseg.postprocess import (
    hv_watershed,
    instance_table,
    params_for_resolution,
    postprocess_outputs,
    remove_small_regions,
)
from coseg.transforms import SAM2Normalized
from coseg.wsi import OutputSettings, TilePlan, TileSettings, WholeSlideInferer, reduce_outputs

REPO = Path(__file__).resolve().parents[1]
CONSEP = REPO.parent / "shared" / "data" / "consep256" / "train"
RESULTS = REPO / "benchmarks" / "results" / "wsi.json"
PARTS_MORE = ["throughput", "agreement", "memory"]
SEM = {0: "background", 1: "tumour", 2: "stroma"}
TYPES = {0: "background", 1: "tumour", 2: "TIL", 3: "other"}


def mosaic(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """``size x size`` RGB mosaic of CoNSeP tiles and its ground-truth instance map (ids unique over the mosaic); tiles
    repeat when the mosaic needs more than there are (8192² takes 1024 of 432)."""
    grid = size // 256
    names = sorted((CONSEP / "images").glob("*.jpg"))
    if not names:  # no CoNSeP here: synthetic H&E, no ground truth
        from coseg.histo.synthetic import make_sample

        sample = make_sample(size=min(size, 4096), seed=seed, nucleus_scale=4.0)
        return np.tile(sample["image"], (size // sample["image"].shape[0], size // sample["image"].shape[1], 1)), None
    pick = np.random.default_rng(seed).choice(len(names), grid * grid, replace=grid * grid > len(names))
    rgb = np.zeros((size, size, 3), np.uint8)
    inst = np.zeros((size, size), np.int64)
    offset = 0
    for k, i in enumerate(pick):
        r, c = divmod(k, grid)
        tile = np.asarray(Image.open(names[i]).convert("RGB"))
        lab = np.asarray(Image.open(CONSEP / "inst" / (names[i].stem + ".png"))).astype(np.int64)
        rgb[r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256] = tile
        inst[r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256] = np.where(lab > 0, lab + offset, 0)
        offset += int(lab.max())
    return rgb, inst


class ExactNet(nn.Module):
    """Stand-in network: object probability and HV maps read from the pixels (red = object, green/blue = HV)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(PIXEL_MEAN).reshape(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(PIXEL_STD).reshape(1, 3, 1, 1) * 255)
        self.unit = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        rgb = torch.round(x * self.std + self.mean)
        obj = (rgb[:, :1] - 127.5) / 12.0 * self.unit
        zeros = torch.zeros_like(obj)
        return {
            OutputKeys.INST_BINARY: torch.cat([zeros, obj], 1),
            OutputKeys.INST_HV: (rgb[:, 1:] - 128.0) / 127.0,
            OutputKeys.INST_TYPE: torch.cat([zeros, obj, zeros - 5, zeros - 5], 1),
            OutputKeys.SEM_LOGITS: torch.cat([zeros, obj + 0.5, zeros - 5], 1),
        }


def encode(inst: np.ndarray, hv: bool) -> np.ndarray:
    rgb = np.full((*inst.shape, 3), 128, np.uint8)
    rgb[..., 0] = np.where(inst > 0, 255, 0)
    if hv:
        maps = compute_hv_maps(inst[None]).transpose(1, 2, 0)
        rgb[..., 1:] = np.clip(np.round(maps * 127.0 + 128.0), 1, 255).astype(np.uint8)
    return rgb


def normalise(rgb: np.ndarray) -> torch.Tensor:
    image = torch.from_numpy(rgb).permute(2, 0, 1).contiguous().float()
    return SAM2Normalized(keys="image")({"image": image})["image"]


def whole_image(network: nn.Module, rgb: np.ndarray, roi: int, batch: int) -> tuple[np.ndarray, float]:
    inferer = CoSegSlidingWindowInferer(roi_size=(roi, roi), sw_batch_size=batch, overlap=0.25, mode="gaussian")
    start = time.perf_counter()
    with torch.no_grad():
        outputs = inferer(normalise(rgb)[None], network)
    result = postprocess_outputs(outputs, params=params_for_resolution(magnification=40), with_contours=False)[0]
    return result.inst_map, time.perf_counter() - start


def plain_tiling(network: nn.Module, rgb: np.ndarray, plan: TilePlan, roi: int, batch: int) -> float:
    inferer = CoSegSlidingWindowInferer(roi_size=(roi, roi), sw_batch_size=batch, overlap=0.25, mode="gaussian")
    image = normalise(rgb)
    start = time.perf_counter()
    for tile in plan.tiles():
        box = plan.context(*tile)
        with torch.no_grad():
            outputs = inferer(image[None, :, box.y0 : box.y1, box.x0 : box.x1], network)
        postprocess_outputs(outputs, params=params_for_resolution(magnification=40), with_contours=False)
    return time.perf_counter() - start


def wsi(network: nn.Module, path: Path, out: Path, roi: int, batch: int, tile: int, **kwargs) -> dict:
    inferer = CoSegSlidingWindowInferer(roi_size=(roi, roi), sw_batch_size=batch, overlap=0.25, mode="gaussian")
    runner = WholeSlideInferer(
        network=network,
        inferer=inferer,
        sem_classes=SEM,
        inst_types=TYPES,
        output_dir=out,
        watershed=params_for_resolution(magnification=40),
        tiling=TileSettings(tile_size=tile, tissue_detection=False, **kwargs),
        outputs=OutputSettings(output_tile=min(256, tile), overwrite=True),
        progress=False,
    )
    start = time.perf_counter()
    result = runner(path)[0]
    total = time.perf_counter() - start
    finalise = result.summary["timing"]["finalise_s"]
    return {"total_s": total, "tiles_s": total - finalise, "finalise_s": finalise, "summary": result.summary}


def throughput(size: int, checkpoint: str | None, tiny: bool, work: Path, repeat: int = 2) -> list[dict]:
    from coseg.networks import CoSegPlusPlus

    rgb, gt = mosaic(size, seed=1)
    entries = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        micro = CoSegPlusPlus.from_preset("micro", num_sem_classes=3, num_inst_types=4, freeze_encoder=False).eval()
    if checkpoint:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        micro.load_state_dict(state.get("model", state))
    entries.append(("micro", Path(checkpoint).name if checkpoint else "random", micro, rgb, 64, 32, 512))
    if gt is not None:
        entries.append(("exact", "CoNSeP ground truth", ExactNet().eval(), encode(gt, True), 256, 16, 512))
    model_pt = REPO / "bundles" / "coseg_histo" / "models" / "model.pt"
    if tiny and model_pt.is_file():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = CoSegPlusPlus.from_preset("tiny", num_sem_classes=3, num_inst_types=4, freeze_encoder=False).eval()
        state = torch.load(model_pt, map_location="cpu", weights_only=True)
        net.load_state_dict(state.get("model", state))
        entries.append(("tiny", str(model_pt.relative_to(REPO)), net, rgb, 256, 8, 1024))
    rows = []
    for name, weights, net, image, roi, batch, tile in entries:
        path = work / f"{name}.png"
        Image.fromarray(image).save(path)
        with torch.no_grad():
            net(torch.zeros(1, 3, roi, roi))  # warm-up
        plan = TilePlan(height=size, width=size, tile_size=tile, margin=63, roi_size=(roi, roi), overlap=(0.25, 0.25))
        n_tiles = plan.n_rows * plan.n_cols
        # the best of `repeat` runs of each path, interleaved (the machine may be shared)
        t_whole = t_plain = float("inf")
        w = {"total_s": float("inf")}
        for _ in range(repeat):
            inst, t = whole_image(net, image, roi, batch)
            t_whole = min(t_whole, t)
            t_plain = min(t_plain, plain_tiling(net, image, plan, roi, batch))
            run = wsi(net, path, work / name, roi, batch, tile)
            w = run if run["total_s"] < w["total_s"] else w
        tiled = tifffile.imread(work / name / f"{name}_inst.tif").astype(np.int64)
        pq = float(panoptic_quality(inst, tiled)[2]) if inst.max() else None
        rows.append(
            {
                "model": name,
                "weights": weights,
                "image": [size, size],
                "window": roi,
                "tile": tile,
                "tiles": n_tiles,
                "whole_image_s": round(t_whole, 3),
                "plain_tiling_s": round(t_plain, 3),
                "wsi_total_s": round(w["total_s"], 3),
                "wsi_tiles_phase_s": round(w["tiles_s"], 3),
                "wsi_finalise_s": round(w["finalise_s"], 3),
                "tiles_per_s_plain": round(n_tiles / t_plain, 3),
                "tiles_per_s_wsi": round(n_tiles / w["total_s"], 3),
                "wsi_over_plain": round(w["total_s"] / t_plain, 3),
                "wsi_over_whole_image": round(w["total_s"] / t_whole, 3),
                "nuclei_whole_image": int(inst.max()),
                "nuclei_wsi": w["summary"]["nuclei"],
                "pq_wsi_vs_whole_image": None if pq is None else round(pq, 4),
            }
        )
    return rows


def agreement(size: int, work: Path) -> list[dict]:
    _, gt = mosaic(size, seed=2)
    if gt is None:
        return []
    net = ExactNet().eval()
    rows = []
    for hv in (True, False):
        encoded = encode(gt, hv)
        path = work / f"exact_{int(hv)}.png"
        Image.fromarray(encoded).save(path)
        whole, _ = whole_image(net, encoded, 256, 16)
        for tile in (256, 512, 1024):
            w = wsi(net, path, work / f"exact_{int(hv)}_{tile}", 256, 16, tile)
            tiled = tifffile.imread(work / f"exact_{int(hv)}_{tile}" / f"exact_{int(hv)}_inst.tif").astype(np.int64)
            dq, sq, pq = panoptic_quality(whole, tiled)
            rows.append(
                {
                    "hv": "exact" if hv else "zero",
                    "tile": tile,
                    "margin": 63,
                    "pq": round(float(pq), 4),
                    "dq": round(float(dq), 4),
                    "sq": round(float(sq), 4),
                    "nuclei_whole": int(whole.max()),
                    "nuclei_tiled": w["summary"]["nuclei"],
                    "joined_across_tiles": w["summary"]["joined_across_tiles"],
                }
            )
    return rows


# ---- the CPU side alone ------------------------------------------------------------------------------------------


class MapsInferer(WholeSlideInferer):
    """The whole-slide pipeline with the network side replaced by precomputed maps: every tile's context is cut from
    ``maps`` (the reduced outputs of the whole region), so only the post-processing, the merge and the writers run
    (the network, the reading and the blending are what a GPU does)."""

    def __init__(self, maps: dict[str, np.ndarray], **kwargs) -> None:
        super().__init__(**kwargs)
        self.maps = maps

    def _tile_maps(self, image, plan, tiles):
        for tile in tiles:
            box = plan.context(*tile)
            yield (
                tile,
                {k: np.ascontiguousarray(v[..., box.y0 : box.y1, box.x0 : box.x1]) for k, v in self.maps.items()},
            )


def plain_tiling_maps(maps: dict[str, np.ndarray], plan: TilePlan, watershed, *, num_types: int) -> None:
    """What a naive tiler does with the same maps: every tile's context through the watershed, the instance table and
    the semantic clean-up of the whole-image path (``postprocess_outputs`` after its activation and arg-maxes), no
    merge, no output."""
    for tile in plan.tiles():
        box = plan.context(*tile)
        crop = {k: v[..., box.y0 : box.y1, box.x0 : box.x1] for k, v in maps.items()}
        inst = hv_watershed(crop["prob"], crop["hv"], params=watershed)
        instance_table(inst, crop["type"], num_types=num_types, with_contours=False)
        remove_small_regions(crop["sem"], min_size=1, connectivity=1, fill="neighbours")


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def cpu_side(size: int, tile: int, workers: list[int], work: Path, repeat: int) -> dict:
    """The CPU side alone (precomputed maps, :class:`MapsInferer`), side by side: plain tiling in one process and
    the whole-slide pipeline with each number of worker processes, interleaved, best of ``repeat`` (after a warm-up
    that starts the fork server)."""
    rgb, gt = mosaic(size, seed=4)
    if gt is None:
        return {}
    encoded = encode(gt, True)
    path = work / "cpu_side.tif"  # tiled, as slides are (the overview is read from it)
    tifffile.imwrite(path, encoded, tile=(256, 256), photometric="rgb")
    with torch.no_grad():
        outputs = ExactNet().eval()(normalise(encoded)[None])
    maps = reduce_outputs({k: v[0] for k, v in outputs.items()})
    del outputs
    # tissue regions as on a slide, a few large ones (the exact stand-in's regions are the nuclei themselves): each
    # CoNSeP tile of the mosaic is tumour or stroma
    classes = np.random.default_rng(4).integers(1, 3, (size // 256, size // 256)).astype(np.uint8)
    maps["sem"] = np.kron(classes, np.ones((256, 256), np.uint8))
    ws = params_for_resolution(magnification=40)
    plan = TilePlan(height=size, width=size, tile_size=tile, margin=63, roi_size=(256, 256), overlap=(0.25, 0.25))
    mpx = size * size / 1e6

    def run_wsi(n: int) -> dict:
        runner = MapsInferer(
            maps,
            network=ExactNet().eval(),
            inferer=CoSegSlidingWindowInferer(roi_size=(256, 256), sw_batch_size=16, overlap=0.25, mode="gaussian"),
            sem_classes=SEM,
            inst_types=TYPES,
            output_dir=work / f"cpu_side_{n}",
            watershed=ws,
            tiling=TileSettings(tile_size=tile, margin=63, tissue_detection=False, workers=n),
            outputs=OutputSettings(output_tile=256, overwrite=True),
            progress=False,
        )
        cpu0, start = time.process_time(), time.perf_counter()
        summary = runner(path)[0].summary
        wall, main_cpu = time.perf_counter() - start, time.process_time() - cpu0
        t = summary["timing"]
        # CPU of the whole run: this process, plus the workers' tiles and label maps (with 0 workers both are ours)
        worker_cpu = (t["postprocess_cpu_s"] + t["label_tiffs_cpu_s"] + t["features_cpu_s"]) if n else 0.0
        return {"wall_s": wall, "cpu_s": main_cpu + worker_cpu, "summary": summary}

    run_wsi(max(workers))  # warm-up: the fork server's imports, the file caches
    best_plain = float("inf")
    plain_cpu = float("inf")
    best: dict[int, dict] = {}
    loads = []
    for _ in range(repeat):
        loads.append(_load())
        cpu0, start = time.process_time(), time.perf_counter()
        plain_tiling_maps(maps, plan, ws, num_types=len(TYPES))
        best_plain = min(best_plain, time.perf_counter() - start)
        plain_cpu = min(plain_cpu, time.process_time() - cpu0)
        for n in workers:
            r = run_wsi(n)
            if n not in best or r["wall_s"] < best[n]["wall_s"]:
                best[n] = r
    loads.append(_load())
    rows = []
    one = best.get(1)
    for n in workers:
        r, t = best[n], best[n]["summary"]["timing"]
        rows.append(
            {
                "workers": n,
                "wall_s": round(r["wall_s"], 3),
                "mpx_per_s": round(mpx / r["wall_s"], 3),
                "mpx_per_s_per_process": round(mpx / r["wall_s"] / max(1, n), 3),
                "over_plain": round(best_plain / r["wall_s"], 3),
                "speedup_over_1_worker": round(one["wall_s"] / r["wall_s"], 3) if one else None,
                "cpu_s_all_processes": round(r["cpu_s"], 3),
                "cpu_over_plain": round(r["cpu_s"] / plain_cpu, 3),
                "tiles_s": t["tiles_s"],
                "finalise_s": t["finalise_s"],
                "postprocess_cpu_s": t["postprocess_cpu_s"],
                "postprocess_mpx_per_cpu_s": round(mpx / t["postprocess_cpu_s"], 3) if t["postprocess_cpu_s"] else None,
                "finalise_steps_s": {
                    k: v for k, v in t.items() if k.endswith("_s") and k not in ("tiles_s", "finalise_s")
                },
                "worker_peak_rss_mb": t["worker_peak_rss_mb"],
                "nuclei": r["summary"]["nuclei"],
            }
        )
    return {
        "image": [size, size],
        "tile": tile,
        "margin": 63,
        "tiles": plan.n_rows * plan.n_cols,
        "nuclei": rows[0]["nuclei"],
        "repeat": repeat,
        "load_average_during": [round(v, 2) for v in loads],
        "plain_tiling": {
            "wall_s": round(best_plain, 3),
            "cpu_s": round(plain_cpu, 3),
            "mpx_per_s": round(mpx / best_plain, 3),
        },
        "whole_slide": rows,
    }


class _TimedNetwork(nn.Module):
    """The ``tiny`` network timed in every call (its outputs discarded), returning :class:`ExactNet`'s outputs, so
    that the post-processing meets real nuclei while the network costs what ``tiny`` costs."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.exact = ExactNet()
        self.busy_s = 0.0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        start = time.perf_counter()
        self.net(x)
        self.busy_s += time.perf_counter() - start
        return self.exact(x)


def network_share(size: int, work: Path, workers: list[int]) -> list[dict]:
    """With the ``tiny`` network (trained weights when ``bundles/coseg_histo/models/model.pt`` exists, else random)
    on the CPU: the share of the whole-slide run's wall time the network is busy, per number of workers."""
    from coseg.networks import CoSegPlusPlus

    _, gt = mosaic(size, seed=5)
    if gt is None:
        return []
    path = work / "tiny_share.png"
    Image.fromarray(encode(gt, True)).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = CoSegPlusPlus.from_preset("tiny", num_sem_classes=3, num_inst_types=4, freeze_encoder=False).eval()
    model_pt = REPO / "bundles" / "coseg_histo" / "models" / "model.pt"
    weights = "random"
    if model_pt.is_file():
        state = torch.load(model_pt, map_location="cpu", weights_only=True)
        net.load_state_dict(state.get("model", state))
        weights = str(model_pt.relative_to(REPO))  # no machine paths in the results
    timed = _TimedNetwork(net).eval()
    with torch.no_grad():
        timed(torch.zeros(1, 3, 256, 256))
    rows = []
    for n in workers:
        timed.busy_s = 0.0
        start = time.perf_counter()
        run = wsi(timed, path, work / f"tiny_{n}", 256, 4, 512, workers=n)
        wall = time.perf_counter() - start
        rows.append(
            {
                "workers": n,
                "weights": weights,
                "image": [size, size],
                "window": 256,
                "tile": 512,
                "wall_s": round(wall, 3),
                "network_busy_s": round(timed.busy_s, 3),
                "network_share": round(timed.busy_s / wall, 3),
                "tiles_phase_network_share": round(timed.busy_s / run["tiles_s"], 3),
                "nuclei": run["summary"]["nuclei"],
                "load_average": round(_load(), 2),
            }
        )
    return rows


def projection(
    cpu: dict,
    *,
    gmac: float = 1002.8,
    peak_tflops: float = 989.0,
    utilisation: float = 0.4,
    gpu_ms: float | None = None,
) -> dict:
    """How many CPU cores keep one GPU busy.

    The GPU side is the time N of one ``paper`` preset window of 1024² (``benchmarks/gpu_check.sh`` reports it as the
    inference ``latency_ms`` at 1024²; ``gpu_ms`` takes that number when a GPU run exists). Without one, N comes from
    the FLOP count (1002.8 GMAC per 1024² window with the attention products, 866.6 G over convolutions and linear
    layers alone) at ``utilisation`` of ``peak_tflops`` dense bf16 (an H100/H200 SXM: 989 TFLOP/s dense bf16; 40 %
    sustained is what large vision transformers reach in inference). At overlap 0.25 a window adds 768² new pixels.
    The CPU side is the measured CPU seconds per Mpx of the whole-slide pipeline (all its processes, the network
    replaced by precomputed maps): cores = GPU Mpx/s x CPU s per Mpx, rounded up."""
    if not cpu:
        return {}
    flop_ms = 2 * gmac * 1e9 / (utilisation * peak_tflops * 1e12) * 1e3
    new_px = (1024 * 0.75) ** 2 / 1e6
    mpx = cpu["image"][0] * cpu["image"][1] / 1e6
    # CPU seconds per Mpx: the most economical run (fewest processes) of the whole pipeline
    cpu_s_per_mpx = min(r["cpu_s_all_processes"] for r in cpu["whole_slide"]) / mpx
    out = {
        "assumption": f"paper preset {gmac} GMAC per 1024² window incl. attention (866.6 G conv + linear), "
        f"{utilisation:.0%} of {peak_tflops:.0f} dense bf16 TFLOP/s (H100/H200 SXM) = {flop_ms:.2f} ms per window; "
        "overlap 0.25 (768² new pixels per window)",
        "ms_per_window_from": "benchmarks/gpu_check.sh latency_ms (paper, 1024²)" if gpu_ms else "FLOP count",
        "cpu_s_per_mpx": round(cpu_s_per_mpx, 4),
        "rows": [],
    }
    for ms in sorted({round(gpu_ms if gpu_ms else flop_ms, 2), 20.0, 50.0}):
        gpu_mpx_s = new_px / (ms / 1e3)
        out["rows"].append(
            {
                "ms_per_window": ms,
                "gpu_mpx_per_s": round(gpu_mpx_s, 1),
                "cores_for_post_processing": math.ceil(gpu_mpx_s * cpu_s_per_mpx),
            }
        )
    return out


def targets(cpu: dict, load_before: float) -> dict:
    """Issue 16's targets from the CPU-side part: the best whole-slide run against plain tiling (>= 0.8) and two
    worker processes against one (>= 1.7), with whether the machine was quiet when the part started (1-minute load
    average below 1.5 on the 2-core machine; the benchmark's own processes raise it while it runs): on a busy
    machine the ratios measure the other processes too and are not valid."""
    if not cpu:
        return {}
    rows = {r["workers"]: r for r in cpu["whole_slide"]}
    best = max(cpu["whole_slide"], key=lambda r: r["over_plain"])
    two = rows.get(2, {}).get("speedup_over_1_worker")
    return {
        "whole_slide_over_plain": best["over_plain"],
        "whole_slide_over_plain_workers": best["workers"],
        "two_workers_over_one": two,
        "met": bool(best["over_plain"] >= 0.8 and (two is None or two >= 1.7)),
        "load_average_before": round(load_before, 2),
        "quiet_machine": load_before < 1.5,
    }


_MEMORY_CHILD = """
import sys, numpy as np, tifffile
sys.path.insert(0, {bench!r})
import bench_wsi as b
from pathlib import Path

def status(key):
    for line in open("/proc/self/status", encoding="utf-8"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024.0

mode, path, work = {mode!r}, Path({path!r}), Path({work!r})
net = b.ExactNet().eval()
before = status("VmRSS")
with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:  # reset the high-water mark (Linux)
    f.write("5")
workers = 0
if mode == "whole":
    b.whole_image(net, tifffile.imread(path), 256, 16)
else:
    run = b.wsi(net, path, work / ("mem_" + path.stem), 256, 16, 1024, memory_budget_mb=64)
    workers = run["summary"]["timing"]["worker_peak_rss_mb"] or 0
print(before, status("VmHWM"), workers)
"""


def memory(size: int, work: Path) -> list[dict]:
    """Peak resident memory while a fresh process runs either path on a tiled TIFF (inputs made beforehand; the
    high-water mark is reset after the imports, so the numbers are the run's own peak), and the resident memory
    before the run; for the whole-slide path also the peak of its largest worker process (the default number of
    workers; a worker's resident memory includes the libraries it shares with the fork server). The whole-slide path
    on ``size``, ``2 x size`` and ``4 x size`` pixels a side, the whole-image path on the first two."""
    rows = []
    for s in (size, 2 * size, 4 * size):
        _, gt = mosaic(s, seed=3)
        path = work / f"memory_{s}.tif"
        tifffile.imwrite(path, encode(gt if gt is not None else np.zeros((s, s), np.int64), True), tile=(256, 256))
        del gt
        for mode in ("whole", "wsi") if s <= 2 * size else ("wsi",):
            code = _MEMORY_CHILD.format(bench=str(Path(__file__).parent), mode=mode, path=str(path), work=str(work))
            res = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", timeout=600
            )
            if res.returncode != 0:
                raise RuntimeError(res.stderr[-2000:])
            before, peak, worker = (float(v) for v in res.stdout.strip().splitlines()[-1].split())
            row = {"image": [s, s], "path": mode, "rss_before_mb": round(before), "peak_rss_mb": round(peak)}
            if mode == "wsi":
                row["worker_peak_rss_mb"] = round(worker) or None
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="side of the mosaic (multiple of 256)")
    parser.add_argument("--checkpoint", default=None, help="micro weights (state dict) for the throughput part")
    parser.add_argument("--tiny", action="store_true", help="also time the quickstart tiny model when trained")
    parser.add_argument(
        "--parts",
        nargs="*",
        default=None,
        help="which parts to run (default: cpu_side network_share throughput agreement memory; with --quick: "
        "cpu_side network_share); the others keep their last results in the JSON",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each path in the throughput part (best kept)")
    parser.add_argument("--cpu-size", type=int, default=4096, help="side of the mosaic of the CPU-side part")
    parser.add_argument("--cpu-tile", type=int, default=1024, help="tile size of the CPU-side part")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="worker processes to compare")
    parser.add_argument(
        "--gpu-ms",
        type=float,
        default=None,
        help="ms per 1024² window of the paper preset measured by benchmarks/gpu_check.sh (inference latency_ms) for "
        "the projection; default: from the FLOP count at a stated bf16 rate",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a sanity check in about a minute: the CPU side on a 2048² mosaic once, the network share on 512², "
        "printed and written only with --output",
    )
    parser.add_argument("--output", type=Path, default=None, help=f"results file (default {RESULTS.relative_to(REPO)})")
    args = parser.parse_args()
    if args.quick:
        args.cpu_size, args.repeat = min(args.cpu_size, 2048), 1
    parts = ["cpu_side", "network_share"] if args.quick else ["cpu_side", "network_share", *PARTS_MORE]
    parts = args.parts if args.parts is not None else parts
    output = args.output if args.output is not None else (None if args.quick else RESULTS)
    torch.manual_seed(0)
    results: dict = json.loads(output.read_text(encoding="utf-8")) if output is not None and output.is_file() else {}
    results["machine"] = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    results["torch"] = torch.__version__
    results["cpu_cores"] = os.cpu_count()
    results["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    loads = results.setdefault("load_average", {})  # 1-minute load average before and after each part
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "cpu_side" in parts:
            loads["cpu_side"] = [round(_load(), 2)]
            results["cpu_side"] = cpu_side(args.cpu_size, args.cpu_tile, args.workers, work, args.repeat)
            results["projection"] = projection(results["cpu_side"], gpu_ms=args.gpu_ms)
            results["targets"] = targets(results["cpu_side"], loads["cpu_side"][0])
            loads["cpu_side"].append(round(_load(), 2))
        if "network_share" in parts:
            loads["network_share"] = [round(_load(), 2)]
            results["network_share_tiny"] = network_share(512 if args.quick else 1024, work, args.workers)
            loads["network_share"].append(round(_load(), 2))
        if "throughput" in parts:
            loads["throughput"] = [round(_load(), 2)]
            results["throughput"] = throughput(args.size, args.checkpoint, args.tiny, work, repeat=args.repeat)
            loads["throughput"].append(round(_load(), 2))
        if "agreement" in parts:
            results["agreement_exact_outputs"] = agreement(args.size, work)
        if "memory" in parts:
            results["memory"] = memory(args.size, work)
    results["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=1), encoding="utf-8")
    cpu = results.get("cpu_side")
    if cpu:
        plain = cpu["plain_tiling"]
        print(f"CPU side alone, {cpu['image'][0]}² mosaic, tiles of {cpu['tile']}, {cpu['nuclei']} nuclei")
        print(f"plain tiling: {plain['wall_s']:.2f} s, {plain['mpx_per_s']:.2f} Mpx/s")
        print(f"{'workers':>7} {'wall s':>7} {'Mpx/s':>7} {'/plain':>7} {'/1 wkr':>7} {'CPU s':>7} {'CPU/plain':>9}")
        for r in cpu["whole_slide"]:
            print(
                f"{r['workers']:>7} {r['wall_s']:>7.2f} {r['mpx_per_s']:>7.2f} {r['over_plain']:>7.2f} "
                f"{r['speedup_over_1_worker'] or 0:>7.2f} {r['cpu_s_all_processes']:>7.2f} {r['cpu_over_plain']:>9.2f}"
            )
        print(f"load average during the runs: {cpu['load_average_during']}")
        for r in results.get("projection", {}).get("rows", []):
            print(
                f"GPU at {r['ms_per_window']} ms/window: {r['gpu_mpx_per_s']} Mpx/s, "
                f"{r['cores_for_post_processing']} cores"
            )
    for r in results.get("network_share_tiny", []):
        print(f"tiny network, {r['workers']} workers: busy {r['network_share']:.0%} of {r['wall_s']:.1f} s")
    head = ("model", "tiles", "whole s", "plain s", "wsi s", "tiles/s", "wsi/plain", "PQ")
    print("{:<6} {:>5} {:>8} {:>8} {:>7} {:>8} {:>9} {:>6}".format(*head))
    for r in results.get("throughput", []):
        print(
            f"{r['model']:<6} {r['tiles']:>5} {r['whole_image_s']:>8.2f} {r['plain_tiling_s']:>8.2f} "
            f"{r['wsi_total_s']:>7.2f} {r['tiles_per_s_wsi']:>8.2f} {r['wsi_over_plain']:>9.2f} "
            f"{r['pq_wsi_vs_whole_image'] if r['pq_wsi_vs_whole_image'] is not None else '-':>6}"
        )
    print(f"\n{'HV':<6} {'tile':>5} {'PQ':>7} {'DQ':>7} {'SQ':>7} {'n whole':>8} {'n tiled':>8}")
    for r in results.get("agreement_exact_outputs", []):
        cells = (r["hv"], r["tile"], r["pq"], r["dq"], r["sq"], r["nuclei_whole"], r["nuclei_tiled"])
        print("{:<6} {:>5} {:>7.4f} {:>7.4f} {:>7.4f} {:>8} {:>8}".format(*cells))
    print(f"\n{'image':<11} {'path':<6} {'RSS before MB':>13} {'peak MB':>8} {'worker MB':>9}")
    for r in results.get("memory", []):
        image = f"{r['image'][0]}x{r['image'][1]}"
        worker = r.get("worker_peak_rss_mb") or "-"
        print(f"{image:<11} {r['path']:<6} {r['rss_before_mb']:>13} {r['peak_rss_mb']:>8} {worker:>9}")
    tg = results.get("targets")
    if tg:
        print(
            f"targets: whole-slide / plain {tg['whole_slide_over_plain']} ({tg['whole_slide_over_plain_workers']} "
            f"workers, >= 0.8), 2 / 1 workers {tg['two_workers_over_one']} (>= 1.7), load before "
            f"{tg['load_average_before']}{'' if tg['quiet_machine'] else ' (BUSY machine: ratios not valid)'}"
        )
    print(f"\nwritten to {output}" if output is not None else "\nnot written (--quick without --output)")


if __name__ == "__main__":
    main()
