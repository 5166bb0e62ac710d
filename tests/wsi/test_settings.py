"""The whole-slide settings groups: frozen, checked on creation, filled from flat options and from a bundle config."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from coseg.wsi import OutputSettings, ReadSettings, TileSettings, WindowSettings, group_options
from coseg.wsi.routing import wsi_inferer_from_bundle

from .conftest import micro_inferer

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "coseg_histo"


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (ReadSettings, {"level": 1, "mpp": 0.5}, "not both"),
        (ReadSettings, {"level": -1}, "level"),
        (ReadSettings, {"level": 1.0}, "level"),
        (ReadSettings, {"mpp": 0}, "mpp"),
        (ReadSettings, {"slide_mpp": float("nan")}, "slide_mpp"),
        (ReadSettings, {"backend": "gdal"}, "backend"),
        (ReadSettings, {"roi": (0, 0, 10)}, "roi"),
        (ReadSettings, {"roi": (0, 0, 10, 0)}, "roi"),
        (ReadSettings, {"roi": "everything"}, "roi"),
        (TileSettings, {"tile_size": 0}, "tile_size"),
        (TileSettings, {"margin": 2.5}, "margin"),
        (TileSettings, {"tissue_detection": "yes"}, "tissue_detection"),
        (TileSettings, {"tissue_min_fraction": 1.5}, "tissue_min_fraction"),
        (TileSettings, {"memory_budget_mb": -1}, "memory_budget_mb"),
        (TileSettings, {"workers": -1}, "workers"),
        (TileSettings, {"max_tiles": 0}, "max_tiles"),
        (OutputSettings, {"output_tile": 100}, "multiple of 16"),
        (OutputSettings, {"overview_size": 0}, "overview_size"),
        (OutputSettings, {"region_min_um2": 0.0}, "region_min_um2"),
        (OutputSettings, {"keep_parts": 1}, "keep_parts"),
        (OutputSettings, {"overwrite": None}, "overwrite"),
    ],
)
def test_bad_settings_are_refused_when_made(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_settings_are_frozen_and_normalised():
    read = ReadSettings(roi=[10, 20, 30, 40], level=1)  # a JSON list becomes a tuple of floats
    assert read.roi == (10.0, 20.0, 30.0, 40.0) and read.level == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        read.level = 2
    assert TileSettings() == TileSettings(tile_size=2048, tissue_detection=True)
    assert OutputSettings().output_tile == 256
    groups = group_options({"mpp": 0.5, "tile_size": 512, "overwrite": True, "output_dir": "out", "progress": False})
    assert groups == {
        "reading": {"mpp": 0.5},
        "tiling": {"tile_size": 512},
        "outputs": {"overwrite": True},
        "other": {"output_dir": "out", "progress": False},
    }
    windows = WindowSettings.from_inferer(micro_inferer(batch=8))
    assert windows.roi_size == (64, 64) and windows.overlap == (0.25, 0.25) and windows.sw_batch_size == 8
    assert windows.blend_mode == "gaussian" and windows.padding_mode == "constant"
    with pytest.raises(TypeError, match="SlidingWindowInferer"):
        WindowSettings.from_inferer(object())


def test_bundle_options_land_in_their_groups(tmp_path):
    # no weights: the bundle's own models/model.pt (a quickstart's) must not decide this test
    absent = str(tmp_path / "no_weights.pt")
    overrides = {"model_preset": "micro", "patch_size": 64, "device": "$torch.device('cpu')", "ckpt_path": absent}
    inferer = wsi_inferer_from_bundle(
        BUNDLE,
        overrides=overrides,
        output_dir=str(tmp_path),
        mpp=0.5,
        roi=[1, 2, 300, 400],
        tile_size=512,
        margin=None,  # None: not given, the config's value stays
        output_tile=128,
        keep_parts=True,
        progress=False,
    )
    assert inferer.reading == ReadSettings(mpp=0.5, roi=(1, 2, 300, 400))
    assert inferer.tiling == TileSettings(tile_size=512)
    assert inferer.outputs == OutputSettings(output_tile=128, keep_parts=True)
    assert inferer.progress is False and inferer.output_dir == tmp_path
    assert inferer.watershed.mpp == 0.25  # the config's magnification 40, through its one watershed item
    with pytest.raises(RuntimeError) as err:  # MONAI wraps what the constructor raises
        wsi_inferer_from_bundle(BUNDLE, overrides=overrides, tile_size=200)
    assert isinstance(err.value.__cause__, ValueError) and "multiple of output_tile (256)" in str(err.value.__cause__)
    with pytest.raises(ValueError, match="not a TileSettings item"):
        wsi_inferer_from_bundle(
            BUNDLE, overrides={**overrides, "wsi_inferer#tiling": "$None"}, tile_size=512, output_dir=str(tmp_path)
        )
