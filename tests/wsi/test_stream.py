"""The streamed blending equals MONAI's whole-image sliding-window inference, tile by tile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coseg.transforms import SAM2Normalized
from coseg.wsi.stream import WindowStream
from coseg.wsi.tiling import Box, TilePlan, contiguous_runs

from .conftest import micro_inferer, micro_network


def _reader(image: torch.Tensor):
    _, height, width = image.shape

    def read(box: Box) -> torch.Tensor:
        out = torch.zeros((3, box.height, box.width))
        y0, x0, y1, x1 = max(0, box.y0), max(0, box.x0), min(height, box.y1), min(width, box.x1)
        out[:, y0 - box.y0 : y1 - box.y0, x0 - box.x0 : x1 - box.x0] = image[:, y0:y1, x0:x1]
        return out

    return read


def _copy(blended):
    return {k: v.numpy().copy() for k, v in blended.items()}


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return micro_network()


@pytest.mark.parametrize(
    "height, width, tile, strip_tiles, batch, keep_every",
    [
        (160, 200, 96, 1, 3, 1),  # strips of one tile: windows at strip borders are recomputed
        (200, 260, 64, 8, 5, 2),  # every other tile only (as when skipping glass)
        (40, 50, 64, 1, 2, 1),  # smaller than a window: MONAI's symmetric padding
    ],
)
def test_streamed_maps_equal_whole_image_inference(network, height, width, tile, strip_tiles, batch, keep_every):
    rng = np.random.default_rng(height)
    rgb = torch.from_numpy(rng.integers(0, 256, (3, height, width)).astype(np.float32))
    image = SAM2Normalized(keys="image")({"image": rgb})["image"]
    with torch.no_grad():
        reference = micro_inferer(batch=4)(image[None], network)
    plan = TilePlan(
        height=height,
        width=width,
        tile_size=tile,
        margin=12,
        roi_size=(64, 64),
        overlap=(0.25, 0.25),
        strip_tiles=strip_tiles,
    )
    tiles = plan.tiles()[::keep_every]
    stream = WindowStream(network, roi_size=(64, 64), keep=list(reference), reduce=_copy, sw_batch_size=batch)
    seen = []
    for run in contiguous_runs(plan, tiles):
        for tile_id, box, maps in stream.run(plan, run, _reader(image)):
            assert box == plan.context(*tile_id)
            seen.append(tile_id)
            for key, value in maps.items():
                expected = reference[key][0, :, box.y0 : box.y1, box.x0 : box.x1].numpy()
                np.testing.assert_allclose(value, expected, rtol=0, atol=2e-5, err_msg=f"{key} of tile {tile_id}")
    assert seen == tiles


def test_stream_rejects_low_resolution_outputs(network):
    plan = TilePlan(height=64, width=64, tile_size=64, margin=8, roi_size=(64, 64), overlap=(0.25, 0.25))
    stream = WindowStream(network, roi_size=(64, 64), keep=["sem_prompt_logits"], reduce=_copy)
    with pytest.raises(ValueError, match="window size"):
        list(stream.run(plan, plan.tiles(), _reader(torch.zeros(3, 64, 64))))


def test_stream_rejects_runs_across_strips(network):
    plan = TilePlan(height=64, width=128, tile_size=64, margin=8, roi_size=(64, 64), overlap=(0.25, 0.25))
    stream = WindowStream(network, roi_size=(64, 64), keep=["sem_logits"], reduce=_copy)
    with pytest.raises(ValueError, match="one strip"):
        list(stream.run(plan, plan.tiles(), _reader(torch.zeros(3, 64, 128))))


@pytest.mark.parametrize("kwargs", [{"roi_size": (64,)}, {"sw_batch_size": 0}, {"keep": []}])
def test_stream_rejects_bad_arguments(network, kwargs):
    args = {"roi_size": (64, 64), "keep": ["sem_logits"], "reduce": _copy, **kwargs}
    with pytest.raises(ValueError):
        WindowStream(network, **args)
