"""The coseg_cbct bundle as a package: its ToothFairy2 ``pred`` scheme in the metadata checks, the export, and the
single-tensor volume view (:class:`coseg.bundle.LabelVolumeOneHot`) that ``verify_net_in_out`` runs."""

from __future__ import annotations

import copy
import json
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from coseg.bundle import (
    PRED_SCHEMES,
    TOOTHFAIRY2_PRED_IDS,
    LabelVolumeOneHot,
    check_class_map,
    check_metadata,
    config_class_problems,
    expected_channel_def,
    export_bundle,
    pred_scheme,
)
from coseg.bundle.__main__ import main as cli
from coseg.dental.labels import INSTANCE_TYPES, SEMANTIC_CLASSES, tooth_type_names
from coseg.errors import InputFileError

from .conftest import CBCT, CBCT_MICRO_OVERRIDES


def _config(name: str) -> dict:
    return json.loads((CBCT / "configs" / name).read_text(encoding="utf-8"))


# ---- the ToothFairy2 scheme ------------------------------------------------------------------------------------------


def test_toothfairy2_pred_ids():
    fdi = [10 * q + t for q in (1, 2, 3, 4) for t in range(1, 9)]
    assert TOOTHFAIRY2_PRED_IDS == (0, 1, 2, 7, *fdi)
    assert len(TOOTHFAIRY2_PRED_IDS) == 36


def test_expected_channel_def_of_the_toothfairy2_scheme():
    expected = expected_channel_def(SEMANTIC_CLASSES, INSTANCE_TYPES, scheme="toothfairy2")
    assert list(expected) == [str(v) for v in TOOTHFAIRY2_PRED_IDS]
    assert (expected["0"], expected["1"], expected["2"], expected["7"]) == (
        "background",
        "lower jawbone",
        "upper jawbone",
        "pharynx",
    )
    assert expected["11"] == "Upper Right Central Incisor"
    assert expected["28"] == "Upper Left Third Molar (Wisdom Tooth)"
    assert expected["36"] == "Lower Left First Molar"
    assert expected["43"] == "Lower Right Canine"
    # the histology scheme of the same classes would be 0..5
    assert list(expected_channel_def(SEMANTIC_CLASSES, INSTANCE_TYPES)) == ["0", "1", "2", "3", "4", "5"]


def test_the_cbct_bundle_passes_the_checks():
    meta = _config("metadata.json")
    assert check_metadata(meta) == []
    assert pred_scheme(_config("inference.json")) == "toothfairy2"
    configs = {name: _config(name) for name in ("metadata.json", "inference.json", "train.json")}
    assert config_class_problems(configs) == {}
    # read as a class map, the same metadata is wrong: the scheme matters
    inference = configs["inference.json"]
    assert inference["inst_types"] == "$coseg.dental.tooth_type_names(@tooth_types)"
    problems = check_class_map(meta, inference["sem_classes"], tooth_type_names(inference["tooth_types"]))
    assert len(problems) == 1 and "missing ['3', '4', '5']" in problems[0]
    # both tooth type schemes write the same ToothFairy2 ids: the checks accept the "fdi" types as well
    for name in ("inference.json", "train.json"):
        configs[name] = {**configs[name], "tooth_types": "fdi"}
    assert config_class_problems(configs) == {}
    assert check_class_map(meta, SEMANTIC_CLASSES, tooth_type_names("fdi"), scheme="toothfairy2") == []


def _cbct_meta_edit(edit) -> list[str]:
    meta = copy.deepcopy(_config("metadata.json"))
    edit(meta["network_data_format"]["outputs"]["pred"]["channel_def"])
    return check_class_map(meta, SEMANTIC_CLASSES, INSTANCE_TYPES, scheme="toothfairy2")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda c: c.pop("48"), "missing ['48']"),
        (lambda c: c.update({"3": "Left Inferior Alveolar Canal"}), "unexpected ['3']"),
        (lambda c: c.update({"1": "Upper Jawbone", "2": "Lower Jawbone"}), "pred.channel_def[1] is 'Upper Jawbone'"),
        (lambda c: c.update({"21": "Upper Right Central Incisor"}), "pred.channel_def[21]"),
    ],
)
def test_toothfairy2_channel_def_problems_are_named(edit, expected):
    problems = _cbct_meta_edit(edit)
    assert problems and expected in problems[0], problems


