"""The coseg_cbct bundle's real configs through ConfigWorkflow: slice training, volume inference, evaluation."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigWorkflow

from coseg.errors import InputFileError

from .conftest import REPO

BUNDLE = REPO / "bundles" / "coseg_cbct"


def _workflow(files, workflow_type, **overrides) -> ConfigWorkflow:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wf = ConfigWorkflow(
            config_file=[str(BUNDLE / "configs" / f) for f in files],
            workflow_type=workflow_type,
            logging_file=False,
            **overrides,
        )
        wf.initialize()
    return wf


@pytest.fixture(scope="module")
def cbct_dataset(tmp_path_factory) -> Path:
    """Five synthetic phantoms in ToothFairy2's layout, sliced to 64x64 (3 training, 1 validation, 1 test case)."""
    from coseg.dental.prepare import prepare_cbct
    from coseg.dental.synthetic import write_toothfairy2_like

    root = tmp_path_factory.mktemp("cbct")
    write_toothfairy2_like(root / "raw", num_cases=5, shape=(16, 64, 64), seed=2)
    prepare_cbct(root / "raw", root / "prepared", size=64, skip_empty=True, progress=False)
    return root


def _model(**extra) -> dict:
    return {"model_preset": "micro", "patch_size": 64, "allow_random_encoder": True, **extra}


def _train(cbct_dataset: Path, work: Path, **extra) -> Path:
    overrides = _model(
        dataset_dir=str(cbct_dataset / "prepared"),
        ckpt_dir=str(work / "models"),
        output_dir=str(work / "eval"),
        epochs=1,
        epoch_length=2,
        batch_size=2,
        val_interval=1,
        num_workers=0,
        cache_rate=0.0,
        **extra,
    )
    wf = _workflow(["train.json"], "train", **overrides)
    assert wf.check_properties() == []
    wf.run()
    wf.finalize()
    assert (work / "models" / "checkpoint_final.pt").is_file() and (work / "models" / "model.pt").is_file()
    return work


@pytest.fixture(scope="module")
def trained(cbct_dataset, tmp_path_factory) -> Path:
    """The micro model trained with the paper's tooth types (upper / lower)."""
    return _train(cbct_dataset, tmp_path_factory.mktemp("cbct_train"))


@pytest.fixture(scope="module")
def trained_fdi(cbct_dataset, tmp_path_factory) -> Path:
    """The micro model trained with one tooth type per FDI number, from the same prepared dataset."""
    return _train(cbct_dataset, tmp_path_factory.mktemp("cbct_train_fdi"), tooth_types="fdi")


def _infer(trained: Path, dataset_dir: Path, out: Path, files=("inference.json",), **extra) -> None:
    overrides = _model(
        dataset_dir=str(dataset_dir),
        ckpt_path=str(trained / "models" / "model.pt"),
        output_dir=str(out),
        num_workers=0,
        **extra,
    )
    wf = _workflow(list(files), "infer", **overrides)
    assert wf.check_properties() == []
    wf.run()
    wf.finalize()


def test_volume_inference_writes_volumes_on_the_input_grid(trained, cbct_dataset, tmp_path):
    out = tmp_path / "out"
    _infer(trained, cbct_dataset / "prepared", out)  # a prepared dataset: its test cases' source volumes
    test_cases = json.loads((cbct_dataset / "prepared" / "datalist.json").read_text(encoding="utf-8"))["test"]
    case = test_cases[0]["case"]
    from coseg.dental.volumes import read_volume

    ref = read_volume(cbct_dataset / "raw" / "imagesTr" / f"{case}_0000.mha")
    for kind in ("semantic", "teeth", "toothfairy2"):
        img = nib.load(out / f"{case}_{kind}.nii.gz")
        assert img.shape == ref.array.shape
        np.testing.assert_allclose(img.affine, ref.affine, atol=1e-5)
    combined = np.asarray(nib.load(out / f"{case}_toothfairy2.nii.gz").dataobj)
    allowed = {0, 1, 2, 7} | {10 * q + t for q in (1, 2, 3, 4) for t in range(1, 9)}
    assert set(np.unique(combined).tolist()) <= allowed
    summary = json.loads((out / f"{case}_summary.json").read_text(encoding="utf-8"))
    assert summary and (out / f"{case}_montage.png").is_file()


