"""``python -m coseg.wsi``: whole-slide inference with a bundle (also under ``torchrun``).

Examples::

    python -m coseg.wsi --bundle bundles/coseg_histo --input slide.svs --output out/ --mpp 0.5
    python -m coseg.wsi --bundle bundles/coseg_histo --input slides/ --output out/ --roi 20000 30000 8192 8192
    torchrun --nproc_per_node=4 -m coseg.wsi --bundle bundles/coseg_histo --input slide.tif --output out/

The network, window settings, normalisation, post-processing and class names come from the bundle's
``configs/inference.json`` (plus ``--config-file`` files and ``--config-override KEY=VALUE``), exactly as
``python -m monai.bundle run inference`` reads them. An interrupted run continues where it stopped when run again
with the same arguments.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import torch

from coseg.errors import install_excepthook
from coseg.wsi.routing import check_image, list_images, parse_override, wsi_inferer_from_bundle

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m coseg.wsi",
        description="Co-Seg++ inference over whole-slide images and large images (tiled, streamed, resumable).",
    )
    p.add_argument("--bundle", default=None, help="bundle folder (default: the coseg_histo bundle of this package)")
    p.add_argument("--input", nargs="+", required=True, help="image / slide files or folders")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--config-file", nargs="*", default=[], help="more config files merged after inference.json")
    p.add_argument(
        "--config-override", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides (VALUE as JSON)"
    )
    p.add_argument("--checkpoint", default=None, help="network weights (default: the bundle's models/model.pt)")
    res = p.add_mutually_exclusive_group()
    res.add_argument("--level", type=int, default=None, help="pyramid level to read as it is")
    res.add_argument("--mpp", type=float, default=None, help="working resolution in micrometres per pixel")
    p.add_argument("--roi", type=float, nargs=4, default=None, metavar=("X", "Y", "W", "H"), help="level-0 pixels")
    p.add_argument("--slide-mpp", type=float, default=None, help="level-0 pixel size for files that lack it")
    p.add_argument("--backend", default=None, choices=["auto", "tifffile", "openslide", "cucim", "pil"])
    p.add_argument("--tile-size", type=int, default=None, help="tile side in working pixels")
    p.add_argument("--margin", type=int, default=None, help="post-processing context around each tile, pixels")
    p.add_argument("--no-tissue-detection", action="store_true", help="process every tile, glass included")
    p.add_argument("--memory-budget-mb", type=float, default=None, help="bound on the streaming buffers")
    p.add_argument("--max-tiles", type=int, default=None, help="stop after this many tiles (rerun to continue)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="post-processing worker processes beside the network (0: in-process; default: cores - 1, at most 4)",
    )
    p.add_argument("--overwrite", action="store_true", help="discard earlier results made with other settings")
    p.add_argument("--keep-parts", action="store_true", help="keep the per-tile records after writing")
    p.add_argument("--device", default=None, help="e.g. cpu, cuda:0 (default: the bundle's; LOCAL_RANK under torchrun)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = args.device
    if device is None and world > 1:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    started_group = False
    if world > 1 and not torch.distributed.is_initialized():
        if device is not None and str(device).startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        torch.distributed.init_process_group(backend="nccl" if str(device).startswith("cuda") else "gloo")
        started_group = True
    try:
        bundle = args.bundle
        if bundle is None:
            from coseg.engines.config import find_bundle_root

            bundle = find_bundle_root("coseg_histo")
        overrides = dict(parse_override(o) for o in args.config_override)
        if device is not None:
            overrides["device"] = f"$torch.device({str(device)!r})"
        inputs = [p for item in args.input for p in list_images(item)]
        for path in inputs:  # a truncated or corrupt file fails now, not after hours on the others
            check_image(path)
        inferer = wsi_inferer_from_bundle(
            bundle,
            config_files=args.config_file,
            overrides=overrides,
            output_dir=os.path.abspath(args.output),
            checkpoint=args.checkpoint,
            level=args.level,
            mpp=args.mpp,
            roi=args.roi,
            slide_mpp=args.slide_mpp,
            backend=args.backend,
            tile_size=args.tile_size,
            margin=args.margin,
            tissue_detection=False if args.no_tissue_detection else None,
            memory_budget_mb=args.memory_budget_mb,
            max_tiles=args.max_tiles,
            workers=args.workers,
            overwrite=True if args.overwrite else None,
            keep_parts=True if args.keep_parts else None,
            progress=False if args.no_progress else None,
        )
        results = inferer(inputs)
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        if rank == 0:
            for r in results:
                if r.complete:
                    s = r.summary
                    counts = ", ".join(f"{k}={v}" for k, v in s.get("counts", {}).items())
                    print(f"{r.image}: {s.get('nuclei', 0)} nuclei ({counts}) -> {s.get('outputs', {}).get('geojson')}")
                else:
                    print(f"{r.image}: stopped with {r.tiles_remaining} tile(s) left; run again to continue")
        if started_group:
            from coseg.engines.handlers import finish_distributed

            finish_distributed()
        return 0
    finally:
        # after a failure no barrier: the other ranks may never reach it
        if started_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    install_excepthook()
    sys.exit(main())
