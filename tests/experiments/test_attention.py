"""Fig. 10: prompt and cross-attention maps at the input's size, their files, and loading a bundle checkpoint."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from coseg.constants import PIXEL_MEAN, PIXEL_STD
from coseg.errors import InputFileError
from coseg.experiments import attention_maps, heat_overlay, load_network, write_attention_figures
from coseg.experiments.__main__ import main
from coseg.keys import OutputKeys
from coseg.networks import CoSegPlusPlus


def _micro(**kw) -> CoSegPlusPlus:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CoSegPlusPlus.from_preset("micro", **kw).eval()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    from coseg.histo.synthetic import make_sample

    return make_sample(size=96, seed=4)["image"][:70, :90].copy()  # not a multiple of 32


def test_maps_have_the_image_size_and_match_the_network(image):
    net = _micro()
    maps = attention_maps(net, image)
    assert set(maps) == {
        "sem_prompt",
        "inst_prompt",
        "attn_inst_to_sem",
        "attn_sem_to_inst",
        "attn_inst_to_sem_grid",
        "attn_sem_to_inst_grid",
    }
    for name in ("sem_prompt", "inst_prompt", "attn_inst_to_sem", "attn_sem_to_inst"):
        assert maps[name].shape == (70, 90)
    assert maps["attn_inst_to_sem_grid"].shape == (6, 6)  # padded to 96 x 96, stride 16
    assert maps["attn_sem_to_inst_grid"].sum() == pytest.approx(1.0, abs=1e-5)  # a softmax over the tokens
    assert 0.0 <= maps["sem_prompt"].min() and maps["sem_prompt"].max() <= 1.0
    # the same computation by hand: white padding, SAM2 normalisation, the network's pass-1 logits
    padded = np.full((96, 96, 3), 255, np.uint8)
    padded[:70, :90] = image
    x = (
        torch.from_numpy(padded).permute(2, 0, 1).float() / 255 - torch.tensor(PIXEL_MEAN)[:, None, None]
    ) / torch.tensor(PIXEL_STD)[:, None, None]
    with torch.no_grad():
        out = net(x[None], return_attention=True)
    prompt = torch.sigmoid(F.interpolate(out[OutputKeys.INST_PROMPT], size=(96, 96), mode="bilinear"))[0, 0, :70, :90]
    np.testing.assert_allclose(maps["inst_prompt"], prompt.numpy(), atol=1e-5)
    attn = out[OutputKeys.SEM_CROSS_ATTENTION].mean(dim=(1, 2))[0].reshape(6, 6)
    np.testing.assert_allclose(maps["attn_inst_to_sem_grid"], attn.numpy(), atol=1e-6)


def test_one_query_and_bad_arguments(image):
    net = _micro()
    one = attention_maps(net, image, token=0)
    mean = attention_maps(net, image)
    assert not np.allclose(one["attn_sem_to_inst_grid"], mean["attn_sem_to_inst_grid"])
    with pytest.raises(ValueError, match="query index"):
        attention_maps(net, image, token=99)
    with pytest.raises(ValueError, match="query index"):
        attention_maps(net, image, token="first")
    with pytest.raises(TypeError, match="uint8"):
        attention_maps(net, image.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        attention_maps(net, image[..., 0])


def test_without_cross_task_attention_only_prompts(image):
    maps = attention_maps(_micro(cross_task_attention=False), image)
    assert set(maps) == {"sem_prompt", "inst_prompt"}


def test_figures_are_written_at_the_image_size(image, tmp_path):
    maps = attention_maps(_micro(), image)
    files = write_attention_figures(image, maps, tmp_path, "x")
    pngs = [f for f in files if f.suffix == ".png"]
    assert [f.name for f in pngs] == [
        "x_sem_prompt.png",
        "x_inst_prompt.png",
        "x_attn_inst_to_sem.png",
        "x_attn_sem_to_inst.png",
    ]
    for f in pngs:
        assert np.asarray(Image.open(f)).shape == (70, 90, 3)
    with np.load(tmp_path / "x_maps.npz") as saved:
        np.testing.assert_allclose(saved["sem_prompt"], maps["sem_prompt"], atol=1e-6)


def test_heat_overlay_scales():
    img = np.zeros((2, 2, 3), np.uint8)
    vals = np.array([[0.0, 1.0], [2.0, 4.0]])
    rel = heat_overlay(img, vals, absolute=False, alpha=1.0)
    np.testing.assert_array_equal(rel[1, 1], [128, 0, 0])  # jet's top colour (dark red) at the maximum
    np.testing.assert_array_equal(rel[0, 0], [0, 0, 128])  # and dark blue at the minimum
    absolute = heat_overlay(img, vals, absolute=True, alpha=1.0)
    np.testing.assert_array_equal(absolute[1, 0], absolute[1, 1])  # values above 1 saturate
    with pytest.raises(ValueError, match="differs"):
        heat_overlay(img, vals[:1], absolute=True)


def test_a_bundle_checkpoint_loads_and_the_command_writes_the_maps(histo_bundle, image, tmp_path):
    overrides = {"model_preset": "micro", "prompt_encoder": "conv"}
    init = _bundle_weights(tmp_path / "init.pt", histo_bundle, overrides)
    reference = load_network(histo_bundle, init, overrides=overrides)
    ckpt = tmp_path / "checkpoint_final.pt"
    torch.save({"model": reference.state_dict(), "epoch": 3}, ckpt)
    loaded = load_network(histo_bundle, ckpt, overrides=overrides)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[OutputKeys.SEM_LOGITS], reference(x)[OutputKeys.SEM_LOGITS])
    with pytest.raises(RuntimeError, match="does not fit"):
        load_network(histo_bundle, ckpt, overrides={"model_preset": "micro"})  # SSP-Encoders: other weights
    Image.fromarray(image).save(tmp_path / "tile.png")
    argv = ["attention", "--checkpoint", str(ckpt), "--preset", "micro", "--set", "prompt_encoder=conv"]
    assert main(argv + ["--image", str(tmp_path / "tile.png"), "--output", str(tmp_path / "out")]) == 0
    assert np.asarray(Image.open(tmp_path / "out" / "tile_attn_sem_to_inst.png")).shape == (70, 90, 3)
    Image.fromarray(image[..., 0]).save(tmp_path / "grey.png")
    with pytest.raises(InputFileError, match="grey"):
        main(argv + ["--image", str(tmp_path / "grey.png"), "--output", str(tmp_path / "out")])


def _bundle_weights(path, bundle, overrides):
    """A state dict of the network the bundle builds with these overrides (random initialisation)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    parser.update({**overrides, "sam2_weights": None, "network_def#freeze_encoder": False})
    torch.save(parser.get_parsed_content("network_def").state_dict(), path)
    return path
