"""Train a Co-Seg++ preset of the coseg_histo bundle on real data for a fixed CPU budget and report held-out metrics.

    python benchmarks/train_real_histo.py --dataset consep --minutes 15                # tiny, the bundle's recipe
    python benchmarks/train_real_histo.py --dataset consep --preset cpu --minutes 60 \\
        --optimizer adamw --lr 5e-4 --weight-decay 0.05 --warmup 0.05 --schedule cosine
    python benchmarks/train_real_histo.py --dataset glas --minutes 20

Data: ``../shared/data/consep256/train`` (CoNSeP's training images re-tiled to 256², 40x; nuclei typed other /
inflammatory / epithelial / spindle; the semantic map is the nucleus foreground, as the converter derives it for
nucleus-only data) or ``../shared/data/glas/train`` (GlaS, 20x; gland semantic map + gland instances from connected
components). Both are converted with ``coseg.histo.prepare`` into a seeded 7:1:2 train / validation / test split BY
SOURCE IMAGE (CoNSeP tiles ``train_<image>_<tile>`` are grouped by ``<image>``: no source image is in two parts; the
results list each part's source images). The network trains through the bundle's real ``train.json`` (encoder from
random weights: no SAM2 weights can be downloaded here) until the wall-clock budget runs out -- validations on the
validation part count against it --, the validation part picks the checkpoint (``model.pt``), and ``evaluate.json``
scores it on the held-out test part.

Reported: binary PQ, AJI, DQ/SQ and Dice of all nuclei taken together (``dice_1``: the nucleus foreground Dice of
HoVer-Net's ``stats_utils.get_dice_1``; HoVer-Net's own numbers are means over whole 1000² test images, ours are means
over 256² tiles, and pooled), each type's instance metrics (``f1``: detection F1 of that type's instances, i.e. the DQ
of per-type PQ, not HoVer-Net's centroid-matched type-classification F1), the learning curve (validation metrics and
mean training loss against wall-clock minutes and iterations) and the machine's load average during training.

The recipe knobs: ``--optimizer`` (``adam`` / ``adamw``), ``--lr`` (peak), ``--weight-decay``, ``--schedule``
(``bundle``: the bundle's per-epoch exponential decay ``lr_gamma``; ``cosine``: linear warm-up over ``--warmup`` of
the budget, then cosine decay to 0 at the end of the budget, set from elapsed wall clock before every iteration;
``constant``: warm-up then flat), ``--batch-size``, ``--patch-size`` (training crop), ``--threads`` (torch threads;
1 on a shared machine), ``--num-workers`` and the stain augmentation's strength (``--hed-sigma``, ``--hed-prob``:
``RandHEDJitterd`` in ``train.json``). Writes ``benchmarks/results/real_histo_<dataset>.json`` for ``tiny``,
``real_histo_<dataset>_<preset>.json`` otherwise, or ``--out``; no machine paths in it. Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
import warnings
from pathlib import Path

import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from coseg.engines import loss_value
from coseg.histo.prepare import prepare_dataset
from coseg.io import write_json

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
BUNDLE = REPO / "bundles" / "coseg_histo" / "configs"

DATASETS = {
    "consep": {
        "format": "consep_tiles",
        "input": SHARED / "consep256" / "train",
        "options": {"derive_sem": "foreground", "group_regex": r"^train_(\d+)_"},
        "sem_classes": {"0": "background", "1": "nucleus"},
        "inst_types": {"0": "background", "1": "other", "2": "inflammatory", "3": "epithelial", "4": "spindle-shaped"},
        "magnification": 40,
    },
    "glas": {
        "format": "folder",
        "input": SHARED / "glas" / "train",
        "options": {"images_dir": "images", "sem_dir": "gland", "inst_dir": "gland_inst_cc"},
        "sem_classes": {"0": "background", "1": "gland"},
        "inst_types": {"0": "background", "1": "gland"},
        "magnification": 20,
        # glands are far larger than nuclei: watershed settings for objects ~4x nucleus size, keep every piece
        "postprocess": {"object_scale": 4.0, "keep_unmarked": True},
    },
}

SPLIT_PARTS = ("training", "validation", "test")

PRESET_LABELS = {
    "tiny": "tiny (Hiera-T encoder trained from scratch)",
    "cpu": "cpu (MONAI ResNet-18 encoder trained from scratch; not the paper's encoder)",
    "micro": "micro (test-sized network)",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument("--preset", choices=sorted(PRESET_LABELS), default="tiny", help="model preset")
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget (wall clock, validation included)")
    parser.add_argument("--work", default="/tmp/coseg_real_histo", help="scratch folder")
    parser.add_argument("--out", default=None, help="results JSON (default: benchmarks/results/real_histo_*.json)")
    parser.add_argument("--label", default="", help="free text stored in the results (e.g. 'short-budget screening')")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--patch-size", type=int, default=256, help="training crop (a multiple of 32)")
    parser.add_argument("--optimizer", choices=("adam", "adamw"), default="adam")
    parser.add_argument("--lr", type=float, default=3e-4, help="peak learning rate")
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--schedule", choices=("bundle", "cosine", "constant"), default="bundle")
    parser.add_argument("--warmup", type=float, default=0.0, help="warm-up, as a fraction of the budget")
    parser.add_argument("--val-interval", type=int, default=1, help="validate every N epochs")
    parser.add_argument("--seed", type=int, default=0, help="training seed (the data split is always seed 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--num-workers", type=int, default=0, help="data loader workers")
    parser.add_argument("--cache-rate", type=float, default=1.0)
    parser.add_argument(
        "--hed-sigma",
        type=float,
        default=None,
        help="stain augmentation strength: RandHEDJitterd's sigma (the bundle's 0.05 when not given)",
    )
    parser.add_argument("--hed-prob", type=float, default=None, help="RandHEDJitterd's probability (bundle: 0.5)")
    parser.add_argument(
        "--evaluate-only",
        action="store_true",
        help="evaluate the checkpoint an earlier run left in --work again (e.g. after changing post-processing)",
    )
    args = parser.parse_args(argv)
    if args.patch_size % 32 or args.patch_size <= 0:
        parser.error(f"--patch-size must be a positive multiple of 32, got {args.patch_size}")
    if not 0.0 <= args.warmup < 1.0:
        parser.error(f"--warmup is a fraction of the budget in [0, 1), got {args.warmup}")
    if args.schedule == "bundle" and args.warmup:
        parser.error("--warmup needs --schedule cosine or constant")
    if min(args.minutes, args.lr, args.batch_size, args.threads) <= 0 or args.weight_decay < 0:
        parser.error("--minutes, --lr, --batch-size and --threads must be > 0, --weight-decay >= 0")
    return args


def lr_factor(fraction: float, *, schedule: str, warmup: float) -> float:
    """The learning rate, as a fraction of the peak, at ``fraction`` of the budget (linear warm-up, then flat or a
    cosine decay reaching 0 at the end of the budget)."""
    fraction = min(max(fraction, 0.0), 1.0)
    if warmup > 0 and fraction < warmup:
        return max(fraction / warmup, 1e-3)
    if schedule == "constant":
        return 1.0
    rest = (fraction - warmup) / (1.0 - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * rest))


def stain_overrides(args: argparse.Namespace) -> dict[str, float]:
    """Overrides of ``train.json``'s H&E stain jitter (``coseg.histo.RandHEDJitterd`` in ``train#random_transforms``)
    for ``--hed-sigma`` / ``--hed-prob``."""
    transforms = json.loads((BUNDLE / "train.json").read_text(encoding="utf-8"))["train"]["random_transforms"]
    index = next(i for i, t in enumerate(transforms) if t.get("_target_") == "coseg.histo.RandHEDJitterd")
    out = {}
    if args.hed_sigma is not None:
        out[f"train#random_transforms#{index}#sigma"] = args.hed_sigma
    if args.hed_prob is not None:
        out[f"train#random_transforms#{index}#prob"] = args.hed_prob
    return out


def split_sources(datalist: dict) -> dict[str, list[str]]:
    """Each part's source images (the datalist's ``group`` entries); raise if one is in two parts."""
    parts = {part: sorted({str(item.get("group", "")) for item in datalist[part]}) for part in SPLIT_PARTS}
    seen: dict[str, str] = {}
    for part, groups in parts.items():
        for group in groups:
            if group in seen:
                raise SystemExit(f"source image {group!r} is in both the {seen[group]} and the {part} part")
            seen[group] = part
    return parts


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = DATASETS[args.dataset]
    work = Path(args.work) / args.dataset
    prepared = work / "prepared"
    if not (prepared / "datalist.json").is_file():
        shutil.rmtree(prepared, ignore_errors=True)
        prepare_dataset(spec["format"], spec["input"], prepared, seed=0, progress=True, **spec["options"])
    datalist = json.loads((prepared / "datalist.json").read_text(encoding="utf-8"))
    sources = split_sources(datalist)
    run_dir = work / f"{args.preset}_seed{args.seed}"
    common = {
        "dataset_dir": str(prepared),
        "ckpt_dir": str(run_dir / "models"),
        "output_dir": str(run_dir / "eval"),
        "model_preset": args.preset,
        "allow_random_encoder": True,  # the Hiera checkpoint when fetched into the bundle, random weights otherwise
        "patch_size": args.patch_size,
        "sem_classes": spec["sem_classes"],
        "inst_types": spec["inst_types"],
        "magnification": spec["magnification"],
        **spec.get("postprocess", {}),
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "cache_rate": args.cache_rate,
        "seed": args.seed,
    }
    recipe = {
        "optimizer": args.optimizer,
        "peak_lr": args.lr,
        "weight_decay": args.weight_decay,
        "schedule": args.schedule,
        "warmup_fraction": args.warmup,
        "batch_size": args.batch_size,
        "patch_size": args.patch_size,
        "seed": args.seed,
        "threads": args.threads,
        "num_workers": args.num_workers,
    }
    common.update(stain_overrides(args))
    if any(k.startswith("train#random_transforms") for k in common):
        recipe["stain_augmentation"] = {"sigma": args.hed_sigma, "prob": args.hed_prob}
    info_path = run_dir / "train_info.json"
    if args.evaluate_only:
        if not info_path.is_file():
            raise SystemExit(f"--evaluate-only: no finished run in {run_dir} ({info_path.name} is missing)")
    else:
        info_path.unlink(missing_ok=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(info_path, train(common, args))
    info = json.loads(info_path.read_text(encoding="utf-8"))
    start = time.time()
    summary, ev = evaluate(common)
    overall = summary["instance"]["per_image_mean"]["overall"]
    result = {
        "label": args.label,
        "dataset": args.dataset,
        "data": "../" + Path(spec["input"]).relative_to(REPO.parent).as_posix(),
        "preset": PRESET_LABELS[args.preset],
        "recipe": recipe,
        "split": {
            "by": "source image (seeded 7:1:2 over source images, seed 0)",
            "source_images": sources,
            "tiles": {part: len(datalist[part]) for part in SPLIT_PARTS},
        },
        **info,
        "evaluation_minutes": round((time.time() - start) / 60, 1),
        "postprocess": {
            "magnification": spec["magnification"],
            **spec.get("postprocess", {}),
            "watershed_normalisation": ev.parser.get_parsed_content("watershed_normalisation"),
        },
        "test_images": summary["num_images"],
        "headline": {**headline(summary), "reduction": "mean over held-out 256² tiles"},
        "instance_per_type": summary["instance"]["per_image_mean"]["per_class"],
        "instance_overall": overall,
        "instance_pooled": summary["instance"]["pooled"],
        "semantic": summary["semantic"]["per_image_mean"],
        "tables_md": (run_dir / "eval" / "evaluation" / "tables.md").read_text(encoding="utf-8"),
    }
    if args.out:
        out = Path(args.out)
    else:
        suffix = "" if args.preset == "tiny" else f"_{args.preset}"
        out = REPO / "benchmarks" / "results" / f"real_histo_{args.dataset}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    print(result["tables_md"])
    print(json.dumps(result["headline"], indent=2))
    print(f"written {out}")


def evaluate(overrides: dict) -> tuple[dict, ConfigWorkflow]:
    """Score the checkpoint in ``overrides["ckpt_dir"]`` on the test part of ``overrides["dataset_dir"]``
    (``train.json`` + ``evaluate.json``); returns the report's ``metrics.json`` and the workflow."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wf = ConfigWorkflow(
            config_file=[str(BUNDLE / "train.json"), str(BUNDLE / "evaluate.json")], workflow_type="train", **overrides
        )
        wf.initialize()
        wf.run()
    metrics = Path(overrides["output_dir"]) / "evaluation" / "metrics.json"
    return json.loads(metrics.read_text(encoding="utf-8")), wf


