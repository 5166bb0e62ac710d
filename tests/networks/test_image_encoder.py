"""SAM2 image encoder: equality with the official implementation's outputs, presets, input checks."""

from __future__ import annotations

import pytest
import torch

from coseg.networks import ENCODER_PRESETS, build_image_encoder, load_sam2_weights


@pytest.fixture(scope="module")
def fixture(shared_dir):
    return torch.load(shared_dir / "fixtures" / "sam2_encoder_micro.pt", weights_only=True)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("adapters", [False, True])
def test_matches_official_sam2_outputs(fixture, adapters):
    """Built from the fixture's config with its (perturbed) official weights, all outputs equal SAM2's to 1e-5.

    Fresh adapters start as the identity (zero up-projection), so the result is the same with them.
    """
    enc = build_image_encoder(fixture["config"], adapter_ratio=0.25 if adapters else None)
    report = load_sam2_weights(enc, {"model": fixture["model"]})
    assert len(report.loaded) == len(fixture["model"])
    assert bool(report.new) == adapters
    enc.eval()
    with torch.no_grad():
        out = enc(fixture["input"])
    assert _rel(out["vision_features"], fixture["vision_features"]) < 1e-5
    assert len(out["backbone_fpn"]) == len(fixture["backbone_fpn"]) == 3
    for ours, ref in zip(out["backbone_fpn"], fixture["backbone_fpn"]):
        assert ours.shape == ref.shape and _rel(ours, ref) < 1e-5
    for ours, ref in zip(out["vision_pos_enc"], fixture["vision_pos_enc"]):
        assert ours.shape == ref.shape and _rel(ours, ref) < 1e-5


def test_hiera_l_preset_is_sam2_large():
    cfg = ENCODER_PRESETS["hiera_l"]
    assert cfg["trunk"] == {
        "embed_dim": 144,
        "num_heads": 2,
        "stages": [2, 6, 36, 4],
        "global_att_blocks": [23, 33, 43],
        "window_pos_embed_bkg_spatial_size": [7, 7],
        "window_spec": [8, 4, 16, 8],
    }
    assert cfg["neck"] == {
        "d_model": 256,
        "backbone_channel_list": [1152, 576, 288, 144],
        "fpn_top_down_levels": [2, 3],
        "fpn_interp_model": "nearest",
    }
    assert cfg["scalp"] == 1


@pytest.mark.parametrize(
    "preset, channels, depth",
    [
        ("hiera_t", [768, 384, 192, 96], 12),
        ("hiera_s", [768, 384, 192, 96], 16),
        ("hiera_b+", [896, 448, 224, 112], 24),
        ("hiera_l", [1152, 576, 288, 144], 48),
    ],
)
def test_presets_build_with_sam2_shapes(preset, channels, depth):
    with torch.device("meta"):
        enc = build_image_encoder(preset)
    assert enc.trunk.channel_list == channels
    assert len(enc.trunk.blocks) == depth
    assert enc.size_divisor == 32


def test_non_square_input_and_size_check(fixture):
    enc = build_image_encoder(fixture["config"]).eval()
    with torch.no_grad():
        out = enc(torch.randn(1, 3, 64, 160))
    assert out["vision_features"].shape == (1, 32, 4, 10)
    assert [f.shape[-2:] for f in out["backbone_fpn"]] == [(16, 40), (8, 20), (4, 10)]
    with pytest.raises(ValueError, match="multiples of 32"):
        enc(torch.randn(1, 3, 64, 80))


def test_build_errors():
    with pytest.raises(ValueError, match="unknown encoder preset"):
        build_image_encoder("hiera_xl")
    bad = {**ENCODER_PRESETS["hiera_t"], "trunk": {**ENCODER_PRESETS["hiera_t"]["trunk"], "embed_dims": 8}}
    with pytest.raises(ValueError, match="unknown trunk fields"):
        build_image_encoder(bad)
    mismatch = {**ENCODER_PRESETS["hiera_t"], "neck": {**ENCODER_PRESETS["hiera_t"]["neck"]}}
    mismatch["neck"]["backbone_channel_list"] = [768, 384, 192, 64]
    with pytest.raises(ValueError, match="do not match"):
        with torch.device("meta"):
            build_image_encoder(mismatch)
