"""Train the coseg_cbct bundle to number teeth by FDI (``tooth_types: "fdi"``) on synthetic phantoms for a fixed CPU
budget, then evaluate it on phantoms it never saw, also stored with flipped and permuted direction matrices.

    python benchmarks/train_cbct.py --minutes 30 --threads 1

Data: phantoms of ``coseg.dental.synthetic`` (jaw arches with separate teeth, random missing teeth and implants,
bone, pharynx airway, canals, sinuses, noise) written in ToothFairy2's layout and sliced by ``coseg.dental.prepare``
(training and validation cases); the held-out test phantoms use other seeds and are written three times: as
ToothFairy2 stores its scans (MetaImage), with the left-right and superior-inferior axes reversed in the direction
matrix, and as NIfTI with permuted and reversed array axes. Training runs through the bundle's real ``train.json``
until the wall-clock budget is spent (phantom generation and slicing not counted); evaluation of the weights with
the best validation score (``model.pt``, what the bundle keeps; ``--weights final``: the last iteration's) through
``inference.json`` + ``evaluate.json`` (``DentalEvaluationReport``): the paper's tables and, for teeth by FDI number,
the learned numbering beside the positional heuristic on the same predicted teeth.

Writes ``benchmarks/results/train_cbct.json`` (no machine paths). Not part of CI. Timings depend on the machine and
on what else runs on it: the result records the CPU count, the torch threads and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from coseg.dental.prepare import prepare_cbct
from coseg.dental.synthetic import write_toothfairy2_like
from coseg.engines.checkpoints import load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "coseg_cbct" / "configs"

#: the held-out copies: name -> how the phantoms are stored (write_toothfairy2_like arguments)
STORAGES: dict[str, dict[str, Any]] = {
    "as_toothfairy2": {"fmt": "mha"},
    "flipped_direction": {"fmt": "mha", "flip_axes": (True, False, True)},
    "permuted_direction": {"fmt": "nii.gz", "axis_order": (2, 0, 1), "flip_axes": (False, True, False)},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget (wall clock)")
    parser.add_argument("--work", default="/tmp/coseg_train_cbct", help="scratch folder")
    parser.add_argument("--tooth-types", choices=("fdi", "jaw"), default="fdi")
    parser.add_argument("--preset", default="micro", help="model preset (micro: the size a shared CPU trains)")
    parser.add_argument("--size", type=int, default=320, help="slice size (pixels; 4x the phantom's in-plane size)")
    parser.add_argument("--shape", type=int, nargs=3, default=(40, 80, 80), help="phantom shape (D, H, W)")
    parser.add_argument("--train-cases", type=int, default=14)
    parser.add_argument("--val-cases", type=int, default=2)
    parser.add_argument("--test-cases", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--epoch-length", type=int, default=25, help="iterations per epoch (validation: every 2)")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--magnification", type=float, default=25.0, help="watershed scale (teeth ~20 px wide)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--cache-rate", type=float, default=0.0, help="share of the slices kept in memory")
    parser.add_argument("--evaluate-only", action="store_true", help="evaluate the model an earlier run left")
    parser.add_argument(
        "--weights",
        choices=("best", "final"),
        default="best",
        help="evaluate the best validation score's weights (model.pt, what the bundle ships) or the last iteration's",
    )
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "train_cbct.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    prepared, held_out = make_data(work, args)
    common = {
        "dataset_dir": str(prepared),
        "ckpt_dir": str(work / "models"),
        "output_dir": str(work / "eval"),
        "model_preset": args.preset,
        "allow_random_encoder": True,  # no SAM2 checkpoint for the micro encoder: it trains from scratch
        "patch_size": args.size,
        "tooth_types": args.tooth_types,
        "magnification": args.magnification,
        "num_workers": 0,
    }
    info_path = work / "train_info.json"
    if args.evaluate_only:
        if not info_path.is_file():
            raise SystemExit(f"--evaluate-only: no finished run in {work} ({info_path.name} is missing)")
    else:
        info_path.unlink(missing_ok=True)
        (work / "models" / "model.pt").unlink(missing_ok=True)  # an earlier run's best weights are not this run's
        overrides = {
            **common,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "cache_rate": args.cache_rate,
            "epoch_length": args.epoch_length,
            "val_interval": 2,
            "ckpt_interval": 1000,
        }
        info_path.write_text(json.dumps(train(overrides, args.minutes), indent=2), encoding="utf-8")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    weights = Path(common["ckpt_dir"]) / "model.pt"
    if args.weights == "final":
        weights = weights.with_name("final_model.pt")
        save_checkpoint(load_checkpoint(weights.with_name("checkpoint_final.pt"))["model"], weights)
        info["evaluated_weights"] = "last iteration (checkpoint_final.pt)"
    evaluations = work / ("evaluation" if args.weights == "best" else "evaluation_final")
    results = {name: evaluate(common, cases, evaluations / name, weights) for name, cases in held_out.items()}
    result = {
        "benchmark": "coseg_cbct on synthetic phantoms: learned FDI numbering vs the positional heuristic",
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
            "note": "a CPU shared with other jobs: timings are inflated",
        },
        "settings": {
            "tooth_types": args.tooth_types,
            "preset": args.preset,
            "slice_size": args.size,
            "phantom_shape": list(args.shape),
            "cases": {"training": args.train_cases, "validation": args.val_cases, "test": args.test_cases},
            "batch_size": args.batch_size,
            "epoch_length": args.epoch_length,
            "cache_rate": args.cache_rate,
            "learning_rate": args.learning_rate,
            "magnification": args.magnification,
            "test_storages": {
                k: {kk: list(v) if isinstance(v, tuple) else v for kk, v in s.items()} for k, s in STORAGES.items()
            },
        },
        "training": info,
        "test": results,
        "checks": checks(results, args.tooth_types),
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result["checks"], indent=2))
    print(results["as_toothfairy2"]["tables_md"])
    print(f"written {out}")


def make_data(work: Path, args: argparse.Namespace) -> tuple[Path, dict[str, list[dict[str, str]]]]:
    """Training / validation phantoms sliced into ``work/prepared``; held-out phantoms (other seeds) in each storage."""
    prepared = work / "prepared"
    shape = tuple(args.shape)
    if not (prepared / "datalist.json").is_file():
        shutil.rmtree(work / "raw", ignore_errors=True)
        n = args.train_cases + args.val_cases
        write_toothfairy2_like(work / "raw", num_cases=n, shape=shape, seed=0)
        ratios = (args.train_cases / n, args.val_cases / n, 0.0)
        prepare_cbct(work / "raw", prepared, size=args.size, skip_empty=True, ratios=ratios, overwrite=True)
    held_out: dict[str, list[dict[str, str]]] = {}
    for name, storage in STORAGES.items():
        root = work / "held_out" / name
        if not (root / "dataset.json").is_file():
            write_toothfairy2_like(root, num_cases=args.test_cases, shape=shape, seed=1000, **storage)
        cases = sorted((root / "imagesTr").iterdir())
        held_out[name] = [
            {
                "image": str(image),
                "label": str(root / "labelsTr" / image.name.replace("_0000", "")),
                "dataset_json": str(root / "dataset.json"),
            }
            for image in cases
        ]
    return prepared, held_out


def train(overrides: dict, minutes: float) -> dict:
    """Train through the bundle's ``train.json`` until ``minutes`` of wall clock have passed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wf = ConfigWorkflow(config_file=[str(BUNDLE / "train.json")], workflow_type="train", epochs=100000, **overrides)
        wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    start = time.time()

    @trainer.on(Events.ITERATION_COMPLETED)
    def _budget(engine):
        if time.time() - start > 60 * minutes:
            engine.terminate()

    wf.run()
    ckpt_dir = Path(overrides["ckpt_dir"])
    if (ckpt_dir / "model.pt").is_file():
        weights = "best validation score (model.pt)"
    else:  # the budget ended before the first validation: evaluate the last weights
        final = load_checkpoint(ckpt_dir / "checkpoint_final.pt")
        save_checkpoint(final["model"], ckpt_dir / "model.pt")
        weights = "last iteration (the budget ended before the first validation)"
    history_path = Path(overrides["output_dir"]) / "validation_history.json"
    history = json.loads(history_path.read_text(encoding="utf-8")) if history_path.is_file() else None
    return {
        "train_minutes": round((time.time() - start) / 60, 1),
        "epochs": trainer.state.epoch,
        "iterations": trainer.state.iteration,
        "slices_seen": trainer.state.iteration * overrides["batch_size"],
        "evaluated_weights": weights,
        "validation_history": history,
    }


