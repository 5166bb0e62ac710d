"""Loading official SAM2 checkpoints: keys, errors that name the problem, freezing."""

from __future__ import annotations

import pytest
import torch

from coseg.networks import CoSegPlusPlus, SAM2CheckpointError, build_image_encoder, load_sam2_weights
from coseg.networks.coseg import MICRO_ENCODER


@pytest.fixture(scope="module")
def micro_state():
    """A SAM2-format checkpoint of the micro encoder, with keys of the rest of SAM2 around it."""
    torch.manual_seed(0)
    enc = build_image_encoder(MICRO_ENCODER, adapter_ratio=None)
    model = {f"image_encoder.{k}": v.clone() for k, v in enc.state_dict().items()}
    model["sam_mask_decoder.iou_token.weight"] = torch.zeros(1, 32)
    model["memory_encoder.out_proj.weight"] = torch.zeros(4, 4)
    return model


def test_loads_from_file_and_ignores_the_rest_of_sam2(tmp_path, micro_state):
    path = tmp_path / "sam2.1_hiera_micro.pt"
    torch.save({"model": micro_state}, path)
    enc = build_image_encoder(MICRO_ENCODER)
    report = load_sam2_weights(enc, path)
    assert sorted(report.ignored) == ["memory_encoder.out_proj.weight", "sam_mask_decoder.iou_token.weight"]
    assert report.new and all(".adapter." in k for k in report.new)
    key = "trunk.blocks.0.attn.qkv.weight"
    assert torch.equal(enc.state_dict()[key], micro_state[f"image_encoder.{key}"])


def test_missing_unexpected_and_shape_errors_are_listed(micro_state):
    broken = dict(micro_state)
    del broken["image_encoder.trunk.blocks.1.mlp.layers.0.weight"]
    broken["image_encoder.trunk.blocks.9.norm1.weight"] = torch.zeros(16)
    broken["image_encoder.neck.convs.0.conv.bias"] = torch.zeros(7)
    with pytest.raises(SAM2CheckpointError) as err:
        load_sam2_weights(build_image_encoder(MICRO_ENCODER), broken)
    msg = str(err.value)
    assert "missing (1): trunk.blocks.1.mlp.layers.0.weight" in msg
    assert "unexpected (1): trunk.blocks.9.norm1.weight" in msg
    assert "neck.convs.0.conv.bias: checkpoint (7,) vs encoder (32,)" in msg


def test_wrong_preset_is_reported(micro_state):
    with torch.device("meta"):
        enc = build_image_encoder("hiera_t")
    with pytest.raises(SAM2CheckpointError) as err:
        load_sam2_weights(enc, micro_state)
    first = str(err.value).splitlines()[0]
    assert "holds the SAM2 image encoder Hiera (embed_dim 16, 6 blocks)" in first
    assert "this network's encoder is hiera_t (embed_dim 96, 12 blocks)" in first


def test_a_checkpoint_of_another_preset_names_both(tmp_path, micro_state):
    path = tmp_path / "micro.pt"
    torch.save({"model": micro_state}, path)
    with pytest.raises(SAM2CheckpointError) as err:
        CoSegPlusPlus.from_preset("tiny", sam2_checkpoint=str(path))
    first = str(err.value).splitlines()[0]
    assert first.startswith(f"model preset 'tiny': {path}: holds the SAM2 image encoder Hiera (embed_dim 16")
    assert "hiera_t (embed_dim 96, 12 blocks)" in first


def test_file_errors(tmp_path):
    enc = build_image_encoder(MICRO_ENCODER)
    with pytest.raises(SAM2CheckpointError, match="not found"):
        load_sam2_weights(enc, tmp_path / "nope.pt")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SAM2CheckpointError, match="cannot be read"):
        load_sam2_weights(enc, bad)
    with pytest.raises(SAM2CheckpointError, match="no image_encoder"):
        load_sam2_weights(enc, {"sam_mask_decoder.x": torch.zeros(1)})


def test_checkpoint_freezes_trunk_but_not_adapters(tmp_path, micro_state):
    path = tmp_path / "ckpt.pt"
    torch.save({"model": micro_state}, path)
    model = CoSegPlusPlus.from_preset("micro", sam2_checkpoint=str(path))
    trunk = model.image_encoder.trunk
    for block in trunk.blocks:
        assert all(p.requires_grad for p in block.adapter.parameters())
        assert not any(p.requires_grad for p in block.attn.parameters())
        assert not any(p.requires_grad for p in block.mlp.parameters())
    assert not trunk.patch_embed.proj.weight.requires_grad and not trunk.pos_embed.requires_grad
    assert all(p.requires_grad for p in model.image_encoder.neck.parameters())


def test_without_checkpoint_the_encoder_trains_with_a_warning():
    with pytest.warns(UserWarning, match="TRAINED instead of frozen"):
        model = CoSegPlusPlus.from_preset("micro")
    assert all(p.requires_grad for p in model.parameters())
