"""User errors reach the user as one line naming the file and the problem (coseg.errors): the error family, the hook,
and the entry points the bad-input catalogue (tests/test_bad_input_catalogue.py, bad files fed to the converters,
``run training`` / ``run inference`` of both bundles and ``coseg.wsi``) does not cover, run as real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from coseg.errors import (
    DEBUG_ENV,
    InputFileError,
    InputNotFoundError,
    UserInputError,
    find_user_error,
)

REPO = Path(__file__).resolve().parents[1]
HISTO = REPO / "bundles" / "coseg_histo"
CBCT = REPO / "bundles" / "coseg_cbct"


def _run(args: list[str], *, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    environment.update({"PYTHONWARNINGS": "ignore", **(env or {})})
    return subprocess.run(
        args, cwd=REPO, capture_output=True, text=True, encoding="utf-8", env=environment, timeout=timeout
    )


def _python(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-c", textwrap.dedent(code), *args], env=env)


def _assert_one_line(res: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit status 1 (not an abort), no traceback anywhere, and stderr ending with ``error: ...`` naming ``needles``."""
    output = res.stdout + res.stderr
    assert res.returncode == 1, f"exit status {res.returncode}\n{output[-4000:]}"
    assert "Traceback" not in output, output[-4000:]
    last = res.stderr.rstrip().splitlines()[-1] if res.stderr.strip() else ""
    assert last.startswith("error: "), output[-4000:]
    for needle in needles:
        assert needle in last, (needle, last)
    return last


def _png(path: Path, size: int = 16) -> Path:
    """A noise RGB PNG (incompressible: a truncated copy really lacks pixel data)."""
    Image.fromarray(np.random.default_rng(size).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def _truncate(path: Path, keep: int) -> Path:
    path.write_bytes(path.read_bytes()[:keep])
    return path


# ---- the error family and finding the user error in a chain ------------------------------------------------------


def test_user_errors_are_value_errors_and_missing_files_are_file_not_found_errors():
    err = InputNotFoundError("/data/a.png")
    assert isinstance(err, InputFileError) and isinstance(err, UserInputError) and isinstance(err, ValueError)
    assert isinstance(err, FileNotFoundError)
    assert str(err) == "/data/a.png: no such file or directory"
    assert issubclass(InputFileError, UserInputError)


def test_the_innermost_user_error_is_found_through_causes_and_contexts():
    inner = InputFileError("/data/a.png", "image file is truncated")
    try:
        try:
            raise RuntimeError("applying transform <LoadImaged>") from inner
        except RuntimeError as wrapped:
            raise RuntimeError("Failed to instantiate component 'CacheDataset'") from wrapped
    except RuntimeError as outer:
        assert find_user_error(outer) is inner
    try:
        try:
            raise inner
        except InputFileError:
            raise KeyError("handler failed")  # noqa: B904 -- an implicit context, as ignite handlers leave it
    except KeyError as outer:
        assert find_user_error(outer) is inner


def test_a_user_error_from_a_dataloader_worker_process_is_recovered_from_its_text():
    from torch._utils import ExceptionWrapper

    try:
        try:
            raise InputFileError("/data/b.png", "cannot be read as an image (truncated)")
        except InputFileError as err:
            raise RuntimeError("applying transform <LoadImaged>") from err
    except RuntimeError:
        wrapper = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(RuntimeError) as caught:
        wrapper.reraise()  # what the DataLoader does in the main process
    found = find_user_error(caught.value)
    assert isinstance(found, UserInputError)
    assert str(found) == "/data/b.png: cannot be read as an image (truncated)"


def test_bugs_are_not_user_errors_but_missing_files_are():
    try:
        raise RuntimeError("wrapped") from KeyError("a bug")
    except RuntimeError as err:
        assert find_user_error(err) is None
    assert find_user_error(ValueError("a bug's ValueError")) is None
    missing = FileNotFoundError(2, "No such file or directory", "/data/c.png")
    assert find_user_error(missing) is missing


# ---- the image reader of the bundles' LoadImaged names the file --------------------------------------------------


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda p: _truncate(_png(p, 64), 120), "cannot be read as an image"),
        (lambda p: p.write_bytes(b"not an image at all") and p, "cannot be read as an image"),
        (lambda p: p, "does not exist"),
    ],
    ids=["truncated", "not-an-image", "missing"],
)
def test_checked_pil_reader_names_the_file(tmp_path, make, problem):
    from coseg.transforms import LoadCheckedImaged

    path = tmp_path / "bad.png"
    make(path)
    load = LoadCheckedImaged("image", reader="coseg.transforms.CheckedPILReader", image_only=True)
    with pytest.raises(Exception) as caught:
        load({"image": str(path)})
    found = find_user_error(caught.value)
    assert isinstance(found, InputFileError) and found.path == str(path) and problem in found.problem, caught.value
    good = _png(tmp_path / "good.png", 8)
    assert tuple(load({"image": str(good)})["image"].shape) == (8, 8, 3)


