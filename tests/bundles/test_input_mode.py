"""``input_mode`` of coseg_histo through the real configs (ConfigWorkflow, micro model): ``"resize"`` (the paper's
1024² resizing) and ``"crop"`` (random crops, sliding window) on non-square images of several sizes, with every
prediction, metric and written file on each input's own grid."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import tifffile
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from PIL import Image

from coseg.constants import normalize
from coseg.histo.layout import HistoSample, LayoutWriter
from coseg.histo.synthetic import SYNTHETIC_INSTANCE_TYPES, SYNTHETIC_SEMANTIC_CLASSES, make_sample
from coseg.inferers import resize_images

from .conftest import micro_overrides

#: (height, width) per split: smaller and larger than the micro model's 64 px, none square but one
SIZES = {
    "training": [(72, 96), (120, 80), (50, 70)],
    "validation": [(90, 60)],
    "test": [(100, 130), (64, 48)],
}


@pytest.fixture(scope="module")
def sized_dataset(tmp_path_factory):
    """A prepared dataset of synthetic H&E crops of the sizes in :data:`SIZES`."""
    root = tmp_path_factory.mktemp("sized") / "data"
    info = {
        "format": "synthetic",
        "source": "coseg.histo.synthetic crops (test)",
        "semantic_classes": {str(k): v for k, v in SYNTHETIC_SEMANTIC_CLASSES.items()},
        "instance_types": {str(k): v for k, v in SYNTHETIC_INSTANCE_TYPES.items()},
        "semantic_labels": "annotation",
    }
    with LayoutWriter(root) as writer:
        for split, sizes in SIZES.items():
            for i, (h, w) in enumerate(sizes):
                d = make_sample(max(h, w), seed=10 * len(split) + i, nucleus_scale=1.0)
                name = f"{split}_{i}"
                crop = (slice(0, h), slice(0, w))
                sample = HistoSample(name, d["image"][crop], d["sem"][crop], d["inst"][crop], d["type"][crop], name)
                writer.add(sample, split, name)
        writer.finish(info, {"name": "sized"})
    return root


def _workflow(bundle, files, workflow_type, **overrides) -> ConfigWorkflow:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wf = ConfigWorkflow(
            config_file=[str(bundle / "configs" / f) for f in files],
            workflow_type=workflow_type,
            logging_file=False,
            **overrides,
        )
        wf.initialize()
    return wf


@pytest.fixture(scope="module")
def resize_trained(histo_bundle, sized_dataset, tmp_path_factory):
    """One epoch of train.json in resize mode (validation included), the work folder."""
    work = tmp_path_factory.mktemp("resize_train")
    wf = _workflow(histo_bundle, ["train.json"], "train", **micro_overrides(sized_dataset, work, input_mode="resize"))
    assert wf.check_properties() == []
    recorded = []
    network = wf.parser.get_parsed_content("network")
    hook = network.register_forward_pre_hook(lambda m, args: recorded.append((m.training, tuple(args[0].shape))))
    wf.run()
    hook.remove()
    wf.finalize()
    return work, recorded


def test_resize_mode_feeds_the_network_whole_resized_images(resize_trained):
    """Training batches and validation images reach the network at 64x64 (no crop, no window)."""
    _, recorded = resize_trained
    assert [shape for training, shape in recorded if training] == [(2, 3, 64, 64), (1, 3, 64, 64)]
    assert [shape for training, shape in recorded if not training] == [(1, 3, 64, 64)]  # the 90x60 validation image


def test_resize_mode_validation_overlays_are_on_the_input_grid(resize_trained):
    work, _ = resize_trained
    (overlay,) = (work / "eval" / "overlays" / "epoch_1").glob("*.png")
    assert np.asarray(Image.open(overlay)).shape == (90, 3 * 60 + 2 * 4, 3)  # image | prediction | ground truth


def test_resize_mode_evaluation_reports_on_the_input_grid(histo_bundle, sized_dataset, resize_trained):
    work, _ = resize_trained
    overrides = micro_overrides(sized_dataset, work, input_mode="resize")
    wf = _workflow(histo_bundle, ["train.json", "evaluate.json"], "train", **overrides)
    wf.run()
    wf.finalize()
    out = work / "eval" / "evaluation"
    summary = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert summary["num_images"] == 2
    assert summary["input"]["input_mode"] == "resize" and summary["input"]["patch_size"] == 64
    assert "Input mode: resize 64x64" in (out / "tables.md").read_text(encoding="utf-8")
    assert len((out / "per_image.csv").read_text(encoding="utf-8").splitlines()) == 3


@pytest.mark.parametrize("input_mode", ["resize", "crop"])
def test_inference_writes_every_output_on_the_input_grid(
    histo_bundle, sized_dataset, resize_trained, tmp_path, input_mode
):
    work, _ = resize_trained
    overrides = {
        "dataset_dir": str(sized_dataset),
        "ckpt_path": str(work / "models" / "model.pt"),
        "output_dir": str(tmp_path),
        "patch_size": 64,
        "input_mode": input_mode,
        "sem_min_size": 4,
        "num_workers": 0,
    }
    wf = _workflow(histo_bundle, ["inference.json"], "infer", **overrides)
    assert wf.check_properties() == []
    wf.run()
    wf.finalize()
    for i, (h, w) in enumerate(SIZES["test"]):
        name = f"test_{i}"
        for suffix in ("_sem.png", "_type.png", "_pred.png"):
            assert np.asarray(Image.open(tmp_path / f"{name}{suffix}")).shape == (h, w), (name, suffix)
        assert tifffile.imread(tmp_path / f"{name}_inst.tif").shape == (h, w)
        assert np.asarray(Image.open(tmp_path / f"{name}_overlay.png")).shape[:2] == (h, w)


def test_the_training_resize_is_the_inferers(histo_bundle):
    """train.json's ``Resized`` of the image (before normalisation) and the inferer's resize (after it) give the same
    network input: training and inference in resize mode see the same pixels."""
    parser = ConfigParser()
    parser.read_config(str(histo_bundle / "configs" / "train.json"))
    parser.update({"patch_size": 64, "input_mode": "resize"})
    transforms = parser.get_parsed_content("train#input_transforms")
    image = torch.rand(3, 90, 60) * 255
    for h, w in ((90, 60), (40, 130)):
        data = {"image": image[:, :h, :w].clone(), "label_sem": torch.zeros(1, h, w)}
        data["label_inst"], data["label_type"] = torch.zeros(1, h, w), torch.zeros(1, h, w)
        for t in transforms:
            data = t(data)
        trained = normalize(data["image"])
        inferred = resize_images(normalize(image[None, :, :h, :w]), (64, 64))[0]
        torch.testing.assert_close(torch.as_tensor(trained), inferred, atol=1e-4, rtol=1e-4)


def test_an_unknown_input_mode_is_refused(histo_bundle, histo_dataset, tmp_path):
    wf = _workflow(
        histo_bundle, ["train.json"], "train", **micro_overrides(histo_dataset, tmp_path, input_mode="Resize")
    )
    for item in ("train#preprocessing", "validate#inferer"):
        with pytest.raises(RuntimeError) as err:
            wf.parser.get_parsed_content(item)
        chain = [err.value]
        while chain[-1].__cause__ is not None:
            chain.append(chain[-1].__cause__)
        assert any("input_mode must be one of ('crop', 'resize'), got 'Resize'" in str(e) for e in chain), item
