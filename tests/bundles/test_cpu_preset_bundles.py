"""Both bundles build the ``cpu`` preset from their own configs: no SAM2 checkpoint to fetch and no
``allow_random_encoder`` needed (its convolutional encoder always starts from random weights), and inference rebuilds
it from the weights alone."""

from __future__ import annotations

import warnings

import pytest
import torch
from monai.bundle import ConfigParser

from coseg.networks import SAM2CheckpointError
from coseg.networks.backbones import ResNetTrunk

from .conftest import REPO


def _parsed(bundle: str, file: str, item: str, **overrides):
    parser = ConfigParser()
    parser.read_config(f=str(REPO / "bundles" / bundle / "configs" / file))
    parser.update(overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "no SAM2 checkpoint" / "random weights" warning
        torch.manual_seed(0)
        return parser.get_parsed_content(item)


@pytest.mark.parametrize("bundle", ["coseg_histo", "coseg_cbct"])
def test_bundle_trains_and_infers_with_the_cpu_preset(bundle, tmp_path):
    assert _parsed(bundle, "train.json", "sam2_weights", model_preset="cpu") is None  # allow_random_encoder: false
    net = _parsed(bundle, "train.json", "network_def", model_preset="cpu")
    assert isinstance(net.image_encoder.trunk, ResNetTrunk) and net.build_args["name"] == "cpu"
    weights = tmp_path / "model.pt"
    torch.save(net.state_dict(), weights)
    rebuilt = _parsed(bundle, "inference.json", "network_def", model_preset=None, ckpt_path=str(weights))
    assert rebuilt.build_args == net.build_args
    rebuilt.load_state_dict(torch.load(weights, weights_only=True))
    # a SAM2 checkpoint given to it is refused before training starts
    fake = tmp_path / "sam2.pt"
    torch.save({"model": {}}, fake)
    with pytest.raises(Exception) as err:
        _parsed(bundle, "train.json", "sam2_weights", model_preset="cpu", sam2_checkpoint=str(fake))
    chain = [err.value]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    assert any(isinstance(e, SAM2CheckpointError) and "convolutional" in str(e) for e in chain)