def test_real_ct_keeps_its_affine_and_orientation(trained, shared_dir, tmp_path):
    src = shared_dir / "data" / "ct_nifti" / "example_ct_sm.nii.gz"
    _infer(trained, src, tmp_path / "out")
    ref = nib.load(src)
    for kind in ("semantic", "teeth", "toothfairy2"):
        out = nib.load(tmp_path / "out" / f"example_ct_sm_{kind}.nii.gz")
        assert out.shape == ref.shape
        np.testing.assert_array_equal(out.affine, ref.affine)
        assert nib.aff2axcodes(out.affine) == nib.aff2axcodes(ref.affine)
        assert int(out.header["sform_code"]) == int(ref.header["sform_code"])


def test_evaluation_writes_volume_and_slice_tables(trained, cbct_dataset, tmp_path):
    out = tmp_path / "eval"
    _infer(
        trained,
        cbct_dataset / "prepared",
        tmp_path / "unused",
        files=("inference.json", "evaluate.json"),
        evaluation_dir=str(out),
    )
    summary = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert summary["num_cases"] == 1
    assert set(summary["teeth_per_slice"]) == {"per_image_mean", "pooled"}
    tables = (out / "tables.md").read_text(encoding="utf-8")
    for title in ("Table 2 layout", "Table 4 layout", "Table 6 layout", "lower jawbone", "upper teeth", "per slice"):
        assert title in tables
    assert list((out / "volumes").glob("*_toothfairy2.nii.gz"))


@pytest.mark.parametrize(
    "shape, problem",
    [((16, 16, 16), "constant")],  # 2D, 4D, NaN, truncated and empty files: tests/test_bad_input_catalogue.py
)
def test_bad_volumes_are_rejected_naming_the_file(trained, tmp_path, shape, problem):
    data = np.zeros(shape, np.int16)
    path = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(data if len(shape) != 4 else np.moveaxis(data, 0, -1), np.eye(4)), path)
    with pytest.raises(Exception) as err:
        _infer(trained, path, tmp_path / "out")
    chain = [err.value]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    assert any(isinstance(e, InputFileError) and "bad.nii.gz" in str(e) and problem in str(e) for e in chain), chain


def test_fdi_training_learns_33_tooth_types_from_the_same_dataset(trained_fdi):
    from coseg.networks import CoSegPlusPlus

    assert CoSegPlusPlus.from_saved(trained_fdi / "models" / "model.pt").num_inst_types == 33
    history = (trained_fdi / "eval" / "validation_history.json").read_text(encoding="utf-8")
    assert "val_mpq" in history and "inst_tooth_11" not in history  # no 96 per-tooth validation metrics


def test_fdi_inference_writes_learned_numbers_and_the_evaluation_compares_them(trained_fdi, cbct_dataset, tmp_path):
    out = tmp_path / "eval"
    _infer(
        trained_fdi,
        cbct_dataset / "prepared",
        tmp_path / "unused",
        files=("inference.json", "evaluate.json"),
        evaluation_dir=str(out),
        tooth_types="fdi",
    )
    summary = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert summary["teeth_fdi"]["numbering"] == "learned"
    assert set(summary["teeth_fdi"]) == {"numbering", "learned", "heuristic"}
    assert set(summary["teeth_fdi"]["learned"]["identification"]) >= {"accuracy", "left_right_swaps"}
    assert len(summary["teeth_fdi"]["learned"]["per_class"]) == 32
    assert "ToothFairy2 layout" in (out / "tables.md").read_text(encoding="utf-8")
    assert (out / "per_case.csv").is_file()
    volume = next((out / "volumes").glob("*_summary.json"))
    assert json.loads(volume.read_text(encoding="utf-8"))["fdi_numbering"].startswith("learned")
    combined = np.asarray(nib.load(next((out / "volumes").glob("*_toothfairy2.nii.gz"))).dataobj)
    allowed = {0, 1, 2, 7} | {10 * q + t for q in (1, 2, 3, 4) for t in range(1, 9)}
    assert set(np.unique(combined).tolist()) <= allowed


def test_tooth_types_must_match_the_weights(trained_fdi, cbct_dataset, tmp_path):
    """FDI weights read as jaw types: the network's recorded type count contradicts the config, naming both."""
    with pytest.raises(Exception) as err:
        _infer(trained_fdi, cbct_dataset / "prepared", tmp_path / "out")
    chain = [err.value]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    assert any("num_inst_types" in str(e) and "33" in str(e) for e in chain), chain


