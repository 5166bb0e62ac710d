"""benchmarks/gpu_check.sh runs on a CPU in its quick mode and reports every check."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from ..conftest import REPO_ROOT


def test_gpu_check_quick_on_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    res = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", str(tmp_path), "--device", "cpu", "--quick", "--no-compile"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text(encoding="utf-8"))
    assert report["scan"]["ok"] and report["scan"]["max_rel_error_vs_cpu"] < 1e-4
    assert report["training"]["ok"]
    assert report["inference"][0]["latency_ms"] > 0 and report["inference"][0]["mode"] == "eager"
    assert "train step" in res.stdout and "inference" in res.stdout
