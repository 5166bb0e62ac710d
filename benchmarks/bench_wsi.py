"""Benchmark of whole-slide inference (``coseg.wsi``): throughput, the cost of stitching, agreement with whole-image
inference, and memory.

Run from the repository root: ``python benchmarks/bench_wsi.py [--size 2048] [--checkpoint PATH]``. Writes
``benchmarks/results/wsi.json`` and prints a table. The image is a mosaic of real CoNSeP tiles (40x,
``../shared/data/consep256``; synthetic H&E when absent).

1. **Throughput** with the ``micro`` Co-Seg++ (64 px windows, overlap 0.25; random weights unless ``--checkpoint``,
   which only changes how many nuclei the post-processing meets), side by side in one process:
   - *whole image*: the bundle's path, ``CoSegSlidingWindowInferer`` over the whole image, ``postprocess_outputs``;
   - *plain tiling*: every tile with its margin through the same inferer and the watershed, independently, no
     merge and no output (what a naive tiler does, duplicating and cutting nuclei);
   - *whole-slide*: :class:`coseg.wsi.WholeSlideInferer` (streamed exact blending, merge, pyramidal TIFFs, GeoJSON,
     CSV, overlay), timed for the tiles and for the final merge-and-write.
   Tiles/s and the overhead of the whole-slide pipeline over plain tiling are ratios from the same run (best of two
   interleaved runs of each path). A second row uses the exact-output stand-in of part 2 on the CoNSeP ground truth
   (realistic nuclei counts for the post-processing, the merge and the writers; negligible network cost). The PQ
   column compares the whole-slide and the whole-image instances; with random weights the HV maps are noise, which
   HoVer-Net's per-image min-max normalisation turns into different markers in every tile context, so only the
   ``exact`` row (and part 2) measure agreement.
   With ``--tiny`` and a quickstart-trained ``bundles/coseg_histo/models/model.pt``, the ``tiny`` model too.
2. **Agreement** with whole-image inference on exact nuclei outputs: a stand-in network reads each pixel's object
   probability and HV maps from an image that encodes the CoNSeP ground truth, so the network maps are identical and
   only tiling and post-processing differ. PQ between the tiled and the whole-image instance maps per tile size, with
   the exact HV maps (HoVer-Net's watershed min-max normalises HV maps and gradients per image: each tile normalises
   its own context) and with HV = 0 (objects from the object map only: the post-processing is then local).
3. **Memory**: peak resident memory of a fresh process while it runs the whole-slide pipeline (stand-in network,
   64 MB streaming budget, 1024 px tiles) on a tiled TIFF of ``size`` and of ``2 x size`` pixels a side, against the
   whole-image path on the same files (Linux: the high-water mark is reset after the imports).
"""

from __future__ import annotations

import argparse
import json
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
from coseg.postprocess import params_for_resolution, postprocess_outputs
from coseg.transforms import SAM2Normalized
from coseg.wsi import OutputSettings, TilePlan, TileSettings, WholeSlideInferer

REPO = Path(__file__).resolve().parents[1]
CONSEP = REPO.parent / "shared" / "data" / "consep256" / "train"
RESULTS = REPO / "benchmarks" / "results" / "wsi.json"
SEM = {0: "background", 1: "tumour", 2: "stroma"}
TYPES = {0: "background", 1: "tumour", 2: "TIL", 3: "other"}


def mosaic(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """``size x size`` RGB mosaic of CoNSeP tiles and its ground-truth instance map (ids unique over the mosaic)."""
    grid = size // 256
    names = sorted((CONSEP / "images").glob("*.jpg"))
    if len(names) < grid * grid:
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
    entries.append(("micro", checkpoint or "random", micro, rgb, 64, 32, 512))
    if gt is not None:
        entries.append(("exact", "CoNSeP ground truth", ExactNet().eval(), encode(gt, True), 256, 16, 512))
    model_pt = REPO / "bundles" / "coseg_histo" / "models" / "model.pt"
    if tiny and model_pt.is_file():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = CoSegPlusPlus.from_preset("tiny", num_sem_classes=3, num_inst_types=4, freeze_encoder=False).eval()
        state = torch.load(model_pt, map_location="cpu", weights_only=True)
        net.load_state_dict(state.get("model", state))
        entries.append(("tiny", str(model_pt), net, rgb, 256, 8, 1024))
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
if mode == "whole":
    b.whole_image(net, tifffile.imread(path), 256, 16)
else:
    b.wsi(net, path, work / ("mem_" + path.stem), 256, 16, 1024, memory_budget_mb=64)
print(before, status("VmHWM"))
"""


def memory(size: int, work: Path) -> list[dict]:
    """Peak resident memory while a fresh process runs either path on a tiled TIFF (inputs made beforehand; the
    high-water mark is reset after the imports, so the numbers are the run's own peak), and the resident memory
    before the run."""
    rows = []
    for s in (size, 2 * size):
        _, gt = mosaic(s, seed=3)
        path = work / f"memory_{s}.tif"
        tifffile.imwrite(path, encode(gt if gt is not None else np.zeros((s, s), np.int64), True), tile=(256, 256))
        for mode in ("whole", "wsi"):
            code = _MEMORY_CHILD.format(bench=str(Path(__file__).parent), mode=mode, path=str(path), work=str(work))
            res = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", timeout=600
            )
            if res.returncode != 0:
                raise RuntimeError(res.stderr[-2000:])
            before, peak = (float(v) for v in res.stdout.strip().splitlines()[-1].split())
            rows.append({"image": [s, s], "path": mode, "rss_before_mb": round(before), "peak_rss_mb": round(peak)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="side of the mosaic (multiple of 256)")
    parser.add_argument("--checkpoint", default=None, help="micro weights (state dict) for the throughput part")
    parser.add_argument("--tiny", action="store_true", help="also time the quickstart tiny model when trained")
    parser.add_argument(
        "--parts",
        nargs="*",
        default=["throughput", "agreement", "memory"],
        help="which parts to run; the others keep their last results in the JSON",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each path in the throughput part (best kept)")
    args = parser.parse_args()
    torch.manual_seed(0)
    results: dict = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.is_file() else {}
    results["machine"] = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    results["torch"] = torch.__version__
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "throughput" in args.parts:
            results["throughput"] = throughput(args.size, args.checkpoint, args.tiny, work, repeat=args.repeat)
        if "agreement" in args.parts:
            results["agreement_exact_outputs"] = agreement(args.size, work)
        if "memory" in args.parts:
            results["memory"] = memory(args.size, work)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1), encoding="utf-8")
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
    print(f"\n{'image':<11} {'path':<6} {'RSS before MB':>13} {'peak MB':>8}")
    for r in results.get("memory", []):
        image = f"{r['image'][0]}x{r['image'][1]}"
        print(f"{image:<11} {r['path']:<6} {r['rss_before_mb']:>13} {r['peak_rss_mb']:>8}")
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
