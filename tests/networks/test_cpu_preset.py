"""The ``cpu`` preset: MONAI's ResNet as the image-encoder trunk under the same FPN neck, SSP-Encoders and MTC-Decoder;
its build arguments travel with the weights like the other presets'."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from coseg.keys import OutputKeys as K
from coseg.losses import CoSegLoss, CoSegTargetsd
from coseg.networks import (
    PRESETS,
    CoSegPlusPlus,
    SAM2CheckpointError,
    build_image_encoder,
    check_sam2_checkpoint,
    count_parameters,
    read_build_args,
)
from coseg.networks.backbones import ResNetTrunk, is_sam2_encoder

#: the cpu preset's encoder at test size: ResNet-10 under a 32-wide neck
SMALL_ENCODER = {
    "backbone": "monai_resnet",
    "trunk": {"model_name": "resnet10"},
    "neck": {"d_model": 32, "backbone_channel_list": [512, 256, 128, 64], "fpn_top_down_levels": [2, 3]},
    "scalp": 1,
}


def _small_cpu(**overrides) -> CoSegPlusPlus:
    """The ``cpu`` preset with micro's decoder and SSP sizes and a ResNet-10 trunk."""
    torch.manual_seed(0)
    settings = {
        "encoder": SMALL_ENCODER,
        "decoder": PRESETS["micro"]["decoder"],
        "ssp": PRESETS["micro"]["ssp"],
        **overrides,
    }
    return CoSegPlusPlus.from_preset("cpu", **settings)


def test_resnet_trunk_gives_hiera_s_four_levels():
    trunk = ResNetTrunk(model_name="resnet10")
    assert trunk.channel_list == [512, 256, 128, 64] and trunk.size_divisor == 32
    feats = trunk(torch.randn(2, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [(2, 64, 16, 24), (2, 128, 8, 12), (2, 256, 4, 6), (2, 512, 2, 3)]
    assert ResNetTrunk(model_name="resnet50").channel_list == [2048, 1024, 512, 256]  # bottleneck blocks
    with pytest.raises(ValueError, match="multiples of 32"):
        trunk(torch.randn(1, 3, 48, 64))
    with pytest.raises(ValueError, match="unknown ResNet 'resnet11'"):
        ResNetTrunk(model_name="resnet11")


def test_build_image_encoder_refuses_what_the_resnet_trunk_does_not_have():
    enc = build_image_encoder(SMALL_ENCODER, adapter_ratio=0.0, adapter_scale=0.5, use_checkpoint=False)
    out = enc(torch.randn(1, 3, 64, 64))
    assert out["vision_features"].shape == (1, 32, 4, 4)
    assert [tuple(f.shape[-2:]) for f in out["backbone_fpn"]] == [(16, 16), (8, 8), (4, 4)]
    with pytest.raises(ValueError, match="no adapters"):
        build_image_encoder(SMALL_ENCODER, adapter_ratio=0.25)
    with pytest.raises(ValueError, match="use_checkpoint"):
        build_image_encoder(SMALL_ENCODER, use_checkpoint=True)
    with pytest.raises(ValueError, match=r"unknown trunk fields \['embed_dim'\]"):
        build_image_encoder({**SMALL_ENCODER, "trunk": {"model_name": "resnet10", "embed_dim": 8}})
    with pytest.raises(ValueError, match="unknown image encoder backbone 'vgg'"):
        build_image_encoder({**SMALL_ENCODER, "backbone": "vgg"})
    with pytest.raises(ValueError, match="do not match the neck"):
        build_image_encoder({**SMALL_ENCODER, "neck": {"d_model": 32, "backbone_channel_list": [8, 4, 2, 1]}})
    assert is_sam2_encoder("hiera_t") and is_sam2_encoder(PRESETS["micro"]["encoder"])
    assert not is_sam2_encoder(PRESETS["cpu"]["encoder"])


def test_cpu_preset_shapes_and_parameter_count():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "no SAM2 checkpoint" warning: this encoder always starts from scratch
        model = CoSegPlusPlus.from_preset("cpu", num_sem_classes=2, num_inst_types=5).eval()
    assert model.build_args["name"] == "cpu" and model.build_args["adapter_ratio"] == 0.0
    assert model.image_size == 256 and model.size_divisor == 32
    # MONAI's 2-D ResNet-18 without its classifier + the FPN neck's four 1x1 laterals to 256 channels (246,784)
    assert count_parameters(model.image_encoder.trunk) == (11_002_688, 0)
    assert count_parameters(model.image_encoder) == (11_249_472, 0)
    # the decoder and prompt encoders are tiny's, parameter for parameter
    tiny = CoSegPlusPlus.from_preset("tiny", num_sem_classes=2, num_inst_types=5, freeze_encoder=False)
    for part in ("decoder", "prompt_encoders"):
        assert count_parameters(getattr(model, part)) == count_parameters(getattr(tiny, part))
    assert count_parameters(model)[0] == 23_843_320 < count_parameters(tiny)[0]
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    assert out[K.SEM_LOGITS].shape == (1, 2, 64, 96) and out[K.INST_TYPE].shape == (1, 5, 64, 96)
    assert out[K.INST_BINARY].shape == out[K.INST_HV].shape == (1, 2, 64, 96)
    assert out[K.SEM_PROMPT].shape == (1, 1, 16, 24) and out[K.INST_CONSISTENCY].shape == (1, 2, 4, 6)


def test_cpu_preset_saved_weights_rebuild_it(tmp_path):
    net = _small_cpu(num_sem_classes=2).eval()
    path = tmp_path / "model.pt"
    torch.save(net.state_dict(), path)
    assert read_build_args(path)["encoder"]["backbone"] == "monai_resnet"
    rebuilt = CoSegPlusPlus.from_saved(path)
    assert rebuilt.build_args == net.build_args and isinstance(rebuilt.image_encoder.trunk, ResNetTrunk)
    rebuilt.load_state_dict(torch.load(path, weights_only=True))  # batch-norm buffers included
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x)[K.INST_HV], net(x)[K.INST_HV], rtol=0, atol=0)
    # the weights of another trunk are refused, naming the argument
    with pytest.raises(RuntimeError, match="encoder.trunk.model_name"):
        _small_cpu(num_sem_classes=2, encoder={**SMALL_ENCODER, "trunk": {"model_name": "resnet18"}}).load_state_dict(
            torch.load(path, weights_only=True)
        )


