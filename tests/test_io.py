"""coseg.io: reading RGB images and label maps with checks, lossless atomic writing."""

from __future__ import annotations

import logging
import os
import stat

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from coseg.errors import InputFileError
from coseg.io import (
    StagedDir,
    atomic_write_path,
    label_dtype,
    png_is_16bit_colour,
    read_label,
    read_rgb,
    temporary_sibling_dir,
    write_bytes,
    write_json,
    write_label,
    write_rgb,
    write_text,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (7, 9, 3), dtype=np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_rgb_round_trip(tmp_path, suffix):
    p = tmp_path / f"a{suffix}"
    write_rgb(p, RGB)
    out = read_rgb(p)
    assert out.dtype == np.uint8 and out.shape == (7, 9, 3)
    np.testing.assert_array_equal(out, RGB)


def test_rgba_png_drops_alpha_and_warns_when_not_opaque(tmp_path, caplog):
    rgba = np.concatenate([RGB, np.full((7, 9, 1), 255, np.uint8)], axis=-1)
    p = tmp_path / "opaque.png"
    Image.fromarray(rgba).save(p)
    with caplog.at_level(logging.WARNING, logger="coseg.io"):
        np.testing.assert_array_equal(read_rgb(p), RGB)
    assert not caplog.records
    rgba[0, 0, 3] = 10
    p2 = tmp_path / "translucent.png"
    Image.fromarray(rgba).save(p2)
    with caplog.at_level(logging.WARNING, logger="coseg.io"):
        np.testing.assert_array_equal(read_rgb(p2), RGB)  # dropped, not composited
    assert "alpha" in caplog.text


def test_rgba_tiff_like_puma(tmp_path):
    rgba = np.concatenate([RGB, np.full((7, 9, 1), 255, np.uint8)], axis=-1)
    p = tmp_path / "roi.tif"
    tifffile.imwrite(p, rgba, photometric="rgb", extrasamples=["unassalpha"])
    np.testing.assert_array_equal(read_rgb(p), RGB)


def test_planar_tiff_is_moved_to_channels_last(tmp_path):
    p = tmp_path / "planar.tif"
    tifffile.imwrite(p, np.moveaxis(RGB, -1, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_rgb(p), RGB)


def test_grey_is_an_error_unless_allowed(tmp_path):
    grey = RGB[..., 0]
    p = tmp_path / "g.png"
    Image.fromarray(grey).save(p)
    with pytest.raises(InputFileError, match="greyscale") as err:
        read_rgb(p)
    assert err.value.path == str(p)
    out = read_rgb(p, allow_grey=True)
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=-1))


def test_16bit_rgb_scaled_with_rounding_or_refused(tmp_path):
    vals = np.array([[[0, 128, 129], [257, 32896, 65535]]], dtype=np.uint16)  # (1, 2, 3)
    expect = np.array([[[0, 0, 1], [1, 128, 255]]], dtype=np.uint8)  # round(v * 255 / 65535)
    png = tmp_path / "a16.png"
    cv2.imwrite(str(png), vals[..., ::-1])  # OpenCV writes BGR
    tif = tmp_path / "a16.tif"
    tifffile.imwrite(tif, vals, photometric="rgb")
    for p in (png, tif):
        np.testing.assert_array_equal(read_rgb(p), expect)
        with pytest.raises(InputFileError, match="16-bit"):
            read_rgb(p, high_bit_depth="error")
    with pytest.raises(ValueError, match="high_bit_depth"):
        read_rgb(png, high_bit_depth="clip")


@pytest.mark.parametrize(
    ("content", "name", "match"),
    [
        (None, "missing.png", "does not exist"),
        (b"", "empty.png", "empty"),
        (b"this is not an image", "garbage.png", "cannot be read"),
        (b"II*\x00garbage", "garbage.tif", "cannot be read"),
    ],
)
def test_bad_files(tmp_path, content, name, match):
    p = tmp_path / name
    if content is not None:
        p.write_bytes(content)
    for reader in (read_rgb, read_label):
        with pytest.raises(InputFileError, match=match) as err:
            reader(p)
        assert err.value.path == str(p)


