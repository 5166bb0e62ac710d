"""Helpers of the multi-GPU tests: launch a bundle under ``torchrun`` with 2 CPU processes (Gloo), and compare the
metrics the ranks recorded."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from .conftest import REPO

#: the evaluator's handlers as multi_gpu_*.json select them, plus the test's metrics recorder
VAL_HANDLERS = "$coseg.engines.handlers.rank_zero_handlers(@validate#handlers) + [@metrics_recorder]"


def torchrun(configs: list[Path], extra: dict, overrides: dict, work: Path, run_id: str) -> None:
    """``torchrun --standalone --nproc_per_node=2 -m monai.bundle run RUN_ID`` over the bundle's config files plus
    a last one (``extra``, written to ``work``) that adds the test's recorders; the bundle's ``logging.conf``."""
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
        str([str(c) for c in configs] + [str(extra_file)]),
        "--logging_file",
        str(configs[0].parent / "logging.conf"),
    ]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    # this checkout's coseg first (not an installed one), and the repository for tests.bundle.recorders
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "shared"), str(REPO)]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]


def recorder(name: str, folder: Path) -> dict:
    """Config of a recorder of :mod:`tests.bundle.recorders` that writes into ``folder``."""
    return {"_target_": f"tests.bundle.recorders.{name}", "output_dir": str(folder)}


def load(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def assert_same(a: dict[str, float], b: dict[str, float], what: str) -> None:
    """The validation metrics both dicts have are equal (NaN equals NaN); at least the key ones are there."""
    common = sorted(set(a) & set(b))
    assert "val_mpq" in common and "val_mean_dice" in common and len(common) >= 10, common
    mismatched = {k: (a[k], b[k]) for k in common if not close(a[k], b[k])}
    assert not mismatched, f"{what}: {mismatched}"


def rank_metrics(record: Path) -> list[dict[str, float]]:
    """The last metrics each of the 2 ranks recorded; they must agree (gathered over the ranks)."""
    ranks = [load(record / f"metrics_rank{r}.json")[-1] for r in (0, 1)]
    assert_same(ranks[0], ranks[1], "the ranks disagree: metrics were not gathered")
    return ranks
