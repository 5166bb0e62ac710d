"""The bundle's inference.json sends large inputs the whole-slide way; ``python -m coseg.wsi`` builds the same
pipeline from it, on one process and under torchrun (2 Gloo processes on CPU)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from monai.bundle import ConfigWorkflow
from PIL import Image

from coseg.wsi.routing import parse_override, route_inputs

from .conftest import write_pyramid

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "coseg_histo"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """Random micro weights with the bundle's classes (3 regions, 4 nucleus types)."""
    from coseg.networks import CoSegPlusPlus

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = CoSegPlusPlus.from_preset("micro", num_sem_classes=3, num_inst_types=4, freeze_encoder=False)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    torch.save({"model": net.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    from coseg.histo.synthetic import make_sample

    folder = tmp_path_factory.mktemp("inputs")
    Image.fromarray(make_sample(size=64, seed=1)["image"]).save(folder / "small.png")
    big = make_sample(size=320, seed=2, nucleus_scale=2.0)["image"][:300]
    write_pyramid(folder / "big.tif", big, levels=2, mpp=0.25, tile=64)
    return folder


def test_route_inputs_by_size_and_pyramid(inputs, tmp_path):
    route = route_inputs(inputs, min_pixels=100 * 100)
    assert [Path(d["image"]).name for d in route.small] == ["small.png"]
    assert [Path(d["image"]).name for d in route.large] == ["big.tif"]
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.zeros((50, 60, 3), np.uint8), photometric="rgb")
    assert route_inputs(flat).small and not route_inputs(flat).large
    assert route_inputs(inputs / "big.tif").large  # a pyramid is a slide whatever its size
    assert parse_override("a#b=[1, 2]") == ("a#b", [1, 2]) and parse_override("name=micro") == ("name", "micro")
    with pytest.raises(ValueError):
        parse_override("novalue")


def test_inference_json_runs_both_paths(inputs, checkpoint, tmp_path):
    overrides = {
        "dataset_dir": str(inputs),
        "ckpt_path": str(checkpoint),
        "output_dir": str(tmp_path / "out"),
        "model_preset": "micro",
        "patch_size": 64,
        "sem_min_size": 4,
        "num_workers": 0,
        "wsi_min_pixels": 100 * 100,
        "wsi_inferer#tiling#tile_size": 128,
        "wsi_inferer#outputs#output_tile": 64,
        "wsi_inferer#progress": False,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wf = ConfigWorkflow(
            config_file=str(BUNDLE / "configs" / "inference.json"),
            workflow_type="infer",
            logging_file=False,
            **overrides,
        )
        wf.initialize()
    assert wf.check_properties() == []
    wf.run()
    wf.finalize()
    out = tmp_path / "out"
    assert (out / "small_sem.png").is_file() and (out / "small.geojson").is_file()  # the whole-image evaluator
    summary = json.loads((out / "big_summary.json").read_text(encoding="utf-8"))  # the whole-slide inferer
    assert summary["region_size"] == [300, 320] and summary["settings"]["tile_size"] == 128
    assert set(summary["tissue"]) == {"background", "tumour", "stroma"}
    assert tifffile.imread(out / "big_inst.tif").shape == (300, 320)


def test_the_whole_slide_inferer_builds_the_network_its_checkpoint_records(checkpoint, tmp_path):
    """``--checkpoint`` names the weights, and the network is built as they record (no ``model_preset`` given)."""
    from coseg.wsi.routing import wsi_inferer_from_bundle

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inferer = wsi_inferer_from_bundle(
            BUNDLE, overrides={"patch_size": 64}, output_dir=str(tmp_path), checkpoint=str(checkpoint)
        )
    assert inferer.network.build_args["name"] == "micro"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_command_line_and_torchrun_agree(inputs, checkpoint, tmp_path):
    args = [
        "--bundle",
        str(BUNDLE),
        "--input",
        str(inputs / "big.tif"),
        "--checkpoint",
        str(checkpoint),
        "--tile-size",
        "128",
        "--no-progress",
        "--config-override",
        "model_preset=micro",
        "patch_size=64",
        "wsi_inferer#outputs#output_tile=64",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    single = subprocess.run(
        [sys.executable, "-m", "coseg.wsi", *args, "--workers", "2", "--output", str(tmp_path / "one")],
        cwd=REPO,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=600,
    )
    assert single.returncode == 0, single.stdout[-2000:] + single.stderr[-3000:]
    assert "nuclei" in single.stdout
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2"]
    torchrun += [f"--master_port={_free_port()}", "-m", "coseg.wsi"]
    double = subprocess.run(
        [*torchrun, *args, "--workers", "1", "--output", str(tmp_path / "two")],
        cwd=REPO,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=600,
    )
    assert double.returncode == 0, double.stdout[-2000:] + double.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "big_summary.json").read_text(encoding="utf-8"))
    two = json.loads((tmp_path / "two" / "big_summary.json").read_text(encoding="utf-8"))
    assert one["tiles"] == two["tiles"] and two["tiles"]["grid"] == [3, 3]
    assert one["timing"]["workers"] == 2 and two["timing"]["workers"] == 1  # worker processes in every rank
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "one" / "big_inst.tif"), tifffile.imread(tmp_path / "two" / "big_inst.tif")
    )
    assert one["nuclei"] == two["nuclei"] and one["counts"] == two["counts"]
    assert not (tmp_path / "two" / ".big.parts").exists()
