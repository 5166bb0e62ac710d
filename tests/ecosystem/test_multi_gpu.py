"""multi_gpu_train.json and multi_gpu_evaluate.json on CPU: two processes under torchrun (Gloo) on tiny data, checked
against a single-process evaluation of the checkpoint they wrote."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings

import pytest
import torch
from monai.bundle import ConfigWorkflow

from tests.bundles.conftest import REPO, histo_overrides

TRAIN_IMAGES, VAL_IMAGES = 4, 3
CONFIGS = REPO / "bundles" / "coseg_histo" / "configs"
#: the evaluator's handlers as multi_gpu_*.json select them, plus the test's metrics recorder
VAL_HANDLERS = "$coseg.engines.rank_zero_handlers(@validate#handlers) + [@metrics_recorder]"

pytestmark = pytest.mark.slow  # a torchrun launch and an evaluation per test: 15-25 s each on 2 cores


@pytest.fixture(scope="module")
def ddp_dataset(tmp_path_factory):
    """10 synthetic 64x64 images: 4 to train on (2 per rank), the same 3 as validation and test split (so that
    evaluate.json's test split is the validation split), uneven across the 2 ranks."""
    from coseg.data.synthetic_histo import write_synthetic_dataset

    root = tmp_path_factory.mktemp("ddp_data") / "synthetic"
    write_synthetic_dataset(root, num_images=10, size=64, seed=5)
    datalist = json.loads((root / "datalist.json").read_text(encoding="utf-8"))
    items = [*datalist["training"], *datalist["validation"], *datalist["test"]]
    datalist["training"] = items[:TRAIN_IMAGES]
    datalist["validation"] = datalist["test"] = items[TRAIN_IMAGES : TRAIN_IMAGES + VAL_IMAGES]
    (root / "datalist.json").write_text(json.dumps(datalist, indent=1), encoding="utf-8")
    return root


def _torchrun(configs: list[str], extra: dict, overrides: dict, work, run_id: str) -> None:
    """``torchrun --standalone --nproc_per_node=2 -m monai.bundle run RUN_ID`` over the bundle's configs plus a third
    file (``extra``, written to ``work``) that adds the test's recorders."""
    extra_file = work / f"recorders_{run_id}.json"
    extra_file.write_text(json.dumps(extra), encoding="utf-8")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # one node; a free local port for the rendezvous
        "--nnodes=1",
        "--nproc_per_node=2",
        "-m",
        "monai.bundle",
        "run",
        run_id,
        "--config_file",
        str([str(CONFIGS / c) for c in configs] + [str(extra_file)]),
        "--logging_file",
        str(CONFIGS / "logging.conf"),
    ]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]


def _recorder(name: str, folder) -> dict:
    return {"_target_": f"tests.ecosystem.recorders.{name}", "output_dir": str(folder)}


def _load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def _single_process_metrics(dataset, work) -> dict[str, float]:
    """evaluate.json in this process on ``work/models/model.pt`` (test split = validation split)."""
    configs = [str(CONFIGS / f) for f in ("train.json", "evaluate.json")]
    overrides = histo_overrides(dataset, work, output_dir=str(work / "single"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wf = ConfigWorkflow(config_file=configs, workflow_type="train", logging_file=False, **overrides)
        wf.initialize()
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    wf.run()
    wf.finalize()
    assert evaluator.state.iteration == VAL_IMAGES
    return {k: float(v) for k, v in evaluator.state.metrics.items()}


def _close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def _assert_same(a: dict[str, float], b: dict[str, float], what: str) -> None:
    common = sorted(set(a) & set(b))
    assert "val_mpq" in common and "val_mean_dice" in common and len(common) >= 10, common
    mismatched = {k: (a[k], b[k]) for k in common if not _close(a[k], b[k])}
    assert not mismatched, f"{what}: {mismatched}"


def _rank_metrics(record) -> list[dict[str, float]]:
    ranks = [_load(record / f"metrics_rank{r}.json")[-1] for r in (0, 1)]
    _assert_same(ranks[0], ranks[1], "the ranks disagree: metrics were not gathered")
    return ranks


def test_training_on_two_processes(ddp_dataset, tmp_path):
    """One epoch of train.json + multi_gpu_train.json: each rank trains on its own half, only rank 0 writes, and the
    validation metrics (gathered over the ranks) equal a single-process evaluation of the checkpoint written."""
    extra = {
        "seen_recorder": _recorder("SeenImagesRecorder", tmp_path / "record"),
        "metrics_recorder": _recorder("MetricsRecorder", tmp_path / "record"),
        "train#trainer#train_handlers": "$coseg.engines.rank_zero_handlers(@train#handlers) + [@seen_recorder]",
        "validate#evaluator#val_handlers": VAL_HANDLERS,
    }
    overrides = histo_overrides(ddp_dataset, tmp_path)
    _torchrun(["train.json", "multi_gpu_train.json"], extra, overrides, tmp_path, "training")

    seen = [_load(tmp_path / "record" / f"seen_rank{r}.json")["1"] for r in (0, 1)]
    train = {os.path.basename(i["image"]) for i in _load(ddp_dataset / "datalist.json")["training"]}
    assert len(seen[0]) == len(seen[1]) == TRAIN_IMAGES // 2
    assert not set(seen[0]) & set(seen[1]), "the ranks trained on the same images"
    assert set(seen[0]) | set(seen[1]) == train

    models = tmp_path / "models"
    assert sorted(p.name for p in models.iterdir()) == ["checkpoint_final.pt", "model.pt"]
    final = torch.load(models / "checkpoint_final.pt", weights_only=True)
    # one epoch of 2 images per rank at batch 2: one step on each rank
    assert final["trainer"]["iteration"] == final["trainer"]["epoch_length"] == 1
    best = torch.load(models / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in best), "the DDP wrapper leaked into the saved weights"
    events = list((tmp_path / "eval").glob("events.out.tfevents*"))
    assert len({p.name.split(".")[-2] for p in events}) == 1, f"TensorBoard files from several processes: {events}"

    ranks = _rank_metrics(tmp_path / "record")
    _assert_same(ranks[0], _single_process_metrics(ddp_dataset, tmp_path), "2-process validation != one process")


def test_evaluation_on_two_processes(ddp_dataset, tmp_path):
    """evaluate.json + multi_gpu_evaluate.json equal evaluate.json in one process, on the same (untrained) weights."""
    from coseg.networks import CoSegPlusPlus

    (tmp_path / "models").mkdir()
    torch.manual_seed(3)
    net = CoSegPlusPlus.from_preset("micro", num_sem_classes=3, num_inst_types=4, freeze_encoder=False)
    torch.save(net.state_dict(), tmp_path / "models" / "model.pt")
    extra = {
        "metrics_recorder": _recorder("MetricsRecorder", tmp_path / "record"),
        "validate#evaluator#val_handlers": VAL_HANDLERS,
    }
    overrides = histo_overrides(ddp_dataset, tmp_path, output_dir=str(tmp_path / "out"))
    _torchrun(["train.json", "evaluate.json", "multi_gpu_evaluate.json"], extra, overrides, tmp_path, "evaluating")

    ranks = _rank_metrics(tmp_path / "record")
    _assert_same(ranks[0], _single_process_metrics(ddp_dataset, tmp_path), "2-process evaluation != one process")
    report = _load(tmp_path / "out" / "evaluation" / "metrics.json")
    assert report, "rank 0 wrote no evaluation report"
