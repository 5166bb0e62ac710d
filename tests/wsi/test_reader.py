"""Slide reading: pyramid levels, pixel sizes, region reads that decode only what they need, resampling, errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from coseg.errors import InputFileError
from coseg.wsi.reader import SlideReader, TiledTiffFileWSIReader, WorkingImage, image_size

from .conftest import write_pyramid


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (300, 420, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory, image):
    return write_pyramid(tmp_path_factory.mktemp("pyr") / "slide.tif", image, levels=3, mpp=0.25, tile=64)


def test_levels_sizes_and_pixel_sizes(pyramid):
    with SlideReader(pyramid) as reader:
        assert reader.backend == "tifffile"
        assert [(lv.height, lv.width) for lv in reader.levels] == [(300, 420), (150, 210), (75, 105)]
        assert reader.levels[2].downsample == (4.0, 4.0)
        assert reader.levels[0].mpp == pytest.approx((0.25, 0.25))
        assert reader.levels[1].mpp == pytest.approx((0.5, 0.5))
    assert image_size(pyramid) == (300, 420, 3)


@pytest.mark.parametrize("level", [0, 1, 2])
@pytest.mark.parametrize("box", [(0, 0, 10, 10), (37, 61, 50, 70), (20, 30, 55, 75)])
def test_region_reads_equal_the_decoded_level(pyramid, image, level, box):
    y, x, h, w = box
    expected = image[:: 2**level, :: 2**level]
    h, w = min(h, expected.shape[0] - y), min(w, expected.shape[1] - x)
    with SlideReader(pyramid) as reader:
        np.testing.assert_array_equal(reader.read(level, y, x, h, w), expected[y : y + h, x : x + w])


def test_monai_get_data_reads_a_patch_without_the_whole_level(pyramid, image):
    reader = TiledTiffFileWSIReader()
    wsi = reader.read(str(pyramid))
    try:
        assert reader.get_level_count(wsi) == 3
        patch, meta = reader.get_data(wsi, location=(128, 64), size=(40, 30), level=1)  # level-0 location
        np.testing.assert_array_equal(patch.transpose(1, 2, 0), image[::2, ::2][64:104, 32:62])
        assert reader.get_mpp(wsi, 2) == pytest.approx((1.0, 1.0))
        # only the tile the patch lies in was decoded (64 px tiles, 4 per row: row 1, column 0 of level 1)
        assert {key[1:] for key in reader._cache} == {(1, 4)}
    finally:
        wsi.close()


@pytest.mark.parametrize("compression", ["jpeg", None])
def test_compressed_and_striped_tiffs(tmp_path, image, compression):
    path = tmp_path / "striped.tif"
    tifffile.imwrite(path, image, rowsperstrip=16, compression=compression, photometric="rgb")
    with SlideReader(path) as reader:
        got = reader.read(0, 30, 40, 100, 200)
    expected = tifffile.imread(path)[30:130, 40:240]
    np.testing.assert_array_equal(got, expected)


def test_plain_images_and_slide_mpp(tmp_path, image):
    path = tmp_path / "plain.png"
    Image.fromarray(image).save(path)
    with SlideReader(path) as reader:
        assert reader.backend == "pil" and reader.levels[0].mpp is None
        np.testing.assert_array_equal(reader.read(0, 5, 6, 7, 8), image[5:12, 6:14])
    with SlideReader(path, slide_mpp=0.5) as reader:
        assert reader.levels[0].mpp == (0.5, 0.5)


def test_working_image_chooses_levels_and_resamples(pyramid, image):
    with SlideReader(pyramid) as reader:
        at_level = WorkingImage.from_reader(reader, mpp=0.5)
        assert (at_level.level, at_level.scale, at_level.height, at_level.width) == (1, 1.0, 150, 210)
        assert at_level.to_level0 == (2.0, 2.0)
        near = WorkingImage.from_reader(reader, mpp=0.51)  # within 5 %: the level as it is
        assert (near.level, near.scale) == (1, 1.0)
        between = WorkingImage.from_reader(reader, mpp=0.75)  # level 1 (0.5) area-averaged by 1.5
        assert (between.level, between.scale, between.height, between.width) == (1, 1.5, 100, 140)
        assert between.mpp == pytest.approx((0.75, 0.75))
        whole = between.read(0, 0, 100, 140)
        expected = cv2.resize(image[::2, ::2], (140, 100), interpolation=cv2.INTER_AREA)
        assert np.abs(whole.astype(int) - expected.astype(int)).max() <= 1
        # tiles resampled separately join without seams
        stitched = np.concatenate([between.read(0, 0, 100, 61), between.read(0, 61, 100, 140)], axis=1)
        np.testing.assert_array_equal(stitched, whole)
        finer = WorkingImage.from_reader(reader, mpp=0.125)  # finer than level 0: interpolated up
        assert (finer.level, finer.scale, finer.height) == (0, 0.5, 600)
        default = WorkingImage.from_reader(reader, default_mpp=1.0)
        assert default.level == 2


def test_working_image_region_of_interest(pyramid, image):
    with SlideReader(pyramid) as reader:
        work = WorkingImage.from_reader(reader, level=1, roi_level0=(101, 40, 60, 81))  # x, y, w, h at level 0
        assert work.roi == (20, 50, 41, 31)  # widened to whole level-1 pixels: y 20..61, x 50..81
        np.testing.assert_array_equal(work.read(0, 0, 41, 31), image[::2, ::2][20:61, 50:81])
        with pytest.raises(ValueError, match="overlap"):
            WorkingImage.from_reader(reader, roi_level0=(1000, 1000, 10, 10))


def test_thumbnail(pyramid, image):
    with SlideReader(pyramid) as reader:
        thumb, factor = WorkingImage.from_reader(reader, level=0).thumbnail(100)
    assert thumb.shape == (71, 100, 3) and factor == pytest.approx(4.2)
    assert np.abs(thumb.mean(axis=(0, 1)) - image.mean(axis=(0, 1))).max() < 2


def test_unreadable_inputs_name_the_file(tmp_path, image):
    with pytest.raises(InputFileError, match="does not exist"):
        SlideReader(tmp_path / "missing.svs")
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff at all" * 10)
    with pytest.raises(InputFileError) as err:
        SlideReader(bad)
    assert "bad.tif" in str(err.value)
    grey = tmp_path / "grey.tif"
    tifffile.imwrite(grey, image[..., 0], tile=(64, 64))
    with pytest.raises(InputFileError, match="channel"):
        SlideReader(grey)
    deep = tmp_path / "deep.tif"
    tifffile.imwrite(deep, image.astype(np.uint16), tile=(64, 64), photometric="rgb")
    with pytest.raises(InputFileError, match="8-bit"):
        SlideReader(deep)


def test_mpp_needs_a_known_pixel_size(tmp_path, image):
    path = write_pyramid(tmp_path / "nompp.tif", image, levels=2, mpp=None)
    with SlideReader(path) as reader:
        assert reader.levels[0].mpp is None
        assert WorkingImage.from_reader(reader, default_mpp=0.5).level == 0  # unknown: level 0
        with pytest.raises(ValueError, match="pixel size"):
            WorkingImage.from_reader(reader, mpp=0.5)
        with pytest.raises(ValueError, match="not both"):
            WorkingImage.from_reader(reader, mpp=0.5, level=0)


def test_aperio_description_gives_the_pixel_size(tmp_path, image):
    path = tmp_path / "aperio.svs"
    description = "Aperio Image Library v12.0.15\n420x300 [0,0 420x300] (64x64) JPEG Q=70|AppMag = 20|MPP = 0.4990"
    tifffile.imwrite(path, image, tile=(64, 64), photometric="rgb", description=description)
    with SlideReader(path) as reader:
        assert reader.levels[0].mpp == pytest.approx((0.499, 0.499))


def test_limit_cache_evicts_and_reads_stay_exact(pyramid, image):
    with SlideReader(pyramid) as reader:
        inner = reader._reader
        reader.read(0, 0, 0, 300, 420)  # every 64 px tile of level 0 decoded and cached (35 of 12 KiB)
        assert inner._cached == sum(seg.nbytes for seg in inner._cache.values()) > 3 * 64 * 64 * 3
        reader.limit_cache(2 * 64 * 64 * 3)
        assert len(inner._cache) <= 2 and inner._cached <= 2 * 64 * 64 * 3
        np.testing.assert_array_equal(reader.read(0, 10, 20, 200, 300), image[10:210, 20:320])
        assert inner._cached <= 2 * 64 * 64 * 3  # the limit holds for later reads
        with pytest.raises(ValueError, match="nbytes"):
            reader.limit_cache(-1)
