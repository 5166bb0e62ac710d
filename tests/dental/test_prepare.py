"""Phantom dataset -> prepare_cbct: patient-wise split, slice files, labels, mapping by name, bad cases, CLI."""

from __future__ import annotations

import json
import os
import stat

import cv2
import numpy as np
import pytest
import SimpleITK as sitk

from coseg.dental.geometry import SliceGeometry, make_model_slices
from coseg.dental.labels import FDI_TEETH, TOOTHFAIRY2_LABELS, build_label_map
from coseg.dental.prepare import main, prepare_cbct
from coseg.dental.synthetic import write_toothfairy2_like
from coseg.dental.volumes import find_toothfairy2_cases, read_case
from coseg.errors import InputFileError
from tests.killing import kill_half_way

SHAPE = (24, 40, 40)
SIZE = 48


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_toothfairy2_like(tmp_path_factory.mktemp("raw") / "tf2", num_cases=10, shape=SHAPE, seed=0)


@pytest.fixture(scope="module")
def prepared(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    datalist = prepare_cbct(dataset, out, size=SIZE, progress=False)
    return out, datalist


def _read(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_split_is_by_patient(prepared):
    _, datalist = prepared
    cases = {key: {item["case"] for item in datalist[key]} for key in ("training", "validation", "test")}
    assert [len(cases[k]) for k in ("training", "validation", "test")] == [7, 1, 2]
    assert not (cases["training"] & cases["validation"] or cases["training"] & cases["test"])
    assert not cases["validation"] & cases["test"]
    for key in cases:
        assert all(item["group"] == item["case"] for item in datalist[key])


def test_every_slice_written_with_its_labels(prepared, dataset):
    out, datalist = prepared
    items = datalist["training"] + datalist["validation"] + datalist["test"]
    assert len(items) == 10 * SHAPE[0]  # axial: one slice per superior-inferior position, none skipped
    label_map = build_label_map(dataset / "dataset.json")
    case = find_toothfairy2_cases(dataset)[3]
    image, label = read_case(case)
    sem, inst, types = label_map.apply(label.array, tooth_types="fdi")  # type slices: one class per FDI number
    geometry = SliceGeometry.from_dict(datalist["cases"][case.case_id]["geometry"])
    assert geometry.canonical_shape == (SHAPE[0], SHAPE[1], SHAPE[2]) and geometry.size == SIZE
    by_slice = {it["slice"]: it for it in items if it["case"] == case.case_id}
    assert sorted(by_slice) == list(range(SHAPE[0]))
    expected_images = make_model_slices(image.array, geometry, window=(-1000, 4000))
    for n in (5, 12, 20):
        item = by_slice[n]
        rgb = _read(out / item["image"])[..., ::-1]
        assert rgb.shape == (SIZE, SIZE, 3) and rgb.dtype == np.uint8
        np.testing.assert_array_equal(rgb, expected_images[n])
        for key, volume, dtype in (
            ("label_sem", sem, np.uint8),
            ("label_inst", inst, np.uint16),
            ("label_type", types, np.uint8),
        ):
            stored = _read(out / item[key])
            assert stored.dtype == dtype
            np.testing.assert_array_equal(stored, geometry.to_model(volume, kind="label")[n])
    teeth = set()
    for item in by_slice.values():
        teeth |= set(np.unique(_read(out / item["label_inst"])).tolist())
    assert teeth - {0} == set(np.unique(inst).tolist()) - {0}  # instance ids are FDI numbers


def test_dataset_json(prepared):
    out, _ = prepared
    dataset = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert dataset["semantic_classes"] == {
        "0": "background",
        "1": "lower jawbone",
        "2": "upper jawbone",
        "3": "pharynx",
    }
    assert dataset["tooth_types"] == "fdi"
    teeth = {str(k): f"tooth {fdi}" for k, fdi in enumerate(FDI_TEETH, start=1)}
    assert dataset["instance_types"] == {"0": "background", **teeth}
    assert dataset["label_mapping"]["Lower Right Third Molar (Wisdom Tooth)"] == 48
    assert dataset["label_mapping"]["Crown"] == "background"
    assert dataset["slicing"]["axis"] == "axial" and dataset["slicing"]["size"] == SIZE


def test_reindexed_copy_gives_identical_slices(tmp_path, prepared):
    out, datalist = prepared
    permuted = write_toothfairy2_like(tmp_path / "perm", num_cases=10, shape=SHAPE, seed=0, reindex=True)
    out2 = tmp_path / "out2"
    datalist2 = prepare_cbct(permuted, out2, size=SIZE, progress=False)
    assert [it["image"] for it in datalist2["test"]] == [it["image"] for it in datalist["test"]]
    for item in datalist["test"][::7]:
        for key in ("image", "label_sem", "label_inst", "label_type"):
            assert (out / item[key]).read_bytes() == (out2 / item[key]).read_bytes()


def test_skip_empty_adjacent_and_coronal(tmp_path, dataset):
    out = tmp_path / "out"
    datalist = prepare_cbct(
        dataset, out, size=SIZE, skip_empty=True, channels="adjacent", axis="coronal", seed=1, progress=False
    )
    items = datalist["training"] + datalist["validation"] + datalist["test"]
    case = find_toothfairy2_cases(dataset)[0]
    _, label = read_case(case)
    label_map = build_label_map(dataset / "dataset.json")
    sem, inst, _ = label_map.apply(label.array)
    geometry = SliceGeometry.from_dict(datalist["cases"][case.case_id]["geometry"])
    assert geometry.num_slices == SHAPE[1]  # coronal: one slice per anterior-posterior position
    foreground = geometry.to_canonical((sem > 0) | (inst > 0)).reshape(geometry.num_slices, -1).any(axis=1)
    written = sorted(it["slice"] for it in items if it["case"] == case.case_id)
    assert written == np.flatnonzero(foreground).tolist() and len(written) < geometry.num_slices
    middle = [
        it for it in items if it["case"] == case.case_id and it["slice"] - 1 in written and it["slice"] + 1 in written
    ]
    this = _read(out / middle[0]["image"])[..., ::-1]
    before = _read(out / f"images/{case.case_id}_coronal_{middle[0]['slice'] - 1:04d}.png")[..., ::-1]
    np.testing.assert_array_equal(this[..., 0], before[..., 1])  # R = previous slice, G = this slice


def test_label_map_override_from_cli(tmp_path, dataset):
    out = tmp_path / "out"
    overrides = json.dumps({"Left Maxillary Sinus": "upper jawbone", "Right Maxillary Sinus": "upper jawbone"})
    assert main(["--input", str(dataset), "--output", str(out), "--size", str(SIZE), "--label-map", overrides]) == 0
    datalist = json.loads((out / "datalist.json").read_text(encoding="utf-8"))
    case = find_toothfairy2_cases(dataset)[0]
    _, label = read_case(case)
    geometry = SliceGeometry.from_dict(datalist["cases"][case.case_id]["geometry"])
    sinus = geometry.to_model(np.isin(label.array, [TOOTHFAIRY2_LABELS["Left Maxillary Sinus"]]), kind="label")
    n = int(np.argmax(sinus.reshape(len(sinus), -1).sum(axis=1)))
    sem = _read(out / f"labels_sem/{case.case_id}_axial_{n:04d}.png")
    assert (sem[sinus[n]] == 2).all()


def _broken_copy(dataset, tmp_path):
    broken = write_toothfairy2_like(tmp_path / "broken", num_cases=4, shape=SHAPE, seed=0)
    bad_label = broken / "labelsTr" / "ToothFairy2F_002.mha"
    sitk.WriteImage(sitk.Image(10, 10, 10, sitk.sitkUInt8) + 1, str(bad_label))
    return broken, bad_label


def test_bad_case_stops_without_a_datalist(tmp_path, dataset):
    broken, bad_label = _broken_copy(dataset, tmp_path)
    out = tmp_path / "out"
    with pytest.raises(InputFileError, match="label shape") as info:
        prepare_cbct(broken, out, size=SIZE, progress=False)
    assert info.value.path == str(bad_label)
    # the slices of the good case before it are not left behind either: no output folder at all
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["broken"]


def test_bad_case_can_be_skipped(tmp_path, dataset):
    broken, bad_label = _broken_copy(dataset, tmp_path)
    datalist = prepare_cbct(broken, tmp_path / "out", size=SIZE, on_bad_case="skip", progress=False)
    assert list(datalist["skipped_cases"]) == ["ToothFairy2F_002"]
    assert str(bad_label) in datalist["skipped_cases"]["ToothFairy2F_002"]
    assert "ToothFairy2F_002" not in {it["case"] for key in ("training", "validation", "test") for it in datalist[key]}


def test_skipped_cases_that_empty_a_split_are_warned_about(tmp_path, caplog):
    raw = write_toothfairy2_like(tmp_path / "raw", num_cases=2, shape=SHAPE, seed=0)
    sitk.WriteImage(sitk.Image(10, 10, 10, sitk.sitkUInt8) + 1, str(raw / "labelsTr" / "ToothFairy2F_001.mha"))
    with caplog.at_level("WARNING", logger="coseg.dental.prepare"):
        datalist = prepare_cbct(raw, tmp_path / "out", size=SIZE, on_bad_case="skip", progress=False)
    assert datalist["empty_splits"] == ["validation", "test"]
    assert "validation and test split(s) are empty" in caplog.text and "1 skipped" in caplog.text
    assert json.loads((tmp_path / "out" / "datalist.json").read_text(encoding="utf-8"))["empty_splits"] == [
        "validation",
        "test",
    ]


def test_non_empty_output_needs_overwrite_and_is_replaced_whole(tmp_path, dataset, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "images").mkdir()
    (out / "images" / "stale_axial_0000.png").write_bytes(b"old run")  # no datalist.json: an interrupted old run
    assert main(["--input", str(dataset), "--output", str(out), "--size", str(SIZE)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["--input", str(dataset), "--output", str(out), "--size", str(SIZE), "--overwrite"]) == 0
    assert not (out / "images" / "stale_axial_0000.png").exists() and (out / "datalist.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_prepared_slices_get_the_umask_modes(tmp_path, mask):
    raw = write_toothfairy2_like(tmp_path / "raw", num_cases=1, shape=SHAPE, seed=0)
    old = os.umask(mask)
    try:
        prepare_cbct(raw, tmp_path / "out", size=SIZE, ratios=(1, 0, 0), progress=False)
    finally:
        os.umask(old)
    paths = [tmp_path / "out", *(tmp_path / "out").rglob("*")]
    assert len(paths) > 4 * SHAPE[0]
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == (0o777 if p.is_dir() else 0o666) & ~mask, p


def test_killed_run_leaves_no_dataset(tmp_path):
    raw = write_toothfairy2_like(tmp_path / "raw", num_cases=3, shape=SHAPE, seed=0)
    out = tmp_path / "out"
    argv = ["--input", str(raw), "--output", str(out), "--size", str(SIZE)]
    # killed in the second case, after the first case's slices were written
    kill_half_way(tmp_path, patch="coseg.dental.prepare:write_png", after=4 * SHAPE[0] + 2,
                  cli_module="coseg.dental.prepare", argv=argv)  # fmt: skip
    assert not out.exists()
    (partial,) = tmp_path.glob(".out.partial-*")
    assert len(list(partial.rglob("*.png"))) == 4 * SHAPE[0] + 2 and not (partial / "datalist.json").exists()
    assert main(argv) == 0  # a rerun needs no --overwrite: nothing is under the output name
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    kill_half_way(tmp_path, patch="coseg.dental.prepare:write_png", after=3, cli_module="coseg.dental.prepare",
                  argv=argv + ["--overwrite"])  # fmt: skip
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_cli_errors_and_overwrite(tmp_path, dataset, prepared, capsys):
    out, _ = prepared
    assert main(["--input", str(dataset), "--output", str(out)]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert main(["--input", str(tmp_path / "missing"), "--output", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["--input", str(tmp_path / "empty"), "--output", str(tmp_path / "o")]) == 2
    assert "imagesTr" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--input", str(dataset), "--output", str(tmp_path / "o"), "--axis", "oblique"])


def test_unknown_label_names(tmp_path):
    root = write_toothfairy2_like(tmp_path / "tf2", num_cases=1, shape=SHAPE, seed=0)
    dataset = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    dataset["labels"]["Tongue"] = dataset["labels"].pop("Bridge")
    (root / "dataset.json").write_text(json.dumps(dataset), encoding="utf-8")
    with pytest.raises(InputFileError, match="Tongue"):
        prepare_cbct(root, tmp_path / "out", size=SIZE, progress=False)
    datalist = prepare_cbct(
        root, tmp_path / "out", size=SIZE, unknown_labels="background", ratios=(1, 0, 0), progress=False
    )
    assert len(datalist["training"]) == SHAPE[0]
