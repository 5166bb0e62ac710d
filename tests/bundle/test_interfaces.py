"""What the bundle shows to MONAI's tools and to MONAI Label: the single-tensor network view, the label layout for
MONAI Label's writer, and training from ``{image, label}`` items with one class-map label."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.data import MetaTensor
from PIL import Image

from coseg.bundle import ClassMapProbabilities, MONAILabelPredd
from coseg.data.label_codec import decode_class_map, encode_class_map
from coseg.errors import InputFileError
from coseg.keys import OutputKeys

from .conftest import HISTO, MICRO_OVERRIDES


class _FixedOutputs(torch.nn.Module):
    """Returns given logits whatever the input."""

    def __init__(self, **outputs: torch.Tensor) -> None:
        super().__init__()
        self.outputs = outputs

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.outputs


def _logits(probs: list[float]) -> torch.Tensor:
    """(1, C, 1, 1) logits whose softmax is ``probs``."""
    return torch.log(torch.tensor(probs, dtype=torch.float64)).reshape(1, -1, 1, 1)


TYPES = [0.6, 0.3, 0.1]


def test_class_map_probabilities_by_hand():
    # p(object) = 0.25; regions 0.5/0.3/0.2; types (among 1..3) 0.6/0.3/0.1 (the background type channel is ignored)
    net = _FixedOutputs(
        **{
            OutputKeys.INST_BINARY: _logits([0.75, 0.25]),
            OutputKeys.SEM_LOGITS: _logits([0.5, 0.3, 0.2]),
            OutputKeys.INST_TYPE: torch.cat(
                [torch.full((1, 1, 1, 1), 7.0, dtype=torch.float64), _logits([0.6, 0.3, 0.1])], 1
            ),
        }
    )
    out = ClassMapProbabilities(net, num_sem_classes=3, num_inst_types=4)(torch.zeros(1, 3, 1, 1))
    expected = [0.5 * 0.75, 0.3 * 0.75, 0.2 * 0.75, 0.6 * 0.25, 0.3 * 0.25, 0.1 * 0.25]
    assert out.shape == (1, 6, 1, 1) and out.dtype == torch.float32
    assert out.flatten().tolist() == pytest.approx(expected, abs=1e-6)


def test_class_map_probabilities_of_the_network_sum_to_one():
    from coseg.networks import CoSegPlusPlus

    torch.manual_seed(0)
    net = CoSegPlusPlus.from_preset("micro", num_sem_classes=3, num_inst_types=4, freeze_encoder=False).eval()
    with torch.no_grad():
        out = ClassMapProbabilities(net, num_sem_classes=3, num_inst_types=4)(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 6, 64, 64)
    assert torch.allclose(out.sum(1), torch.ones(2, 64, 64), atol=1e-5)
    assert (out >= 0).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"network": "net"}, TypeError, "torch.nn.Module"),
        ({"num_sem_classes": 0}, ValueError, "num_sem_classes"),
        ({"num_inst_types": 1}, ValueError, "num_inst_types"),
    ],
)
def test_class_map_probabilities_checks_arguments(kwargs, error, match):
    args = {"network": torch.nn.Identity(), **kwargs}
    with pytest.raises(error, match=match):
        ClassMapProbabilities(args.pop("network"), **args)


def test_class_map_probabilities_checks_the_outputs():
    outputs = {
        OutputKeys.INST_BINARY: torch.zeros(1, 2, 2, 2),
        OutputKeys.SEM_LOGITS: torch.zeros(1, 3, 2, 2),
        OutputKeys.INST_TYPE: torch.zeros(1, 4, 2, 2),
    }
    with pytest.raises(ValueError, match="num_inst_types=5"):
        ClassMapProbabilities(_FixedOutputs(**outputs), num_inst_types=5)(torch.zeros(1, 3, 2, 2))
    del outputs[OutputKeys.INST_TYPE]
    with pytest.raises(ValueError, match="inst_type"):
        ClassMapProbabilities(_FixedOutputs(**outputs))(torch.zeros(1, 3, 2, 2))


def test_verify_net_in_out_accepts_the_class_map_network(tmp_path):
    """MONAI's check of the network against metadata.json (channels, dtype), on the single-tensor view (no weights:
    the network comes from the given settings, whatever a working copy holds in the bundle's models/)."""
    from monai.bundle import verify_net_in_out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        verify_net_in_out(
            net_id="class_map_network",
            meta_file=str(HISTO / "configs" / "metadata.json"),
            config_file=str(HISTO / "configs" / "inference.json"),
            device="cpu",
            model_preset="micro",
            ckpt_path=str(tmp_path / "none.pt"),
            **{"_meta_#network_data_format#inputs#image#spatial_shape": [64, 64]},
        )
        with pytest.raises(ValueError, match="output channel number"):
            verify_net_in_out(
                net_id="class_map_network",
                meta_file=str(HISTO / "configs" / "metadata.json"),
                config_file=str(HISTO / "configs" / "inference.json"),
                device="cpu",
                model_preset="micro",
                ckpt_path=str(tmp_path / "none.pt"),
                **{
                    "_meta_#network_data_format#inputs#image#spatial_shape": [64, 64],
                    "_meta_#network_data_format#outputs#pred#num_channels": 5,
                },
            )


