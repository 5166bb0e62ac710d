"""Train the `tiny` preset of the coseg_histo bundle on real data for a fixed CPU budget and report the test metrics.

    python benchmarks/train_real_histo.py --dataset consep --minutes 20
    python benchmarks/train_real_histo.py --dataset glas --minutes 20

Data: ``../shared/data/consep256/train`` (CoNSeP re-tiled to 256², 40x; nuclei typed other / inflammatory /
epithelial / spindle; the semantic map is the nucleus foreground, as the converter derives it for nucleus-only
data) or ``../shared/data/glas/train`` (GlaS, 20x; gland semantic map + gland instances from connected
components). Both are converted with ``coseg.histo.prepare`` into a 7:1:2 split that keeps whole source
images together, trained through the bundle's real ``train.json`` (encoder from scratch: no SAM2 weights can be
downloaded here) until the time budget runs out, then evaluated on the test split with ``evaluate.json``.
Writes ``benchmarks/results/real_histo_<dataset>.json``. Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
import warnings
from pathlib import Path

from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from coseg.histo.prepare import prepare_dataset

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget (wall clock)")
    parser.add_argument("--work", default="/tmp/coseg_real_histo", help="scratch folder")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument(
        "--evaluate-only",
        action="store_true",
        help="evaluate the checkpoint an earlier run left in --work again (e.g. after changing post-processing)",
    )
    args = parser.parse_args()
    spec = DATASETS[args.dataset]
    work = Path(args.work) / args.dataset
    prepared = work / "prepared"
    if not (prepared / "datalist.json").is_file():
        shutil.rmtree(prepared, ignore_errors=True)
        prepare_dataset(spec["format"], spec["input"], prepared, seed=0, progress=True, **spec["options"])
    common = {
        "dataset_dir": str(prepared),
        "ckpt_dir": str(work / "models"),
        "output_dir": str(work / "eval"),
        "model_preset": "tiny",
        "allow_random_encoder": True,  # the Hiera-T checkpoint when fetched into the bundle, random weights otherwise
        "patch_size": 256,
        "sem_classes": spec["sem_classes"],
        "inst_types": spec["inst_types"],
        "magnification": spec["magnification"],
        **spec.get("postprocess", {}),
        "learning_rate": 3e-4,
        "batch_size": args.batch_size,
        "num_workers": 2,
        "cache_rate": 1.0,
    }
    info_path = work / "train_info.json"
    if args.evaluate_only:
        if not info_path.is_file():
            raise SystemExit(f"--evaluate-only: no finished run in {work} ({info_path.name} is missing)")
    else:
        info_path.unlink(missing_ok=True)
        info_path.write_text(json.dumps(train(common, args.minutes), indent=2), encoding="utf-8")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev = ConfigWorkflow(
            config_file=[str(BUNDLE / "train.json"), str(BUNDLE / "evaluate.json")], workflow_type="train", **common
        )
        ev.initialize()
        ev.run()
    summary = json.loads((work / "eval" / "evaluation" / "metrics.json").read_text(encoding="utf-8"))
    result = {
        "dataset": args.dataset,
        "source": str(spec["input"]),
        "preset": "tiny (Hiera-T encoder trained from scratch, 256 px)",
        **info,
        "postprocess": {
            "magnification": spec["magnification"],
            **spec.get("postprocess", {}),
            "watershed_normalisation": ev.parser.get_parsed_content("watershed_normalisation"),
        },
        "test_images": summary["num_images"],
        "instance_per_type": summary["instance"]["per_image_mean"]["per_class"],
        "instance_overall": summary["instance"]["per_image_mean"]["overall"],
        "instance_pooled": summary["instance"]["pooled"],
        "semantic": summary["semantic"]["per_image_mean"],
        "tables_md": (work / "eval" / "evaluation" / "tables.md").read_text(encoding="utf-8"),
    }
    out = REPO / "benchmarks" / "results" / f"real_histo_{args.dataset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(result["tables_md"])
    print(f"written {out}")


def train(overrides: dict, minutes: float) -> dict:
    """Train through the bundle's ``train.json`` until ``minutes`` of wall clock have passed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wf = ConfigWorkflow(
            config_file=[str(BUNDLE / "train.json")], workflow_type="train", epochs=1000, val_interval=2, **overrides
        )
        wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    start = time.time()

    @trainer.on(Events.ITERATION_COMPLETED)
    def _budget(engine):
        if time.time() - start > 60 * minutes:
            engine.terminate()

    wf.run()
    return {
        "train_minutes": round((time.time() - start) / 60, 1),
        "epochs": trainer.state.epoch,
        "iterations": trainer.state.iteration,
        "batch_size": overrides["batch_size"],
    }


if __name__ == "__main__":
    main()
