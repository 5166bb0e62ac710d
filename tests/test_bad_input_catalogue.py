"""The bad-input catalogue: broken, odd and wrong files fed to every entry point a user runs.

Entry points: ``python -m coseg.histo.prepare`` (formats folder, puma, glas, crag, consep_tiles),
``python -m coseg.dental.prepare``, ``python -m monai.bundle run training`` / ``run inference`` of
``bundles/coseg_histo`` and ``bundles/coseg_cbct`` (CBCT inference reads volumes), and ``python -m coseg.wsi``.

A refused case asserts what a user sees: a non-zero exit that is not an abort or a signal, exactly one
``error: <file>: <problem>`` line naming the file and the problem, no traceback, and no partial output (the output
folder absent, or as it was; no temporaries beside it). A case that is accepted on purpose (its id ends in
``accepted``) asserts the documented behaviour instead: exit 0 and the right result.

The bundle runs and ``coseg.wsi`` are real processes. The converters are run through their ``main`` in this
process (``capfd`` sees what the process would print, ITK's C++ messages included): ``main`` is the function the
command line calls, and it prints the same one line; one case of each converter also runs as a process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from coseg.errors import DEBUG_ENV
from tests.histo.test_prepare import NUCLEI, TISSUE, make_crag, make_glas, make_puma, make_tiles

REPO = Path(__file__).resolve().parents[1]
HISTO = REPO / "bundles" / "coseg_histo"
CBCT = REPO / "bundles" / "coseg_cbct"
RNG = np.random.default_rng(13)

# ---- what every refused case must show --------------------------------------------------------------------------


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def _leftovers(folder: Path) -> list[Path]:
    """Temporaries and half-written folders anywhere under ``folder``."""
    marks = (".tmp", ".partial", ".old-")
    return sorted(p for p in folder.rglob("*") if any(m in p.name for m in marks))


def assert_refused(res: Result, work: Path, output: Path | None, culprit: str, *keywords: str) -> str:
    """A clean refusal: exit 1 or 2, one ``error:`` line naming ``culprit`` and the ``keywords``, no traceback, and
    ``output`` (under ``work``) absent or empty, with no temporaries anywhere under ``work``."""
    text = res.stdout + res.stderr
    assert res.returncode in (1, 2), f"exit status {res.returncode} (134 = abort, < 0 = signal)\n{text[-3000:]}"
    assert "Traceback" not in text, text[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, f"expected one error line:\n{res.stderr[-3000:]}"
    last = res.stderr.rstrip().splitlines()[-1]
    assert last == errors[0], res.stderr[-3000:]
    assert culprit in last, (culprit, last)
    for word in keywords:
        assert word.lower() in last.lower(), (word, last)
    if output is not None:
        assert not output.exists() or not [p for p in output.rglob("*") if p.is_file()], sorted(output.rglob("*"))
    assert not _leftovers(work), _leftovers(work)
    return last


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    env.update({"PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO / "shared")})
    return env


def run_process(args: list[str], timeout: int = 600) -> Result:
    res = subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, encoding="utf-8", env=_env(), timeout=timeout
    )
    return Result(res.returncode, res.stdout, res.stderr)


def run_main(main: Callable[[list[str]], int], argv: list[str], capfd) -> Result:
    capfd.readouterr()
    rc = main(argv)
    out, err = capfd.readouterr()
    if rc != 0:  # nothing on stderr but the error line and progress bars (no C++ library's own complaint)
        lines = [line for line in err.splitlines() if line.strip()]
        noise = [line for line in lines if not line.startswith("error: ") and "%|" not in line]
        assert not noise, err
    return Result(rc, out, err)


# ---- small builders of bad files ---------------------------------------------------------------------------------


def noise_rgb(size: int = 32, *, channels: int = 3) -> np.ndarray:
    return RNG.integers(0, 256, (size, size, channels), dtype=np.uint8)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def truncate(path: Path, keep: int | None = None) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])
    return path


def write_png16(path: Path, rgb16: np.ndarray) -> Path:
    import cv2

    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb16[..., ::-1]))  # OpenCV writes BGR
    return path


def write_cmyk(path: Path, size: int = 32) -> Path:
    Image.fromarray(noise_rgb(size)).convert("CMYK").save(path)
    return path


def _cmyk_jpeg_bytes(size: int) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(noise_rgb(size)).convert("CMYK").save(buffer, format="JPEG")
    return buffer.getvalue()


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return path


# ==== coseg.histo.prepare ========================================================================================


def _folder(raw: Path, *, n: int = 3, size: int = 32, types: bool = False) -> Path:
    """A ``folder``-format dataset: ``images/``, ``inst/`` (two nuclei each) and optionally ``type/`` (type 1)."""
    for sub in ("images", "inst") + (("type",) if types else ()):
        (raw / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(noise_rgb(size)).save(raw / "images" / f"c{i}.png")
        inst = np.zeros((size, size), np.uint8)
        inst[4:10, 4:10] = 1
        inst[15:20, 15:25] = 2
        Image.fromarray(inst).save(raw / "inst" / f"c{i}.png")
        if types:
            Image.fromarray((inst > 0).astype(np.uint8)).save(raw / "type" / f"c{i}.png")
    return raw


def _replace_image(raw: Path, name: str, write: Callable[[Path], object]) -> Path:
    (raw / "images" / "c1.png").unlink()
    path = raw / "images" / name
    write(path)
    return path


def _puma(raw: Path) -> Path:
    make_puma(raw, cases=("roi_001", "roi_002"), nuclei=NUCLEI, tissue=TISSUE)
    return raw


def _puma_file(raw: Path, kind: str) -> Path:
    return next(raw.rglob(f"roi_002_{kind}.geojson"))


def _puma_empty(raw: Path) -> Path:
    path = _puma_file(raw, "nuclei")
    path.write_text(json.dumps({"type": "FeatureCollection", "features": []}), encoding="utf-8")
    return path


def _tiles_type_out_of_range(raw: Path) -> Path:
    """``classes.json`` names types 0-4; one tile's type map holds 9."""
    path = raw / "type" / "train_2_000.png"
    typ = np.asarray(Image.open(path)).copy()
    typ[typ == 4] = 9
    Image.fromarray(typ).save(path)
    return path


