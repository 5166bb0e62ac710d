"""Whole-slide inference end to end on pyramidal TIFFs: outputs, level-0 coordinates, resume, settings, tissue."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from coseg.histo.geojson import load_features
from coseg.wsi import WholeSlideInferer, group_options

from .conftest import INST_TYPES, SEM_CLASSES, PointwiseNet, encode_nuclei, micro_inferer, watershed, write_pyramid
from .test_merge import _same_partition

REPO = Path(__file__).resolve().parents[2]


def _inferer(output_dir, cls: type = WholeSlideInferer, **kwargs) -> WholeSlideInferer:
    """The inferer (``cls``) with small tiles, in one process unless ``workers`` says otherwise; ``kwargs`` flat, as
    ``python -m coseg.wsi`` gives them (sorted into the reading / tiling / outputs settings by
    :func:`coseg.wsi.group_options`)."""
    options = group_options({"tile_size": 128, "output_tile": 64, "margin": 24, "workers": 0, **kwargs})
    args = {
        "network": PointwiseNet(),
        "inferer": micro_inferer(batch=8),
        "sem_classes": SEM_CLASSES,
        "inst_types": INST_TYPES,
        "output_dir": output_dir,
        "watershed": watershed(),
        "progress": False,
        **options.pop("other"),
        **options,
    }
    return cls(**args)


def test_pyramid_end_to_end_at_level_one(tmp_path, slide, nuclei):
    path, expected = slide
    # 0.5 um/px: level 1, watershed scaled from 40x to 20x; the tissue class is the nuclei here: keep small regions
    result = _inferer(tmp_path, mpp=0.5, region_min_um2=1.0)(path)[0]
    assert result.complete and result.tiles_remaining == 0
    summary = result.summary
    assert summary["settings"]["level"] == 1 and summary["region_size"] == [360, 440]
    assert summary["tiles"]["grid"] == [3, 4] and summary["joined_across_tiles"] > 0
    # label maps: pyramidal, at the working resolution, the same objects as the whole level through the watershed
    with tifffile.TiffFile(result.outputs["inst"]) as tif:
        levels = tif.series[0].levels
        inst = levels[0].asarray().astype(np.int64)
        assert inst.shape == (360, 440) and levels[0].keyframe.is_tiled
        assert levels[0].keyframe.get_resolution() == pytest.approx((2e4, 2e4))
    assert _same_partition(inst, expected)
    assert summary["nuclei"] == expected.max() == inst.max()
    types = tifffile.imread(result.outputs["type"])
    assert set(np.unique(types[inst > 0])) == {1} and (types[inst == 0] == 0).all()
    # GeoJSON: one detection per nucleus, in level-0 pixels; regions as annotations
    features = load_features(result.outputs["geojson"])
    detections = [f for f in features if f["properties"]["objectType"] == "detection"]
    regions = [f for f in features if f["properties"]["objectType"] == "annotation"]
    assert len(detections) == summary["nuclei"] and [r["properties"]["classification"]["name"] for r in regions] == [
        "tissue"
    ]
    for feature in detections:
        cx, cy = feature["properties"]["centroid"]
        true_id = nuclei[int(cy), int(cx)]
        assert true_id > 0, "a detection's centroid lies outside every level-0 nucleus"
        ys, xs = np.nonzero(nuclei == true_id)
        assert abs(cx - (xs.mean() + 0.5)) < 1.5 and abs(cy - (ys.mean() + 0.5)) < 1.5
        ring = np.asarray(feature["geometry"]["coordinates"][0])
        assert xs.min() - 2 <= ring[:, 0].min() and ring[:, 0].max() <= xs.max() + 3  # level-0 extent
    # table, summary, overlay
    rows = list(csv.DictReader(open(result.outputs["instances"], encoding="utf-8")))
    assert len(rows) == summary["nuclei"] and rows[0]["type_name"] == "nucleus"
    assert float(rows[0]["area_um2"]) == pytest.approx(int(rows[0]["area_px"]) * 0.25, rel=1e-3)
    tissue = summary["tissue"]["tissue"]
    assert tissue["area_mm2"] == pytest.approx(tissue["area_px"] * 0.25e-6)
    assert tissue["density_per_mm2"]["nucleus"] == pytest.approx(tissue["nuclei"]["nucleus"] / tissue["area_mm2"])
    assert tissue["nuclei_total"] + summary["tissue"]["background"]["nuclei_total"] == summary["nuclei"]
    assert summary["counts"] == {"nucleus": summary["nuclei"]}
    overlay = np.asarray(Image.open(result.outputs["overlay"]))
    assert overlay.shape == (360, 440, 3)
    assert not (tmp_path / ".slide.parts").exists()  # records are removed once the outputs are written


def test_interrupted_run_resumes_where_it_stopped(tmp_path, slide):
    path, _ = slide
    first = _inferer(tmp_path / "a", level=1, max_tiles=5, keep_parts=True)(path)[0]
    assert not first.complete and first.tiles_done_now == 5 and first.tiles_remaining == 7
    assert len(list((tmp_path / "a" / ".slide.parts").glob("tile_*.npz"))) == 5
    assert not (tmp_path / "a" / "slide.geojson").exists()
    second = _inferer(tmp_path / "a", level=1)(path)[0]
    assert second.complete and second.tiles_done_now == 7
    fresh = _inferer(tmp_path / "b", level=1)(path)[0]
    np.testing.assert_array_equal(tifffile.imread(second.outputs["inst"]), tifffile.imread(fresh.outputs["inst"]))
    assert second.summary["nuclei"] == fresh.summary["nuclei"]
    assert (tmp_path / "a" / "slide.geojson").read_text(encoding="utf-8") == (
        tmp_path / "b" / "slide.geojson"
    ).read_text(encoding="utf-8")
    # finished outputs with the same settings are kept, not recomputed
    again = _inferer(tmp_path / "a", level=1)(path)[0]
    assert again.complete and again.tiles_done_now == 0
    # regions smaller than region_min_um2 (here: the nuclei, the only tissue class) are not outlined
    assert not [f for f in load_features(again.outputs["geojson"]) if f["properties"]["objectType"] == "annotation"]


_KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from tests.wsi.test_run import _inferer

target = sys.argv[4]
rename = os.replace


def replace(src, dst):  # SIGKILL just before the target is renamed into place: its temporary stays behind
    if os.path.basename(dst) == target:
        os.kill(os.getpid(), signal.SIGKILL)
    return rename(src, dst)


os.replace = replace
_inferer(sys.argv[3], level=1, keep_parts=True)(sys.argv[2])
"""


