"""Settings that several config items need are built once per config and passed by reference.

The watershed settings: the top-level keys ``magnification``, ``object_scale``, ``keep_unmarked`` and
``watershed_normalisation`` (what users override on the command line) are read by the ``watershed`` item alone, and
every consumer receives that one object (``@watershed``). The class names: ``sem_classes`` / ``inst_types`` are
defined once per config file, the same in ``train.json`` and ``inference.json``, and only referenced elsewhere.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from monai.bundle import ConfigParser

from coseg.postprocess import WatershedParams, watershed_settings

from .conftest import REPO

WATERSHED_KEYS = ("magnification", "object_scale", "keep_unmarked", "watershed_normalisation")


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield from _walk(value, f"{path}#{key}" if path else str(key))


def _config(bundle: str, name: str) -> dict:
    return json.loads((REPO / "bundles" / bundle / "configs" / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    "bundle, name, consumers",
    [
        ("coseg_histo", "train.json", ["validate#postprocessing#transforms#1"]),
        ("coseg_histo", "inference.json", ["postprocessing#transforms#1", "wsi_inferer"]),
        ("coseg_cbct", "train.json", ["validate#postprocessing#transforms#1"]),
        ("coseg_cbct", "inference.json", ["inferer"]),
    ],
)
def test_every_consumer_shares_the_one_watershed_object(bundle, name, consumers):
    config = _config(bundle, name)
    # only the watershed item reads the four top-level keys; consumers name nothing but "@watershed"
    readers = {
        path.split("#")[0]
        for path, value in _walk(config)
        if isinstance(value, str) and any(f"@{key}" in value for key in WATERSHED_KEYS)
    }
    assert readers == {"watershed"}
    assert config["watershed"]["_target_"] == "coseg.postprocess.watershed_settings"
    for consumer in consumers:
        raw = config
        for part in consumer.split("#"):
            raw = raw[int(part)] if isinstance(raw, list) else raw[part]
        assert raw["watershed"] == "@watershed" and not set(raw) & {*WATERSHED_KEYS, "normalisation", "mpp"}

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / name))
    # what `--magnification 20 --object_scale 4 ...` on the command line does
    overrides = {"magnification": 20, "object_scale": 4.0, "keep_unmarked": True, "watershed_normalisation": "image"}
    parser.update({"model_preset": "micro", **overrides})
    shared = parser.get_parsed_content("watershed")
    assert isinstance(shared, WatershedParams)
    assert shared == watershed_settings(magnification=20, object_scale=4.0, keep_unmarked=True, normalisation="image")
    assert shared.mpp == 0.5  # the resolution the whole-slide inferer works at by default
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for consumer in consumers:
            assert parser.get_parsed_content(consumer).watershed is shared


@pytest.mark.parametrize("bundle", ["coseg_histo", "coseg_cbct"])
def test_class_names_are_defined_once_and_agree_between_configs(bundle):
    train, inference = _config(bundle, "train.json"), _config(bundle, "inference.json")
    for key in ("sem_classes", "inst_types"):
        assert train[key] == inference[key], f"{bundle}: train.json and inference.json differ in {key}"
    for name, config in (("train.json", train), ("inference.json", inference)):
        # a literal name table (coseg_cbct derives inst_types from tooth_types with one expression)
        literal = [key for key in ("sem_classes", "inst_types") if isinstance(config[key], dict)]
        names = [config[key] for key in literal]
        copies = [path for path, value in _walk(config) if isinstance(value, dict) and value in names]
        assert copies == literal, f"{bundle}/{name}: class names repeated at {copies}"
        sizes = [path for path, value in _walk(config) if isinstance(value, str) and value.startswith("$len(@")]
        assert sorted(sizes) == ["num_inst_types", "num_sem_classes"]


@pytest.mark.parametrize(
    "base, multi, consumers",
    [
        (
            ["train.json"],
            "multi_gpu_train.json",
            {"train#dataset#tooth_types": "fdi", "validate#dataset#tooth_types": "fdi", "num_inst_types": 33},
        ),
        (
            ["inference.json", "evaluate.json"],
            "multi_gpu_evaluate.json",
            {"inferer#tooth_types": "fdi", "handlers#1#numbering": "learned", "handlers#2#numbering": "learned"},
        ),
    ],
)
def test_multi_gpu_configs_keep_the_tooth_types(base, multi, consumers):
    """coseg_cbct's multi-GPU configs define no tooth type setting of their own and keep every check of the configs
    they extend: ``tooth_types: "fdi"`` given once reaches the datasets, the network size and the numbering of a
    multi-GPU run exactly as of a single-process one."""
    keys = ("tooth_types", "inst_types", "num_inst_types", "tooth_numbering")
    overlay = _config("coseg_cbct", multi)
    defined = [path for path, _ in _walk(overlay) if path.split("#")[-1] in keys]
    assert defined == [], f"{multi} redefines {defined}"
    # "initialize" replaces the base list: the base's steps (check_tooth_types for training) must all be there
    base_steps = _config("coseg_cbct", base[0])["initialize"]
    assert [step for step in base_steps if step not in overlay["initialize"]] == []

    parser = ConfigParser()
    parser.read_config([str(REPO / "bundles" / "coseg_cbct" / "configs" / f) for f in (*base, multi)])
    parser.update({"tooth_types": "fdi", "model_preset": "micro", "patch_size": 64})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for item, expected in consumers.items():
            assert parser.get_parsed_content(item) == expected, item