def _folder_sem_out_of_range(raw: Path) -> Path:
    (raw / "sem").mkdir()
    (raw / "classes.json").write_text(json.dumps({"semantic_classes": {"0": "bg", "1": "tumour"}}), encoding="utf-8")
    for i in range(3):
        sem = np.zeros((32, 32), np.uint8)
        sem[:, :16] = 1 if i != 1 else 7
        Image.fromarray(sem).save(raw / "sem" / f"c{i}.png")
    return raw / "sem" / "c1.png"


@dataclass
class HistoCase:
    fmt: str
    build: Callable[[Path], Path]  # builds the raw dataset under the given folder; returns the culprit file
    keywords: tuple[str, ...] = ()
    check: Callable[[Path, Path], None] | None = None  # an accepted case: check(output, culprit)
    extra: list[str] = field(default_factory=list)


def _check_rgb16_scaled(out: Path, culprit: Path) -> None:
    from coseg.io import read_rgb

    items = json.loads((out / "datalist.json").read_text(encoding="utf-8"))
    item = next(it for s in ("training", "validation", "test") for it in items[s] if "c1" in it["image"])
    expected = ((np.asarray(_RGB16, np.uint32) * 255 + 32767) // 65535).astype(np.uint8)  # round(v * 255 / 65535)
    np.testing.assert_array_equal(read_rgb(out / item["image"]), expected)


def _check_rgba_alpha_dropped(out: Path, culprit: Path) -> None:
    from coseg.io import read_rgb

    items = json.loads((out / "datalist.json").read_text(encoding="utf-8"))
    item = next(it for s in ("training", "validation", "test") for it in items[s] if "c1" in it["image"])
    np.testing.assert_array_equal(read_rgb(out / item["image"]), np.asarray(Image.open(culprit))[..., :3])


def _check_empty_allowed(out: Path, culprit: Path) -> None:
    info = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert info["allow_empty"] is True and info["statistics"]["images_without_objects"] == 1


_RGB16 = RNG.integers(0, 65536, (32, 32, 3)).astype(np.uint16)

HISTO_CASES = {
    # corrupt, 0-byte and truncated files
    "folder-png-zero-bytes": HistoCase(
        "folder", lambda r: _replace_image(_folder(r), "c1.png", lambda p: p.write_bytes(b"")), ("empty", "0 bytes")
    ),
    "folder-png-truncated": HistoCase(
        "folder",
        lambda r: _replace_image(_folder(r), "c1.png", lambda p: truncate(Image.fromarray(noise_rgb()).save(p) or p)),
        ("cannot be read", "truncated"),
    ),
    "folder-png-not-an-image": HistoCase(
        "folder", lambda r: _replace_image(_folder(r), "c1.png", lambda p: p.write_text("<html>")), ("cannot be read",)
    ),
    "folder-tiff-truncated": HistoCase(
        "folder",
        lambda r: _replace_image(_folder(r), "c1.tif", lambda p: (tifffile.imwrite(p, noise_rgb()), truncate(p, 500))),
        ("cannot be read as TIFF",),
    ),
    "folder-label-truncated": HistoCase(
        "folder", lambda r: truncate(_folder(r) / "inst" / "c2.png", 60), ("cannot be read",)
    ),
    "puma-tiff-zero-bytes": HistoCase(
        "puma",
        lambda r: next(_puma(r).rglob("roi_002.tif")).write_bytes(b"") or next(r.rglob("roi_002.tif")),
        ("empty",),
    ),
    "puma-geojson-zero-bytes": HistoCase(
        "puma", lambda r: _puma_file(_puma(r), "tissue").write_bytes(b"") or _puma_file(r, "tissue"), ("JSON",)
    ),
    "puma-geojson-truncated": HistoCase("puma", lambda r: truncate(_puma_file(_puma(r), "nuclei")), ("JSON",)),
    "glas-bmp-truncated": HistoCase(
        "glas", lambda r: truncate(make_glas(r) or r / "train_2_anno.bmp", 80), ("cannot be read",)
    ),
    "consep-tiles-classes-json-truncated": HistoCase(
        "consep_tiles", lambda r: truncate(make_tiles(r) and r / "classes.json"), ("JSON",)
    ),
    # pixel formats
    "folder-rgb16-scaled-accepted": HistoCase(
        "folder",
        lambda r: _replace_image(_folder(r), "c1.png", lambda p: write_png16(p, _RGB16)),
        check=_check_rgb16_scaled,
    ),
    "folder-greyscale": HistoCase(
        "folder",
        lambda r: _replace_image(_folder(r), "c1.png", lambda p: Image.fromarray(noise_rgb()[..., 0]).save(p)),
        ("greyscale",),
    ),
    "folder-rgba-alpha-dropped-accepted": HistoCase(
        "folder",
        lambda r: _replace_image(_folder(r), "c1.png", lambda p: Image.fromarray(noise_rgb(channels=4)).save(p)),
        check=_check_rgba_alpha_dropped,
    ),
    "folder-cmyk-jpeg": HistoCase("folder", lambda r: _replace_image(_folder(r), "c1.jpg", write_cmyk), ("CMYK",)),
    "folder-cmyk-tiff": HistoCase("folder", lambda r: _replace_image(_folder(r), "c1.tif", write_cmyk), ("CMYK",)),
    # labels that do not fit
    "folder-label-size-differs": HistoCase(
        "folder",
        lambda r: (
            Image.fromarray(np.zeros((30, 32), np.uint8)).save(_folder(r) / "inst" / "c1.png") or r / "inst" / "c1.png"
        ),
        ("label is 32x30", "image is 32x32"),
    ),
    "crag-label-size-differs": HistoCase(
        "crag",
        lambda r: make_crag(r, bad_size=True) and r / "CRAG" / "TRAIN" / "Annotation" / "train_2.png",
        ("9x7", "9x8"),
    ),
    "folder-semantic-id-out-of-range": HistoCase("folder", lambda r: _folder_sem_out_of_range(_folder(r)), ("7",)),
    "consep-tiles-type-id-out-of-range": HistoCase(
        "consep_tiles", lambda r: make_tiles(r) and _tiles_type_out_of_range(r), ("9",)
    ),
    # unknown class names and empty annotations
    "puma-unknown-class-name": HistoCase(
        "puma",
        lambda r: (make_puma(r, cases=("roi_001",)), _unknown_puma_class(r))[1],
        ("unknown class", "mystery"),
        extra=["--class-map", "CLASSMAP"],
    ),
    "puma-empty-feature-collection": HistoCase("puma", lambda r: _puma_empty(_puma(r)), ("empty", "--allow-empty")),
    "puma-empty-feature-collection-allow-empty-accepted": HistoCase(
        "puma", lambda r: _puma_empty(_puma(r)), check=_check_empty_allowed, extra=["--allow-empty"]
    ),
    "glas-annotation-without-glands": HistoCase(
        "glas",
        lambda r: (
            make_glas(r)
            or Image.fromarray(np.zeros((10, 12), np.uint8)).save(r / "train_2_anno.bmp")
            or r / "train_2_anno.bmp"
        ),
        ("no gland",),
    ),
}


def _unknown_puma_class(raw: Path) -> Path:
    path = next(raw.rglob("roi_001_nuclei.geojson"))
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["features"][0]["properties"]["classification"]["name"] = "mystery"
    path.write_text(json.dumps(doc), encoding="utf-8")
    cmap = {"instance": {"classes": {"0": "background", "1": "tumour"}, "map": {"nuclei_tumor": 1}}}
    (raw.parent / "map.json").write_text(json.dumps(cmap), encoding="utf-8")
    return path


@pytest.mark.parametrize("case_id", list(HISTO_CASES))
def test_histo_prepare(case_id, tmp_path, capfd):
    from coseg.histo.prepare import main

    case = HISTO_CASES[case_id]
    raw = tmp_path / "raw"
    culprit = Path(case.build(raw))
    out = tmp_path / "out"
    extra = [str(tmp_path / "map.json") if a == "CLASSMAP" else a for a in case.extra]
    argv = ["--format", case.fmt, "--input", str(raw), "--output", str(out), "--no-progress", *extra]
    res = run_main(main, argv, capfd)
    if case.check is not None:
        assert res.returncode == 0, res.stderr[-3000:]
        case.check(out, culprit)
        assert not _leftovers(tmp_path)
    else:
        assert_refused(res, tmp_path, out, str(culprit), *case.keywords)


def test_histo_prepare_process_reports_a_corrupt_image_in_one_line(tmp_path):
    """The same as ``folder-png-truncated``, through ``python -m`` (the hook and the exit status of a process)."""
    raw = _folder(tmp_path / "raw")
    bad = truncate(raw / "images" / "c1.png", 100)
    out = tmp_path / "out"
    res = run_process(["-m", "coseg.histo.prepare", "--format", "folder", "--input", str(raw), "--output", str(out)])
    assert_refused(res, tmp_path, out, str(bad), "cannot be read as an image")


def test_histo_prepare_keeps_the_previous_dataset_when_the_new_input_is_bad(tmp_path, capfd):
    from coseg.histo.prepare import main

    raw = _folder(tmp_path / "raw")
    out = tmp_path / "out"
    argv = ["--format", "folder", "--input", str(raw), "--output", str(out), "--no-progress"]
    assert run_main(main, argv, capfd).returncode == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = truncate(raw / "inst" / "c0.png", 50)
    res = run_main(main, [*argv, "--overwrite"], capfd)
    assert_refused(res, tmp_path, None, str(bad), "cannot be read")
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


# ==== coseg.dental.prepare =======================================================================================

CBCT_SHAPE = (16, 24, 24)


@pytest.fixture(scope="module")
def toothfairy(tmp_path_factory) -> Path:
    from coseg.dental.synthetic import write_toothfairy2_like

    return write_toothfairy2_like(tmp_path_factory.mktemp("tf2") / "raw", num_cases=2, shape=CBCT_SHAPE, fmt="nii.gz")


def _image(raw: Path) -> Path:
    return raw / "imagesTr" / "ToothFairy2F_001_0000.nii.gz"


def _label(raw: Path) -> Path:
    return raw / "labelsTr" / "ToothFairy2F_001.nii.gz"


def _rewrite(path: Path, change: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]) -> Path:
    vol = nib.load(path)
    array, affine = change(np.asanyarray(vol.dataobj).copy(), vol.affine.copy())
    path.unlink()
    return write_nifti(path, array, affine)


