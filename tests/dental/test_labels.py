"""ToothFairy2 label names -> Co-Seg++ semantic classes, tooth instances (FDI) and types, mapped by name."""

from __future__ import annotations

import json

import numpy as np
import pytest

from coseg.dental.labels import (
    FDI_TEETH,
    INSTANCE_TYPES,
    SEMANTIC_CLASSES,
    TOOTHFAIRY2_LABELS,
    LabelTarget,
    build_label_map,
    fdi_type,
    normalize_label_name,
    parse_label_target,
    parse_tooth_name,
    read_dataset_json,
)
from coseg.errors import InputFileError

OFFICIAL = {v: k for k, v in TOOTHFAIRY2_LABELS.items()}


def test_official_label_table():
    assert len(TOOTHFAIRY2_LABELS) == 49  # background, 10 structures, 32 teeth, 6 placeholders
    assert TOOTHFAIRY2_LABELS["Lower Jawbone"] == 1 and TOOTHFAIRY2_LABELS["Pharynx"] == 7
    assert TOOTHFAIRY2_LABELS["Upper Right Third Molar (Wisdom Tooth)"] == 18
    assert TOOTHFAIRY2_LABELS["Lower Right Central Incisor"] == 41
    assert TOOTHFAIRY2_LABELS["NA1"] == 19 and TOOTHFAIRY2_LABELS["NA6"] == 40
    assert sorted(TOOTHFAIRY2_LABELS.values()) == list(range(49))
    assert SEMANTIC_CLASSES == {0: "background", 1: "lower jawbone", 2: "upper jawbone", 3: "pharynx"}
    assert INSTANCE_TYPES == {0: "background", 1: "upper teeth", 2: "lower teeth"}


@pytest.mark.parametrize(
    "name, fdi",
    [
        ("Upper Right Central Incisor", 11),
        ("Upper Right Third Molar (Wisdom Tooth)", 18),
        ("Upper Left Lateral Incisor", 22),
        ("Lower Left Third Molar (Wisdom Tooth)", 38),
        ("Lower Right Canine", 43),
        ("lower_right_first_premolar", 44),
        ("Maxillary left 2nd bicuspid", 25),
        ("mandibular right 1st molar", 46),
        ("Upper Left Cuspid", 23),
        ("Lower Left Wisdom Tooth", 38),
        ("Upper Right First Molar Fdi16", 16),
        ("Tooth_47", 47),
        ("Lower Jawbone", None),
        ("Left Maxillary Sinus", None),
        ("NA3", None),
    ],
)
def test_parse_tooth_name(name, fdi):
    assert parse_tooth_name(name) == fdi


def test_every_official_tooth_name_parses_to_its_id():
    for name, label_id in TOOTHFAIRY2_LABELS.items():
        expected = label_id if label_id in FDI_TEETH else None
        assert parse_tooth_name(name) == expected, name


@pytest.mark.parametrize(
    "name", ["Upper Canine", "Right First Molar", "Upper Lower Right Canine", "Upper Right Canine Fdi 24", "Tooth 19"]
)
def test_parse_tooth_name_rejects_contradictions(name):
    with pytest.raises(ValueError):
        parse_tooth_name(name)


def test_normalize_and_types():
    assert normalize_label_name("Lower Left Third Molar (Wisdom Tooth)") == "lower left third molar wisdom tooth"
    assert [fdi_type(f) for f in (11, 28, 31, 48)] == [1, 1, 2, 2]
    with pytest.raises(ValueError):
        fdi_type(19)


@pytest.mark.parametrize(
    "value, target",
    [
        ("background", LabelTarget("background")),
        ("Mandible", LabelTarget("region", 1)),
        ("upper jawbone", LabelTarget("region", 2)),
        ("pharynx", LabelTarget("region", 3)),
        (16, LabelTarget("tooth", 16)),
        ("Upper Right First Molar", LabelTarget("tooth", 16)),
        ("attach", LabelTarget("attach")),
    ],
)
def test_parse_label_target(value, target):
    assert parse_label_target(value) == target


@pytest.mark.parametrize("value, error", [("jaw", ValueError), (19, ValueError), (1.5, TypeError), (True, TypeError)])
def test_parse_label_target_rejects(value, error):
    with pytest.raises(error):
        parse_label_target(value)


