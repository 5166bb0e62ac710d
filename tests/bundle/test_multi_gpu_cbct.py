"""coseg_cbct's multi_gpu_train.json (slice training, from prepared slices and from label volumes) and
multi_gpu_evaluate.json (volume evaluation) on CPU: two processes under torchrun (Gloo) on tiny phantoms, checked
against single-process runs of the same weights."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from ..bundles.conftest import micro_overrides
from .conftest import CBCT
from .ddp import VAL_HANDLERS, assert_same, close, load, rank_metrics, recorder, torchrun

CONFIGS = CBCT / "configs"
TRAIN_SLICES, VAL_SLICES, TEST_CASES = 4, 3, 3

pytestmark = pytest.mark.slow  # a torchrun launch and a single-process run per test: 15-30 s each on 2 cores


@pytest.fixture(scope="module")
def cbct_ddp_dataset(tmp_path_factory) -> Path:
    """Phantoms sliced to 64x64 by ``coseg.dental.prepare``, with a datalist cut down to 4 training slices (2 per
    rank), 3 validation slices and the slices of 3 test cases (both uneven across the 2 ranks)."""
    from coseg.dental.prepare import prepare_cbct
    from coseg.dental.synthetic import write_toothfairy2_like

    root = tmp_path_factory.mktemp("cbct_ddp")
    write_toothfairy2_like(root / "raw", num_cases=4, shape=(16, 48, 48), seed=7)
    prepare_cbct(root / "raw", root / "prepared", size=64, skip_empty=True, progress=False)
    datalist_path = root / "prepared" / "datalist.json"
    datalist = json.loads(datalist_path.read_text(encoding="utf-8"))
    slices = [*datalist["training"], *datalist["validation"], *datalist["test"]]
    cases = sorted({item["case"] for item in slices})
    assert len(cases) >= TEST_CASES
    datalist["training"] = slices[::7][:TRAIN_SLICES]
    datalist["validation"] = slices[3::7][:VAL_SLICES]
    datalist["test"] = [item for item in slices if item["case"] in cases[:TEST_CASES]]
    datalist_path.write_text(json.dumps(datalist, indent=1), encoding="utf-8")
    return root / "prepared"


def _workflow(files: list[str], workflow_type: str, **overrides) -> ConfigWorkflow:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wf = ConfigWorkflow(
            config_file=[str(CONFIGS / f) for f in files], workflow_type=workflow_type, logging_file=False, **overrides
        )
        wf.initialize()
    return wf


def _single_process_validation(dataset: Path, weights: Path, work: Path) -> dict[str, float]:
    """train.json's slice validation in this process, on ``weights``."""
    wf = _workflow(["train.json"], "train", **micro_overrides(dataset, work))
    network = wf.parser.get_parsed_content("network")
    network.load_state_dict(torch.load(weights, weights_only=True))
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    evaluator.run()
    wf.finalize()
    assert evaluator.state.iteration == VAL_SLICES
    return {k: float(v) for k, v in evaluator.state.metrics.items()}


def test_slice_training_on_two_processes(cbct_ddp_dataset, tmp_path):
    """One epoch of train.json + multi_gpu_train.json: each rank trains on its own half of the slices, only rank 0
    writes, and the validation metrics (gathered over the ranks) equal a single-process validation of the weights
    written."""
    extra = {
        "seen_recorder": recorder("SeenImagesRecorder", tmp_path / "record"),
        "metrics_recorder": recorder("MetricsRecorder", tmp_path / "record"),
        "train#trainer#train_handlers": "$coseg.engines.rank_zero_handlers(@train#handlers) + [@seen_recorder]",
        "validate#evaluator#val_handlers": VAL_HANDLERS,
    }
    configs = [CONFIGS / c for c in ("train.json", "multi_gpu_train.json")]
    torchrun(configs, extra, micro_overrides(cbct_ddp_dataset, tmp_path), tmp_path, "training")

    seen = [load(tmp_path / "record" / f"seen_rank{r}.json")["1"] for r in (0, 1)]
    train = {os.path.basename(i["image"]) for i in load(cbct_ddp_dataset / "datalist.json")["training"]}
    assert len(seen[0]) == len(seen[1]) == TRAIN_SLICES // 2
    assert not set(seen[0]) & set(seen[1]), "the ranks trained on the same slices"
    assert set(seen[0]) | set(seen[1]) == train

    models = tmp_path / "models"
    assert sorted(p.name for p in models.iterdir()) == ["checkpoint_final.pt", "model.pt", "training_run.json"]
    final = torch.load(models / "checkpoint_final.pt", weights_only=True)
    assert final["trainer"]["iteration"] == final["trainer"]["epoch_length"] == 1  # 2 slices per rank, batch 2
    best = torch.load(models / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in best), "the DDP wrapper leaked into the saved weights"
    for name, tensor in final["model"].items():
        assert torch.equal(best[name], tensor), f"model.pt and checkpoint_final.pt differ in {name}"
    events = list((tmp_path / "eval").glob("events.out.tfevents*"))
    assert len({p.name.split(".")[-2] for p in events}) == 1, f"TensorBoard files from several processes: {events}"

    ranks = rank_metrics(tmp_path / "record")
    single = _single_process_validation(cbct_ddp_dataset, models / "model.pt", tmp_path / "single")
    assert_same(ranks[0], single, "2-process validation != one process")


