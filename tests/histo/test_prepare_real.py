"""Converters on a handful of real files from ../shared/data (CoNSeP tiles, joint patches, GlaS)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.segmentation import relabel_sequential

from coseg.data.label_codec import decode, encode
from coseg.histo.geojson import feature_polygons, instances_to_features, rasterize_instances
from coseg.histo.prepare import prepare_dataset
from coseg.io import read_label, read_rgb


def _copy(src: Path, dst: Path, names: list[str], subdirs: dict[str, str]) -> None:
    for sub, suffix in subdirs.items():
        (dst / sub).mkdir(parents=True)
        for n in names:
            shutil.copy(src / sub / f"{n}{suffix}", dst / sub / f"{n}{suffix}")


def _items(out: Path) -> dict[str, dict]:
    dl = json.loads((out / "datalist.json").read_text(encoding="utf-8"))
    return {Path(it["image"]).stem: {**it, "split": s} for s in ("training", "validation", "test") for it in dl[s]}


def test_consep_tiles_real(shared_dir, tmp_path):
    src = shared_dir / "data" / "consep256" / "train"
    names = [f"train_{i}_{t:03d}" for i in (1, 2) for t in range(3)]
    raw = tmp_path / "raw"
    _copy(src, raw, names, {"images": ".jpg", "inst": ".png", "type": ".png"})
    shutil.copy(src / "classes.json", raw / "classes.json")
    out = tmp_path / "out"
    info = prepare_dataset("consep_tiles", raw, out, ratios=(0.5, 0, 0.5), progress=False)
    items = _items(out)
    assert {it["group"] for it in items.values()} == {"train_1", "train_2"}
    assert len({it["split"] for it in items.values() if it["group"] == "train_1"}) == 1
    assert info["instance_types"]["2"] == "inflammatory"
    for n in names:
        it = items[n]
        np.testing.assert_array_equal(read_rgb(out / it["image"]), np.array(Image.open(src / "images" / f"{n}.jpg")))
        inst_src = np.array(Image.open(src / "inst" / f"{n}.png"))
        type_src = np.array(Image.open(src / "type" / f"{n}.png"))
        inst = read_label(out / it["label_inst"])
        np.testing.assert_array_equal(inst, relabel_sequential(inst_src)[0])
        np.testing.assert_array_equal(read_label(out / it["label_type"]), type_src)
        np.testing.assert_array_equal(read_label(out / it["label_sem"]), inst_src > 0)
    # the prepared labels survive the label codec and the GeoJSON writer exactly
    it = items[names[0]]
    sem, inst, typ = (read_label(out / it[k]) for k in ("label_sem", "label_inst", "label_type"))
    s, i, t = decode(encode(sem, inst, typ, 2, 5), 2, 5)
    np.testing.assert_array_equal(s, sem)
    np.testing.assert_array_equal(i, inst)
    np.testing.assert_array_equal(t, typ)
    feats = instances_to_features(inst, type_map=typ, type_names=info["instance_types"])
    back, src_idx = rasterize_instances([feature_polygons(f) for f in feats], inst.shape)
    ids = np.unique(inst)[1:]
    np.testing.assert_array_equal(np.concatenate([[0], ids[src_idx]])[back], inst)


def test_joint_patches_real(shared_dir, tmp_path):
    src = shared_dir / "data" / "joint_patches"
    names = ["patch1", "patch2", "patch3"]
    raw = tmp_path / "raw"
    _copy(src, raw, names, {"images": ".png", "sem": ".png", "inst": ".png", "type": ".png"})
    out = tmp_path / "out"
    info = prepare_dataset("folder", raw, out, progress=False)
    assert info["semantic_labels"] == "annotation" and info["label_kinds"] == ["sem", "inst", "type"]
    assert set(info["semantic_classes"]) >= {"0", "1", "2", "4"}  # generic names up to the largest id
    for n, it in _items(out).items():
        np.testing.assert_array_equal(read_rgb(out / it["image"]), np.array(Image.open(src / "images" / f"{n}.png")))
        np.testing.assert_array_equal(read_label(out / it["label_sem"]), np.array(Image.open(src / "sem" / f"{n}.png")))
        inst_src = np.array(Image.open(src / "inst" / f"{n}.png"))
        np.testing.assert_array_equal(read_label(out / it["label_inst"]), relabel_sequential(inst_src)[0])


def test_glas_jpg_png_copy_through_folder_format(shared_dir, tmp_path):
    src = shared_dir / "data" / "glas" / "train"
    names = ["train_1", "train_2", "train_3"]
    raw = tmp_path / "raw"
    _copy(src, raw, names, {"images": ".jpg", "gland": ".png", "gland_inst_cc": ".png"})
    out = tmp_path / "out"
    info = prepare_dataset("folder", raw, out, sem_dir="gland", inst_dir="gland_inst_cc", progress=False)
    assert info["statistics"]["images"]["training"] + info["statistics"]["images"]["test"] >= 2
    it = _items(out)["train_1"]
    img = read_rgb(out / it["image"])
    assert img.shape == (522, 775, 3)
    gland = np.array(Image.open(src / "gland" / "train_1.png"))
    np.testing.assert_array_equal(read_label(out / it["label_sem"]), gland)
    np.testing.assert_array_equal(read_label(out / it["label_type"]) > 0, read_label(out / it["label_inst"]) > 0)
