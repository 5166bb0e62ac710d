"""One source of truth for the network: every ``network_def`` of a bundle yields the same network, and inference builds
the network its weights were trained as (the build arguments recorded with them)."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser, ConfigWorkflow

from coseg.errors import InputFileError
from coseg.networks import CoSegPlusPlus
from coseg.networks.ssp_encoder import SequentialBranch

from .conftest import REPO, micro_overrides

BUNDLES = ["coseg_histo", "coseg_cbct"]

#: network settings away from the defaults (micro; the SSM's SiLU and gate; self-prompting)
SETTINGS = {"model_preset": "micro", "ssm_silu": True, "ssm_gate": True, "prompt_mode": "self", "use_checkpoint": False}

#: per bundle: the config combinations whose network comes from train.json's settings, and those that build it from
#: the saved weights (inference.json's network_def); the documented commands of docs/README.md
COMBOS = {
    "coseg_histo": (
        [
            ["train.json"],
            ["train.json", "evaluate.json"],
            ["train.json", "multi_gpu_train.json"],
            ["train.json", "evaluate.json", "multi_gpu_evaluate.json"],
            ["train.json", "quickstart.json"],
        ],
        [["inference.json"], ["inference.json", "quickstart.json"]],
    ),
    "coseg_cbct": (
        [["train.json"], ["train.json", "multi_gpu_train.json"], ["train.json", "quickstart.json"]],
        [
            ["inference.json"],
            ["inference.json", "evaluate.json"],
            ["inference.json", "evaluate.json", "multi_gpu_evaluate.json"],
            ["inference.json", "quickstart.json"],
        ],
    ),
}


def _network(bundle: Path, files: list[str], **overrides) -> CoSegPlusPlus:
    parser = ConfigParser()
    parser.read_config(f=[str(bundle / "configs" / f) for f in files])
    parser.update({"sam2_checkpoint": None, "allow_random_encoder": True, **overrides})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no SAM2 checkpoint
        torch.manual_seed(0)
        return parser.get_parsed_content("network_def")


def _chain(error: BaseException) -> list[BaseException]:
    chain = [error]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    return chain


def _shapes(net: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _network_refs(bundle: Path, file: str) -> dict[str, set[str]]:
    """``{argument: config items it refers to}`` of a config's ``network_def`` (``@item`` references, also inside
    expressions such as ``$coseg.engines.flag(@ssm_silu, 'ssm_silu')``)."""
    config = json.loads((bundle / "configs" / file).read_text(encoding="utf-8"))
    skip = {"_target_", "path", "sam2_checkpoint", "freeze_encoder"}
    return {k: set(re.findall(r"@(\w+)", str(v))) for k, v in config["network_def"].items() if k not in skip}


@pytest.mark.parametrize("name", BUNDLES)
def test_train_and_inference_list_the_same_network_settings(name):
    """The drift that lost ``ssm_silu`` in inference: both files pass the same settings, from items of the same
    names, each a top-level item of both files."""
    bundle = REPO / "bundles" / name
    train, infer = _network_refs(bundle, "train.json"), _network_refs(bundle, "inference.json")
    assert train == infer
    config = json.loads((bundle / "configs" / "inference.json").read_text(encoding="utf-8"))
    assert all(ref in config for refs in infer.values() for ref in refs)


@pytest.mark.parametrize("name", BUNDLES)
def test_every_network_def_of_a_bundle_yields_the_same_network(name, tmp_path):
    bundle = REPO / "bundles" / name
    reference = _network(bundle, ["train.json"], **SETTINGS)
    assert reference.build_args["ssm_silu"] and reference.build_args["prompt_mode"] == "self"
    trained_from_settings, built_from_weights = COMBOS[name]
    for files in trained_from_settings:
        net = _network(bundle, files, **SETTINGS)
        assert net.build_args == reference.build_args, files
        assert _shapes(net) == _shapes(reference), files
    weights = tmp_path / "model.pt"
    torch.save(reference.state_dict(), weights)
    # from the weights alone (quickstart.json's preset is set back to "from the weights"), or with settings that
    # agree with them
    for files in built_from_weights:
        for overrides in ({"model_preset": None}, SETTINGS):
            net = _network(bundle, files, ckpt_path=str(weights), **overrides)
            assert net.build_args == reference.build_args, files
            net.load_state_dict(torch.load(weights, weights_only=True))  # strict, and the recorded arguments agree
    # without weights, inference's settings default to the preset's, as train.json's do
    defaults = _network(bundle, ["inference.json"], ckpt_path=str(tmp_path / "none.pt"), model_preset="micro")
    assert defaults.build_args == _network(bundle, ["train.json"], model_preset="micro").build_args


@pytest.mark.parametrize("name", BUNDLES)
def test_inference_refuses_a_setting_that_contradicts_the_weights(name, tmp_path):
    bundle = REPO / "bundles" / name
    weights = tmp_path / "model.pt"
    torch.save(_network(bundle, ["train.json"], **SETTINGS).state_dict(), weights)
    with pytest.raises(Exception) as err:
        _network(bundle, ["inference.json"], ckpt_path=str(weights), ssm_silu=False)
    problems = [str(e) for e in _chain(err.value) if isinstance(e, InputFileError)]
    assert problems and str(weights) in problems[0] and "ssm_silu: config False, weights True" in problems[0]


def _workflow(bundle: Path, files: list[str], workflow_type: str, **overrides) -> ConfigWorkflow:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wf = ConfigWorkflow(
            config_file=[str(bundle / "configs" / f) for f in files],
            workflow_type=workflow_type,
            logging_file=False,
            **overrides,
        )
        wf.initialize()
    return wf


@pytest.mark.slow  # one epoch of training, an inference and two evaluations: about 70 s on 2 busy cores
def test_a_model_trained_with_the_ssm_silu_runs_it_in_inference(histo_bundle, histo_dataset, tmp_path):
    """Train with ``ssm_silu: true`` (Table 8); inference.json, told nothing about the network, applies the SiLU
    between each SSM's depthwise convolution and its projection, and the evaluation's network loads the weights."""
    train = _workflow(histo_bundle, ["train.json"], "train", **micro_overrides(histo_dataset, tmp_path, ssm_silu=True))
    train.run()
    train.finalize()
    weights = tmp_path / "models" / "model.pt"
    assert weights.is_file()

    infer = _workflow(
        histo_bundle,
        ["inference.json"],
        "infer",
        dataset_dir=str(histo_dataset / "images"),
        split="test",
        ckpt_path=str(weights),
        output_dir=str(tmp_path / "inference"),
        patch_size=64,
        num_workers=0,
    )
    network = infer.parser.get_parsed_content("network")
    branches = [m for m in network.modules() if isinstance(m, SequentialBranch)]
    assert len(branches) == 2
    seen: list[bool] = []
    for branch in branches:
        conv_out: dict[str, torch.Tensor] = {}
        branch.conv1d.register_forward_hook(lambda m, a, out, store=conv_out: store.__setitem__("x", out))
        branch.x_proj.register_forward_pre_hook(
            lambda m, a, store=conv_out: seen.append(
                torch.allclose(a[0], F.silu(store["x"]).transpose(1, 2))
                and not torch.allclose(a[0], store["x"].transpose(1, 2))
            )
        )
    infer.run()
    infer.finalize()
    assert seen and all(seen), "inference skipped the SiLU the model was trained with"
    assert list((tmp_path / "inference").glob("*_pred.png"))

    evaluate = _workflow(
        histo_bundle,
        ["train.json", "evaluate.json"],
        "train",
        **micro_overrides(histo_dataset, tmp_path, ssm_silu=True),
    )
    evaluate.run()
    evaluate.finalize()
    # evaluating with other settings than the training's is refused, naming the file and both values
    evaluate = _workflow(
        histo_bundle, ["train.json", "evaluate.json"], "train", **micro_overrides(histo_dataset, tmp_path)
    )
    with pytest.raises(Exception) as err:  # MONAI wraps it in "Failed to evaluate"
        evaluate.run()
    problems = [str(e) for e in _chain(err.value) if isinstance(e, InputFileError)]
    assert problems and str(weights) in problems[0]
    assert "ssm_silu: this network False, the weights True" in problems[0]


@pytest.mark.parametrize("name", BUNDLES)
def test_boolean_settings_from_the_command_line_mean_what_they_say(name):
    """``--ssm_silu true`` reaches the config as the string 'true' (and 'false' would read as true in Python)."""
    bundle = REPO / "bundles" / name
    net = _network(bundle, ["train.json"], model_preset="micro", ssm_silu="true", cross_task_attention="false")
    assert net.build_args["ssm_silu"] is True and net.build_args["cross_task_attention"] is False
    with pytest.raises(Exception) as err:
        _network(bundle, ["train.json"], model_preset="micro", ssm_gate="yes")
    assert any("ssm_gate must be true or false, got 'yes'" in str(e) for e in _chain(err.value))


def test_training_switches_from_the_command_line_mean_what_they_say(histo_bundle, histo_dataset, tmp_path):
    overrides = micro_overrides(histo_dataset, tmp_path, amp="false", compile="false", synthesize_data="false")
    train = _workflow(histo_bundle, ["train.json"], "train", **overrides, resume="false")
    trainer = train.parser.get_parsed_content("train#trainer")
    assert trainer.amp is False
    assert len(train.parser.get_parsed_content("train#datalist")) == 5  # the prepared images, none synthesised
    for key, value in (("resume", "no"), ("compile", "False "), ("amp", 0)):
        wf = _workflow(histo_bundle, ["train.json"], "train", **{**overrides, key: value})
        if key == "compile":  # surrounding spaces are fine
            assert wf.parser.get_parsed_content("train#trainer") is not None
            continue
        with pytest.raises(Exception) as err:
            wf.parser.get_parsed_content("train#trainer")
        assert any(f"{key} must be true or false" in str(e) for e in _chain(err.value)), key