def test_float_and_too_many_channels_rejected(tmp_path):
    p = tmp_path / "f.tif"
    tifffile.imwrite(p, RNG.random((5, 6, 3)).astype(np.float32), photometric="rgb")
    with pytest.raises(InputFileError, match="pixel type"):
        read_rgb(p)
    p5 = tmp_path / "c5.tif"
    tifffile.imwrite(p5, np.zeros((5, 6, 5), np.uint8), photometric="minisblack", planarconfig="contig")
    with pytest.raises(InputFileError, match="expected an"):
        read_rgb(p5)


@pytest.mark.parametrize(("max_value", "dtype"), [(0, np.uint8), (255, np.uint8), (256, np.uint16), (65535, np.uint16)])
def test_write_label_png_picks_dtype_and_round_trips(tmp_path, max_value, dtype):
    lab = np.zeros((4, 5), np.int64)
    lab[1, 2] = max_value
    lab[3, 4] = max_value // 2
    p = tmp_path / "l.png"
    write_label(p, lab)
    out = read_label(p)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, lab)


def test_write_label_uint32_needs_tiff(tmp_path):
    lab = np.array([[0, 70000], [1, 2]], dtype=np.int64)
    with pytest.raises(ValueError, match="16 bits"):
        write_label(tmp_path / "l.png", lab)
    assert not (tmp_path / "l.png").exists()
    write_label(tmp_path / "l.tif", lab)
    out = read_label(tmp_path / "l.tif")
    assert out.dtype == np.uint32
    np.testing.assert_array_equal(out, lab)


def test_write_label_forced_dtype_and_bad_args(tmp_path):
    lab = np.array([[0, 3], [1, 2]], dtype=np.int32)
    write_label(tmp_path / "u16.png", lab, dtype=np.uint16)
    assert read_label(tmp_path / "u16.png").dtype == np.uint16
    with pytest.raises(ValueError, match="does not fit"):
        write_label(tmp_path / "x.png", lab * 100, dtype=np.uint8)
    with pytest.raises(ValueError, match="negative"):
        write_label(tmp_path / "x.png", lab - 1)
    with pytest.raises(ValueError, match="suffix"):
        write_label(tmp_path / "x.jpg", lab)
    with pytest.raises(ValueError, match="2D"):
        write_label(tmp_path / "x.png", lab[None])
    with pytest.raises(TypeError, match="integer"):
        write_label(tmp_path / "x.png", lab.astype(np.float32))
    with pytest.raises(TypeError, match="uint8"):
        write_rgb(tmp_path / "x.png", RGB.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        write_rgb(tmp_path / "x.png", RGB[..., :2])
    assert not (tmp_path / "x.png").exists()


def test_read_label_palette_gives_indices(tmp_path):
    idx = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    im = Image.fromarray(idx, mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    p = tmp_path / "pal.png"
    im.save(p)
    np.testing.assert_array_equal(read_label(p), idx)
    # the same file as an RGB image expands the palette
    np.testing.assert_array_equal(read_rgb(p)[0, 1], [255, 0, 0])


def test_read_label_rgb_with_equal_channels_and_colour_labels(tmp_path):
    lab = np.array([[0, 5], [7, 0]], dtype=np.uint8)
    p = tmp_path / "grey_rgb.png"
    Image.fromarray(np.repeat(lab[..., None], 3, axis=-1)).save(p)
    np.testing.assert_array_equal(read_label(p), lab)
    col = np.repeat(lab[..., None], 3, axis=-1)
    col[0, 1, 2] = 9
    p2 = tmp_path / "colour.png"
    Image.fromarray(col).save(p2)
    with pytest.raises(InputFileError, match="colour"):
        read_label(p2)


def test_read_label_numeric_checks(tmp_path):
    ok = tmp_path / "float_int.tif"
    tifffile.imwrite(ok, np.array([[0.0, 3.0], [2.0, 1.0]], np.float32))
    out = read_label(ok)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 3], [2, 1]])
    frac = tmp_path / "frac.tif"
    tifffile.imwrite(frac, np.array([[0.5, 1.0]], np.float32))
    with pytest.raises(InputFileError, match="non-integer"):
        read_label(frac)
    neg = tmp_path / "neg.tif"
    tifffile.imwrite(neg, np.array([[-1, 2]], np.int16))
    with pytest.raises(InputFileError, match="negative"):
        read_label(neg)
    signed = tmp_path / "signed.tif"
    tifffile.imwrite(signed, np.array([[1, 300]], np.int32))
    assert read_label(signed).dtype == np.uint16
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.zeros((2, 4, 5), np.uint8))
    with pytest.raises(InputFileError, match="2D"):
        read_label(stack)


