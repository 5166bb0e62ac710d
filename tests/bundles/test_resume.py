"""Training killed with SIGKILL at any moment resumes with ``--resume true`` alone, from the newest complete checkpoint
of that run, and ends bit-identical to a run that was never interrupted (CPU, fixed seed, no data workers).

Real ``python -m monai.bundle run training`` processes on the micro model; ``kill_hook/sitecustomize.py`` kills them
during a checkpoint save (after writing half the file) or in the middle of an epoch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import REPO, micro_overrides

pytestmark = pytest.mark.slow  # five training processes of the micro model: about 100 s on 2 busy cores

HOOK = Path(__file__).parent / "kill_hook"
EPOCHS = 3  # 5 training images, batch 2: 3 iterations per epoch


def _train(work: Path, dataset: Path, *, resume: str, kill: str | None = None) -> subprocess.CompletedProcess:
    overrides = micro_overrides(dataset, work, epochs=EPOCHS, ckpt_interval=1)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training"]
    cmd += ["--config_file", "bundles/coseg_histo/configs/train.json", "--resume", resume]
    cmd += [arg for k, v in overrides.items() for arg in (f"--{k}", str(v))]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HOOK), str(REPO / "shared")]),
        "PYTHONWARNINGS": "ignore",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("COSEG_TEST_KILL", None)
    if kill is not None:
        env["COSEG_TEST_KILL"] = kill
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, encoding="utf-8", timeout=600)


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _killed(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == -9, f"not killed (rc {proc.returncode}):\n" + proc.stderr[-3000:]


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _run_id(models: Path) -> str:
    return json.loads((models / "training_run.json").read_text(encoding="utf-8"))["id"]


def test_killed_training_resumes_exactly(histo_dataset, tmp_path):
    reference, work = tmp_path / "reference", tmp_path / "work"
    _ok(_train(reference, histo_dataset, resume="false"))
    expected = _load(reference / "models" / "checkpoint_final.pt")
    assert expected["run"]["epoch"] == EPOCHS

    # an older run's checkpoint (perturbed, so that using it would show) and run record in the same folder
    models = work / "models"
    models.mkdir(parents=True)
    stale = _load(reference / "models" / f"checkpoint_epoch={EPOCHS}.pt")
    stale["model"] = {k: v + 1 if v.is_floating_point() else v for k, v in stale["model"].items()}
    torch.save(stale, models / "checkpoint_old_run.pt")
    shutil.copy(reference / "models" / "training_run.json", models / "training_run.json")

    # 1. a fresh run, killed while writing its epoch-2 checkpoint
    _killed(_train(work, histo_dataset, resume="false", kill="save:checkpoint_epoch=2.pt"))
    run_id = _run_id(models)
    assert run_id != stale["run"]["id"]
    assert _load(models / "checkpoint_epoch=1.pt")["run"] == {"id": run_id, "epoch": 1, "iteration": 3}
    assert not (models / "checkpoint_epoch=2.pt").exists()
    assert list(models.glob(".checkpoint_epoch=2.pt.*")), "the kill did not land during the save"
    _load(models / "model.pt")  # whole

    # 2. resumed (from epoch 1, not from the older run's epoch 3), killed in the middle of epoch 3
    _killed(_train(work, histo_dataset, resume="true", kill="step:5"))
    assert not list(models.glob(".checkpoint_epoch=2.pt.*")), "the interrupted save's leftover was not removed"
    assert _load(models / "checkpoint_epoch=2.pt")["run"] == {"id": run_id, "epoch": 2, "iteration": 6}
    assert not (models / f"checkpoint_epoch={EPOCHS}.pt").exists()

    # 3. resumed from epoch 2, killed while writing the final checkpoint
    _killed(_train(work, histo_dataset, resume="true", kill="save:checkpoint_final.pt"))
    assert not (models / "checkpoint_final.pt").exists()
    assert _load(models / f"checkpoint_epoch={EPOCHS}.pt")["run"]["epoch"] == EPOCHS

    # 4. resumed from epoch 3: nothing left to train but the final checkpoint
    _ok(_train(work, histo_dataset, resume="true"))
    final = _load(models / "checkpoint_final.pt")
    assert final["run"] == {"id": run_id, "epoch": EPOCHS, "iteration": 3 * EPOCHS}
    for key, tensor in expected["model"].items():
        assert torch.equal(final["model"][key], tensor), f"{key} differs from the uninterrupted run"
    for group, ref in zip(final["optimizer"]["state"].values(), expected["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(group[k], ref[k]) for k in ref)
    assert final["lr_scheduler"] == expected["lr_scheduler"] and final["best_model"] == expected["best_model"]
    best, expected_best = _load(models / "model.pt"), _load(reference / "models" / "model.pt")
    assert all(torch.equal(best[k], v) for k, v in expected_best.items())
    assert (models / "checkpoint_old_run.pt").is_file()  # another run's file: ignored, not deleted