def _with_voxel(value: float) -> Callable:
    def change(a, affine):
        a = a.astype(np.float32)
        a[3, 3, 3] = value
        return a, affine

    return change


def _shift(a, affine):
    affine[0, 3] += 5.0
    return a, affine


def _as_mha(path: Path, keep: int | None) -> Path:
    import SimpleITK as sitk

    array = np.asanyarray(nib.load(path).dataobj).astype(np.int16)
    path.unlink()
    mha = path.with_name(path.name.replace(".nii.gz", ".mha"))
    sitk.WriteImage(sitk.GetImageFromArray(array), str(mha))
    return truncate(mha, keep) if keep is not None else mha


def _rename_label(raw: Path) -> Path:
    doc = json.loads((raw / "dataset.json").read_text(encoding="utf-8"))
    doc["labels"]["Tongue"] = doc["labels"].pop("Bridge")
    (raw / "dataset.json").write_text(json.dumps(doc), encoding="utf-8")
    return raw / "dataset.json"


DENTAL_CASES: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "nifti-truncated": (lambda r: truncate(_image(r)), ("truncated",)),
    "nifti-zero-bytes": (lambda r: _write(_label(r), b""), ("empty",)),
    "nifti-not-a-volume": (lambda r: _write(_image(r), b"\x1f\x8b garbage"), ("cannot be read",)),
    "mha-truncated": (lambda r: _as_mha(_image(r), 400), ("truncated", "DimSize")),
    "mha-zero-bytes": (lambda r: _as_mha(_image(r), 0), ("empty",)),
    "volume-nan": (lambda r: _rewrite(_image(r), _with_voxel(np.nan)), ("NaN",)),
    "volume-inf": (lambda r: _rewrite(_image(r), _with_voxel(np.inf)), ("infinite",)),
    "volume-2d": (lambda r: _rewrite(_image(r), lambda a, aff: (np.ascontiguousarray(a[0]), aff)), ("2D",)),
    "volume-4d": (lambda r: _rewrite(_image(r), lambda a, aff: (np.stack([a, a], -1), aff)), ("4D",)),
    "affines-differ": (lambda r: _rewrite(_label(r), _shift), ("different voxel grid", "5 mm")),
    "label-size-differs": (
        lambda r: _rewrite(_label(r), lambda a, aff: (np.ascontiguousarray(a[:, :20]), aff)),
        ("label shape",),
    ),
    "label-id-out-of-range": (
        lambda r: _rewrite(_label(r), lambda a, aff: (np.where(a == a.max(), 250, a).astype(np.uint8), aff)),
        ("250", "dataset.json"),
    ),
    "label-all-background": (lambda r: _rewrite(_label(r), lambda a, aff: (np.zeros_like(a), aff)), ("empty",)),
    "unknown-label-name": (_rename_label, ("Tongue",)),
    "dataset-json-truncated": (lambda r: truncate(r / "dataset.json"), ("JSON",)),
}