def test_atomic_write_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "sub" / "out.png"
    with pytest.raises(RuntimeError):
        with atomic_write_path(target) as tmp:
            assert tmp.suffix == ".png" and tmp.parent == target.parent
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []
    with atomic_write_path(target) as tmp:
        tmp.write_bytes(b"done")
    assert target.read_bytes() == b"done"
    assert [p.name for p in target.parent.iterdir()] == ["out.png"]


def test_label_dtype():
    assert label_dtype(0) == np.uint8
    assert label_dtype(255) == np.uint8
    assert label_dtype(256) == np.uint16
    assert label_dtype(65536) == np.uint32
    with pytest.raises(ValueError):
        label_dtype(65536, allow_uint32=False)
    with pytest.raises(ValueError):
        label_dtype(-1)
    with pytest.raises(ValueError):
        label_dtype(2**32)


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request):
    """Run the test under a given umask (restored afterwards); yields it."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_writers_create_files_with_the_umask_modes(tmp_path, umask):
    files = {
        "rgb.png": lambda p: write_rgb(p, RGB),
        "label.png": lambda p: write_label(p, RGB[..., 0]),
        "label.tif": lambda p: write_label(p, RGB[..., 0].astype(np.uint32) * 70000),
        "doc.json": lambda p: write_json(p, {"a": 1}),
        "raw.bin": lambda p: write_bytes(p, b"x"),
        "text.txt": lambda p: write_text(p, "x"),
    }
    for name, write in files.items():
        write(tmp_path / "sub" / name)
        assert _mode(tmp_path / "sub" / name) == 0o666 & ~umask, name
    assert _mode(tmp_path / "sub") == 0o777 & ~umask  # parents made by the writers too


def test_temporary_sibling_dir_modes_and_cleanup(tmp_path, umask):
    target = tmp_path / "data" / "set"
    with temporary_sibling_dir(target, tag="partial") as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".set.partial-")
        assert _mode(tmp) == 0o777 & ~umask  # not mkdtemp's 0700
        (tmp / "f").write_text("x")
    assert not tmp.exists()  # removed with its content
    with pytest.raises(RuntimeError):
        with temporary_sibling_dir(target) as tmp:
            raise RuntimeError("boom")
    assert not tmp.exists()
    with temporary_sibling_dir(target) as tmp:
        os.replace(tmp, target)  # moved away: kept
    assert target.is_dir() and _mode(target) == 0o777 & ~umask
    with pytest.raises(ValueError, match="tag"):
        with temporary_sibling_dir(target, tag="a/b"):
            pass


def test_staged_dir_commit_refusal_and_overwrite(tmp_path, caplog):
    target = tmp_path / "out"
    with StagedDir(target) as stage:
        (stage.path / "a.txt").write_text("new")
        assert not target.exists()  # nothing under the final name before commit
        assert stage.commit() == target
    assert (target / "a.txt").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["out"]
    with pytest.raises(FileExistsError, match="not empty"):
        StagedDir(target)
    with pytest.raises(RuntimeError):
        with StagedDir(target, overwrite=True) as stage:
            (stage.path / "b.txt").write_text("half")
            raise RuntimeError("failed half-way")
    assert sorted(os.listdir(target)) == ["a.txt"] and sorted(os.listdir(tmp_path)) == ["out"]
    with StagedDir(target, overwrite=True) as stage:
        (stage.path / "b.txt").write_text("complete")
        stage.commit()
    assert sorted(os.listdir(target)) == ["b.txt"] and sorted(os.listdir(tmp_path)) == ["out"]
    # a folder that appears meanwhile is not replaced without overwrite
    other = tmp_path / "race"
    with StagedDir(other) as stage:
        (other / "x").parent.mkdir()
        (other / "x").write_text("someone else's")
        with pytest.raises(FileExistsError, match="appeared"):
            stage.commit()
    assert sorted(os.listdir(other)) == ["x"]
    # an empty folder or a missing one are fine; a file is not
    (tmp_path / "empty").mkdir()
    with StagedDir(tmp_path / "empty") as stage:
        stage.commit()
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        StagedDir(tmp_path / "file")
    # leftovers of a killed run are named when the next run starts
    (tmp_path / ".out.partial-deadbeef").mkdir()
    with caplog.at_level(logging.WARNING, logger="coseg.io"), StagedDir(target, overwrite=True):
        pass
    assert ".out.partial-deadbeef" in caplog.text


def test_png_is_16bit_colour(tmp_path):
    rgb16, grey16 = tmp_path / "rgb16.png", tmp_path / "grey16.png"
    cv2.imwrite(str(rgb16), np.full((2, 3, 3), 4095, np.uint16))
    cv2.imwrite(str(grey16), np.full((2, 3), 4095, np.uint16))
    write_rgb(tmp_path / "rgb8.png", RGB)
    (tmp_path / "short.png").write_bytes(b"\x89PNG")
    assert png_is_16bit_colour(rgb16)
    assert not any(png_is_16bit_colour(tmp_path / n) for n in ("grey16.png", "rgb8.png", "short.png"))


def test_temporaries_are_found_by_their_name_only(tmp_path):
    """``temporaries_in`` finds what ``temporary_sibling`` / ``temporary_sibling_dir`` left behind, nothing else."""
    import glob

    from coseg.io import temporaries_in, temporary_sibling, temporary_sibling_dir

    with pytest.raises(RuntimeError):
        with temporary_sibling_dir(tmp_path / "a.tif", tag="spool") as spool:
            assert spool.is_dir() and spool.parent == tmp_path and temporaries_in(tmp_path) == [spool]
            raise RuntimeError("interrupted")
    assert not spool.exists()  # removed on the way out, also after an error
    # entered, never left (kept referenced: a collected generator would clean up): what a killed process leaves
    open_writers = [temporary_sibling(tmp_path / n) for n in ("a.tif", "b.nii.gz", "plan.json", "tile_0_1.npz")]
    open_writers += [
        temporary_sibling(tmp_path / "tile_0_2.npz"),
        temporary_sibling_dir(tmp_path / "a.tif", tag="spool"),
    ]
    left = [cm.__enter__() for cm in open_writers]
    for name in ("a.tif", ".a.tif.zzzzzzzz.tmp.tif", ".a.tif.0123abcd.tmp.png", ".a.tif.spool-0123abcd", "notes.txt"):
        (tmp_path / name).write_text("not a temporary", encoding="utf-8")  # wrong hex / suffix, a file named like a dir
    assert temporaries_in(tmp_path) == sorted(left)
    assert [p.name[:7] for p in temporaries_in(tmp_path, glob.escape("a.tif"))] == [".a.tif."] * 2
    assert [p.name[:14] for p in temporaries_in(tmp_path, "tile_*_*.npz")] == [".tile_0_1.npz.", ".tile_0_2.npz."]
    assert temporaries_in(tmp_path / "missing") == []
    assert [p.name.endswith(".tmp.nii.gz") for p in temporaries_in(tmp_path, "*.gz")] == [True]
