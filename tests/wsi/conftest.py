"""Fixtures for the whole-slide tests: pyramidal TIFFs, a briefly trained micro model, a pointwise stand-in network
whose outputs are exact nuclei maps, and inferers built around them."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from scipy import ndimage
from torch import nn

from coseg.constants import PIXEL_MEAN, PIXEL_STD
from coseg.inferers import CoSegSlidingWindowInferer
from coseg.keys import OutputKeys
from coseg.losses import compute_hv_maps
from coseg.postprocess import WatershedParams, hv_watershed, params_for_resolution
from coseg.postprocess.synthetic import random_ellipse_instances

SEM_CLASSES = {0: "background", 1: "tissue"}
INST_TYPES = {0: "background", 1: "nucleus"}


def write_pyramid(
    path: Path, image: np.ndarray, *, levels: int = 3, mpp: float | None = 0.25, tile: int = 128, compression="zlib"
) -> Path:
    """A tiled pyramidal RGB TIFF (SubIFDs, each level half the previous) with resolution tags in centimetres."""
    with tifffile.TiffWriter(path) as tif:
        for level in range(levels):
            data = image[:: 2**level, :: 2**level]
            extra = {}
            if mpp is not None:
                res = 1e4 / (mpp * 2**level)
                extra = {"resolution": (res, res), "resolutionunit": "CENTIMETER"}
            if level == 0:
                extra["subifds"] = levels - 1
            else:
                extra["subfiletype"] = 1
            tif.write(data, tile=(tile, tile), photometric="rgb", compression=compression, **extra)
    return path


def consep_tiles(shared_dir: Path, count: int, seed: int = 0) -> list[str]:
    names = sorted((shared_dir / "data" / "consep256" / "train" / "images").glob("*.jpg"))
    if len(names) < count:
        pytest.skip(f"need {count} CoNSeP tiles in {shared_dir}")
    pick = np.random.default_rng(seed).choice(len(names), count, replace=False)
    return [str(names[i]) for i in sorted(pick)]


def consep_mosaic(shared_dir: Path, grid: int, seed: int = 0) -> np.ndarray:
    """``grid x grid`` real CoNSeP tiles (256 px, 40x) side by side: a ``256 * grid`` square H&E image."""
    tiles = [np.asarray(Image.open(n).convert("RGB")) for n in consep_tiles(shared_dir, grid * grid, seed)]
    return np.concatenate([np.concatenate(tiles[r * grid : (r + 1) * grid], 1) for r in range(grid)], 0)


def zero_hv_head(net: nn.Module) -> None:
    """Make the network's HV output exactly 0 (its hyper-network rows for the two HV tokens set to zero).

    A briefly trained micro model learns the object map but not the HV maps; their noise, min-max normalised per
    image by HoVer-Net's watershed, would make the markers depend on the extent of the image processed. With HV = 0
    the watershed finds the objects from the object map alone, identically for any extent.
    """
    hyper = net.decoder.heads["inst"].hypernetworks
    k = net.num_inst_types
    with torch.no_grad():
        for token in (3 + k, 4 + k):  # token 0 is the prompt mask; then binary (2), types (k), HV (2)
            hyper.weights[-1][token].zero_()
            hyper.biases[-1][token].zero_()


@pytest.fixture(scope="session")
def trained_micro(shared_dir, tmp_path_factory) -> Path:
    """A micro Co-Seg++ trained for 150 steps on 64 px crops of CoNSeP tiles (object map, types, regions), HV head
    zeroed (:func:`zero_hv_head`); its state dict file (``model_hv.pt`` beside it: the HV head as trained). About
    10-20 s on two cores."""
    from coseg.losses import CoSegLoss
    from coseg.networks import CoSegPlusPlus

    names = consep_tiles(shared_dir, 48, seed=5)
    images = np.stack([np.asarray(Image.open(n).convert("RGB")) for n in names])
    insts = np.stack([np.asarray(Image.open(n.replace("/images/", "/inst/").replace(".jpg", ".png"))) for n in names])
    insts = insts.astype(np.int32)
    hvs = np.stack([compute_hv_maps(i[None]) for i in insts])
    mean = torch.tensor(PIXEL_MEAN)[:, None, None] * 255
    std = torch.tensor(PIXEL_STD)[:, None, None] * 255
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = CoSegPlusPlus.from_preset("micro", num_sem_classes=2, num_inst_types=2, freeze_encoder=False)
    steps, batch, size, lr = 150, 8, 64, 1e-2
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    loss_fn = CoSegLoss(pass1_weight=0.1, kl_weight=0.0, sem_weight=0.1, type_weight=0.1)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        idx = rng.integers(0, len(images), batch)
        ys, xs = rng.integers(0, 256 - size, batch), rng.integers(0, 256 - size, batch)
        crop = [(slice(y, y + size), slice(x, x + size)) for y, x in zip(ys, xs)]
        x = torch.from_numpy(np.stack([images[i][c] for i, c in zip(idx, crop)])).permute(0, 3, 1, 2).float()
        inst = torch.from_numpy(np.stack([insts[i][c] for i, c in zip(idx, crop)]))[:, None]
        hv = torch.from_numpy(np.stack([hvs[i][(slice(None), *c)] for i, c in zip(idx, crop)])).float()
        obj = (inst > 0).long()
        target = {"label_sem": obj, "label_inst": inst, "label_type": obj, "label_hv": hv}
        loss = loss_fn(net((x - mean) / std), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    folder = tmp_path_factory.mktemp("micro")
    torch.save(net.state_dict(), folder / "model_hv.pt")  # as trained, HV head included
    zero_hv_head(net)
    path = folder / "model.pt"
    torch.save(net.state_dict(), path)
    return path


def micro_network(state: Path | None = None) -> nn.Module:
    from coseg.networks import CoSegPlusPlus

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = CoSegPlusPlus.from_preset("micro", num_sem_classes=2, num_inst_types=2, freeze_encoder=False)
    if state is not None:
        net.load_state_dict(torch.load(state, weights_only=True))
    return net.eval()


def micro_inferer(batch: int = 16) -> CoSegSlidingWindowInferer:
    return CoSegSlidingWindowInferer(roi_size=(64, 64), sw_batch_size=batch, overlap=0.25, mode="gaussian")


def watershed(**changes) -> WatershedParams:
    """The bundle's watershed settings for a model trained at 40x (0.25 um/px), with ``changes``."""
    return dataclasses.replace(params_for_resolution(magnification=40), **changes)


