"""CoSegPlusPlus: output contract, gradients between the tasks, freezing, ablation switches."""

from __future__ import annotations

import warnings

import pytest
import torch

from coseg.keys import OutputKeys as K
from coseg.networks import ConvPromptEncoder, CoSegPlusPlus, SSPEncoder


def _micro(**overrides) -> CoSegPlusPlus:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CoSegPlusPlus.from_preset("micro", **overrides)


@pytest.mark.parametrize("hw", [(64, 64), (64, 96), (96, 32)])
def test_output_shapes(hw):
    model = _micro(num_sem_classes=5, num_inst_types=3)
    H, W = hw
    out = model(torch.randn(2, 3, H, W))
    h, w = H // 16, W // 16
    assert out[K.SEM_LOGITS].shape == (2, 5, H, W)
    assert out[K.INST_BINARY].shape == (2, 2, H, W)
    assert out[K.INST_HV].shape == (2, 2, H, W)
    assert out[K.INST_TYPE].shape == (2, 3, H, W)
    assert out[K.SEM_PROMPT].shape == out[K.INST_PROMPT].shape == (2, 1, 4 * h, 4 * w)
    assert out[K.SEM_CONSISTENCY].shape == out[K.INST_CONSISTENCY].shape == (2, 2, h, w)
    torch.testing.assert_close(out[K.SEM_CONSISTENCY].sum(1), torch.ones(2, h, w))
    assert K.SEM_CROSS_ATTENTION not in out


def test_input_errors_name_the_requirement():
    model = _micro()
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.randn(1, 3, 64, 72))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(1, 1, 64, 64))


def test_encoder_runs_once_per_image_whatever_the_passes():
    model = _micro(num_forwards=3)
    calls = {"encoder": 0, "decoder": 0}
    model.image_encoder.register_forward_hook(lambda *a: calls.__setitem__("encoder", calls["encoder"] + 1))
    model.decoder.register_forward_hook(lambda *a: calls.__setitem__("decoder", calls["decoder"] + 1))
    model(torch.randn(1, 3, 64, 64))
    assert calls == {"encoder": 1, "decoder": 3}


def test_frozen_trunk_gets_no_gradient_adapters_and_heads_do():
    model = _micro(freeze_encoder=True)
    out = model(torch.randn(1, 3, 64, 64))
    loss = sum(v.float().square().mean() for v in out.values())
    loss.backward()
    trunk = model.image_encoder.trunk
    for name, p in trunk.named_parameters():
        if ".adapter." in name:
            assert p.grad is not None, name
            # the up-projection starts at zero, so only it (not the down-projection) has a non-zero first gradient
            if ".adapter.up." in name:
                assert p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    for name, p in model.named_parameters():
        if not name.startswith("image_encoder.trunk."):
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


