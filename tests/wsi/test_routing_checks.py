"""Inputs of the whole-slide router are checked up front: truncated or corrupt files fail with the file named, before
any is processed, and a slide is never decoded whole for it."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from coseg.errors import InputFileError
from coseg.wsi.routing import check_image, route_inputs

from .conftest import write_pyramid


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _cut(path, keep_fraction: float):
    data = path.read_bytes()
    out = path.with_name(f"cut{int(keep_fraction * 1000)}_{path.name}")
    out.write_bytes(data[: int(len(data) * keep_fraction)])
    return out


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    return write_pyramid(tmp_path_factory.mktemp("routing") / "slide.tif", _noise(1024, 1024), levels=3)


def test_a_complete_pyramid_passes_without_being_decoded_whole(pyramid, monkeypatch):
    def no_whole_decode(*args, **kwargs):
        raise AssertionError("a slide level was decoded whole")

    monkeypatch.setattr(tifffile.TiffPage, "asarray", no_whole_decode)
    assert check_image(pyramid, min_pixels=256 * 256) == (1024, 1024, 3)
    route = route_inputs([str(pyramid)], min_pixels=256 * 256)
    assert [d["image"] for d in route.large] == [str(pyramid)] and not route.small


@pytest.mark.parametrize("keep", [0.999, 0.97, 0.9, 0.6, 0.3, 0.05])
def test_a_truncated_pyramid_is_refused_naming_the_file(pyramid, keep):
    """Before, a pyramid cut in its later levels passed as a slide with fewer levels, and one cut in level 0 passed
    the router and failed hours later in the tile that lacked its data."""
    cut = _cut(pyramid, keep)
    with pytest.raises(InputFileError, match="truncated|damaged") as caught:
        route_inputs([str(cut)], min_pixels=256 * 256)
    assert caught.value.path == str(cut)


def test_a_truncated_flat_tiff_and_a_corrupt_tile_are_refused(tmp_path):
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, _noise(600, 700), photometric="rgb")
    assert check_image(flat, min_pixels=100) == (600, 700, 1)
    with pytest.raises(InputFileError, match="truncated"):
        check_image(_cut(flat, 0.99), min_pixels=100)
    tiled = tmp_path / "tiled.tif"
    tifffile.imwrite(tiled, _noise(512, 512), tile=(128, 128), photometric="rgb", compression="zlib")
    with tifffile.TiffFile(tiled) as tif:
        page = tif.pages[0]
        last = int(np.argmax(page.dataoffsets))
        offset, count = page.dataoffsets[last], page.databytecounts[last]
    data = bytearray(tiled.read_bytes())
    data[offset : offset + count] = b"\0" * count  # the last tile's zlib stream destroyed, the file size kept
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(InputFileError, match="damaged image file") as caught:
        check_image(corrupt, min_pixels=100)
    assert caught.value.path == str(corrupt)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
@pytest.mark.parametrize("min_pixels", [100, 10**8], ids=["large", "small"])
def test_truncated_plain_images_are_refused(tmp_path, suffix, min_pixels):
    path = tmp_path / f"image{suffix}"
    Image.fromarray(_noise(300, 400)).save(path)
    assert check_image(path, min_pixels=min_pixels) == (300, 400, 1)
    cut = _cut(path, 0.9)
    with pytest.raises(InputFileError) as caught:
        check_image(cut, min_pixels=min_pixels)
    assert caught.value.path == str(cut) and "truncated" in str(caught.value)


def test_the_router_stops_at_the_first_bad_file_before_any_is_processed(tmp_path):
    good = tmp_path / "a_good.png"
    Image.fromarray(_noise(64, 64)).save(good)
    bad = tmp_path / "b_bad.png"
    bad.write_bytes(good.read_bytes()[:150])
    with pytest.raises(InputFileError, match="b_bad.png"):
        route_inputs(tmp_path)