def headline(summary: dict) -> dict[str, float]:
    """Binary PQ, AJI and Dice (HoVer-Net's ``dice_1``) of all nuclei, per-image means, from ``metrics.json``."""
    overall = summary["instance"]["per_image_mean"]["overall"]
    return {"binary_pq": overall["pq"], "aji": overall["aji"], "dice": overall["dice_1"]}


def train(overrides: dict, args: argparse.Namespace) -> dict:
    """Train through the bundle's ``train.json`` until ``args.minutes`` of wall clock have passed; return the run's
    summary with its learning curve."""
    config = dict(overrides)
    config["learning_rate"] = args.lr
    config["val_interval"] = args.val_interval
    config["optimizer#_target_"] = "torch.optim.AdamW" if args.optimizer == "adamw" else "torch.optim.Adam"
    config["optimizer#weight_decay"] = args.weight_decay
    if args.schedule != "bundle":
        config["lr_gamma"] = 1.0  # the bundle's per-epoch decay off: the schedule below sets the rate
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wf = ConfigWorkflow(config_file=[str(BUNDLE / "train.json")], workflow_type="train", epochs=100000, **config)
        wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    optimizer = wf.parser.get_parsed_content("optimizer")
    budget = 60 * args.minutes
    curve: list[dict] = []
    losses: list[float] = []
    loss_curve: list[dict] = []
    window: list[float] = []
    loads: list[float] = []
    start = time.time()

    @trainer.on(Events.ITERATION_STARTED)
    def _schedule(engine):
        if args.schedule != "bundle":
            factor = lr_factor((time.time() - start) / budget, schedule=args.schedule, warmup=args.warmup)
            for group in optimizer.param_groups:
                group["lr"] = args.lr * factor

    @trainer.on(Events.ITERATION_COMPLETED)
    def _budget(engine):
        losses.append(loss_value(engine.state.output))
        window.append(losses[-1])
        if engine.state.iteration % 10 == 0:
            loads.append(os.getloadavg()[0])
            loss_curve.append(
                {
                    "minutes": round((time.time() - start) / 60, 2),
                    "iteration": engine.state.iteration,
                    "train_loss_mean_10": round(sum(window) / len(window), 4),
                }
            )
            window.clear()
        if time.time() - start > budget:
            engine.terminate()

    def record(engine, *, final: bool = False) -> None:
        curve.append(
            {
                "minutes": round((time.time() - start) / 60, 2),
                "epoch": engine.state.epoch,
                "iteration": engine.state.iteration,
                "train_loss_mean_since_last": round(sum(losses) / len(losses), 4) if losses else None,
                "lr": optimizer.param_groups[0]["lr"],
                "validation": {k: float(v) for k, v in evaluator.state.metrics.items()},
                "final": final,
            }
        )
        losses.clear()

    # after the bundle's ValidationHandler (attached first): the evaluator's metrics of this epoch are there
    trainer.add_event_handler(Events.EPOCH_COMPLETED(every=args.val_interval), record)
    loads.append(os.getloadavg()[0])
    wf.run()
    train_seconds = time.time() - start
    if not curve or curve[-1]["iteration"] != trainer.state.iteration:
        # the budget ended inside an epoch: validate the last weights too (the best of all validations is model.pt)
        evaluator.run(global_epoch=trainer.state.epoch + 1)
        record(trainer, final=True)
    return {
        "train_minutes": round(train_seconds / 60, 1),
        "epochs": trainer.state.epoch,
        "iterations": trainer.state.iteration,
        "images_seen": trainer.state.iteration * args.batch_size,
        "load_average_1min": {
            "mean": round(sum(loads) / len(loads), 2),
            "max": round(max(loads), 2),
            "samples": len(loads),
        },
        "learning_curve": curve,
        "training_loss_curve": loss_curve,
    }


if __name__ == "__main__":
    main()
