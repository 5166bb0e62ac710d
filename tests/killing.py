"""Run a converter in a real subprocess, stop it half-way and kill it with SIGKILL (no cleanup code can run).

The child replaces one writer function by a wrapper that, after ``after`` calls, writes a marker file and
sleeps; the parent waits for the marker and sends SIGKILL. Nothing depends on timing: the kill always lands
while the child is blocked half-way through the dataset.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

_CHILD = textwrap.dedent(
    """
    import importlib, sys, time
    from pathlib import Path

    module_name, function_name, after, marker, cli_module = sys.argv[1:6]
    module = importlib.import_module(module_name)
    real = getattr(module, function_name)
    calls = 0

    def blocking(*args, **kwargs):
        global calls
        result = real(*args, **kwargs)
        calls += 1
        if calls == int(after):
            Path(marker).write_text("half-way", encoding="utf-8")
            time.sleep(3600)
        return result

    setattr(module, function_name, blocking)
    sys.exit(importlib.import_module(cli_module).main(sys.argv[6:]))
    """
)


def kill_half_way(
    tmp_path: Path, *, patch: str, after: int, cli_module: str, argv: Sequence[str], wait_s: float = 300.0
) -> None:
    """Run ``python -m <cli_module> <argv>`` with ``patch`` (``"module:function"``) blocking after ``after`` calls,
    then SIGKILL it.

    Raises:
        AssertionError: the child ended before reaching the point (its output is shown), or never got there.
    """
    module_name, function_name = patch.split(":")
    marker = tmp_path / "half-way.marker"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "shared")] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, module_name, function_name, str(after), str(marker), cli_module, *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + wait_s  # a safety net against a hung child, not a timing assertion
        while not marker.exists():
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                raise AssertionError(f"the converter ended (rc {proc.returncode}) before the kill point:\n{out}")
            if time.monotonic() > deadline:
                raise AssertionError("the converter did not reach the kill point")
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
