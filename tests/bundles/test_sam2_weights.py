"""The SAM2 encoder weights through the bundle: ``large_files.yml`` fetched by MONAI's own ``download_large_files``,
train.json loading the fetched file strictly, and training that refuses to start without it."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from monai.bundle import ConfigWorkflow

from coseg.networks import SAM2CheckpointError, build_image_encoder
from coseg.networks.coseg import MICRO_ENCODER

from .conftest import REPO, micro_overrides

BUNDLES = ["coseg_histo", "coseg_cbct"]


def _copy_bundle(name: str, dest: Path) -> Path:
    """The bundle's configs, docs, LICENSE and large_files.yml, with an empty models/ (no weights of the tree)."""
    src = REPO / "bundles" / name
    dest.mkdir(parents=True)
    for item in ("configs", "docs"):
        shutil.copytree(src / item, dest / item)
    for item in ("LICENSE", "large_files.yml"):
        shutil.copy(src / item, dest / item)
    (dest / "models").mkdir()
    return dest


def _sam2_errors(err: BaseException) -> list[str]:
    chain = [err]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    return [str(e) for e in chain if isinstance(e, SAM2CheckpointError)]


def _initialize(bundle: Path, files: list[str], **overrides) -> ConfigWorkflow:
    wf = ConfigWorkflow(
        config_file=[str(bundle / "configs" / f) for f in files],
        workflow_type="train",
        logging_file=False,
        bundle_root=str(bundle),
        **overrides,
    )
    wf.initialize()
    return wf


@pytest.mark.parametrize("name", BUNDLES)
@pytest.mark.parametrize("files", [["train.json"], ["train.json", "multi_gpu_train.json"]])
@pytest.mark.parametrize("preset, filename", [("paper", "sam2.1_hiera_large.pt"), ("tiny", "sam2.1_hiera_tiny.pt")])
def test_training_stops_before_the_data_without_the_checkpoint(name, files, preset, filename, tmp_path):
    """The default: the preset's official checkpoint in models/. Missing, ``initialize`` stops first -- before the
    dataset check (the dataset folder here does not exist), the process group and the network -- and says which
    command fetches it."""
    bundle = _copy_bundle(name, tmp_path / name)
    with pytest.raises(RuntimeError) as err:
        _initialize(bundle, files, model_preset=preset, dataset_dir=str(tmp_path / "no_data"))
    (msg,) = _sam2_errors(err.value)
    assert msg.startswith(f"{bundle / 'models' / filename}: the SAM2.1 checkpoint of model preset {preset!r}")
    assert f"python -m monai.bundle download_large_files --bundle_path {bundle}\n" in msg


@pytest.mark.parametrize("name", BUNDLES)
def test_a_checkpoint_of_another_preset_stops_training(name, tmp_path):
    bundle = _copy_bundle(name, tmp_path / name)
    fake_t = {"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(96, 3, 7, 7)}
    fake_t.update({f"image_encoder.trunk.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(12)})
    torch.save({"model": fake_t}, bundle / "models" / "sam2.1_hiera_large.pt")
    with pytest.raises(RuntimeError) as err:
        _initialize(bundle, ["train.json"], dataset_dir=str(tmp_path / "no_data"))
    (msg,) = _sam2_errors(err.value)
    assert "holds the SAM2 image encoder hiera_t" in msg and "model preset 'paper' builds hiera_l" in msg


def _rewrite_large_files(bundle: Path, source: Path, *, path: str, hash_val: str) -> None:
    entry = {"path": path, "url": source.resolve().as_uri(), "hash_val": hash_val, "hash_type": "sha256"}
    (bundle / "large_files.yml").write_text(yaml.safe_dump({"large_files": [entry]}))


def _download_large_files(bundle: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "monai.bundle", "download_large_files", "--bundle_path", str(bundle)],
        capture_output=True,
        text=True,
        cwd=bundle.parent,
        timeout=300,
    )


@pytest.mark.slow  # three `python -m monai.bundle` processes and one epoch: about 90 s on 2 busy cores
def test_fetched_checkpoint_trains_the_bundle(histo_dataset, tmp_path):
    """``download_large_files`` from a ``file://`` URL with the file's sha256, then one epoch of train.json with the
    fetched file: loaded strictly and frozen (the trunk ends exactly as fetched, the adapters train). A file whose
    hash differs is refused, downloaded or already in place."""
    torch.manual_seed(0)
    encoder = build_image_encoder(MICRO_ENCODER, adapter_ratio=None)
    state = {f"image_encoder.{k}": v.clone() for k, v in encoder.state_dict().items()}
    source = tmp_path / "release" / "sam2_micro.pt"
    source.parent.mkdir()
    torch.save({"model": state}, source)
    sha256 = hashlib.sha256(source.read_bytes()).hexdigest()

    bundle = _copy_bundle("coseg_histo", tmp_path / "coseg_histo")
    _rewrite_large_files(bundle, source, path="models/sam2_micro.pt", hash_val=sha256)
    run = _download_large_files(bundle)
    assert run.returncode == 0, run.stderr
    fetched = bundle / "models" / "sam2_micro.pt"
    assert fetched.read_bytes() == source.read_bytes()

    overrides = micro_overrides(histo_dataset, tmp_path / "work")
    overrides.update({"allow_random_encoder": False, "sam2_checkpoint": str(fetched)})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "random weights" warning may come
        wf = _initialize(bundle, ["train.json"], **overrides)
    assert wf.parser.get_parsed_content("sam2_weights") == str(fetched)
    wf.run()
    wf.finalize()
    network = wf.parser.get_parsed_content("network")
    trunk = network.image_encoder.trunk.state_dict()
    for key, value in state.items():
        if key.startswith("image_encoder.trunk."):
            assert torch.equal(trunk[key[len("image_encoder.trunk.") :]], value), key
    adapters = [p for b in network.image_encoder.trunk.blocks for p in b.adapter.parameters()]
    assert adapters and all(p.requires_grad for p in adapters)
    assert not network.image_encoder.trunk.patch_embed.proj.weight.requires_grad
    assert (tmp_path / "work" / "models" / "model.pt").is_file()

    # a wrong hash: the download is refused and nothing is left in models/
    _rewrite_large_files(bundle, source, path="models/other.pt", hash_val="0" * 64)
    run = _download_large_files(bundle)
    assert run.returncode != 0 and "hash check of downloaded file failed" in run.stderr
    assert not (bundle / "models" / "other.pt").exists()
    # a file already in place whose hash differs (a truncated or swapped file) is refused too
    fetched.write_bytes(fetched.read_bytes()[:-1])
    _rewrite_large_files(bundle, source, path="models/sam2_micro.pt", hash_val=sha256)
    run = _download_large_files(bundle)
    assert run.returncode != 0 and "hash check of existing file failed" in run.stderr
    assert os.path.getsize(fetched) == os.path.getsize(source) - 1