@pytest.mark.parametrize(
    ("sem", "types", "expected"),
    [
        ({**SEMANTIC_CLASSES, 4: "canal"}, INSTANCE_TYPES, "sem_classes"),
        ({0: "background", 1: "upper jawbone", 2: "lower jawbone", 3: "pharynx"}, INSTANCE_TYPES, "sem_classes"),
        (SEMANTIC_CLASSES, {0: "background", 1: "teeth"}, "inst_types"),
    ],
)
def test_toothfairy2_scheme_needs_the_dental_classes(sem, types, expected):
    problems = check_class_map(_config("metadata.json"), sem, types, scheme="toothfairy2")
    assert problems and problems[0].startswith(expected) and "writes the dental classes" in problems[0]


def test_unknown_schemes_are_refused():
    assert PRED_SCHEMES == ("class_map", "toothfairy2")
    with pytest.raises(ValueError, match="scheme must be one of"):
        expected_channel_def(SEMANTIC_CLASSES, INSTANCE_TYPES, scheme="fdi")
    with pytest.raises(ValueError, match="scheme must be one of"):
        check_class_map(_config("metadata.json"), SEMANTIC_CLASSES, INSTANCE_TYPES, scheme="fdi")
    with pytest.raises(ValueError, match="pred_scheme must be one of"):
        pred_scheme({"pred_scheme": "fdi"})
    assert pred_scheme({}) == "class_map"
    with pytest.raises(ValueError, match="no ToothFairy2 id"):
        expected_channel_def({**SEMANTIC_CLASSES, 4: "canal"}, INSTANCE_TYPES, scheme="toothfairy2")


# ---- export ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cbct_exported(cbct_source_bundle, tmp_path_factory) -> Path:
    return export_bundle(cbct_source_bundle, tmp_path_factory.mktemp("dist_cbct"), overrides=CBCT_MICRO_OVERRIDES)


def test_cbct_export_layout(cbct_exported, cbct_source_bundle):
    assert cbct_exported.name == "coseg_cbct_v0.1.0.zip"
    with zipfile.ZipFile(cbct_exported) as zf:
        names = set(zf.namelist())
        assert {n.split("/")[0] for n in names} == {"coseg_cbct"}
        configs = {p.name for p in (CBCT / "configs").iterdir() if p.is_file() and not p.name.startswith("monailabel")}
        assert {f"coseg_cbct/configs/{c}" for c in configs} <= names
        assert {"coseg_cbct/LICENSE", "coseg_cbct/models/model.pt", "coseg_cbct/docs/README.md"} <= names
        assert "coseg_cbct/coseg/dental/inference.py" in names and "coseg_cbct/coseg/VENDORED.json" in names
        # the working tree's phantoms and outputs stay out: the quickstart makes its phantoms on first use
        assert not [n for n in names if n.startswith(("coseg_cbct/data/", "coseg_cbct/eval/"))]
        inference = json.loads(zf.read("coseg_cbct/configs/inference.json"))
        assert (inference["model_preset"], inference["patch_size"], inference["slice_batch_size"]) == ("micro", 64, 4)
        assert inference["pred_scheme"] == "toothfairy2"
        assert (
            zf.read("coseg_cbct/configs/metadata.json")
            == (cbct_source_bundle / "configs" / "metadata.json").read_bytes()
        )