def evaluate(common: dict, cases: list[dict[str, str]], out: Path, weights: Path) -> dict[str, Any]:
    """Segment and evaluate held-out volumes with ``weights``; the report's numbers without file paths."""
    overrides = {
        **common,
        "ckpt_path": str(weights),
        "model_preset": None,
        "datalist": cases,
        "evaluation_dir": str(out),
        "num_workers": 0,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wf = ConfigWorkflow(
            config_file=[str(BUNDLE / "inference.json"), str(BUNDLE / "evaluate.json")],
            workflow_type="infer",
            **overrides,
        )
        wf.initialize()
        wf.run()
        wf.finalize()
    summary = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    red = "per_image_mean"
    sem = summary["regions_semantic_volume"][red]["per_class"]
    regions = {name: {"dice": sem["dice"][int(k)], "hd95_mm": sem["hd95"][int(k)]} for k, name in _REGIONS.items()}
    teeth = {
        name: {
            "f1_per_slice": summary["teeth_per_slice"][red]["per_class"][k]["f1"],
            "f1_per_volume": summary["teeth_per_volume"][red]["per_class"][k]["f1"],
            "pq_per_volume": summary["teeth_per_volume"][red]["per_class"][k]["pq"],
        }
        for k, name in _TEETH.items()
    }
    return {
        "cases": len(cases),
        "regions": regions,
        "teeth": teeth,
        "teeth_fdi": summary["teeth_fdi"],
        "per_case": summary["per_case"],
        "tables_md": (out / "tables.md").read_text(encoding="utf-8"),
    }


_REGIONS = {"1": "lower jawbone", "2": "upper jawbone", "3": "pharynx"}
_TEETH = {"1": "upper teeth", "2": "lower teeth"}


def checks(results: dict[str, Any], tooth_types: str) -> dict[str, Any]:
    """The issue's acceptance checks over every held-out storage."""
    out: dict[str, Any] = {}
    for name, r in results.items():
        fdi = r["teeth_fdi"]
        numbering = fdi["numbering"]
        classes = {k: v["dice"] for k, v in r["regions"].items()}
        classes.update({k: v["f1_per_volume"] for k, v in r["teeth"].items()})
        out[name] = {
            "every_class_above_zero": all(v is not None and v > 0 for v in classes.values()),
            "class_scores": classes,
            f"{numbering}_left_right_swaps": fdi[numbering]["identification"]["left_right_swaps"],
            f"{numbering}_upper_lower_swaps": fdi[numbering]["identification"]["upper_lower_swaps"],
            f"{numbering}_identification_accuracy": fdi[numbering]["identification"]["accuracy"],
            "heuristic_left_right_swaps": fdi["heuristic"]["identification"]["left_right_swaps"],
            "heuristic_identification_accuracy": fdi["heuristic"]["identification"]["accuracy"],
        }
    out["tooth_types"] = tooth_types
    return out


if __name__ == "__main__":
    main()