def _dataset_json(tmp_path, labels, name="dataset.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"labels": labels}), encoding="utf-8")
    return path


def test_read_dataset_json_v1_and_v2(tmp_path):
    v2 = _dataset_json(tmp_path, {"background": 0, "Lower Jawbone": "1", "Pharynx": 7}, "v2.json")
    v1 = _dataset_json(tmp_path, {"0": "background", "1": "Lower Jawbone", "7": "Pharynx"}, "v1.json")
    assert read_dataset_json(v2) == read_dataset_json(v1) == {0: "background", 1: "Lower Jawbone", 7: "Pharynx"}


@pytest.mark.parametrize(
    "content, problem",
    [
        ("not json", "JSON"),
        (json.dumps({"name": "x"}), "labels"),
        (json.dumps({"labels": {"background": 0, "Teeth": [11, 12]}}), "region"),
        (json.dumps({"labels": {"background": 0, "Pharynx": -1}}), "non-negative"),
        (json.dumps({"labels": {"background": 0, "Pharynx": 1, "Lower Jawbone": 1}}), "used by both"),
        (json.dumps({"labels": {"background": 0, "Pharynx": 1, "pharynx": 2}}), "same name"),
    ],
)
def test_read_dataset_json_bad_files(tmp_path, content, problem):
    path = tmp_path / "dataset.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputFileError, match=problem) as info:
        read_dataset_json(path)
    assert info.value.path == str(path)


def test_missing_dataset_json(tmp_path):
    with pytest.raises(InputFileError, match="missing"):
        read_dataset_json(tmp_path / "dataset.json")


def _tiny_label() -> np.ndarray:
    """(2, 3, 4) ToothFairy2 ids with every kind of structure."""
    return np.array(
        [
            [[0, 1, 1, 2], [7, 7, 3, 5], [11, 21, 31, 48]],
            [[9, 9, 0, 10], [8, 19, 0, 0], [11, 11, 36, 36]],
        ],
        dtype=np.uint8,
    )


def test_apply_official_ids_hand_checked():
    sem, inst, types = build_label_map(OFFICIAL).apply(_tiny_label())
    np.testing.assert_array_equal(sem[0], [[0, 1, 1, 2], [3, 3, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(inst[0], [[0, 0, 0, 0], [0, 0, 0, 0], [11, 21, 31, 48]])
    np.testing.assert_array_equal(types[0], [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 2, 2]])
    assert not sem[1].any()  # crown, implant, bridge, placeholder -> background
    np.testing.assert_array_equal(inst[1], [[0, 0, 0, 0], [0, 0, 0, 0], [11, 11, 36, 36]])
    assert sem.dtype == np.uint8 and inst.dtype == np.uint16 and types.dtype == np.uint8


def test_reindexed_dataset_maps_by_name(tmp_path):
    rng = np.random.default_rng(3)
    ids = np.arange(1, 49)
    permuted = rng.permutation(ids)
    lut = np.zeros(49, dtype=np.uint8)
    lut[ids] = permuted
    names = {name: int(lut[i]) for name, i in TOOTHFAIRY2_LABELS.items()}
    path = _dataset_json(tmp_path, names)
    label = _tiny_label()
    reference = build_label_map(OFFICIAL).apply(label)
    remapped = build_label_map(path).apply(lut[label])
    for a, b in zip(reference, remapped):
        np.testing.assert_array_equal(a, b)


def test_overrides_send_structures_elsewhere():
    label_map = build_label_map(OFFICIAL, overrides={"Bridge": "upper jawbone", "implant": 26, "NA1": "pharynx"})
    sem, inst, _ = label_map.apply(_tiny_label())
    assert sem[1, 1, 0] == 2 and sem[1, 1, 1] == 3
    assert inst[1, 0, 3] == 26
    assert label_map.describe()["Bridge"] == "upper jawbone"
    with pytest.raises(ValueError, match="names no label"):
        build_label_map(OFFICIAL, overrides={"Tongue": "background"})
    merged = build_label_map(OFFICIAL, overrides={"Crown": 11}).apply(_tiny_label())[1]
    np.testing.assert_array_equal(merged[1, 0], [11, 11, 0, 0])


def test_attach_joins_the_touching_tooth():
    label = np.zeros((1, 5, 9), dtype=np.uint8)
    label[0, 1:4, 0:3] = 16  # tooth 16
    label[0, 1:4, 3] = 9  # crown touching 16
    label[0, 1:4, 6:8] = 26  # tooth 26
    label[0, 0, 5] = 9  # crown piece touching nothing
    sem, inst, types = build_label_map(OFFICIAL, overrides={"Crown": "attach"}).apply(label)
    np.testing.assert_array_equal(inst[0, 1:4, 3], [16, 16, 16])
    assert inst[0, 0, 5] == 0 and not sem.any()
    assert types[0, 2, 3] == 1


def test_unknown_names(tmp_path):
    labels = {**{n: i for n, i in TOOTHFAIRY2_LABELS.items() if i < 11}, "Tongue": 11}
    path = _dataset_json(tmp_path, labels)
    with pytest.raises(InputFileError, match="Tongue") as info:
        build_label_map(path)
    assert info.value.path == str(path)
    label_map = build_label_map(path, unknown="background")
    assert label_map.targets[11] == LabelTarget("background")
    with pytest.raises(ValueError):
        build_label_map(path, unknown="ignore")


def test_ids_missing_from_dataset_json_are_errors():
    label_map = build_label_map({0: "background", 1: "Lower Jawbone"})
    with pytest.raises(InputFileError, match=r"\[7\]") as info:
        label_map.apply(np.array([[[0, 1, 7]]], dtype=np.uint8), path="case.mha")
    assert info.value.path == "case.mha"


def test_duplicate_teeth_rejected():
    with pytest.raises(ValueError, match="same tooth"):
        build_label_map({0: "background", 1: "Upper Right Canine", 2: "Tooth 13"})