def test_cbct_export_refuses_a_mismatched_channel_def(cbct_source_bundle, tmp_path):
    bundle = tmp_path / "coseg_cbct"
    shutil.copytree(cbct_source_bundle, bundle)
    meta_path = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    del meta["network_data_format"]["outputs"]["pred"]["channel_def"]["18"]
    meta["network_data_format"]["outputs"]["pred"]["num_channels"] = 35
    meta_path.write_text(json.dumps(meta, indent=4), encoding="utf-8")
    with pytest.raises(InputFileError, match=r"disagrees with configs/inference.json: .*missing \['18'\]"):
        export_bundle(bundle, tmp_path / "dist")
    assert cli(["check", str(bundle)]) == 1
    with pytest.raises(InputFileError, match="pred_scheme must be one of") as info:
        export_bundle(bundle, tmp_path / "dist", overrides={"pred_scheme": "fdi"})
    assert "inference.json" in str(info.value)
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())


def test_cbct_check_command(cbct_source_bundle, capsys):
    assert cli(["check", str(cbct_source_bundle)]) == 0
    assert capsys.readouterr().out.strip().endswith("ok")


# ---- the single-tensor volume view -----------------------------------------------------------------------------------


class _FixedPred:
    """A volume inferer that returns a given label volume and records what it was called with."""

    def __init__(self, pred: torch.Tensor) -> None:
        self.pred = pred
        self.calls: list[torch.Tensor] = []

    def __call__(self, volume: torch.Tensor, network: torch.nn.Module) -> dict[str, torch.Tensor]:
        self.calls.append(volume)
        return {"pred": self.pred, "semantic": torch.zeros_like(self.pred)}


def test_one_hot_view_by_hand():
    pred = torch.tensor([[[0, 7], [11, 48]], [[1, 2], [31, 0]]], dtype=torch.uint8)[None, None]  # (1, 1, 2, 2, 2)
    inferer = _FixedPred(pred)
    view = LabelVolumeOneHot(torch.nn.Identity(), inferer)
    out = view(torch.zeros(2, 1, 2, 2, 2))
    assert out.shape == (2, 36, 2, 2, 2) and out.dtype == torch.uint8 and not isinstance(out, MetaTensor)
    assert torch.equal(out.sum(1), torch.ones(2, 2, 2, 2, dtype=torch.int64))
    ids = torch.tensor(TOOTHFAIRY2_PRED_IDS)
    assert torch.equal(ids[out[0].argmax(0)], pred[0, 0].long())
    assert out[0, TOOTHFAIRY2_PRED_IDS.index(48), 0, 1, 1] == 1 and out[0, 3, 0, 0, 1] == 1  # channel 3: id 7
    # one call per volume; plain tensors get an identity affine (a 1 mm RAS grid)
    assert len(inferer.calls) == 2
    assert all(
        isinstance(c, MetaTensor) and torch.equal(c.affine, torch.eye(4, dtype=torch.float64)) for c in inferer.calls
    )


def test_one_hot_view_keeps_each_volumes_affine():
    affines = [torch.diag(torch.tensor([s, 1.0, 2.0, 1.0], dtype=torch.float64)) for s in (0.5, 3.0)]
    batch = MetaTensor(torch.zeros(2, 1, 2, 2, 2), meta={"affine": torch.stack(affines)})
    batch.is_batch = True
    inferer = _FixedPred(torch.zeros(1, 1, 2, 2, 2, dtype=torch.uint8))
    LabelVolumeOneHot(torch.nn.Identity(), inferer, channel_ids=[0, 1])(batch)
    assert [torch.equal(c.affine.reshape(4, 4), a) for c, a in zip(inferer.calls, affines)] == [True, True]