def test_volume_training_on_two_processes(cbct_ddp_dataset, tmp_path):
    """train.json + multi_gpu_train.json on {image, label} volume pairs (as MONAI Label hands them): each rank slices
    its own volume, both take the same number of steps, and rank 0 writes the checkpoint."""
    from coseg.dental.volumes import find_toothfairy2_cases

    cases = find_toothfairy2_cases(cbct_ddp_dataset.parent / "raw")
    pairs = [{"image": str(c.image), "label": str(c.label)} for c in cases]
    extra = {
        "seen_recorder": recorder("SeenImagesRecorder", tmp_path / "record"),
        "train#trainer#train_handlers": "$coseg.engines.rank_zero_handlers(@train#handlers) + [@seen_recorder]",
        "train#dataset#data": pairs[:2],
        "validate#dataset#data": pairs[2:3],
    }
    # 2 steps of batch 2 per rank; no validation (val_interval > epochs)
    overrides = micro_overrides(tmp_path / "no_prepared_dataset", tmp_path, epoch_length=2, val_interval=2)
    torchrun([CONFIGS / c for c in ("train.json", "multi_gpu_train.json")], extra, overrides, tmp_path, "training")

    seen = [load(tmp_path / "record" / f"seen_rank{r}.json")["1"] for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 4
    volumes = [{name.rsplit("_axial_", 1)[0] for name in names} for names in seen]
    assert all(len(v) == 1 for v in volumes) and volumes[0] != volumes[1], f"the ranks shared volumes: {seen}"
    assert volumes[0] | volumes[1] == {c.case_id for c in cases[:2]}
    final = torch.load(tmp_path / "models" / "checkpoint_final.pt", weights_only=True)
    assert final["trainer"]["iteration"] == 2


def _flatten(tree, prefix: str = "") -> dict[str, float]:
    """The numbers of a nested metrics.json, by path."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _flatten(sub, f"{prefix}{key}/").items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in _flatten(sub, f"{prefix}{i}/").items()}
    if isinstance(tree, (int, float)) and not isinstance(tree, bool):
        return {prefix.rstrip("/"): float(tree)}
    if tree is None:
        return {prefix.rstrip("/"): float("nan")}
    return {}


def test_volume_evaluation_on_two_processes(cbct_ddp_dataset, tmp_path):
    """inference.json + evaluate.json + multi_gpu_evaluate.json: each rank segments its own test volumes, and rank 0
    writes the report of all of them, equal to the single-process evaluation of the same (untrained) weights."""
    from coseg.networks import CoSegPlusPlus

    torch.manual_seed(5)
    net = CoSegPlusPlus.from_preset("micro", num_sem_classes=4, num_inst_types=3, freeze_encoder=False)
    weights = tmp_path / "model.pt"
    torch.save(net.state_dict(), weights)
    common = {
        "dataset_dir": str(cbct_ddp_dataset),
        "ckpt_path": str(weights),
        "model_preset": "micro",
        "patch_size": 64,
        "num_workers": 0,
    }
    extra = {
        "seen_recorder": recorder("SeenImagesRecorder", tmp_path / "record"),
        "evaluator#val_handlers": "$@handlers + [@seen_recorder]",
    }
    configs = [CONFIGS / c for c in ("inference.json", "evaluate.json", "multi_gpu_evaluate.json")]
    torchrun(configs, extra, {**common, "evaluation_dir": str(tmp_path / "ddp")}, tmp_path, "evaluating")

    seen = [load(tmp_path / "record" / f"seen_rank{r}.json")["1"] for r in (0, 1)]
    assert sorted(map(len, seen)) == [1, 2], seen
    assert not set(seen[0]) & set(seen[1]), "the ranks segmented the same volumes"
    volumes = sorted(p.name for p in (tmp_path / "ddp" / "volumes").glob("*_toothfairy2.nii.gz"))
    assert len(volumes) == TEST_CASES

    wf = _workflow(["inference.json", "evaluate.json"], "infer", **common, evaluation_dir=str(tmp_path / "single"))
    wf.run()
    wf.finalize()
    ddp, single = (load(tmp_path / d / "metrics.json") for d in ("ddp", "single"))
    assert ddp["num_cases"] == single["num_cases"] == TEST_CASES
    a, b = _flatten(ddp), _flatten(single)
    assert set(a) == set(b) and len(a) > 50
    mismatched = {k: (a[k], b[k]) for k in a if not close(a[k], b[k])}
    assert not mismatched, f"2-process evaluation != one process: {mismatched}"