def _grad_norm(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize("source, target", [("sem", "inst"), ("inst", "sem")])
def test_loss_of_one_task_reaches_the_other_tasks_queries_and_prompt_encoder(source, target):
    """Pass 2 of ``source`` is prompted by ``target``'s pass-1 mask through ``target``'s SSP-Encoder (not detached).

    Cross-task attention is switched off so that the prompt path is the only link between the heads.
    """
    model = _micro(cross_task_attention=False)
    out = model(torch.randn(1, 3, 64, 64))
    key = K.SEM_LOGITS if source == "sem" else K.INST_BINARY
    out[key].square().mean().backward()
    assert _grad_norm(model.decoder.heads[target].tokens) > 0
    assert _grad_norm(model.prompt_encoders[target]) > 0
    # the source's own prompt encoder encodes the source's masks, which only prompt the target's final pass
    assert _grad_norm(model.prompt_encoders[source]) == 0


def test_no_cross_task_gradient_with_a_single_pass():
    model = _micro(cross_task_attention=False, num_forwards=1)
    assert model.prompt_encoders is None
    out = model(torch.randn(1, 3, 64, 64))
    out[K.SEM_LOGITS].square().mean().backward()
    assert _grad_norm(model.decoder.heads["inst"]) == 0
    assert all(p.grad is None for layer in model.decoder.layers for p in layer["inst"].parameters())


def test_cross_task_attention_links_the_heads_within_a_pass():
    """Semantic queries read the instance image tokens (layer 1: image embedding + instance prompt; from
    layer 2 on also what the instance queries wrote into them)."""
    model = _micro(num_forwards=1, decoder={"depth": 2})
    out = model(torch.randn(1, 3, 64, 64), return_attention=True)
    attn = out[K.INST_CROSS_ATTENTION]
    assert attn.shape == (1, 2, 1 + 4 + 4, 16)
    torch.testing.assert_close(attn.sum(-1), torch.ones(1, 2, 9))
    out[K.SEM_LOGITS].square().mean().backward()
    assert _grad_norm(model.decoder.heads["inst"].no_mask_embed) > 0
    assert _grad_norm(model.decoder.heads["inst"].tokens) > 0


@pytest.mark.parametrize("mode", ["mutual", "self"])
def test_prompts_are_routed_to_the_other_task_or_to_itself(mode):
    model = _micro(prompt_mode=mode)
    decoder_prompts, encoded = [], {}
    model.decoder.register_forward_pre_hook(lambda mod, args: decoder_prompts.append(args[2]))
    for task in ("sem", "inst"):
        model.prompt_encoders[task].register_forward_hook(lambda mod, a, out, t=task: encoded.__setitem__(t, out))
    model(torch.randn(1, 3, 64, 64))
    pass2 = decoder_prompts[1]
    source = {"sem": "inst", "inst": "sem"} if mode == "mutual" else {"sem": "sem", "inst": "inst"}
    for task in ("sem", "inst"):
        assert pass2[task] is encoded[source[task]]


def test_ablation_switches_change_the_modules():
    full = _micro()
    assert isinstance(full.prompt_encoders["sem"], SSPEncoder)
    seq = full.prompt_encoders["sem"].sequential
    assert not seq.ssm_silu and not seq.ssm_gate and seq.in_proj.out_features == seq.d_inner
    gated = _micro(ssm_silu=True, ssm_gate=True).prompt_encoders["inst"].sequential
    assert gated.ssm_silu and gated.ssm_gate and gated.in_proj.out_features == 2 * gated.d_inner
    conv = _micro(prompt_encoder="conv")
    assert isinstance(conv.prompt_encoders["sem"], ConvPromptEncoder)
    plain = _micro(cross_task_attention=False)
    assert not hasattr(plain.decoder.layers[0]["sem"], "cross_attn_token_to_task")
    assert hasattr(full.decoder.layers[0]["sem"], "cross_attn_token_to_task")
    x = torch.randn(1, 3, 64, 64)
    outs = [m(x)[K.SEM_LOGITS] for m in (full, _micro(ssm_silu=True, ssm_gate=True), conv, plain)]
    assert all(o.shape == outs[0].shape and torch.isfinite(o).all() for o in outs)


def test_from_preset_rejects_unknown_options():
    with pytest.raises(ValueError, match="unknown Co-Seg\\+\\+ preset"):
        CoSegPlusPlus.from_preset("huge")
    with pytest.raises(TypeError, match="num_classes"):
        CoSegPlusPlus.from_preset("micro", num_classes=3)
    with pytest.raises(ValueError, match="prompt_encoder"):
        _micro(prompt_encoder="points")
    with pytest.raises(ValueError, match="prompt_mode"):
        _micro(prompt_mode="both")
    with pytest.raises(ValueError, match="background"):
        _micro(num_sem_classes=1)


def test_summary_counts_parameters_and_macs():
    from coseg.networks.summary import model_cost

    cost = model_cost("micro")
    assert cost["frozen_params"] > 0 and cost["learnable_params"] > 0
    assert 0 < cost["encoder_macs"] < cost["macs_per_image"]
    assert cost["layer_macs_per_image"] < cost["macs_per_image"]
    assert cost["macs_if_encoder_recomputed_per_pass"] == cost["macs_per_image"] + cost["encoder_macs"]
