"""The coseg_histo bundle's real configs through ConfigWorkflow: train (and resume), evaluate, infer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from PIL import Image

from .conftest import REPO, micro_overrides


def _workflow(bundle, files, workflow_type, **overrides) -> ConfigWorkflow:
    configs = [str(bundle / "configs" / f) for f in files]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wf = ConfigWorkflow(config_file=configs, workflow_type=workflow_type, logging_file=False, **overrides)
        wf.initialize()
    return wf


@pytest.fixture(scope="module")
def trained(histo_bundle, histo_dataset, tmp_path_factory):
    """One epoch of training; returns the work folder."""
    work = tmp_path_factory.mktemp("histo_train")
    wf = _workflow(histo_bundle, ["train.json"], "train", **micro_overrides(histo_dataset, work))
    assert wf.check_properties() == []
    wf.run()
    wf.finalize()
    return work


def test_training_writes_checkpoints_logs_and_overlays(trained):
    models = trained / "models"
    assert (models / "checkpoint_final.pt").is_file()
    assert (models / "model.pt").is_file()  # best validation checkpoint
    final = torch.load(models / "checkpoint_final.pt", weights_only=True)
    assert set(final) == {"model", "optimizer", "lr_scheduler", "trainer", "best_model", "rng", "run"}
    run = json.loads((models / "training_run.json").read_text(encoding="utf-8"))
    assert final["run"] == {"id": run["id"], "epoch": 1, "iteration": 3}
    assert final["trainer"]["iteration"] == final["trainer"]["epoch_length"] == 3  # 5 images, batch 2: one epoch
    best = torch.load(models / "model.pt", weights_only=True)
    assert any(k.startswith("image_encoder.trunk.") for k in best)
    assert list((trained / "eval").glob("events.out.tfevents*")), "no TensorBoard log"
    overlays = list((trained / "eval" / "overlays" / "epoch_1").glob("*.png"))
    assert overlays, "no validation overlays"
    img = np.asarray(Image.open(overlays[0]))
    assert img.shape[0] == 64 and img.shape[1] == 3 * 64 + 2 * 4  # image | prediction | ground truth


def test_training_resumes_exactly(histo_bundle, histo_dataset, trained):
    state = torch.load(trained / "models" / "checkpoint_final.pt", weights_only=True)
    steps_before = max(s["step"] for s in state["optimizer"]["state"].values())
    wf = _workflow(
        histo_bundle,
        ["train.json"],
        "train",
        **micro_overrides(histo_dataset, trained, epochs=2, resume=True),
    )
    trainer = wf.parser.get_parsed_content("train#trainer")
    wf.run()
    assert trainer.state.epoch == 2
    assert trainer.state.iteration == 2 * state["trainer"]["iteration"]
    after = torch.load(trained / "models" / "checkpoint_final.pt", weights_only=True)
    steps_after = max(s["step"] for s in after["optimizer"]["state"].values())
    assert steps_after == 2 * steps_before  # the optimizer continued, it did not restart
    # the learning rate decayed once per epoch from the resumed scheduler: lr0 * gamma^2
    lr = after["optimizer"]["param_groups"][0]["lr"]
    assert lr == pytest.approx(1e-4 * 0.98**2)
    wf.finalize()


def test_evaluation_writes_the_paper_tables(histo_bundle, histo_dataset, trained):
    wf = _workflow(histo_bundle, ["train.json", "evaluate.json"], "train", **micro_overrides(histo_dataset, trained))
    wf.run()
    out = trained / "eval" / "evaluation"
    summary = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert summary["num_images"] == 2  # the test split
    assert summary["input"]["input_mode"] == "crop" and summary["input"]["patch_size"] == 64  # the default
    assert set(summary["instance"]) == {"per_image_mean", "pooled"}
    assert summary["semantic"]["pooled"]["reduction"] == "pooled"
    tables = (out / "tables.md").read_text(encoding="utf-8")
    for title in ("Table 1 layout", "Table 3 layout", "Table 5 layout", "tumour", "stroma", "TIL"):
        assert title in tables
    rows = (out / "per_image.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 3 and rows[0].startswith("image,sem_tumour_dice")
    wf.finalize()


def _infer(histo_bundle, trained, inputs, work, **extra):
    overrides = {
        "dataset_dir": str(inputs),
        "ckpt_path": str(trained / "models" / "model.pt"),
        "output_dir": str(work),
        "model_preset": "micro",
        "patch_size": 64,
        "sem_min_size": 4,
        "num_workers": 0,
        **extra,
    }
    wf = _workflow(histo_bundle, ["inference.json"], "infer", **overrides)
    assert wf.check_properties() == []
    wf.run()
    wf.finalize()


def test_inference_writes_every_output_for_small_and_large_images(histo_bundle, trained, tmp_path):
    from coseg.histo.synthetic import make_sample

    images = tmp_path / "images"
    images.mkdir()
    small = make_sample(size=64, seed=11)["image"]
    large = make_sample(size=160, seed=12)["image"][:150, :]  # 150 x 160: not a multiple of the 64-px window
    Image.fromarray(small).save(images / "small.png")
    Image.fromarray(large).save(images / "large.jpg", quality=95)
    out = tmp_path / "out"
    _infer(histo_bundle, trained, images, out)
    for name, shape in (("small", (64, 64)), ("large", (150, 160))):
        sem = np.asarray(Image.open(out / f"{name}_sem.png"))
        pred = np.asarray(Image.open(out / f"{name}_pred.png"))
        typ = np.asarray(Image.open(out / f"{name}_type.png"))
        import tifffile

        inst = tifffile.imread(out / f"{name}_inst.tif")
        assert sem.shape == pred.shape == typ.shape == inst.shape == shape
        assert inst.dtype == np.uint32
        assert sem.max() <= 2 and pred.max() <= 5 and typ.max() <= 3
        geo = json.loads((out / f"{name}.geojson").read_text(encoding="utf-8"))
        assert geo["type"] == "FeatureCollection"
        n_objects = sum(f["properties"].get("objectType") == "detection" for f in geo["features"])
        rows = (out / f"{name}_instances.csv").read_text(encoding="utf-8").splitlines()
        assert rows[0].startswith("id,type,type_name")
        assert len(rows) - 1 == len(np.unique(inst)) - 1
        assert n_objects <= len(rows) - 1
        overlay = np.asarray(Image.open(out / f"{name}_overlay.png"))
        assert overlay.shape == shape + (3,)


def test_labels_beyond_the_class_list_are_rejected(histo_bundle, histo_dataset, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(histo_dataset, bad)
    first = json.loads((bad / "datalist.json").read_text(encoding="utf-8"))["validation"][0]["label_type"]
    lab = np.asarray(Image.open(bad / first)).copy()
    lab[lab > 0] = 7
    Image.fromarray(lab).save(bad / first)
    wf = _workflow(histo_bundle, ["train.json"], "train", **micro_overrides(bad, tmp_path / "w"))
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    with pytest.raises(Exception) as err:
        evaluator.run()
    message = repr(err.value) + str(err.value.__cause__)
    assert "beyond the class list" in message


def test_documented_command_line_trains(histo_dataset, tmp_path):
    """``python -m monai.bundle run training --config_file ...`` from the repository root, as the README says."""
    overrides = micro_overrides(histo_dataset, tmp_path, val_interval=5)
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        "bundles/coseg_histo/configs/train.json",
    ]
    cmd += [arg for k, v in overrides.items() for arg in (f"--{k}", str(v))]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, encoding="utf-8", env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (tmp_path / "models" / "checkpoint_final.pt").is_file()