class PointwiseNet(nn.Module):
    """A stand-in network whose outputs are read from the image pixel by pixel: red = object (255) or not (0),
    green / blue = horizontal / vertical HV map (``1..255`` for ``-1..1``, 128 = 0 exactly, so that a flat HV map
    stays exactly flat through the blending). Images made by :func:`encode_nuclei` give exact nuclei outputs, so
    tiled and whole-image runs see identical maps and only the tiling logic differs."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(PIXEL_MEAN).reshape(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(PIXEL_STD).reshape(1, 3, 1, 1) * 255)
        self.scale = nn.Parameter(torch.ones(()))  # a parameter so that devices and digests work as for a network

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        rgb = torch.round(x * self.std + self.mean)
        obj = (rgb[:, :1] - 127.5) / 12.0 * self.scale
        hv = (rgb[:, 1:] - 128.0) / 127.0
        zeros = torch.zeros_like(obj)
        return {
            OutputKeys.INST_BINARY: torch.cat([zeros, obj], 1),
            OutputKeys.INST_HV: hv,
            OutputKeys.INST_TYPE: torch.cat([zeros, obj], 1),
            OutputKeys.SEM_LOGITS: torch.cat([zeros, obj + 0.5], 1),
        }


def encode_nuclei(inst: np.ndarray, *, hv: bool = True) -> np.ndarray:
    """``(H, W, 3)`` uint8 image that :class:`PointwiseNet` turns into the outputs of instance map ``inst``: its
    object map and its HV maps (``hv=False``: HV = 0, objects from the object map alone)."""
    rgb = np.full((*inst.shape, 3), 128, np.uint8)
    rgb[..., 0] = np.where(inst > 0, 255, 0)
    if hv:
        maps = compute_hv_maps(inst[None].astype(np.int64)).transpose(1, 2, 0)
        rgb[..., 1:] = np.clip(np.round(maps * 127.0 + 128.0), 1, 255).astype(np.uint8)
    return rgb


LEVEL0 = (720, 880)


@pytest.fixture(scope="module")
def nuclei() -> np.ndarray:
    """Separate nuclei (at least 4 px apart) at level 0, 6-14 px radius, on a 720 x 880 slide."""
    inst = random_ellipse_instances(LEVEL0, 200, radius_range=(6.0, 14.0), touching_fraction=0.0, seed=7)
    grown = ndimage.grey_dilation(inst, size=9)
    near = (grown != inst) & (inst > 0)
    inst[np.isin(inst, np.concatenate([inst[near], grown[near]]))] = 0
    return np.unique(inst, return_inverse=True)[1].reshape(inst.shape)


@pytest.fixture(scope="module")
def slide(tmp_path_factory, nuclei) -> tuple:
    """The nuclei encoded for :class:`PointwiseNet` (constant HV: objects from the object map alone), as a 3-level
    pyramidal TIFF at 0.25 um/px, and the instances the watershed finds at level 1."""
    rgb = encode_nuclei(nuclei, hv=False)
    path = write_pyramid(tmp_path_factory.mktemp("slide") / "slide.tif", rgb, levels=3, mpp=0.25, tile=64)
    level1 = rgb[::2, ::2]
    prob = (level1[..., 0] > 127).astype(np.float32)
    expected = hv_watershed(
        prob, np.zeros((2, *prob.shape), np.float32), params=params_for_resolution(magnification=20)
    )
    return path, expected
