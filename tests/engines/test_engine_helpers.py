"""Small engine helpers: validation metric names, bundle lookup, datalists, post-processing transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor
from PIL import Image

from coseg.data.label_codec import decode_class_map
from coseg.engines.config import find_bundle_root
from coseg.engines.metrics import validation_metrics
from coseg.histo.datalist import image_datalist
from coseg.keys import DataKeys, OutputKeys
from coseg.postprocess.synthetic import perfect_outputs, random_ellipse_instances
from coseg.postprocess.transforms import CoSegPostProcessd, PredKeys


def test_validation_metric_names_and_parts():
    sem = {0: "background", 1: "tumour", 2: "stroma"}
    types = {0: "background", 1: "tumour", 2: "TIL"}
    everything = validation_metrics(sem_classes=sem, inst_types=types)
    assert "val_mpq" in everything and "val_sem_stroma_hd" in everything and "val_inst_til_aji" in everything
    key = validation_metrics(sem_classes=sem, inst_types=types, part="key")
    rest = validation_metrics(sem_classes=sem, inst_types=types, part="additional")
    assert list(key) == ["val_mpq"] and "val_mpq" not in rest and len(rest) == len(everything) - 1
    assert "val_mean_hd" not in validation_metrics(sem_classes=sem, inst_types=types, hausdorff=False)
    with pytest.raises(ValueError, match="unknown key metric"):
        validation_metrics(sem_classes=sem, inst_types=types, key="nope")


def test_bundle_root_is_found_from_anywhere(tmp_path, monkeypatch, repo_root):
    monkeypatch.chdir(tmp_path)
    assert find_bundle_root("coseg_histo") == str(repo_root / "bundles" / "coseg_histo")
    with pytest.raises(FileNotFoundError, match="--bundle_root"):
        find_bundle_root("no_such_bundle")


def test_image_datalist(tmp_path):
    for name in ("b.png", "a.jpg", ".hidden.png", "notes.txt"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / name) if name.endswith(("png", "jpg")) else (
            tmp_path / name
        ).write_text("x", encoding="utf-8")
    items = image_datalist(tmp_path)
    assert [i["image"].split("/")[-1] for i in items] == ["a.jpg", "b.png"]
    assert image_datalist(tmp_path / "a.jpg") == [{"image": str((tmp_path / "a.jpg").resolve())}]
    with pytest.raises(FileNotFoundError, match="no such image"):
        image_datalist(tmp_path / "missing.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        image_datalist(empty)


def test_postprocess_transform_writes_maps_and_the_class_map():
    inst = random_ellipse_instances((96, 96), 12, radius_range=(4, 7), seed=1)
    types = np.where(inst > 0, 1 + inst % 2, 0)
    out = perfect_outputs(inst, types, num_types=3)
    sem = np.zeros((3, 96, 96), np.float32)
    sem[1, :, :48], sem[2, :, 48:] = 5.0, 5.0
    item = {
        DataKeys.IMAGE: MetaTensor(torch.zeros(3, 96, 96), meta={"filename_or_obj": "/x/img.png"}),
        OutputKeys.SEM_LOGITS: torch.from_numpy(sem),
        OutputKeys.INST_BINARY: torch.as_tensor(out[OutputKeys.INST_BINARY]),
        OutputKeys.INST_HV: torch.as_tensor(out[OutputKeys.INST_HV]),
        OutputKeys.INST_TYPE: torch.as_tensor(out[OutputKeys.INST_TYPE]),
        DataKeys.LABEL: {
            DataKeys.LABEL_INST: torch.from_numpy(inst)[None],
            DataKeys.LABEL_TYPE: torch.from_numpy(types)[None],
        },
    }
    res = CoSegPostProcessd(num_sem_classes=3)(item)
    assert res[PredKeys.SEM].shape == (1, 96, 96) and res[PredKeys.SEM].meta["filename_or_obj"] == "/x/img.png"
    assert int(res[PredKeys.INST].max()) == len(res[PredKeys.INSTANCES])
    assert res[PredKeys.PANOPTIC].shape == (2, 96, 96) and res[PredKeys.GT_PANOPTIC].shape == (2, 96, 96)
    assert OutputKeys.SEM_LOGITS not in res  # raw outputs dropped
    s, i, t = decode_class_map(np.asarray(res[DataKeys.PRED][0]), 3, 3)
    assert set(np.unique(s)) == {1, 2} and set(np.unique(t)) <= {0, 1, 2}
    assert abs(int(i.max()) - len(res[PredKeys.INSTANCES])) <= 1
    # the settings come as one object (the config's @watershed), never as loose keyword arguments
    with pytest.raises(TypeError, match="WatershedParams"):
        CoSegPostProcessd(num_sem_classes=3, watershed={"sobel_kernel_size": 21})


def test_instances_typed_background_do_not_break_the_class_map():
    """An instance whose pixels all vote "background" keeps type 0: it stays an instance but not a class-map object."""
    inst = random_ellipse_instances((64, 64), 4, radius_range=(5, 7), seed=2)
    out = perfect_outputs(inst, np.where(inst > 0, 1, 0), num_types=2)
    types = np.zeros_like(out[OutputKeys.INST_TYPE])
    types[0] = 10.0  # every pixel votes background
    item = {
        DataKeys.IMAGE: MetaTensor(torch.zeros(3, 64, 64)),
        OutputKeys.SEM_LOGITS: torch.zeros(2, 64, 64),
        OutputKeys.INST_BINARY: torch.as_tensor(out[OutputKeys.INST_BINARY]),
        OutputKeys.INST_HV: torch.as_tensor(out[OutputKeys.INST_HV]),
        OutputKeys.INST_TYPE: torch.as_tensor(types),
    }
    res = CoSegPostProcessd(num_sem_classes=2)(item)
    assert int(res[PredKeys.INST].max()) > 0 and int(res[PredKeys.TYPE].max()) == 0
    assert int(res[DataKeys.PRED].max()) == 0


@pytest.mark.parametrize(
    "bundle, config, item",
    [
        ("coseg_histo", "train.json", "validate#postprocessing"),
        ("coseg_histo", "inference.json", "postprocessing"),
        ("coseg_cbct", "train.json", "validate#postprocessing"),
        ("coseg_cbct", "inference.json", "inferer"),
    ],
)
def test_bundle_watershed_keys_reach_the_post_processing(bundle, config, item):
    """``magnification``, ``object_scale``, ``keep_unmarked`` and ``watershed_normalisation`` of the
    real configs set the watershed."""
    from monai.bundle import ConfigParser

    from coseg.postprocess import watershed_settings

    from ..conftest import REPO_ROOT

    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "bundles" / bundle / "configs" / config))
    # histology tiles large images, so its default is context-free; CBCT post-processes whole slices
    assert parser.get_parsed_content("watershed_normalisation") == ("fixed" if bundle == "coseg_histo" else "image")
    parser.update({"magnification": 20, "object_scale": 4.0, "keep_unmarked": True, "watershed_normalisation": "image"})
    built = parser.get_parsed_content(item)
    transforms = getattr(built, "transforms", [built])
    (post,) = [t for t in transforms if hasattr(t, "watershed")]
    expected = watershed_settings(magnification=20, object_scale=4.0, keep_unmarked=True, normalisation="image")
    assert post.watershed == expected


def test_validation_hd_leaves_out_classes_missing_from_a_prediction_and_counts_them():
    # image 0: class 2 is in the GT but not predicted (HD undefined, Dice 0); image 1: both classes on both sides
    gt0 = np.zeros((1, 12, 12), np.int64)
    gt0[0, 2:5, 2:5], gt0[0, 7:10, 7:10] = 1, 2
    pred0 = np.zeros_like(gt0)
    pred0[0, 2:5, 2:6] = 1  # one column too wide: HD 1
    gt1 = gt0.copy()
    pred1 = gt1.copy()
    pred1[0, 7:10, 7:11] = 2  # HD 1 for class 2, 0 for class 1
    items = [
        {PredKeys.SEM: torch.from_numpy(p), PredKeys.GT_SEM: torch.from_numpy(g)}
        for p, g in ((pred0, gt0), (pred1, gt1))
    ]
    handlers = validation_metrics(sem_classes={0: "background", 1: "a", 2: "b"}, inst_types={0: "bg", 1: "x"})
    wanted = ("val_mean_hd", "val_hd_undefined", "val_sem_b_hd", "val_sem_b_dice", "val_mean_dice")
    engine = Engine(lambda e, batch: batch)
    for name in wanted:
        handlers[name].attach(engine, name)
    engine.run([items], max_epochs=1)
    m = engine.state.metrics
    # per class over the images where it is defined, then over classes: class 1 (1 + 0) / 2, class 2: 1
    assert m["val_mean_hd"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["val_sem_b_hd"] == pytest.approx(1.0)
    assert m["val_hd_undefined"] == 1
    assert m["val_sem_b_dice"] == pytest.approx((0.0 + 2 * 9 / 21) / 2)  # the missed class still costs Dice