def test_cpu_preset_takes_no_sam2_checkpoint(tmp_path):
    fake = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": {}}, fake)
    with pytest.raises(SAM2CheckpointError, match="convolutional"):
        CoSegPlusPlus.from_preset("cpu", sam2_checkpoint=fake)
    # the bundles' check before training: nothing to fetch, no allow_random_encoder needed; a file is refused
    assert check_sam2_checkpoint(None, preset="cpu", allow_random=False) is None
    with pytest.raises(SAM2CheckpointError, match="set sam2_checkpoint to null"):
        check_sam2_checkpoint(fake, preset="cpu")
    frozen = _small_cpu(freeze_encoder=True)
    assert not any(p.requires_grad for p in frozen.image_encoder.trunk.parameters())
    assert all(p.requires_grad for p in frozen.image_encoder.neck.parameters())


def test_one_training_step_of_the_small_cpu_network_lowers_the_loss():
    model = _small_cpu(num_sem_classes=2, num_inst_types=3).train()
    rng = np.random.default_rng(0)
    inst = np.zeros((64, 64), np.int64)
    yy, xx = np.ogrid[:64, :64]
    for i in range(1, 9):
        cy, cx = rng.integers(6, 58, 2)
        inst[(yy - cy) ** 2 + (xx - cx) ** 2 <= 16] = i
    labels = {"label_inst": inst[None], "label_sem": (inst > 0)[None], "label_type": ((inst % 2) + 1)[None]}
    data = CoSegTargetsd()(labels)
    target = {k: torch.as_tensor(np.asarray(v))[None].repeat(2, *([1] * np.asarray(v).ndim)) for k, v in data.items()}
    image = torch.randn(2, 3, 64, 64)
    image[:, 0] += torch.from_numpy(inst > 0).float()  # the objects are visible
    loss_fn = CoSegLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = loss_fn(model(image), target)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    moved = {n.split(".")[0] for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {"image_encoder", "decoder", "prompt_encoders"}
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if ".trunk.body.layer1." in n)
