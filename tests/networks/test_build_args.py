"""The network's build arguments travel with its weights: recorded in every state dict, checked on load, and used by
``CoSegPlusPlus.from_saved`` to build the network the weights belong to."""

from __future__ import annotations

import warnings
from collections import OrderedDict

import pytest
import torch

from coseg.errors import InputFileError
from coseg.keys import OutputKeys as K
from coseg.networks import BUILD_ARGS_KEY, CoSegPlusPlus, read_build_args, recorded_build_args


def _micro(**overrides) -> CoSegPlusPlus:
    torch.manual_seed(0)
    return CoSegPlusPlus.from_preset("micro", freeze_encoder=False, **overrides)


@pytest.fixture(scope="module")
def silu_model(tmp_path_factory):
    """A micro network with the SSM's SiLU (Table 8) and 2 region classes, saved as a plain state dict."""
    net = _micro(ssm_silu=True, num_sem_classes=2).eval()
    path = tmp_path_factory.mktemp("saved") / "model.pt"
    torch.save(net.state_dict(), path)
    return net, path


def test_the_state_dict_records_the_resolved_build_arguments(silu_model):
    net, path = silu_model
    state = torch.load(path, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())  # still a plain state dict for MONAI's tools
    recorded = recorded_build_args(state)
    assert recorded == net.build_args == read_build_args(path)
    assert recorded["name"] == "micro" and recorded["ssm_silu"] is True and recorded["num_sem_classes"] == 2
    assert recorded["decoder"]["depth"] == 1 and recorded["encoder"]["neck"]["d_model"] == 32
    assert "sam2_checkpoint" not in recorded and "freeze_encoder" not in recorded


def test_a_training_checkpoint_records_them_under_model(tmp_path, silu_model):
    net, _ = silu_model
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": net.state_dict(), "epoch": torch.tensor(3)}, path)
    assert read_build_args(path) == net.build_args


def test_from_saved_builds_the_network_the_weights_belong_to(silu_model):
    net, path = silu_model
    rebuilt = CoSegPlusPlus.from_saved(path)
    assert rebuilt.build_args == net.build_args
    assert all(m.ssm_silu for m in rebuilt.modules() if hasattr(m, "ssm_silu"))
    rebuilt.load_state_dict(torch.load(path, weights_only=True))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x)[K.SEM_LOGITS], net(x)[K.SEM_LOGITS], rtol=0, atol=0)
    # settings that agree with the record, and those that change no result, may be given
    same = CoSegPlusPlus.from_saved(path, name="micro", ssm_silu=True, decoder={"depth": 1}, use_checkpoint=True)
    assert same.image_encoder.trunk.use_checkpoint and same.build_args["ssm_silu"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"ssm_silu": False}, "ssm_silu: config False, weights True"),
        ({"name": "tiny"}, "name (preset): config 'tiny', weights 'micro'"),
        ({"num_sem_classes": 3}, "num_sem_classes: config 3, weights 2"),
        ({"decoder": {"depth": 2}}, "decoder.depth: config 2, weights 1"),
    ],
)
def test_from_saved_refuses_a_setting_that_contradicts_the_weights(silu_model, given, expected):
    _, path = silu_model
    with pytest.raises(InputFileError, match="trained as another network") as err:
        CoSegPlusPlus.from_saved(path, **given)
    assert str(path) in str(err.value) and expected in str(err.value)


def test_loading_weights_of_another_network_fails_even_when_every_tensor_fits(silu_model):
    """ssm_silu changes no tensor shape: without the record a SiLU-trained model loaded silently without its SiLU."""
    _, path = silu_model
    state = torch.load(path, weights_only=True)
    plain = _micro(num_sem_classes=2)
    for strict in (True, False):
        with pytest.raises(RuntimeError, match="ssm_silu: this network False, the weights True"):
            plain.load_state_dict(state, strict=strict)
    # the record is all that tells them apart: the same tensors without it load
    plain.load_state_dict(OrderedDict(state.items()))


def test_a_network_built_from_modules_records_nothing_and_checks_nothing(silu_model):
    net, path = silu_model
    bare = CoSegPlusPlus(
        image_encoder=net.image_encoder,
        decoder=net.decoder,
        prompt_encoders=dict(net.prompt_encoders),
        num_sem_classes=2,
        num_inst_types=4,
    )
    assert recorded_build_args(bare.state_dict()) is None
    bare.load_state_dict(torch.load(path, weights_only=True))


def test_the_record_sits_under_the_networks_prefix_inside_a_wrapper(silu_model):
    net, _ = silu_model
    wrapper = torch.nn.Module()
    wrapper.network = net
    state = wrapper.state_dict()
    assert BUILD_ARGS_KEY in state._metadata["network"]
    assert recorded_build_args(state) == net.build_args


def test_old_weights_without_a_record_load_with_the_config_settings_and_a_warning(tmp_path, silu_model):
    net, _ = silu_model
    path = tmp_path / "old.pt"
    torch.save(OrderedDict(net.state_dict().items()), path)  # a new dict: torch's metadata is gone
    assert read_build_args(path) is None
    with pytest.warns(UserWarning, match="records no network build arguments"):
        rebuilt = CoSegPlusPlus.from_saved(path, name="micro", num_sem_classes=2, ssm_silu=True)
    assert rebuilt.build_args == net.build_args
    rebuilt.load_state_dict(torch.load(path, weights_only=True))


def test_without_a_file_the_network_comes_from_the_given_settings(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no SAM2 warning: nothing is frozen
        net = CoSegPlusPlus.from_saved(tmp_path / "missing.pt", name="micro", prompt_mode="self")
    assert net.build_args["prompt_mode"] == "self" and net.build_args["name"] == "micro"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"not a checkpoint", "torch.load"),
        (None, "not a state dict"),
    ],
)
def test_an_unreadable_file_is_named(tmp_path, content, match):
    path = tmp_path / "model.pt"
    if content is None:
        torch.save([torch.zeros(1)], path)
    else:
        path.write_bytes(content)
    with pytest.raises(InputFileError, match=match) as err:
        CoSegPlusPlus.from_saved(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ssm_silu": "false"}, "ssm_silu must be True or False, got 'false'"),
        ({"cross_task_attention": 1}, "cross_task_attention must be True or False"),
        ({"num_forwards": 0}, "num_forwards must be an integer >= 1"),
        ({"num_sem_classes": 2.5}, "num_sem_classes must be an integer"),
        ({"adapter_ratio": -1}, "adapter_ratio must be a number >= 0"),
        ({"ssp": {"ssm_silu": True}}, "as arguments of their own"),
        ({"decoder": 3}, "decoder must be a dict"),
    ],
)
def test_from_preset_checks_the_types_of_its_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CoSegPlusPlus.from_preset("micro", freeze_encoder=False, **kwargs)


def test_a_config_with_a_misspelt_setting_fails_to_instantiate():
    """Keyword-only arguments: MONAI's ``_target_`` instantiation names the unknown argument."""
    from monai.bundle import ConfigParser

    parser = ConfigParser(
        {"net": {"_target_": "coseg.networks.CoSegPlusPlus.from_preset", "name": "micro", "ssm_slu": True}}
    )
    with pytest.raises(Exception) as err:
        parser.get_parsed_content("net")
    chain = [err.value]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    assert any("ssm_slu" in str(e) for e in chain)
