"""coseg.histo.prepare: each raw format written by hand in a tmp dir, converted, checked pixel by pixel."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import tifffile
from monai.data import load_decathlon_datalist
from PIL import Image

from coseg.errors import InputFileError
from coseg.histo.formats import FORMATS, ClassMap, normalize_class_name
from coseg.histo.prepare import assign_splits, main, prepare_dataset
from coseg.io import read_label, read_rgb
from tests.killing import kill_half_way

RNG = np.random.default_rng(0)


def box(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def feat(name, coords, kind="Polygon"):
    return {
        "type": "Feature",
        "geometry": {"type": kind, "coordinates": coords},
        "properties": {"objectType": "annotation", "classification": {"name": name, "color": [1, 2, 3]}},
    }


def write_json(path: Path, doc) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def load(out: Path, item: dict, key: str) -> np.ndarray:
    return read_rgb(out / item[key]) if key == "image" else read_label(out / item[key])


def all_items(out: Path) -> dict[str, dict]:
    dl = json.loads((out / "datalist.json").read_text(encoding="utf-8"))
    return {Path(it["image"]).stem: {**it, "split": s} for s in ("training", "validation", "test") for it in dl[s]}


def no_leftovers(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


# ----------------------------------------------------------------------------------------------------- PUMA

TISSUE = [
    feat("tissue_tumor", [box(0, 0, 8, 16)]),
    feat("stroma", [[box(8, 0, 16, 8)], [box(8, 8, 16, 16), box(10, 10, 12, 12)]], "MultiPolygon"),
    feat("Tissue_Blood_Vessel", [box(0, 0, 2, 2)]),  # later wins; mapped to background
]
NUCLEI = [
    feat("nuclei_tumor", [box(2, 2, 5, 5)]),
    feat("nuclei_tumor", [box(5, 2, 7, 5)]),  # shares the edge x = 5 with the first
    feat("nuclei_lymphocyte", [box(2, 8, 4, 10)]),
    feat("nuclei_plasma_cell", [[box(6, 8, 7, 9)], [box(6, 10, 7, 11)]], "MultiPolygon"),
    feat("nuclei_histiocyte", [box(10, 2, 14, 6), box(11, 3, 13, 5)]),  # ring with a hole
    feat("nuclei_stroma", [box(12, 12, 13, 13)]),
    feat("nuclei_tumor", [box(3, 3, 4, 4)]),  # one pixel inside the first nucleus: the smaller wins it
]


def puma_expected():
    sem = np.zeros((16, 16), np.uint8)
    sem[:, :8] = 1
    sem[:, 8:] = 2
    sem[10:12, 10:12] = 0  # hole of the stroma multipolygon
    sem[0:2, 0:2] = 0  # blood vessel -> background
    inst = np.zeros((16, 16), np.int64)
    inst[2:5, 2:5] = 1
    inst[2:5, 5:7] = 2
    inst[8:10, 2:4] = 3
    inst[8, 6] = inst[10, 6] = 4
    inst[2:6, 10:14] = 5
    inst[3:5, 11:13] = 0
    inst[12, 12] = 6
    inst[3, 3] = 7
    typ = np.choose(inst, [0, 1, 1, 2, 2, 3, 3, 1]).astype(np.uint8)
    return sem, inst, typ


def make_puma(
    root: Path, cases=("training_set_primary_roi_001",), nuclei=NUCLEI, tissue=TISSUE
) -> dict[str, np.ndarray]:
    images = {}
    for i, case in enumerate(cases):
        rgba = RNG.integers(0, 256, (16, 16, 4), dtype=np.uint8)
        rgba[..., 3] = 255
        d = root / "01_training_dataset_tif_ROIs"
        d.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(d / f"{case}.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
        if tissue is not None:
            write_json(root / "01_training_dataset_geojson_tissue" / f"{case}_tissue.geojson",
                       {"type": "FeatureCollection", "features": tissue})  # fmt: skip
        if nuclei is not None:
            # the second case is written as a bare list of features, as some QuPath exports are
            doc = {"type": "FeatureCollection", "features": nuclei} if i % 2 == 0 else nuclei
            write_json(root / "01_training_dataset_geojson_nuclei" / f"{case}_nuclei.geojson", doc)
        images[case] = rgba[..., :3]
    return images


def test_puma_pixel_by_pixel(tmp_path):
    images = make_puma(tmp_path / "raw")
    out = tmp_path / "out"
    info = prepare_dataset("puma", tmp_path / "raw", out, ratios=(1, 0, 0), progress=False)
    items = all_items(out)
    it = items["training_set_primary_roi_001"]
    assert it["split"] == "training" and it["group"] == "training_set_primary_roi_001"
    sem, inst, typ = puma_expected()
    np.testing.assert_array_equal(load(out, it, "image"), images["training_set_primary_roi_001"])
    np.testing.assert_array_equal(load(out, it, "label_sem"), sem)
    np.testing.assert_array_equal(load(out, it, "label_inst"), inst)
    np.testing.assert_array_equal(load(out, it, "label_type"), typ)
    assert load(out, it, "label_inst").dtype == np.uint16 and load(out, it, "label_sem").dtype == np.uint8
    ds = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert ds["semantic_classes"] == {"0": "background", "1": "tumour", "2": "stroma"}
    assert ds["instance_types"] == {"0": "background", "1": "tumour", "2": "TIL", "3": "other"}
    assert ds["format"] == "puma" and ds["magnification"] == "40x" and ds["semantic_labels"] == "annotation"
    assert ds["label_kinds"] == ["sem", "inst", "type"]
    assert ds["statistics"]["objects_per_type"] == {"tumour": 3, "TIL": 2, "other": 2}
    assert ds["statistics"]["semantic_pixels"]["stroma"] == int((sem == 2).sum())
    assert info["statistics"] == ds["statistics"]
    assert no_leftovers(tmp_path)


def test_puma_touching_gap(tmp_path):
    make_puma(tmp_path / "raw")
    out = tmp_path / "out"
    prepare_dataset("puma", tmp_path / "raw", out, ratios=(1, 0, 0), touching_gap=True, progress=False)
    inst = load(out, all_items(out)["training_set_primary_roi_001"], "label_inst")
    _, expect, _ = puma_expected()
    # nucleus 1 (8 pixels) is larger than nucleus 2 (6) and 7 (1): it gives up its pixels touching them
    expect[2:5, 4] = 0
    expect[3, 2] = expect[2, 3] = expect[4, 3] = 0
    np.testing.assert_array_equal(inst, expect)


def test_puma_unknown_class_and_class_map(tmp_path):
    raw = tmp_path / "raw"
    make_puma(raw, nuclei=NUCLEI + [feat("nuclei_alien", [box(0, 12, 2, 14)])])
    with pytest.raises(InputFileError, match="alien") as err:
        prepare_dataset("puma", raw, tmp_path / "out", progress=False)
    assert err.value.path.endswith("_nuclei.geojson")
    assert not (tmp_path / "out").exists() and no_leftovers(tmp_path)
    cmap = {
        "instance": {
            "classes": {"0": "background", "1": "lymphocyte", "2": "other"},
            "map": {"lymphocyte": 1, "plasma cell": 0, "*": 2},  # plasma cells dropped, the rest "other"
        }
    }
    prepare_dataset("puma", raw, tmp_path / "out", class_map=cmap, ratios=(1, 0, 0), progress=False)
    it = next(iter(all_items(tmp_path / "out").values()))
    typ = load(tmp_path / "out", it, "label_type")
    inst = load(tmp_path / "out", it, "label_inst")
    assert typ[8, 2] == 1 and typ[8, 6] == 0 and typ[12, 0] == 2 and typ[2, 2] == 2
    assert inst.max() == 7  # 8 nuclei, plasma cell dropped
    ds = json.loads((tmp_path / "out" / "dataset.json").read_text(encoding="utf-8"))
    assert ds["instance_types"] == {"0": "background", "1": "lymphocyte", "2": "other"}
    assert ds["class_map"]["instance"]["map"]["*"] == 2


@pytest.mark.parametrize(
    ("mutate", "match", "culprit"),
    [
        ("no_class", "classification.name", "_nuclei.geojson"),
        ("bad_json", "not valid JSON", "_tissue.geojson"),
        ("point", "not supported", "_nuclei.geojson"),
        ("outside", "overlaps", "_nuclei.geojson"),
        ("missing_nuclei", "no training_set_primary_roi_002_nuclei.geojson", "roi_002.tif"),
        ("orphan", "without a matching ROI", "roi_009_nuclei.geojson"),
    ],
)
def test_puma_errors_name_the_file(tmp_path, mutate, match, culprit):
    raw = tmp_path / "raw"
    make_puma(raw, cases=("training_set_primary_roi_001", "training_set_primary_roi_002"))
    nuc_dir = raw / "01_training_dataset_geojson_nuclei"
    if mutate == "no_class":
        write_json(
            nuc_dir / "training_set_primary_roi_002_nuclei.geojson",
            [{"type": "Feature", "geometry": NUCLEI[0]["geometry"]}],
        )
    elif mutate == "bad_json":
        (raw / "01_training_dataset_geojson_tissue" / "training_set_primary_roi_001_tissue.geojson").write_text(
            "{", encoding="utf-8"
        )
    elif mutate == "point":
        write_json(nuc_dir / "training_set_primary_roi_001_nuclei.geojson", [feat("nuclei_tumor", [1, 2], "Point")])
    elif mutate == "outside":
        write_json(
            nuc_dir / "training_set_primary_roi_001_nuclei.geojson", [feat("nuclei_tumor", [box(100, 100, 104, 104)])]
        )
    elif mutate == "missing_nuclei":
        (nuc_dir / "training_set_primary_roi_002_nuclei.geojson").unlink()
    elif mutate == "orphan":
        write_json(nuc_dir / "training_set_primary_roi_009_nuclei.geojson", NUCLEI)
    with pytest.raises(InputFileError, match=match) as err:
        prepare_dataset("puma", raw, tmp_path / "out", progress=False)
    assert err.value.path.endswith(culprit)
    assert not (tmp_path / "out").exists() and no_leftovers(tmp_path)


def test_puma_nuclei_only_derives_semantic_and_has_no_official_split(tmp_path):
    raw = tmp_path / "raw"
    make_puma(raw, tissue=None)
    with pytest.raises(ValueError, match="no official split"):
        prepare_dataset("puma", raw, tmp_path / "x", split="official", progress=False)
    out = tmp_path / "out"
    prepare_dataset("puma", raw, out, ratios=(1, 0, 0), derive_sem="type", progress=False)
    it = next(iter(all_items(out).values()))
    np.testing.assert_array_equal(load(out, it, "label_sem"), puma_expected()[2])
    ds = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert ds["semantic_labels"] == "derived_type" and ds["semantic_classes"] == ds["instance_types"]


# ----------------------------------------------------------------------------------------------------- GlaS

GRADE_CSV = """name,patient ID, grade (GlaS), grade (Sirinukunwattana et al. 2015)
testA_1,4, malignant, adenomatous
testB_1,5, benign, healthy
train_1,4, benign, healthy
train_2,6, malignant, adenomatous
"""


def glas_anno() -> np.ndarray:
    a = np.zeros((10, 12), np.uint8)
    a[1:4, 1:5] = 3
    a[5:9, 6:11] = 7
    return a


def make_glas(root: Path, grade_csv: str | None = GRADE_CSV) -> None:
    root.mkdir(parents=True)
    for name in ("train_1", "train_2", "testA_1", "testB_1"):
        Image.fromarray(RNG.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(root / f"{name}.bmp")
        Image.fromarray(glas_anno()).save(root / f"{name}_anno.bmp")
    if grade_csv is not None:
        (root / "Grade.csv").write_text(grade_csv, encoding="utf-8")


def test_glas_official_split_groups_and_grades(tmp_path):
    raw = tmp_path / "Warwick QU Dataset"
    make_glas(raw)
    out = tmp_path / "glas"
    prepare_dataset("glas", raw, out, split="official", ratios=(0.5, 0.5, 0), gland_types="grade", progress=False)
    items = all_items(out)
    assert {n: it["split"] for n, it in items.items() if n.startswith("test")} == {"testA_1": "test", "testB_1": "test"}
    assert {items["train_1"]["split"], items["train_2"]["split"]} == {"training", "validation"}
    assert items["testA_1"]["subset"] == "testA" and items["train_2"]["subset"] == "train"
    assert items["train_1"]["group"] == "patient_4" and items["train_2"]["group"] == "patient_6"
    a = glas_anno()
    inst = load(out, items["train_2"], "label_inst")
    np.testing.assert_array_equal(inst, np.choose(np.searchsorted([0, 3, 7], a), [0, 1, 2]))
    np.testing.assert_array_equal(load(out, items["train_2"], "label_sem"), a > 0)
    np.testing.assert_array_equal(load(out, items["train_2"], "label_type"), (a > 0) * 2)  # malignant
    np.testing.assert_array_equal(load(out, items["train_1"], "label_type"), (a > 0) * 1)  # benign
    ds = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert ds["instance_types"] == {"0": "background", "1": "benign gland", "2": "malignant gland"}
    assert ds["semantic_classes"] == {"0": "background", "1": "gland"}


def test_glas_seeded_split_keeps_patients_together(tmp_path):
    raw = tmp_path / "raw"
    make_glas(raw)
    for seed in range(4):
        out = tmp_path / f"s{seed}"
        prepare_dataset("glas", raw, out, seed=seed, progress=False)
        items = all_items(out)
        assert items["train_1"]["split"] == items["testA_1"]["split"]  # both patient 4
        assert json.loads((out / "dataset.json").read_text(encoding="utf-8"))["instance_types"] == {
            "0": "background",
            "1": "gland",
        }


def test_glas_errors(tmp_path):
    raw = tmp_path / "raw"
    make_glas(raw, grade_csv=None)
    with pytest.raises(InputFileError, match="Grade.csv"):
        prepare_dataset("glas", raw, tmp_path / "o", gland_types="grade", progress=False)
    (raw / "Grade.csv").write_text(GRADE_CSV.replace("train_2,6, malignant, adenomatous\n", ""), encoding="utf-8")
    with pytest.raises(InputFileError, match="train_2") as err:
        prepare_dataset("glas", raw, tmp_path / "o", progress=False)
    assert err.value.path.endswith("Grade.csv")
    (raw / "Grade.csv").write_text(GRADE_CSV, encoding="utf-8")
    (raw / "testB_1_anno.bmp").unlink()
    with pytest.raises(InputFileError, match="testB_1_anno.bmp") as err:
        prepare_dataset("glas", raw, tmp_path / "o", progress=False)
    assert err.value.path.endswith("testB_1.bmp")
    with pytest.raises(ValueError, match="class map"):
        prepare_dataset("glas", raw, tmp_path / "o", class_map={"semantic": {}}, progress=False)
    assert no_leftovers(tmp_path)


# ----------------------------------------------------------------------------------------------------- CRAG


def make_crag(root: Path, bad_size: bool = False) -> dict[str, np.ndarray]:
    annos = {}
    for split, img_dir, ann_dir, names in (
        ("TRAIN", "Images", "Annotation", ("train_1", "train_2", "train_3")),
        ("valid", "images", "Annotations", ("test_1",)),
    ):
        for name in names:
            (root / "CRAG" / split / img_dir).mkdir(parents=True, exist_ok=True)
            (root / "CRAG" / split / ann_dir).mkdir(parents=True, exist_ok=True)
            Image.fromarray(RNG.integers(0, 256, (8, 9, 3), dtype=np.uint8)).save(
                root / "CRAG" / split / img_dir / f"{name}.png"
            )
            a = np.zeros((7, 9) if bad_size and name == "train_2" else (8, 9), np.uint16)
            a[0:3, 0:3] = 300
            a[4:8, 5:9] = 12
            Image.fromarray(a).save(root / "CRAG" / split / ann_dir / f"{name}.png")
            annos[name] = a
    return annos


def test_crag_official_split_case_insensitive_folders(tmp_path):
    annos = make_crag(tmp_path / "raw")
    out = tmp_path / "out"
    prepare_dataset("crag", tmp_path / "raw", out, split="official", progress=False)
    items = all_items(out)
    assert items["test_1"]["split"] == "test" and items["test_1"]["subset"] == "valid"
    assert {items[f"train_{i}"]["split"] for i in (1, 2, 3)} <= {"training", "validation"}
    inst = load(out, items["train_1"], "label_inst")
    expect = np.zeros((8, 9), np.uint16)
    expect[4:8, 5:9] = 1  # id 12 -> 1, id 300 -> 2
    expect[0:3, 0:3] = 2
    np.testing.assert_array_equal(inst, expect)
    np.testing.assert_array_equal(load(out, items["train_1"], "label_sem"), annos["train_1"] > 0)


def test_crag_size_mismatch_names_the_annotation(tmp_path):
    make_crag(tmp_path / "raw", bad_size=True)
    with pytest.raises(InputFileError, match="9x7 but the image is 9x8") as err:
        prepare_dataset("crag", tmp_path / "raw", tmp_path / "out", progress=False)
    assert err.value.path.endswith("Annotation/train_2.png")
    assert not (tmp_path / "out").exists() and no_leftovers(tmp_path)


# ------------------------------------------------------------------------------------------- consep tiles


def make_tiles(root: Path, names=("train_1_000", "train_1_001", "train_2_000", "train_3_000", "train_3_001")):
    for sub in ("images", "inst", "type"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    truth = {}
    for i, name in enumerate(names):
        Image.fromarray(RNG.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(
            root / "images" / f"{name}.jpg", quality=95
        )
        inst = np.zeros((12, 12), np.uint16)
        inst[1:4, 1:4] = 5 + i
        inst[6:10, 6:10] = 2
        typ = np.zeros((12, 12), np.uint8)
        typ[inst == 2] = 4
        typ[inst == 5 + i] = 2
        Image.fromarray(inst).save(root / "inst" / f"{name}.png")
        Image.fromarray(typ).save(root / "type" / f"{name}.png")
        truth[name] = (np.array(Image.open(root / "images" / f"{name}.jpg")), inst, typ)
    write_json(
        root / "classes.json",
        {
            "type_names": {
                "0": "background",
                "1": "other",
                "2": "inflammatory",
                "3": "epithelial",
                "4": "spindle-shaped",
            }
        },
    )
    return truth


@pytest.mark.parametrize("derive", ["foreground", "type", "none"])
def test_consep_tiles_groups_and_derived_semantic(tmp_path, derive):
    truth = make_tiles(tmp_path / "raw")
    out = tmp_path / "out"
    prepare_dataset("consep_tiles", tmp_path / "raw", out, derive_sem=derive, seed=1, progress=False)
    items = all_items(out)
    assert items["train_3_000"]["group"] == "train_3"
    for img in ("train_1", "train_3"):
        assert items[f"{img}_000"]["split"] == items[f"{img}_001"]["split"]
    image, inst, typ = truth["train_1_001"]
    it = items["train_1_001"]
    np.testing.assert_array_equal(load(out, it, "image"), image)
    np.testing.assert_array_equal(load(out, it, "label_inst"), np.choose(np.searchsorted([0, 2, 6], inst), [0, 1, 2]))
    np.testing.assert_array_equal(load(out, it, "label_type"), typ)
    ds = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert ds["instance_types"]["4"] == "spindle-shaped" and ds["derive_sem"] == derive
    if derive == "none":
        assert "label_sem" not in it and not (out / "labels_sem").exists()
        assert ds["semantic_labels"] == "none" and ds["label_kinds"] == ["inst", "type"]
    else:
        expect = (inst > 0) if derive == "foreground" else typ
        np.testing.assert_array_equal(load(out, it, "label_sem"), expect)
        assert ds["semantic_labels"] == f"derived_{derive}"
        assert ds["semantic_classes"]["1"] == ("nucleus" if derive == "foreground" else "other")


def test_consep_tiles_inconsistent_type_map(tmp_path):
    make_tiles(tmp_path / "raw")
    typ = np.array(Image.open(tmp_path / "raw" / "type" / "train_2_000.png"))
    typ[11, 11] = 3  # a type outside every object
    Image.fromarray(typ).save(tmp_path / "raw" / "type" / "train_2_000.png")
    with pytest.raises(InputFileError, match="outside every object") as err:
        prepare_dataset("consep_tiles", tmp_path / "raw", tmp_path / "out", progress=False)
    assert err.value.path.endswith("inst/train_2_000.png")


# ----------------------------------------------------------------------------------------------- folder


def make_folder(root: Path, dirs=("img", "regions", "objects")) -> dict:
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    truth = {}
    for name in ("a", "b", "c"):
        img = RNG.integers(0, 256, (6, 7, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / dirs[0] / f"{name}.png")
        sem = RNG.integers(0, 3, (6, 7)).astype(np.uint8)
        Image.fromarray(sem).save(root / dirs[1] / f"{name}.png")
        inst = np.zeros((6, 7), np.uint16)
        inst[0:2, 0:2] = 9
        inst[3:6, 3:6] = 4
        Image.fromarray(inst).save(root / dirs[2] / f"{name}.png")
        truth[name] = (img, sem, inst)
    return truth


def test_folder_custom_dirs_class_map_and_derived_type(tmp_path):
    truth = make_folder(tmp_path / "raw")
    out = tmp_path / "out"
    cmap = {"semantic": {"classes": {"0": "background", "1": "tumour", "2": "stroma"}, "map": {"1": 2, "2": 1}}}
    prepare_dataset(
        "folder", tmp_path / "raw", out, images_dir="img", sem_dir="regions", inst_dir="objects",
        class_map=cmap, ratios=(1, 1, 1), progress=False,
    )  # fmt: skip
    items = all_items(out)
    img, sem, inst = truth["b"]
    it = items["b"]
    np.testing.assert_array_equal(load(out, it, "image"), img)
    np.testing.assert_array_equal(load(out, it, "label_sem"), np.choose(sem, [0, 2, 1]))
    np.testing.assert_array_equal(load(out, it, "label_inst"), np.choose(np.searchsorted([0, 4, 9], inst), [0, 1, 2]))
    np.testing.assert_array_equal(load(out, it, "label_type"), inst > 0)
    ds = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert ds["instance_types"] == {"0": "background", "1": "nucleus"}
    assert ds["semantic_classes"] == {"0": "background", "1": "tumour", "2": "stroma"}
    assert sorted(it["split"] for it in items.values()) == ["test", "training", "validation"]


def test_folder_generic_names_and_type_dropping(tmp_path):
    raw = tmp_path / "raw"
    make_folder(raw, dirs=("images", "sem", "inst"))
    (raw / "type").mkdir()
    for name in ("a", "b", "c"):
        inst = np.array(Image.open(raw / "inst" / f"{name}.png"))
        typ = np.where(inst == 9, 5, np.where(inst == 4, 2, 0)).astype(np.uint8)
        Image.fromarray(typ).save(raw / "type" / f"{name}.png")
    out = tmp_path / "out"
    cmap = {"instance": {"classes": {"0": "background", "1": "kept"}, "map": {"2": 1, "5": 0}}}
    prepare_dataset("folder", raw, out, class_map=cmap, ratios=(1, 0, 0), progress=False)
    it = all_items(out)["a"]
    inst = load(out, it, "label_inst")
    expect = np.zeros((6, 7), np.uint16)
    expect[3:6, 3:6] = 1  # the type-5 object was dropped
    np.testing.assert_array_equal(inst, expect)
    np.testing.assert_array_equal(load(out, it, "label_type"), expect)
    ds = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert ds["semantic_classes"] == {"0": "background", "1": "class_1", "2": "class_2"}  # generic names
    with pytest.raises(InputFileError, match="unknown class 2"):
        prepare_dataset(
            "folder",
            raw,
            tmp_path / "o2",
            class_map={"instance": {"classes": {"0": "bg", "1": "x"}, "map": {"5": 1}}},
            progress=False,
        )


def test_folder_partner_files(tmp_path):
    raw = tmp_path / "raw"
    make_folder(raw, dirs=("images", "sem", "inst"))
    (raw / "inst" / "b.png").unlink()
    with pytest.raises(InputFileError, match="missing inst label") as err:
        prepare_dataset("folder", raw, tmp_path / "o", progress=False)
    assert err.value.path.endswith("inst/b.png")
    (raw / "images" / "b.png").unlink()
    with pytest.raises(InputFileError, match="without an image") as err:
        prepare_dataset("folder", raw, tmp_path / "o", progress=False)
    assert err.value.path.endswith("sem/b.png")
    with pytest.raises(InputFileError, match="no label folder"):
        prepare_dataset("folder", raw, tmp_path / "o", sem_dir="x", inst_dir="y", progress=False)
    (raw / "images" / "c.png").write_bytes(b"")
    (raw / "sem" / "b.png").unlink()
    with pytest.raises(InputFileError, match="empty") as err:
        prepare_dataset("folder", raw, tmp_path / "o", progress=False)
    assert err.value.path.endswith("images/c.png")
    assert not (tmp_path / "o").exists() and no_leftovers(tmp_path)


# ------------------------------------------------------------------------------------- common behaviour


def test_existing_output_overwrite_and_monai_datalist(tmp_path):
    make_tiles(tmp_path / "raw")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old", encoding="utf-8")
    with pytest.raises(FileExistsError):
        prepare_dataset("consep_tiles", tmp_path / "raw", out, progress=False)
    assert (out / "keep.txt").exists()
    prepare_dataset("consep_tiles", tmp_path / "raw", out, overwrite=True, progress=False)
    assert not (out / "keep.txt").exists() and no_leftovers(tmp_path)
    dl = json.loads((out / "datalist.json").read_text(encoding="utf-8"))
    assert dl["split"] == {"method": "seeded", "seed": 0, "ratios": [0.7, 0.1, 0.2]} and dl["format"] == "consep_tiles"
    assert dl["numTraining"] == len(dl["training"])
    for key in ("training", "test"):
        for item in load_decathlon_datalist(out / "datalist.json", data_list_key=key, base_dir=out):
            for k in ("image", "label_sem", "label_inst", "label_type"):
                assert Path(item[k]).is_file()


def test_cli(tmp_path, capsys):
    make_tiles(tmp_path / "raw")
    cmap = write_json(tmp_path / "map.json", {"instance": {"classes": {"0": "bg", "1": "x"}, "map": {"*": 1}}})
    rc = main(["--format", "consep_tiles", "--input", str(tmp_path / "raw"), "--output", str(tmp_path / "out"),
               "--class-map", str(cmap), "--no-progress", "--ratios", "0.6", "0.2", "0.2", "--seed", "3"])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0 and "images" in text and "objects per type" in text and "x " in text
    assert json.loads((tmp_path / "out" / "dataset.json").read_text(encoding="utf-8"))["instance_types"] == {
        "0": "bg",
        "1": "x",
    }
    rc = main(["--format", "consep_tiles", "--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o2")])
    assert rc == 1 and "nowhere" in capsys.readouterr().err
    rc = main(["--format", "consep_tiles", "--input", str(tmp_path / "raw"), "--output", str(tmp_path / "out")])
    assert rc == 2 and "not empty" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--format", "nope", "--input", "a", "--output", "b"])


def test_assign_splits_and_option_errors(tmp_path):
    make_glas(tmp_path / "raw")
    reader = FORMATS["glas"](tmp_path / "raw")
    cases = reader.discover()
    s = assign_splits(cases, method="official", ratios=(1, 0, 0), official_subsets=reader.official_subsets)
    assert s == {"testA_1": "test", "testB_1": "test", "train_1": "training", "train_2": "training"}
    with pytest.raises(ValueError, match="ratios"):
        assign_splits(cases, ratios=(1, -1, 0))
    with pytest.raises(ValueError, match="ratios"):
        assign_splits(cases, ratios=(1, 0))
    with pytest.raises(ValueError, match="split"):
        assign_splits(cases, method="random")
    for kwargs, match in (
        ({"derive_sem": "all"}, "derive_sem"),
        ({"gland_types": "x"}, "gland_types"),
        ({"group_regex": "("}, "group_regex"),
        ({"mpp": -1.0}, "mpp"),
        ({"class_map": {"tissue": {}}}, "unknown sections"),
    ):
        with pytest.raises(ValueError, match=match):
            prepare_dataset("glas", tmp_path / "raw", tmp_path / "o", progress=False, **kwargs)
    with pytest.raises(ValueError, match="format"):
        prepare_dataset("tiff", tmp_path / "raw", tmp_path / "o")


def test_class_map_parsing():
    cm = ClassMap.from_json(
        {"classes": {"0": "bg", "1": "a"}, "map": {"Nuclei_Plasma-Cell": 1}}, what="instance", by_name=True
    )
    assert cm.target("plasma cell", "f") == 1 and normalize_class_name("tissue_white_background") == "white_background"
    with pytest.raises(InputFileError, match="unknown class 'x'"):
        cm.target("x", "f.geojson")
    for bad, match in (
        ({"classes": {"1": "a"}, "map": {}}, "class 0"),
        ({"classes": {"0": "bg"}, "map": {"a": 2}}, "target"),
        ({"classes": {"0": "bg"}}, "required"),
        ({"map": {}}, "classes"),
    ):
        with pytest.raises(ValueError, match=match):
            ClassMap.from_json(bad, what="instance", by_name=True)


# ------------------------------------------------------------------------------------------ empty annotations


@pytest.mark.parametrize("kind", ["nuclei", "tissue"])
def test_puma_empty_geojson_is_refused_unless_allowed(tmp_path, kind, caplog):
    cases = ("roi_001", "roi_002")
    make_puma(tmp_path / "raw", cases=cases)
    empty = next((tmp_path / "raw").rglob(f"roi_002_{kind}.geojson"))
    write_json(empty, {"type": "FeatureCollection", "features": []})
    with pytest.raises(InputFileError, match="annotation is empty.*allow-empty") as err:
        prepare_dataset("puma", tmp_path / "raw", tmp_path / "out", progress=False)
    assert err.value.path == str(empty)
    assert not (tmp_path / "out").exists() and no_leftovers(tmp_path)
    with caplog.at_level("WARNING", logger="coseg.histo.formats"):
        info = prepare_dataset("puma", tmp_path / "raw", tmp_path / "out", allow_empty=True, progress=False)
    assert str(empty) in caplog.text and "allow_empty" in caplog.text
    stats = info["statistics"]
    assert info["allow_empty"] is True
    if kind == "nuclei":
        assert stats["images_without_objects"] == 1 and stats["images_without_regions"] == 0
        assert sum(stats["objects_per_type"].values()) == 7  # the other ROI's nuclei
    else:
        assert stats["images_without_objects"] == 0 and stats["images_without_regions"] == 1
    item = all_items(tmp_path / "out")["roi_002"]
    label = load(tmp_path / "out", item, "label_inst" if kind == "nuclei" else "label_sem")
    assert not label.any()


def test_empty_counts_in_the_cli_summary(tmp_path, capsys):
    make_puma(tmp_path / "raw", cases=("roi_001", "roi_002"))
    write_json(next((tmp_path / "raw").rglob("roi_001_nuclei.geojson")), [])
    argv = ["--format", "puma", "--input", str(tmp_path / "raw"), "--no-progress", "--ratios", "1", "0", "0"]
    assert main(argv + ["--output", str(tmp_path / "refused")]) == 1
    assert "annotation is empty" in capsys.readouterr().err and not (tmp_path / "refused").exists()
    assert main(argv + ["--output", str(tmp_path / "out"), "--allow-empty"]) == 0
    assert "empty labels: 1 without objects" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["glas", "crag"])
def test_gland_map_without_glands_is_refused_unless_allowed(tmp_path, fmt):
    if fmt == "glas":
        make_glas(tmp_path / "raw")
        blank = tmp_path / "raw" / "train_2_anno.bmp"
        Image.fromarray(np.zeros((10, 12), np.uint8)).save(blank)
    else:
        make_crag(tmp_path / "raw")
        blank = tmp_path / "raw" / "CRAG" / "TRAIN" / "Annotation" / "train_2.png"
        Image.fromarray(np.zeros((8, 9), np.uint16)).save(blank)
    with pytest.raises(InputFileError, match="no gland is annotated") as err:
        prepare_dataset(fmt, tmp_path / "raw", tmp_path / "out", progress=False)
    assert err.value.path == str(blank)
    info = prepare_dataset(fmt, tmp_path / "raw", tmp_path / "out", allow_empty=True, progress=False)
    assert info["statistics"]["images_without_objects"] == 1


def test_tiles_without_objects_are_accepted_and_counted(tmp_path):
    make_tiles(tmp_path / "raw")
    for sub in ("inst", "type"):
        Image.fromarray(np.zeros((12, 12), np.uint8)).save(tmp_path / "raw" / sub / "train_2_000.png")
    info = prepare_dataset("consep_tiles", tmp_path / "raw", tmp_path / "out", progress=False)
    assert info["statistics"]["images_without_objects"] == 1
    assert info["statistics"]["images_without_regions"] == 1  # derived foreground map


# ------------------------------------------------------------------------------- splits, modes, killed runs


def test_empty_split_is_warned_about(tmp_path, caplog):
    make_glas(tmp_path / "raw")  # 3 patients
    with caplog.at_level("WARNING", logger="coseg.histo.prepare"):
        prepare_dataset("glas", tmp_path / "raw", tmp_path / "ok", ratios=(0.5, 0.25, 0.25), progress=False)
    assert "empty" not in caplog.text
    with caplog.at_level("WARNING", logger="coseg.histo.prepare"):
        prepare_dataset("glas", tmp_path / "raw", tmp_path / "out", group_regex=r"^(t)", progress=False)
    assert "validation and test split(s) will be empty" in caplog.text  # one group fills one subset


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_prepared_dataset_gets_the_umask_modes(tmp_path, mask):
    make_tiles(tmp_path / "raw")
    old = os.umask(mask)
    try:
        prepare_dataset("consep_tiles", tmp_path / "raw", tmp_path / "out", progress=False)
    finally:
        os.umask(old)
    out = tmp_path / "out"
    paths = [out, *out.rglob("*")]
    assert len(paths) > 10
    for p in paths:
        want = (0o777 if p.is_dir() else 0o666) & ~mask
        assert stat.S_IMODE(p.stat().st_mode) == want, p


def test_killed_run_leaves_no_dataset_and_keeps_the_previous_one(tmp_path):
    make_tiles(tmp_path / "raw")
    out = tmp_path / "out"
    argv = ["--format", "consep_tiles", "--input", str(tmp_path / "raw"), "--output", str(out), "--no-progress"]
    kill_half_way(tmp_path, patch="coseg.histo.layout:write_label", after=3, cli_module="coseg.histo.prepare",
                  argv=argv)  # fmt: skip
    assert not out.exists()
    (partial,) = tmp_path.glob(".out.partial-*")  # the killed run's files stay hidden beside the output
    assert list(partial.rglob("*.png")) and not (partial / "datalist.json").exists()
    prepare_dataset("consep_tiles", tmp_path / "raw", out, progress=False)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    kill_half_way(tmp_path, patch="coseg.histo.layout:write_label", after=3, cli_module="coseg.histo.prepare",
                  argv=argv + ["--overwrite"])  # fmt: skip
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
