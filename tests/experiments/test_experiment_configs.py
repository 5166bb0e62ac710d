"""Every experiment file of the bundle resolves through train.json and trains one iteration; its switches reach the
built network, loss and data loader."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from monai.bundle import ConfigWorkflow

from coseg.experiments import ExperimentSettings, check_override_keys, list_experiments, load_experiment, plan_runs
from coseg.networks.coseg import ConvPromptEncoder
from coseg.networks.ssp_encoder import SSPEncoder

from .conftest import micro_overrides

EXPERIMENTS = ["fig8_forwards", "fig8_lambda", "fig9", "table10", "table11", "table7", "table8"]


def test_the_bundle_lists_every_experiment(histo_bundle):
    assert list_experiments(histo_bundle) == sorted(EXPERIMENTS)  # override configs (smoke, evaluate_external) are not


def _train_workflow(plan, **extra) -> ConfigWorkflow:
    args = {**plan.train_args, **extra}
    files = args.pop("config_file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wf = ConfigWorkflow(config_file=files, workflow_type="train", logging_file=False, **args)
        wf.initialize()
    return wf


def _plans(bundle, name, dataset, tmp_path, test_dir=None, **extra):
    spec = load_experiment(bundle, name)
    settings = ExperimentSettings(
        bundle=bundle,
        output_dir=tmp_path / name,
        overrides=micro_overrides(dataset, **extra),
        test_dataset_dir=test_dir,
    )
    return spec, plan_runs(spec, settings)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_each_row_builds_and_trains_one_iteration(name, histo_bundle, histo_dataset, second_dataset, tmp_path):
    spec, plans = _plans(histo_bundle, name, histo_dataset, tmp_path, test_dir=second_dataset, val_interval=1000)
    assert [p.row.id for p in plans] == [r.id for r in spec.rows]
    for plan in plans:
        check_override_keys(
            plan.train_args["config_file"], {k: v for k, v in plan.train_args.items() if k != "config_file"}
        )
        wf = _train_workflow(plan, **{"train#trainer#epoch_length": 1})
        assert wf.check_properties() == []
        trainer = wf.parser.get_parsed_content("train#trainer")
        before = [p.detach().clone() for p in trainer.network.parameters() if p.requires_grad]
        wf.run()
        assert trainer.state.iteration == 1
        after = [p.detach() for p in trainer.network.parameters() if p.requires_grad]
        assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True)), f"{plan.row.id}: no update"
        assert torch.isfinite(torch.as_tensor(trainer.state.output["loss"])).all()
        wf.finalize()


def _network_and_loss(plan):
    wf = _train_workflow(plan)
    trainer = wf.parser.get_parsed_content("train#trainer")
    return trainer, trainer.network, trainer.loss_function


def test_table7_switches_reach_the_network(histo_bundle, histo_dataset, tmp_path):
    _, plans = _plans(histo_bundle, "table7", histo_dataset, tmp_path)
    seen = set()
    for plan in plans:
        _, net, _ = _network_and_loss(plan)
        ssp = isinstance(net.prompt_encoders["sem"], SSPEncoder)
        assert ssp != isinstance(net.prompt_encoders["inst"], ConvPromptEncoder)
        combo = (ssp, net.decoder.cross_task_attention, net.prompt_mode == "mutual")
        assert net.num_forwards == 2
        seen.add(combo)
        if plan.row.id == "baseline":
            assert combo == (False, False, False)
        if plan.row.id == "full":
            assert combo == (True, True, True)
    assert len(seen) == 8  # every combination of the three components once


def test_table8_switches_reach_the_ssm(histo_bundle, histo_dataset, tmp_path):
    _, plans = _plans(histo_bundle, "table8", histo_dataset, tmp_path)
    got = {}
    for plan in plans:
        _, net, _ = _network_and_loss(plan)
        ssm = [m for m in net.modules() if hasattr(m, "ssm_silu") and hasattr(m, "ssm_gate")]
        assert ssm, "no SSM block found"
        got[plan.row.id] = {(m.ssm_silu, m.ssm_gate) for m in ssm}
    assert got == {"silu": {(True, False)}, "silu_gate": {(True, True)}, "ours": {(False, False)}}


def test_lambda_reaches_the_loss(histo_bundle, histo_dataset, tmp_path):
    _, plans = _plans(histo_bundle, "fig8_lambda", histo_dataset, tmp_path)
    assert len(plans) == 10
    for plan in plans:
        trainer, _, loss = _network_and_loss(plan)
        assert loss is trainer.loss_function
        assert loss.weights["pass1_weight"] == pytest.approx(plan.row.x)


def test_forwards_reach_the_network(histo_bundle, histo_dataset, tmp_path):
    _, plans = _plans(histo_bundle, "fig8_forwards", histo_dataset, tmp_path)
    for plan in plans:
        _, net, _ = _network_and_loss(plan)
        assert net.num_forwards == int(plan.row.x)
        assert (net.prompt_encoders is None) == (plan.row.x == 1)


def test_fractions_reach_the_data_loader_as_nested_subsets(histo_bundle, tmp_path):
    from coseg.histo.synthetic import write_synthetic_dataset

    data = tmp_path / "twenty"
    write_synthetic_dataset(data, num_images=28, size=64, seed=5)
    n_train = len(json.loads((data / "datalist.json").read_text(encoding="utf-8"))["training"])
    _, plans = _plans(histo_bundle, "table11", data, tmp_path)
    images = []
    for plan in plans:
        trainer, _, _ = _network_and_loss(plan)
        items = trainer.data_loader.dataset.data
        assert len(items) == max(1, round(plan.row.x / 100 * n_train))
        images.append({item["image"] for item in items})
    assert [len(s) for s in images] == sorted(len(s) for s in images)
    assert all(small <= large for small, large in zip(images, images[1:], strict=False)), "subsets are not nested"
    assert len(images[-1]) == n_train > len(images[0])


def test_table10_needs_a_test_dataset(histo_bundle, histo_dataset, tmp_path):
    with pytest.raises(ValueError, match="--test_dataset_dir"):
        _plans(histo_bundle, "table10", histo_dataset, tmp_path)


def test_a_misspelt_override_is_refused(histo_bundle, histo_dataset, tmp_path):
    _, plans = _plans(histo_bundle, "table8", histo_dataset, tmp_path, prompt_encodr="conv")
    args = plans[0].train_args
    with pytest.raises(KeyError, match="prompt_encodr"):
        check_override_keys(args["config_file"], {k: v for k, v in args.items() if k != "config_file"})
    check_override_keys(args["config_file"], {"loss#pass1_weight": 0.2, "train#trainer#epoch_length": 1})
    with pytest.raises(KeyError, match="los#pass1_weight"):
        check_override_keys(args["config_file"], {"los#pass1_weight": 0.2})