# ---- the hook, in real processes ---------------------------------------------------------------------------------

_WRAPPED = """
    from coseg.errors import InputFileError, install_excepthook
    install_excepthook()
    try:
        raise InputFileError("/data/a.png", "image file is truncated")
    except InputFileError as err:
        raise RuntimeError("applying transform <LoadImaged>") from err
"""


def test_the_hook_prints_one_line_and_debug_brings_the_traceback_back():
    _assert_one_line(_python(_WRAPPED), "/data/a.png: image file is truncated")
    debug = _python(_WRAPPED, env={DEBUG_ENV: "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "InputFileError" in debug.stderr


def test_the_hook_keeps_the_traceback_of_a_bug():
    res = _python("from coseg.errors import install_excepthook\ninstall_excepthook()\n{}['missing']")
    assert res.returncode == 1 and "Traceback" in res.stderr and "KeyError: 'missing'" in res.stderr


def test_logged_tracebacks_of_user_errors_keep_one_line():
    """As ignite's engines and MONAI's StatsHandler log the exception that stops a run."""
    code = """
        import logging
        from coseg.errors import InputFileError, install_excepthook
        logging.basicConfig(level=logging.INFO)
        install_excepthook()
        try:
            raise RuntimeError("Caught RuntimeError in DataLoader worker process 0.\\nOriginal Traceback (most "
                               "recent call last):\\n  File x\\ncoseg.errors.InputFileError: /data/a.png: truncated\\n")
        except RuntimeError as err:
            logging.getLogger("stats").exception(f"Exception: {err}")
        try:
            raise InputFileError("/data/b.png", "grey")
        except InputFileError as err:
            logging.getLogger("stats").exception(f"Exception: {err}")
            raise
    """
    res = _python(code)
    _assert_one_line(res, "/data/b.png: grey")
    lines = res.stderr.strip().splitlines()
    assert (
        lines[0]
        == "ERROR:stats:Exception: Caught RuntimeError in DataLoader worker process 0. (/data/a.png: truncated)"
    )
    assert lines[1] == "ERROR:stats:Exception: /data/b.png: grey" and len(lines) == 3


def test_a_failed_cache_fill_exits_cleanly_instead_of_aborting(tmp_path):
    """A ``CacheDataset`` item fails while other pool threads are inside torch operations: without waiting for them,
    the interpreter aborts at shutdown (``terminate called without an active exception``, status 134)."""
    code = """
        import sys
        from pathlib import Path
        import numpy as np, torch
        from monai.data import CacheDataset
        from monai.transforms import Compose, Lambdad, LoadImaged
        from PIL import Image
        from coseg.errors import install_excepthook

        install_excepthook()
        root = Path(sys.argv[1])
        good = root / "good.png"
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
        bad = root / "bad.png"
        bad.write_bytes(good.read_bytes()[:40])

        def busy(x):  # torch operations release the GIL: the threads are in C++ when the interpreter finalises
            t = torch.zeros(16)
            for _ in range(20000):
                t = t + 1
            return x

        items = [{"image": str(bad)}] + [{"image": str(good)}] * 3
        load = LoadImaged("image", reader="coseg.transforms.CheckedPILReader")
        CacheDataset(items, Compose([load, Lambdad("image", busy)]), cache_rate=1.0, num_workers=4, progress=False)
    """
    res = _python(code, str(tmp_path))
    _assert_one_line(res, str(tmp_path / "bad.png"), "cannot be read as an image")


# ---- python -m monai.bundle run ... ------------------------------------------------------------------------------


def _bundle_run(run_id: str, configs: list[Path], **overrides) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", repr([str(c) for c in configs])]
    args += [arg for k, v in overrides.items() for arg in (f"--{k}", str(v))]
    return _run(args)


def test_histo_evaluation_without_a_dataset_reports_it_in_one_line(tmp_path):
    configs = [HISTO / "configs" / "train.json", HISTO / "configs" / "evaluate.json"]
    overrides = {"dataset_dir": tmp_path / "nothing", "model_preset": "micro", "ckpt_dir": tmp_path / "models"}
    res = _bundle_run("evaluating", configs, **overrides, output_dir=tmp_path / "eval")
    _assert_one_line(res, str(tmp_path / "nothing"), "no datalist.json")


# ---- our command lines -------------------------------------------------------------------------------------------


def test_experiments_report_a_missing_config_in_one_line(tmp_path):
    args = ["run", "table7", "--config", str(tmp_path / "none.json"), "--output", str(tmp_path / "out")]
    _assert_one_line(_run([sys.executable, "-m", "coseg.experiments", *args]), "none.json")


def test_bundle_export_reports_a_bad_override_in_one_line(tmp_path):
    args = ["export", str(HISTO), str(tmp_path), "--models", "--set", "no_such_item=1"]
    res = _run([sys.executable, "-m", "coseg.bundle", *args])
    assert res.returncode == 2 and "Traceback" not in res.stdout + res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: ") and "no_such_item" in res.stderr
