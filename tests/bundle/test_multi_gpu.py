"""multi_gpu_train.json and multi_gpu_evaluate.json on CPU: two processes under torchrun (Gloo) on tiny data, checked
against a single-process evaluation of the checkpoint they wrote."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch
from monai.bundle import ConfigWorkflow

from tests.bundles.conftest import REPO, micro_overrides

from .ddp import VAL_HANDLERS, assert_same, load, rank_metrics, recorder, torchrun

TRAIN_IMAGES, VAL_IMAGES = 4, 3
CONFIGS = REPO / "bundles" / "coseg_histo" / "configs"

pytestmark = pytest.mark.slow  # a torchrun launch and an evaluation per test: 15-25 s each on 2 cores


@pytest.fixture(scope="module")
def ddp_dataset(tmp_path_factory):
    """10 synthetic 64x64 images: 4 to train on (2 per rank), the same 3 as validation and test split (so that
    evaluate.json's test split is the validation split), uneven across the 2 ranks."""
    from coseg.histo.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("ddp_data") / "synthetic"
    write_synthetic_dataset(root, num_images=10, size=64, seed=5)
    datalist = json.loads((root / "datalist.json").read_text(encoding="utf-8"))
    items = [*datalist["training"], *datalist["validation"], *datalist["test"]]
    datalist["training"] = items[:TRAIN_IMAGES]
    datalist["validation"] = datalist["test"] = items[TRAIN_IMAGES : TRAIN_IMAGES + VAL_IMAGES]
    (root / "datalist.json").write_text(json.dumps(datalist, indent=1), encoding="utf-8")
    return root


def _single_process_metrics(dataset, work) -> dict[str, float]:
    """evaluate.json in this process on ``work/models/model.pt`` (test split = validation split)."""
    configs = [str(CONFIGS / f) for f in ("train.json", "evaluate.json")]
    overrides = micro_overrides(dataset, work, output_dir=str(work / "single"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wf = ConfigWorkflow(config_file=configs, workflow_type="train", logging_file=False, **overrides)
        wf.initialize()
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    wf.run()
    wf.finalize()
    assert evaluator.state.iteration == VAL_IMAGES
    return {k: float(v) for k, v in evaluator.state.metrics.items()}


def test_training_on_two_processes(ddp_dataset, tmp_path):
    """One epoch of train.json + multi_gpu_train.json: each rank trains on its own half, only rank 0 writes, and the
    validation metrics (gathered over the ranks) equal a single-process evaluation of the checkpoint written."""
    extra = {
        "seen_recorder": recorder("SeenImagesRecorder", tmp_path / "record"),
        "metrics_recorder": recorder("MetricsRecorder", tmp_path / "record"),
        "train#trainer#train_handlers": "$coseg.engines.rank_zero_handlers(@train#handlers) + [@seen_recorder]",
        "validate#evaluator#val_handlers": VAL_HANDLERS,
    }
    overrides = micro_overrides(ddp_dataset, tmp_path)
    torchrun([CONFIGS / c for c in ("train.json", "multi_gpu_train.json")], extra, overrides, tmp_path, "training")

    seen = [load(tmp_path / "record" / f"seen_rank{r}.json")["1"] for r in (0, 1)]
    train = {os.path.basename(i["image"]) for i in load(ddp_dataset / "datalist.json")["training"]}
    assert len(seen[0]) == len(seen[1]) == TRAIN_IMAGES // 2
    assert not set(seen[0]) & set(seen[1]), "the ranks trained on the same images"
    assert set(seen[0]) | set(seen[1]) == train

    models = tmp_path / "models"
    assert sorted(p.name for p in models.iterdir()) == ["checkpoint_final.pt", "model.pt", "training_run.json"]
    final = torch.load(models / "checkpoint_final.pt", weights_only=True)
    # one epoch of 2 images per rank at batch 2: one step on each rank
    assert final["trainer"]["iteration"] == final["trainer"]["epoch_length"] == 1
    best = torch.load(models / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in best), "the DDP wrapper leaked into the saved weights"
    events = list((tmp_path / "eval").glob("events.out.tfevents*"))
    assert len({p.name.split(".")[-2] for p in events}) == 1, f"TensorBoard files from several processes: {events}"

    ranks = rank_metrics(tmp_path / "record")
    assert_same(ranks[0], _single_process_metrics(ddp_dataset, tmp_path), "2-process validation != one process")


def test_evaluation_on_two_processes(ddp_dataset, tmp_path):
    """evaluate.json + multi_gpu_evaluate.json equal evaluate.json in one process, on the same (untrained) weights."""
    from coseg.networks import CoSegPlusPlus

    (tmp_path / "models").mkdir()
    torch.manual_seed(3)
    net = CoSegPlusPlus.from_preset("micro", num_sem_classes=3, num_inst_types=4, freeze_encoder=False)
    torch.save(net.state_dict(), tmp_path / "models" / "model.pt")
    extra = {
        "metrics_recorder": recorder("MetricsRecorder", tmp_path / "record"),
        "validate#evaluator#val_handlers": VAL_HANDLERS,
    }
    overrides = micro_overrides(ddp_dataset, tmp_path, output_dir=str(tmp_path / "out"))
    configs = [CONFIGS / c for c in ("train.json", "evaluate.json", "multi_gpu_evaluate.json")]
    torchrun(configs, extra, overrides, tmp_path, "evaluating")

    ranks = rank_metrics(tmp_path / "record")
    assert_same(ranks[0], _single_process_metrics(ddp_dataset, tmp_path), "2-process evaluation != one process")
    report = load(tmp_path / "out" / "evaluation" / "metrics.json")
    assert report, "rank 0 wrote no evaluation report"