def test_learned_numbering_needs_fdi_types(trained, cbct_dataset, tmp_path):
    with pytest.raises(Exception) as err:
        _infer(trained, cbct_dataset / "prepared", tmp_path / "out", tooth_numbering="learned")
    chain = [err.value]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    assert any("tooth_types='fdi'" in str(e) for e in chain), chain


def test_training_on_label_volumes_as_monai_label_hands_them(cbct_dataset, tmp_path):
    """MONAI Label overrides ``train#dataset#data`` / ``validate#dataset#data`` with ``{image, label}`` pairs of whole
    volumes in ToothFairy2 ids (no dataset.json, no prepared dataset): the same train.json slices them on the fly."""
    import torch

    from coseg.dental.volume_slices import VolumeSliceDataset, VolumeSliceSampler
    from coseg.dental.volumes import find_toothfairy2_cases

    pairs = [{"image": str(c.image), "label": str(c.label)} for c in find_toothfairy2_cases(cbct_dataset / "raw")]
    overrides = _model(
        dataset_dir=str(tmp_path / "no_prepared_dataset"),
        ckpt_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "eval"),
        epochs=1,
        epoch_length=2,
        batch_size=4,
        val_interval=1,
        num_workers=0,
        **{"train#dataset#data": pairs[:2], "validate#dataset#data": pairs[2:3]},
    )
    wf = _workflow(["train.json"], "train", **overrides)
    assert wf.check_properties() == []
    dataset = wf.parser.get_parsed_content("train#dataset")
    assert isinstance(dataset, VolumeSliceDataset) and isinstance(
        wf.parser.get_parsed_content("train#dataloader").sampler, VolumeSliceSampler
    )
    # axial slices of the 16x64x64 phantoms: every one holds a region or a tooth
    assert len(dataset) == 32 and len(wf.parser.get_parsed_content("validate#dataset")) == 16
    assert len(wf.parser.get_parsed_content("train#dataloader")) == 8  # an epoch: every slice once (2 kept here)
    wf.run()
    wf.finalize()
    final = torch.load(tmp_path / "models" / "checkpoint_final.pt", weights_only=True)
    assert final["trainer"]["iteration"] == 2
    assert (tmp_path / "models" / "model.pt").is_file()  # best metric on the validation volume's slices
    history = json.loads((tmp_path / "eval" / "validation_history.json").read_text(encoding="utf-8"))
    assert history


def test_training_on_label_volumes_learns_fdi_types(cbct_dataset, tmp_path):
    """``tooth_types: "fdi"`` with label volumes (MONAI Label's /train): the slices cut on the fly carry one type per
    FDI number (both sides of both jaws), and the network trained on them predicts the 33 FDI types."""
    from coseg.dental.labels import FDI_TEETH
    from coseg.dental.volumes import find_toothfairy2_cases
    from coseg.networks import CoSegPlusPlus

    pairs = [{"image": str(c.image), "label": str(c.label)} for c in find_toothfairy2_cases(cbct_dataset / "raw")]
    overrides = _model(
        dataset_dir=str(tmp_path / "no_prepared_dataset"),
        ckpt_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "eval"),
        tooth_types="fdi",
        epochs=1,
        epoch_length=1,
        batch_size=2,
        val_interval=1,
        num_workers=0,
        **{"train#dataset#data": pairs[:2], "validate#dataset#data": pairs[2:3]},
    )
    wf = _workflow(["train.json"], "train", **overrides)
    dataset = wf.parser.get_parsed_content("train#dataset")
    types = set()
    for i in range(len(dataset)):
        types |= set(np.unique(dataset.slice_item(i)["label_type"].numpy()).astype(int).tolist())
    quadrants = {(FDI_TEETH[t - 1] // 10) for t in types - {0}}
    assert max(types) <= len(FDI_TEETH) and quadrants == {1, 2, 3, 4}, sorted(types)
    wf.run()
    wf.finalize()
    assert CoSegPlusPlus.from_saved(tmp_path / "models" / "model.pt").num_inst_types == 33
    assert "val_mpq" in (tmp_path / "eval" / "validation_history.json").read_text(encoding="utf-8")