@pytest.mark.parametrize("case_id", list(DENTAL_CASES))
def test_dental_prepare(case_id, toothfairy, tmp_path, capfd):
    from coseg.dental.prepare import main

    build, keywords = DENTAL_CASES[case_id]
    raw = tmp_path / "raw"
    shutil.copytree(toothfairy, raw)
    culprit = build(raw)
    out = tmp_path / "out"
    res = run_main(main, ["--input", str(raw), "--output", str(out), "--size", "32"], capfd)
    assert_refused(res, tmp_path, out, str(culprit), *keywords)


def test_dental_prepare_process_reports_a_truncated_nifti_in_one_line(toothfairy, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(toothfairy, raw)
    bad = truncate(_image(raw))
    out = tmp_path / "out"
    res = run_process(["-m", "coseg.dental.prepare", "--input", str(raw), "--output", str(out), "--size", "32"])
    assert_refused(res, tmp_path, out, str(bad), "truncated")


def test_dental_prepare_process_reports_a_missing_folder_in_one_line(tmp_path):
    res = run_process(
        ["-m", "coseg.dental.prepare", "--input", str(tmp_path / "nothing"), "--output", str(tmp_path / "o")]
    )
    assert_refused(res, tmp_path, tmp_path / "o", str(tmp_path / "nothing"), "does not exist")


# ==== python -m monai.bundle run ... =============================================================================


def bundle_run(run_id: str, configs: list[Path], **overrides) -> Result:
    args = ["-m", "monai.bundle", "run", run_id, "--config_file", repr([str(c) for c in configs])]
    args += [arg for k, v in overrides.items() for arg in (f"--{k}", str(v))]
    return run_process(args)


@pytest.fixture(scope="module")
def histo_dataset(tmp_path_factory) -> Path:
    from coseg.histo.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("catalogue_histo") / "synthetic"
    write_synthetic_dataset(root, num_images=6, size=64, seed=3)
    return root


def _first_training(data: Path, key: str) -> Path:
    return data / json.loads((data / "datalist.json").read_text(encoding="utf-8"))["training"][0][key]


def _train_overrides(data: Path, work: Path, **extra) -> dict:
    return {
        "dataset_dir": data,
        "synthesize_data": False,
        "model_preset": "micro",
        "allow_random_encoder": True,
        "patch_size": 64,
        "epochs": 1,
        "batch_size": 2,
        "num_workers": 0,
        "cache_rate": 1.0,  # every item is loaded (and checked) before the first step
        "ckpt_dir": work / "models",
        "output_dir": work / "eval",
        **extra,
    }


def _label_value(path: Path, value: int) -> Path:
    lab = np.asarray(Image.open(path)).copy()
    lab[lab > 0] = value
    Image.fromarray(lab).save(path)
    return path


HISTO_TRAINING_CASES: dict[str, tuple[str, Callable[[Path], Path], tuple[str, ...], dict]] = {
    # id: (datalist key of the file to break, how, keywords, more overrides)
    # the quickstart's cache fill with two threads: it once aborted (status 134) or hid the file in a traceback
    "image-truncated": ("image", lambda p: truncate(p, 300), ("cannot be read as an image",), {"num_workers": 2}),
    "image-greyscale-uncached": (  # found while training, by the data loader
        "image",
        lambda p: Image.fromarray(noise_rgb(64)[..., 0]).save(p) or p,
        ("grey",),
        {"cache_rate": 0.0},
    ),
    "image-cmyk": ("image", lambda p: _write(p, _cmyk_jpeg_bytes(64)), ("CMYK",), {}),
    "type-id-out-of-range": ("label_type", lambda p: _label_value(p, 7), ("7",), {}),
    "label-size-differs": (
        "label_inst",
        lambda p: Image.fromarray(np.zeros((48, 64), np.uint8)).save(p) or p,
        ("48",),
        {},
    ),
}


@pytest.mark.parametrize("case_id", list(HISTO_TRAINING_CASES))
def test_histo_training(case_id, histo_dataset, tmp_path):
    key, breaks, keywords, extra = HISTO_TRAINING_CASES[case_id]
    data = tmp_path / "data"
    shutil.copytree(histo_dataset, data)
    culprit = breaks(_first_training(data, key))
    configs = [HISTO / "configs" / "train.json"]
    work = tmp_path / "work"
    res = bundle_run("training", configs, **_train_overrides(data, work, **extra))
    # no checkpoint or model is written; a run that trained steps before the error keeps its run record
    # (training_run.json, which --resume true reads to say that this run has no checkpoint)
    assert_refused(res, tmp_path, None, culprit.name, *keywords)
    assert not [p for p in work.rglob("*") if p.is_file() and p.name != "training_run.json" and "events" not in p.name]


def test_histo_training_on_images_smaller_than_the_patch_is_accepted(tmp_path):
    """Documented: images smaller than ``patch_size`` are padded to it (32-px images, 64-px patches)."""
    from coseg.histo.synthetic import write_synthetic_dataset

    data = tmp_path / "small"
    write_synthetic_dataset(data, num_images=4, size=32, seed=5)
    res = bundle_run("training", [HISTO / "configs" / "train.json"], **_train_overrides(data, tmp_path / "work"))
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert (tmp_path / "work" / "models" / "checkpoint_final.pt").is_file()


@pytest.fixture(scope="module")
def histo_model(tmp_path_factory) -> Path:
    import torch

    from coseg.networks import CoSegPlusPlus

    torch.manual_seed(0)
    net = CoSegPlusPlus.from_preset("micro", num_sem_classes=3, num_inst_types=4, freeze_encoder=False)
    path = tmp_path_factory.mktemp("histo_model") / "model.pt"
    torch.save(net.state_dict(), path)
    return path


def _infer_histo(inputs: Path, model: Path, out: Path) -> Result:
    overrides = {"dataset_dir": inputs, "model_preset": "micro", "patch_size": 64, "ckpt_path": model}
    return bundle_run("inference", [HISTO / "configs" / "inference.json"], **overrides, output_dir=out)


HISTO_INFERENCE_CASES: dict[str, tuple[Callable[[Path], object], tuple[str, ...]]] = {
    "png-truncated": (lambda p: truncate(Image.fromarray(noise_rgb(64)).save(p) or p, 200), ("truncated",)),
    "png-zero-bytes": (lambda p: p.write_bytes(b""), ("empty", "0 bytes")),
    "greyscale": (lambda p: Image.fromarray(noise_rgb(64)[..., 0]).save(p), ("grey",)),
    "cmyk-jpeg": (lambda p: write_cmyk(p, 64), ("CMYK",)),
}


@pytest.mark.parametrize("case_id", list(HISTO_INFERENCE_CASES))
def test_histo_inference(case_id, histo_model, tmp_path):
    make, keywords = HISTO_INFERENCE_CASES[case_id]
    image = tmp_path / ("slide.jpg" if "jpeg" in case_id else "slide.png")
    make(image)
    res = _infer_histo(image, histo_model, tmp_path / "out")
    assert_refused(res, tmp_path, tmp_path / "out", str(image), *keywords)


def test_histo_inference_accepts_16bit_rgba_and_small_images_as_documented(histo_model, tmp_path):
    """Accepted on purpose: a 16-bit RGB PNG is scaled to 8 bits (``round(v * 255 / 65535)``), the alpha channel
    of an RGBA PNG is dropped, and an image smaller than the patch is padded: each gets outputs of its own size."""
    images = tmp_path / "images"
    images.mkdir()
    write_png16(images / "deep.png", RNG.integers(0, 65536, (64, 64, 3)).astype(np.uint16))
    Image.fromarray(noise_rgb(64, channels=4)).save(images / "rgba.png")
    Image.fromarray(noise_rgb(40)).save(images / "small.png")
    res = _infer_histo(images, histo_model, tmp_path / "out")
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    for name, size in (("deep", 64), ("rgba", 64), ("small", 40)):
        assert np.asarray(Image.open(tmp_path / "out" / f"{name}_sem.png")).shape == (size, size), name
    assert not _leftovers(tmp_path)


def test_cbct_training_on_a_dataset_without_tooth_types(histo_dataset, tmp_path):
    """A histology dataset given to the CBCT bundle: its ``dataset.json`` records no tooth type scheme."""
    overrides = {"dataset_dir": histo_dataset, "model_preset": "micro", "patch_size": 64, "allow_random_encoder": True}
    work = tmp_path / "work"
    res = bundle_run(
        "training", [CBCT / "configs" / "train.json"], **overrides, ckpt_dir=work / "models", output_dir=work / "eval"
    )
    assert_refused(res, tmp_path, work / "models", str(histo_dataset / "dataset.json"), "records no 'tooth_types'")


# ---- CBCT volume inference (inference.json on a volume) ----------------------------------------------------------


@pytest.fixture(scope="module")
def cbct_model(tmp_path_factory) -> Path:
    import torch

    from coseg.networks import CoSegPlusPlus

    torch.manual_seed(0)
    net = CoSegPlusPlus.from_preset("micro", num_sem_classes=4, num_inst_types=3, freeze_encoder=False)
    path = tmp_path_factory.mktemp("cbct_model") / "model.pt"
    torch.save(net.state_dict(), path)
    return path


def _volume(tmp_path: Path, shape=(16, 24, 24)) -> Path:
    return write_nifti(tmp_path / "scan.nii.gz", RNG.normal(0, 100, shape).astype(np.int16))


CBCT_INFERENCE_CASES: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "nifti-truncated": (lambda t: truncate(_volume(t)), ("truncated",)),
    "mha-zero-bytes": (lambda t: (t / "scan.mha").write_bytes(b"") or t / "scan.mha", ("empty",)),
    "mha-truncated": (lambda t: _as_mha(_volume(t), 300), ("truncated",)),
    "volume-nan": (lambda t: _rewrite(_volume(t), _with_voxel(np.nan)), ("NaN",)),
    "volume-2d": (lambda t: write_nifti(t / "flat.nii.gz", np.zeros((32, 32), np.int16)), ("2D",)),
    "volume-4d": (
        lambda t: write_nifti(t / "scan4d.nii.gz", RNG.normal(0, 9, (16, 16, 16, 2)).astype(np.int16)),
        ("channels or time points",),
    ),  # fmt: skip
}


