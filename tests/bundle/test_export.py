"""Packaged bundles (``python -m coseg.bundle export``): contents, checks, overrides, and use in a fresh interpreter
that can import neither the repository nor the installed ``coseg``."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import coseg
from coseg.bundle import (
    REQUIRED_METADATA_KEYS,
    TOOTHFAIRY2_PRED_IDS,
    VENDORED_FILE,
    apply_overrides,
    check_class_map,
    check_metadata,
    code_digest,
    export_bundle,
    extract_bundle,
    package_files,
    parse_override,
)
from coseg.bundle.__main__ import main as cli
from coseg.errors import InputFileError

from .conftest import CBCT_MICRO_OVERRIDES, HISTO, MICRO_OVERRIDES

HERE = Path(__file__).resolve().parent
PACKAGE = Path(coseg.__file__).resolve().parent


def _meta() -> dict:
    return json.loads((HISTO / "configs" / "metadata.json").read_text(encoding="utf-8"))


# ---- metadata checks -------------------------------------------------------------------------------------------------


def test_the_bundle_metadata_passes_the_checks():
    assert check_metadata(_meta()) == []
    inference = json.loads((HISTO / "configs" / "inference.json").read_text(encoding="utf-8"))
    assert check_class_map(_meta(), inference["sem_classes"], inference["inst_types"]) == []


@pytest.mark.parametrize("key", REQUIRED_METADATA_KEYS)
def test_a_missing_required_key_is_reported(key):
    meta = _meta()
    del meta[key]
    assert any(repr(key) in p for p in check_metadata(meta))


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda m: m.update(version="1.0"), "MAJOR.MINOR.PATCH"),
        (lambda m: m.update(version="0.2.0"), "changelog has no entry for version '0.2.0'"),
        (lambda m: m.update(name="coseg-histo"), "name must be an identifier"),
        (lambda m: m["network_data_format"]["outputs"]["pred"].update(num_channels=5), "5 but 6 channel_def"),
        (lambda m: m["network_data_format"]["inputs"]["image"].pop("spatial_shape"), "has no 'spatial_shape'"),
        (lambda m: m["network_data_format"]["inputs"]["image"].update(spatial_shape=[4]), "2 or 3 sizes"),
        (
            lambda m: m["network_data_format"].update(outputs={"seg": {}, **m["network_data_format"]["outputs"]}),
            "name it 'pred'",
        ),
    ],
)
def test_metadata_problems_are_named(edit, expected):
    meta = copy.deepcopy(_meta())
    edit(meta)
    problems = check_metadata(meta)
    assert any(expected in p for p in problems), problems


def test_metadata_must_be_a_mapping():
    with pytest.raises(TypeError, match="mapping"):
        check_metadata(["version"])


def test_class_map_check_follows_the_class_lists():
    meta = _meta()
    sem = {"0": "background", "1": "tumour", "2": "stroma"}
    types = {"0": "background", "1": "tumour", "2": "TIL", "3": "other"}
    assert check_class_map(meta, sem, types) == []
    # a swapped type order puts the wrong names at channels 4 and 5
    swapped = check_class_map(meta, sem, {"0": "background", "1": "tumour", "2": "other", "3": "TIL"})
    assert len(swapped) == 2 and "pred.channel_def[4]" in swapped[0]
    # one type more: 7 channels expected, the metadata declares 6
    assert "channels" in check_class_map(meta, sem, {**types, "4": "necrosis"})[0]


# ---- overrides -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("patch_size=256", ("patch_size", 256)),
        ("model_preset=tiny", ("model_preset", "tiny")),
        ('model_preset="tiny"', ("model_preset", "tiny")),
        ("amp=false", ("amp", False)),
        ("roi=[64, 64]", ("roi", [64, 64])),
        ("train#trainer#max_epochs=3", ("train#trainer#max_epochs", 3)),
        ("sam2_checkpoint=null", ("sam2_checkpoint", None)),
    ],
)
def test_parse_override(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize("text", ["patch_size", "=3", " =3"])
def test_parse_override_rejects_malformed(text):
    with pytest.raises(ValueError, match="ID=VALUE"):
        parse_override(text)


def test_apply_overrides_sets_existing_items_in_every_config():
    configs = {"a.json": {"x": 1, "n": {"k": [1, 2]}}, "b.json": {"x": 2}, "c.json": {"y": 0}}
    changed = apply_overrides(configs, {"x": 5, "n#k#1": 9})
    assert changed == {"x": ["a.json", "b.json"], "n#k#1": ["a.json"]}
    assert configs == {"a.json": {"x": 5, "n": {"k": [1, 9]}}, "b.json": {"x": 5}, "c.json": {"y": 0}}


@pytest.mark.parametrize("key", ["z", "n#missing", "n#k#7", "x#deeper"])
def test_apply_overrides_refuses_items_that_do_not_exist(key):
    with pytest.raises(ValueError, match="matches no item"):
        apply_overrides({"a.json": {"x": 1, "n": {"k": [1, 2]}}}, {key: 0})


# ---- vendoring -------------------------------------------------------------------------------------------------------


def test_package_files_leave_out_caches(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub" / "__pycache__").mkdir(parents=True)
    for rel in ("__init__.py", "sub/__init__.py", "sub/m.py", "sub/data.json", "sub/__pycache__/m.cpython-311.pyc"):
        (pkg / rel).write_text("x = 1\n", encoding="utf-8")
    (pkg / ".hidden").write_text("", encoding="utf-8")
    (pkg / VENDORED_FILE).write_text("{}", encoding="utf-8")
    assert [p.as_posix() for p in package_files(pkg)] == ["__init__.py", "sub/__init__.py", "sub/data.json", "sub/m.py"]
    digest = code_digest(pkg)
    (pkg / "sub" / "__pycache__" / "other.pyc").write_text("changed", encoding="utf-8")
    assert code_digest(pkg) == digest  # caches do not count
    (pkg / "sub" / "m.py").write_text("x = 2\n", encoding="utf-8")
    assert code_digest(pkg) != digest
    with pytest.raises(InputFileError, match="no __init__.py"):
        package_files(pkg / "sub" / "__pycache__")


# ---- export ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(source_bundle, tmp_path_factory) -> Path:
    return export_bundle(source_bundle, tmp_path_factory.mktemp("dist"), overrides=MICRO_OVERRIDES)


def test_export_layout(exported, source_bundle):
    assert exported.name == "coseg_histo_v0.1.0.zip"
    with zipfile.ZipFile(exported) as zf:
        names = zf.namelist()
        assert {n.split("/")[0] for n in names} == {"coseg_histo"}
        configs = [p for p in (source_bundle / "configs").rglob("*") if p.is_file()]
        expected = {f"coseg_histo/configs/{p.relative_to(source_bundle / 'configs').as_posix()}" for p in configs}
        expected |= {"coseg_histo/LICENSE", "coseg_histo/models/model.pt", "coseg_histo/docs/README.md"}
        assert expected <= set(names)
        vendored = {n.removeprefix("coseg_histo/coseg/") for n in names if n.startswith("coseg_histo/coseg/")}
        assert vendored == {p.as_posix() for p in package_files(PACKAGE)} | {VENDORED_FILE}
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        provenance = json.loads(zf.read(f"coseg_histo/coseg/{VENDORED_FILE}"))
        assert provenance["sha256"] == code_digest(PACKAGE) and provenance["version"] == coseg.__version__
        assert zf.read("coseg_histo/configs/train.json").isascii()  # rewritten with escapes: MONAI reads the locale's
        train = json.loads(zf.read("coseg_histo/configs/train.json"))
        assert (train["model_preset"], train["patch_size"], train["num_workers"]) == ("micro", 64, 0)
        # configs without overrides are copied byte for byte
        assert zf.read("coseg_histo/configs/logging.conf") == (source_bundle / "configs" / "logging.conf").read_bytes()
        assert zf.read("coseg_histo/models/model.pt") == (source_bundle / "models" / "model.pt").read_bytes()


def test_export_is_reproducible(exported, source_bundle, tmp_path):
    again = export_bundle(source_bundle, tmp_path, overrides=MICRO_OVERRIDES)
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(exported.read_bytes()).digest()


def test_export_without_models(source_bundle, tmp_path):
    archive = export_bundle(source_bundle, tmp_path, models=[])
    with zipfile.ZipFile(archive) as zf:
        assert not [n for n in zf.namelist() if "/models/" in n]


def _edit_json(path: Path, edit) -> None:
    content = json.loads(path.read_text(encoding="utf-8"))
    edit(content)
    path.write_text(json.dumps(content), encoding="utf-8")


def _broken_copy(source_bundle: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "coseg_histo"
    shutil.copytree(source_bundle, dest)
    return dest


@pytest.mark.parametrize(
    ("breakage", "error", "message"),
    [
        (lambda b: (b / "configs" / "metadata.json").unlink(), InputFileError, "no configs/metadata.json"),
        (lambda b: (b / "LICENSE").unlink(), InputFileError, "no LICENSE"),
        (
            lambda b: (b / "configs" / "train.json").write_text("{", encoding="utf-8"),
            InputFileError,
            "cannot be read as JSON",
        ),
        (lambda b: (b / "models" / "model.pt").write_bytes(b"not a checkpoint"), InputFileError, "torch.load"),
        (
            lambda b: torch.save(
                {"model": torch.load(b / "models" / "model.pt", weights_only=True)}, b / "models" / "model.pt"
            ),
            InputFileError,
            "not a plain state dict",
        ),
        (
            lambda b: (b / "configs" / "metadata.json").write_text(
                json.dumps(
                    {
                        k: v
                        for k, v in json.loads((b / "configs" / "metadata.json").read_text()).items()
                        if k != "authors"
                    }
                ),
                encoding="utf-8",
            ),
            InputFileError,
            "'authors'",
        ),
    ],
)
def test_export_refuses_a_broken_bundle_and_writes_nothing(source_bundle, tmp_path, breakage, error, message):
    bundle = _broken_copy(source_bundle, tmp_path)
    breakage(bundle)
    out = tmp_path / "dist"
    with pytest.raises(error, match=message) as info:
        export_bundle(bundle, out)
    assert str(bundle) in str(info.value)
    assert not out.exists() or not list(out.iterdir())


def test_export_refuses_mismatched_classes_and_unknown_overrides(source_bundle, tmp_path):
    with pytest.raises(InputFileError, match="disagrees with configs/inference.json"):
        export_bundle(source_bundle, tmp_path, overrides={"inst_types": {"0": "background", "1": "nucleus"}})
    with pytest.raises(ValueError, match="matches no item"):
        export_bundle(source_bundle, tmp_path, overrides={"patch_sise": 64})


def test_export_refuses_network_settings_that_contradict_the_weights(source_bundle, tmp_path):
    """model.pt records the network it belongs to (a micro model): inference.json may leave the settings null or
    repeat them, but not contradict them."""
    out = tmp_path / "dist"
    with pytest.raises(InputFileError, match=r"name \(preset\): inference.json 'tiny', model.pt 'micro'") as err:
        export_bundle(source_bundle, out, overrides={"model_preset": "tiny", "ssm_silu": False})
    assert "model.pt" in str(err.value) and not out.exists()
    with pytest.raises(InputFileError, match="ssm_silu: inference.json True, model.pt False"):
        export_bundle(source_bundle, out, overrides={"ssm_silu": True})
    assert export_bundle(source_bundle, out, overrides={"model_preset": "micro", "ssm_silu": False}).is_file()
    with pytest.raises(FileNotFoundError, match="checkpoint_final.pt"):
        export_bundle(source_bundle, tmp_path, models=["checkpoint_final.pt"])
    assert not list(tmp_path.glob("*.zip"))


def test_command_line(source_bundle, tmp_path, capsys):
    assert cli(["export", str(source_bundle), str(tmp_path), "--set", "model_preset=micro", "--models"]) == 0
    assert (tmp_path / "coseg_histo_v0.1.0.zip").is_file()
    assert "coseg_histo_v0.1.0.zip" in capsys.readouterr().out
    assert cli(["check", str(source_bundle)]) == 0
    assert cli(["export", str(source_bundle), str(tmp_path), "--set", "nope=1"]) == 2
    assert "matches no item" in capsys.readouterr().err
    bad = _broken_copy(source_bundle, tmp_path / "bad")
    meta = json.loads((bad / "configs" / "metadata.json").read_text(encoding="utf-8"))
    meta["version"] = "2"
    (bad / "configs" / "metadata.json").write_text(json.dumps(meta), encoding="utf-8")
    assert cli(["check", str(bad)]) == 1
    assert "MAJOR.MINOR.PATCH" in capsys.readouterr().out


# ---- a user without the repository -----------------------------------------------------------------------------------


def _fresh_env(extra_path: list[str] | None = None) -> dict[str, str]:
    """Environment for ``python -S``: site-packages on PYTHONPATH without its .pth files, so the editable install of
    this repository's coseg is invisible, and the working directory is not the repository."""
    paths = [sysconfig.get_paths()["purelib"], *(extra_path or [])]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_packaged_bundles_work_without_the_repository(
    source_bundle, cbct_source_bundle, sample_images, cbct_volumes, tmp_path
):
    """download -> load -> verify_net_in_out -> ConfigWorkflow inference, for both bundles in one process."""
    dist = tmp_path / "dist"
    histo = export_bundle(source_bundle, dist, overrides=MICRO_OVERRIDES)
    cbct = export_bundle(cbct_source_bundle, dist, overrides=CBCT_MICRO_OVERRIDES)
    images = tmp_path / "images"
    images.mkdir()
    for item in json.loads((sample_images / "datalist.json").read_text(encoding="utf-8"))["test"]:
        shutil.copy(sample_images / item["image"], images)
    out = tmp_path / "out"
    args = {
        "bundle_dir": str(tmp_path / "bundles"),
        "report": str(tmp_path / "report.json"),
        "bundles": [
            {
                "url": histo.as_uri(),
                "net_id": "class_map_network",
                "spatial_shape": [64, 64],
                "inputs": str(images),
                "output_dir": str(out / "coseg_histo"),
            },
            {
                "url": cbct.as_uri(),
                "net_id": "pred_onehot_network",
                "spatial_shape": [12, 40, 32],
                "inputs": str(cbct_volumes[0].parent),
                "output_dir": str(out / "coseg_cbct"),
            },
        ],
    }
    (tmp_path / "args.json").write_text(json.dumps(args), encoding="utf-8")
    work = tmp_path / "elsewhere"
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, "-S", str(HERE / "fresh_bundle_user.py"), str(tmp_path / "args.json")],
        cwd=work,
        env=_fresh_env(),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert report["coseg_importable_at_start"] is False
    bundles = Path(args["bundle_dir"])
    # one coseg module, the vendored copy of the bundle put on the path last (first on sys.path), serves both
    assert report["coseg_modules"] == [str(bundles / "coseg_cbct" / "coseg" / "__init__.py")]
    for name in ("coseg_histo", "coseg_cbct"):
        seen = report["bundles"][name]
        assert seen["network_class"] == "CoSegPlusPlus"
        assert seen["weights_equal_model_pt"] is True
        assert seen["missing_properties"] == []
        assert seen["bundle_root"] == str(bundles / name), "a bundle resolved another bundle's folder"
    histo_outputs = set(report["bundles"]["coseg_histo"]["outputs"])
    for image in sorted(p.name for p in images.iterdir()):
        stem = Path(image).stem
        assert {f"{stem}_pred.png", f"{stem}_inst.tif", f"{stem}.geojson"} <= histo_outputs
    cbct_seen = report["bundles"]["coseg_cbct"]
    allowed = set(TOOTHFAIRY2_PRED_IDS)
    for volume in cbct_volumes:
        case = volume.name.removesuffix(".nii.gz")
        assert {f"{case}_{k}.nii.gz" for k in ("semantic", "teeth", "toothfairy2")} <= set(cbct_seen["outputs"])
        written = cbct_seen["volumes"][f"{case}_toothfairy2.nii.gz"]
        reference = nib.load(volume)
        assert written["shape"] == list(reference.shape)
        np.testing.assert_allclose(written["affine"], reference.affine, atol=1e-6)
        assert set(written["values"]) <= allowed