@pytest.mark.parametrize(
    ("pred", "volume", "match"),
    [
        (torch.full((1, 1, 2, 2, 2), 3), (1, 1, 2, 2, 2), r"label values \[3\] that are not in channel_ids"),
        (torch.zeros(1, 1, 2, 2, 3), (1, 1, 2, 2, 2), "one label volume of shape"),
        (torch.zeros(2, 1, 2, 2, 2), (1, 1, 2, 2, 2), "one label volume of shape"),
        (torch.zeros(1, 1, 2, 2, 2), (1, 2, 2, 2, 2), r"\(B, 1, I, J, K\)"),
        (torch.zeros(1, 1, 2, 2, 2), (1, 2, 2, 2), r"\(B, 1, I, J, K\)"),
    ],
)
def test_one_hot_view_refuses_bad_shapes_and_values(pred, volume, match):
    with pytest.raises(ValueError, match=match):
        LabelVolumeOneHot(torch.nn.Identity(), _FixedPred(pred))(torch.zeros(volume))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"network": "net"}, TypeError, "torch.nn.Module"),
        ({"inferer": 3}, TypeError, "callable"),
        ({"channel_ids": []}, ValueError, "distinct non-negative"),
        ({"channel_ids": [0, 1, 1]}, ValueError, "distinct non-negative"),
        ({"channel_ids": [-1, 0]}, ValueError, "distinct non-negative"),
    ],
)
def test_one_hot_view_checks_arguments(kwargs, error, match):
    args = {"network": torch.nn.Identity(), "inferer": _FixedPred(torch.zeros(1)), **kwargs}
    with pytest.raises(error, match=match):
        LabelVolumeOneHot(args.pop("network"), args.pop("inferer"), **args)


def test_one_hot_view_needs_the_pred_entry():
    with pytest.raises(ValueError, match="no 'label' entry"):
        LabelVolumeOneHot(torch.nn.Identity(), _FixedPred(torch.zeros(1, 1, 2, 2, 2)), pred_key="label")(
            torch.zeros(1, 1, 2, 2, 2)
        )


def test_verify_net_in_out_runs_the_cbct_volume_pipeline(tmp_path):
    """MONAI's check of metadata.json (36 channels, uint8) against the real pipeline: slicing, the micro network,
    post-processing, 3D linking and FDI numbering on a random 12x40x32 volume."""
    from monai.bundle import verify_net_in_out

    kwargs = {
        "net_id": "pred_onehot_network",
        "meta_file": str(CBCT / "configs" / "metadata.json"),
        "config_file": str(CBCT / "configs" / "inference.json"),
        "device": "cpu",
        "model_preset": "micro",
        "ckpt_path": str(tmp_path / "none.pt"),  # no weights: the network comes from the given settings
        "patch_size": 64,
        "_meta_#network_data_format#inputs#image#spatial_shape": [12, 40, 32],
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        verify_net_in_out(**kwargs)
        with pytest.raises(ValueError, match="output channel number"):
            verify_net_in_out(**kwargs, **{"_meta_#network_data_format#outputs#pred#num_channels": 6})
        with pytest.raises(ValueError, match="dtype of output data"):
            verify_net_in_out(**kwargs, **{"_meta_#network_data_format#outputs#pred#dtype": "float32"})


@pytest.mark.filterwarnings("ignore:Polyfit may be poorly conditioned")  # FDI numbering of random teeth
def test_one_hot_view_equals_the_inferers_pred(tmp_path):
    """On a phantom with its real affine: the view is exactly the one-hot encoding of VolumeSliceInferer's pred."""
    from monai.bundle import ConfigParser

    from coseg.dental.synthetic import make_phantom

    parser = ConfigParser()
    parser.read_config(str(CBCT / "configs" / "inference.json"))
    parser.update(
        {
            "model_preset": "micro",
            "ckpt_path": str(tmp_path / "none.pt"),
            "patch_size": 64,
            "device": "$torch.device('cpu')",
        }
    )
    torch.manual_seed(0)
    view = parser.get_parsed_content("pred_onehot_network").eval()
    phantom = make_phantom((16, 40, 36), seed=4)
    volume = MetaTensor(torch.from_numpy(phantom.image.astype(np.float32))[None, None], affine=phantom.affine)
    with torch.no_grad():
        onehot = view(volume)
        pred = parser.get_parsed_content("inferer")(volume, view.network)["pred"]
    assert onehot.shape == (1, 36, 16, 40, 36)
    ids = torch.tensor(TOOTHFAIRY2_PRED_IDS)
    assert torch.equal(ids[onehot[0].argmax(0)], pred[0, 0].as_tensor().long())