@pytest.mark.parametrize("case_id", list(CBCT_INFERENCE_CASES))
def test_cbct_volume_inference(case_id, cbct_model, tmp_path):
    make, keywords = CBCT_INFERENCE_CASES[case_id]
    inputs = tmp_path / "in"
    inputs.mkdir()
    volume = make(inputs)
    overrides = {"dataset_dir": volume, "model_preset": "micro", "patch_size": 64, "ckpt_path": cbct_model}
    out = tmp_path / "out"
    res = bundle_run("inference", [CBCT / "configs" / "inference.json"], **overrides, output_dir=out)
    assert_refused(res, tmp_path, out, str(volume), *keywords)


# ==== python -m coseg.wsi ========================================================================================


def _tiled_slide(path: Path, *, mpp: float | None) -> Path:
    kwargs = {} if mpp is None else {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    tifffile.imwrite(path, np.full((512, 512, 3), 200, np.uint8), tile=(128, 128), photometric="rgb", **kwargs)
    return path


WSI_CASES: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "slide-truncated": (lambda t: truncate(_tiled_slide(t / "slide.tif", mpp=0.5), 40000), ("truncated",)),
    "slide-zero-bytes": (lambda t: (t / "slide.svs").write_bytes(b"") or t / "slide.svs", ("empty",)),
    "slide-missing": (lambda t: t / "none.svs", ("no such",)),
}