def _killed_run(slide_path, output_dir, target: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    args = [sys.executable, "-c", _KILLED_RUN, str(REPO), str(slide_path), str(output_dir), target]
    res = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == -signal.SIGKILL, res.stdout[-2000:] + res.stderr[-3000:]


def _temporaries(folder) -> list[str]:
    """Everything named like a coseg.io temporary (``.<file>.<hex>.tmp<suffix>`` or ``.<file>.<tag>-<hex>``)."""
    pattern = r"\..+\.[0-9a-f]{8}\.tmp.*|\..+\.[a-z]+-[0-9a-f]{8}"
    return sorted(p.name for p in folder.iterdir() if re.fullmatch(pattern, p.name))


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_killed_runs_leave_no_temporaries_after_the_restart(tmp_path, slide):
    """Issue 13: a run killed while writing a tile record, then one killed while writing the label TIFFs, leave
    temporaries; the next run removes its own (and nothing else) and writes the same bytes as an uninterrupted run."""
    path, _ = slide
    out = tmp_path / "out"
    out.mkdir()
    foreign = [out / ".other_inst.tif.0123abcd.tmp.tif", out / "notes.txt"]  # another input's temporary, a user file
    for f in foreign:
        f.write_text("not ours", encoding="utf-8")
    _killed_run(path, out, "tile_1_2.npz")
    parts = out / ".slide.parts"
    assert [n for n in _temporaries(parts) if n.startswith(".tile_1_2.npz.")], "the killed record left no temporary"
    _killed_run(path, out, "slide_inst.tif")
    left = _temporaries(out)
    assert any(n.startswith(".slide_inst.tif.") and n.endswith(".tmp.tif") for n in left), left
    assert any(n.startswith(".slide_inst.tif.spool-") for n in left), left  # the TIFF's spooled levels
    assert (out / "slide.geojson").is_file() and not (out / "slide_summary.json").exists()

    resumed = _inferer(out, level=1, keep_parts=True)(path)[0]
    assert resumed.complete
    assert _temporaries(out) == [foreign[0].name] and _temporaries(parts) == []
    assert all(f.read_text(encoding="utf-8") == "not ours" for f in foreign)
    assert sorted(p.name for p in parts.iterdir()) == ["plan.json", *sorted(p.name for p in parts.glob("tile_*.npz"))]
    fresh = _inferer(tmp_path / "fresh", level=1)(path)[0]
    for kind in ("inst", "type", "sem", "geojson", "instances", "overlay"):
        a, b = Path(resumed.outputs[kind]).read_bytes(), Path(fresh.outputs[kind]).read_bytes()
        assert a == b, f"{kind} differs between the resumed and an uninterrupted run"
    drop = {"timing", "outputs"}
    assert {k: v for k, v in resumed.summary.items() if k not in drop} == {
        k: v for k, v in fresh.summary.items() if k not in drop
    }


def test_other_settings_are_refused_unless_overwritten(tmp_path, slide):
    path, _ = slide
    _inferer(tmp_path, level=1, max_tiles=2)(path)
    with pytest.raises(ValueError, match="margin"):
        _inferer(tmp_path, level=1, margin=16)(path)
    result = _inferer(tmp_path, level=1, margin=16, overwrite=True)(path)[0]
    assert result.complete and result.summary["settings"]["margin"] == 16


def test_tissue_detection_skips_glass_and_roi_offsets_coordinates(tmp_path, nuclei):
    rgb = encode_nuclei(nuclei, hv=False)
    # glass on the right half: bright and unsaturated
    rgb[:, 440:] = 235
    path = write_pyramid(tmp_path / "half.tif", rgb, levels=2, mpp=0.25, tile=64)
    result = _inferer(tmp_path / "out", level=0, tissue_detection=True)(path)[0]
    active = result.summary["tiles"]["active"]
    assert active < 6 * 7 and active >= 6 * 4  # 6 x 7 tiles of 128; the right ones are glass
    inst = tifffile.imread(result.outputs["inst"])
    assert inst[:, 520:].max() == 0 and inst[:, :400].max() > 0
    # a region of interest: coordinates stay in level-0 pixels
    roi = _inferer(tmp_path / "roi", level=1, roi=(200, 100, 300, 240), tissue_detection=False)(path)[0]
    assert roi.summary["region_size"] == [120, 150] and roi.summary["region_level0"] == [200.0, 100.0, 300.0, 240.0]
    for feature in load_features(roi.outputs["geojson"]):
        if feature["properties"]["objectType"] == "detection":
            cx, cy = feature["properties"]["centroid"]
            assert 200 <= cx <= 500 and 100 <= cy <= 340 and nuclei[int(cy), int(cx)] > 0


def test_bad_settings_are_rejected(tmp_path, slide):
    path, _ = slide
    with pytest.raises(ValueError, match="multiple of output_tile"):
        _inferer(tmp_path, tile_size=100)
    with pytest.raises(ValueError, match="not both"):
        _inferer(tmp_path, level=1, mpp=0.5)
    with pytest.raises(ValueError, match="level"):
        _inferer(tmp_path, level=7)(path)
    with pytest.raises(ValueError, match="classes 0"):
        _inferer(tmp_path, sem_classes={1: "a", 2: "b"})
    with pytest.raises(TypeError, match="SlidingWindowInferer"):
        _inferer(tmp_path, inferer=object())


def test_checkpoint_errors_name_the_file(tmp_path, slide):
    from coseg.errors import InputFileError

    path, _ = slide
    with pytest.raises(InputFileError, match="does not exist"):
        _inferer(tmp_path, checkpoint=tmp_path / "missing.pt")(path)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(InputFileError) as err:
        _inferer(tmp_path, checkpoint=bad)(path)
    assert "bad.pt" in str(err.value)


def test_tissue_mask_and_active_tiles_by_hand():
    from coseg.wsi.tiling import TilePlan
    from coseg.wsi.tissue import active_tiles, tissue_mask

    rgb = np.full((40, 60, 3), 240, np.uint8)  # glass
    rgb[:, 40:] = (200, 120, 170)  # pink tissue on the right
    rgb[5, 5] = (90, 40, 120)  # a dark speck of one pixel
    rgb[20:23, 10:13] = (250, 250, 250)  # bright but glass-like
    mask = tissue_mask(rgb, min_speck=4)
    assert mask[:, 40:].all() and not mask[:, :40].any()
    # thumbnail pixels are 10 region pixels; tiles of 100 with a margin of 10 (grown by 2 thumbnail pixels)
    plan = TilePlan(height=400, width=600, tile_size=100, margin=10, roi_size=(64, 64), overlap=(0.25, 0.25))
    active = active_tiles(plan, mask, 10.0)
    assert sorted({c for _, c in active}) == [3, 4, 5] and len(active) == 4 * 3
    with pytest.raises(ValueError):
        tissue_mask(rgb[..., 0])


def test_images_smaller_than_a_window(tmp_path):
    inst = np.zeros((40, 50), np.int64)
    inst[10:20, 10:22] = 1
    path = tmp_path / "small.png"
    Image.fromarray(encode_nuclei(inst, hv=False)).save(path)
    result = _inferer(tmp_path / "out", tissue_detection=False)(path)[0]
    assert result.complete and result.summary["nuclei"] == 1 and result.summary["working_mpp"] is None
    out = tifffile.imread(result.outputs["inst"])
    assert out.shape == (40, 50) and (out > 0).sum() == 120


def test_the_reader_keeps_one_band_of_a_strip_not_the_slide(tmp_path, slide, monkeypatch):
    """The decoded-tile cache is sized by the plan (a band of windows of one strip), so that memory does not grow with
    the slide (the reader's default keeps 256 MiB: a whole 8192² slide)."""
    from coseg.wsi.reader import SlideReader

    limits = []
    original = SlideReader.limit_cache
    monkeypatch.setattr(SlideReader, "limit_cache", lambda self, n: limits.append(n) or original(self, n))
    path, _ = slide
    assert _inferer(tmp_path)(path)[0].complete
    assert limits == [16 * 2**20]  # the floor: 128 px tiles in strips of a few, 64 px windows