@pytest.mark.parametrize("with_channel", [True, False])
def test_monailabel_layout_transposes_and_keeps_the_size(with_channel):
    pred = np.arange(6, dtype=np.uint8).reshape(2, 3)  # (H, W) = (2, 3)
    image = MetaTensor(torch.zeros(3, 2, 3), meta={"spatial_shape": (2, 3), "filename_or_obj": "a.png"})
    data = {"pred": MetaTensor(torch.from_numpy(pred[None] if with_channel else pred)), "image": image}
    out = MONAILabelPredd()(data)
    assert isinstance(out["pred"], np.ndarray) and out["pred"].shape == (3, 2)
    assert np.array_equal(out["pred"], pred.T)
    assert "spatial_shape" not in out["image"].meta and out["image"].meta["filename_or_obj"] == "a.png"


def test_monailabel_layout_refuses_3d():
    with pytest.raises(ValueError, match="2D label map"):
        MONAILabelPredd()({"pred": np.zeros((2, 4, 4)), "image": torch.zeros(3, 4, 4)})


# ---- training from MONAI Label's {image, label} items -------------------------------------------------------------


@pytest.fixture(scope="module")
def class_map_items(sample_images, tmp_path_factory):
    """The sample's images with ONE class-map label each (what MONAI Label's datastore holds), as datalist items."""
    folder = tmp_path_factory.mktemp("class_maps")
    datalist = json.loads((sample_images / "datalist.json").read_text(encoding="utf-8"))
    items = {}
    for split in ("training", "validation"):
        items[split] = []
        for item in datalist[split]:
            maps = [np.asarray(Image.open(sample_images / item[k])) for k in ("label_sem", "label_inst", "label_type")]
            label = folder / f"{split}_{len(items[split])}.png"
            Image.fromarray(encode_class_map(*maps, num_sem_classes=3)).save(label)
            items[split].append({"image": str(sample_images / item["image"]), "label": str(label)})
    return items


def _workflow(tmp_path, **overrides) -> ConfigWorkflow:
    base = {
        **MICRO_OVERRIDES,
        "bundle_root": str(HISTO),
        "ckpt_dir": str(tmp_path / "models"),
        "output_dir": str(tmp_path / "eval"),
        "epochs": 1,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wf = ConfigWorkflow(
            config_file=str(HISTO / "configs" / "train.json"),
            workflow_type="train",
            logging_file=False,
            **base,
            **overrides,
        )
    return wf


def test_training_from_class_map_labels_only(class_map_items, tmp_path):
    """MONAI Label overrides ``train#dataset#data`` / ``validate#dataset#data`` with ``{image, label}`` items and
    skips ``initialize``: the bundle derives its region, instance and type targets from the class map."""
    wf = _workflow(
        tmp_path,
        **{"train#dataset#data": class_map_items["training"], "validate#dataset#data": class_map_items["validation"]},
    )
    dataset = wf.parser.get_parsed_content("validate#dataset")
    first = dataset[0]
    assert "label" not in first
    label = np.asarray(Image.open(class_map_items["validation"][0]["label"]))
    sem, inst, types = decode_class_map(label, 3, 4)
    assert np.array_equal(first["label_sem"][0].numpy(), sem)
    assert np.array_equal(first["label_type"][0].numpy(), types)
    assert int(first["label_inst"].max()) == int(inst.max()) > 0
    trainer = wf.parser.get_parsed_content("train#trainer")
    wf.run()
    assert trainer.state.epoch == 1 and trainer.state.iteration == 3  # 5 images, batch 2
    assert math.isfinite(trainer.state.output["loss"].detach().item())
    assert (tmp_path / "models" / "checkpoint_final.pt").is_file()


def test_a_class_map_label_beyond_the_classes_names_the_file(class_map_items, tmp_path):
    bad = tmp_path / "bad_label.png"
    Image.fromarray(np.full((64, 64), 6, np.uint8)).save(bad)
    item = {"image": class_map_items["training"][0]["image"], "label": str(bad)}
    wf = _workflow(tmp_path, **{"train#dataset#data": [item]})
    dataset = wf.parser.get_parsed_content("train#dataset")
    with pytest.raises(Exception) as err:  # MONAI wraps errors of a transform chain in RuntimeError
        dataset[0]
    chain = [err.value]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    problems = [str(e) for e in chain if isinstance(e, InputFileError)]
    assert problems and "bad_label.png" in problems[0] and "value 6 is beyond the class list (max 5)" in problems[0]