@pytest.mark.slow
def test_monai_bundle_run_from_another_folder(exported, sample_images, tmp_path):
    """``python -m monai.bundle run inference`` on the extracted bundle from an unrelated working directory, with the
    bundle folder on PYTHONPATH as docs/README.md says."""
    bundle = extract_bundle(exported, tmp_path / "bundles")
    image = (
        sample_images / json.loads((sample_images / "datalist.json").read_text(encoding="utf-8"))["test"][0]["image"]
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    cmd = [
        sys.executable,
        "-S",
        "-m",
        "monai.bundle",
        "run",
        "inference",
        "--config_file",
        str(bundle / "configs" / "inference.json"),
        "--dataset_dir",
        str(image),
    ]
    proc = subprocess.run(
        cmd, cwd=work, env=_fresh_env([str(bundle)]), capture_output=True, text=True, encoding="utf-8", timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    written = sorted(p.name for p in (bundle / "eval" / "inference").iterdir())
    assert f"{image.stem}_pred.png" in written, written
    # without the bundle on the path, the configs cannot import their code: the error says so
    failed = subprocess.run(
        cmd, cwd=work, env=_fresh_env(), capture_output=True, text=True, encoding="utf-8", timeout=300
    )
    assert failed.returncode != 0 and "coseg" in failed.stderr