@pytest.mark.parametrize("case_id", list(WSI_CASES))
def test_wsi(case_id, histo_model, tmp_path):
    make, keywords = WSI_CASES[case_id]
    slide = make(tmp_path)
    out = tmp_path / "out"
    args = ["-m", "coseg.wsi", "--bundle", str(HISTO), "--input", str(slide), "--output", str(out)]
    res = run_process([*args, "--checkpoint", str(histo_model), "--no-progress"])
    assert_refused(res, tmp_path, out, str(slide), *keywords)


def test_wsi_reads_a_slide_without_a_pixel_size_at_level_0_with_a_warning(histo_model, tmp_path):
    """Accepted as documented (``WorkingImage.from_reader``): without ``--mpp`` a file that does not record its
    pixel size is read at level 0 as if at the model's resolution, with a warning naming the file and the flag."""
    slide = _tiled_slide(tmp_path / "slide.tif", mpp=None)
    out = tmp_path / "out"
    args = ["-m", "coseg.wsi", "--bundle", str(HISTO), "--input", str(slide), "--output", str(out)]
    res = run_process([*args, "--checkpoint", str(histo_model), "--no-progress"])
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    warning = [line for line in res.stderr.splitlines() if "does not record its pixel size" in line]
    assert len(warning) == 1 and str(slide) in warning[0] and "--slide-mpp" in warning[0], res.stderr[-3000:]
    assert (out / "slide.geojson").is_file() and not _leftovers(tmp_path)
