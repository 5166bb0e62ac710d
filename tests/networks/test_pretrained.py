"""The presets' official SAM2.1 checkpoints: where the bundles keep them, what large_files.yml lists, and the check
that stops a training run without them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from coseg.networks import (
    SAM2_CHECKPOINTS,
    SAM2CheckpointError,
    build_image_encoder,
    check_sam2_checkpoint,
    sam2_checkpoint_path,
)
from coseg.networks.coseg import MICRO_ENCODER

REPO = Path(__file__).resolve().parents[2]


def _micro_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    enc = build_image_encoder(MICRO_ENCODER, adapter_ratio=None)
    torch.save({"model": {f"image_encoder.{k}": v for k, v in enc.state_dict().items()}}, path)
    return path


def _hiera_t_lookalike(path: Path) -> Path:
    """A file with Hiera-T's stem width and block count (and nothing else: the real one is 160 MB)."""
    state = {"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(96, 3, 7, 7)}
    state.update({f"image_encoder.trunk.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(12)})
    torch.save({"model": state}, path)
    return path


def _bundle(tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    (root / "models").mkdir(parents=True)
    (root / "large_files.yml").write_text((REPO / "bundles" / "coseg_histo" / "large_files.yml").read_text())
    return root


@pytest.mark.parametrize(
    "preset, name", [("paper", "sam2.1_hiera_large.pt"), ("tiny", "sam2.1_hiera_tiny.pt"), ("micro", None)]
)
def test_each_preset_has_its_file_in_models(preset, name):
    expected = None if name is None else str(Path("/b") / "models" / name)
    assert sam2_checkpoint_path("/b", preset) == expected


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown Co-Seg\\+\\+ preset 'huge'"):
        sam2_checkpoint_path("/b", "huge")


@pytest.mark.parametrize("bundle", ["coseg_histo", "coseg_cbct"])
def test_large_files_yml_lists_the_official_checkpoints(bundle):
    entries = yaml.safe_load((REPO / "bundles" / bundle / "large_files.yml").read_text())["large_files"]
    assert {e["path"]: e["url"] for e in entries} == {f"models/{r.filename}": r.url for r in SAM2_CHECKPOINTS.values()}
    # Meta publishes no checksums: empty, which MONAI reads as "no check" (documented in docs/README.md)
    assert all(e["hash_val"] == "" and e["hash_type"] == "" for e in entries)
    release = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
    assert all(r.url == release + r.filename for r in SAM2_CHECKPOINTS.values())


@pytest.mark.parametrize("preset", ["paper", "tiny"])
def test_a_missing_checkpoint_names_the_command_that_fetches_it(tmp_path, preset):
    root = _bundle(tmp_path)
    path = sam2_checkpoint_path(root, preset)
    with pytest.raises(SAM2CheckpointError) as err:
        check_sam2_checkpoint(path, preset=preset, bundle_root=root)
    msg = str(err.value)
    assert msg.startswith(f"{path}: the SAM2.1 checkpoint of model preset {preset!r}")
    assert f"\n    python -m monai.bundle download_large_files --bundle_path {root}\n" in msg
    assert SAM2_CHECKPOINTS[preset].url in msg and "allow_random_encoder: true" in msg


def test_a_path_outside_the_bundle_gets_the_download_line(tmp_path):
    path = tmp_path / "elsewhere" / "weights.pt"
    with pytest.raises(SAM2CheckpointError) as err:
        check_sam2_checkpoint(path, preset="paper", bundle_root=_bundle(tmp_path))
    msg = str(err.value)
    assert "download_large_files" not in msg
    assert f"curl -L --create-dirs -o {path} {SAM2_CHECKPOINTS['paper'].url}" in msg


def test_no_checkpoint_needs_allow_random(tmp_path):
    with pytest.raises(SAM2CheckpointError, match="sam2_checkpoint is null, but model preset 'paper'"):
        check_sam2_checkpoint(None, preset="paper", bundle_root=_bundle(tmp_path))
    with pytest.raises(SAM2CheckpointError, match="model preset 'micro' has no official SAM2 checkpoint"):
        check_sam2_checkpoint(None, preset="micro")
    assert check_sam2_checkpoint(None, preset="paper", allow_random=True) is None
    with pytest.warns(UserWarning, match="trains from random weights"):
        assert check_sam2_checkpoint(tmp_path / "absent.pt", preset="tiny", allow_random=True) is None
    with pytest.raises(ValueError, match="allow_random_encoder must be true or false, got 'false'"):
        check_sam2_checkpoint(None, preset="paper", allow_random="false")


def test_a_present_checkpoint_is_used_even_when_random_is_allowed(tmp_path):
    path = _micro_checkpoint(tmp_path / "micro.pt")
    assert check_sam2_checkpoint(path, preset="micro") == str(path)
    assert check_sam2_checkpoint(path, preset="micro", allow_random=True) == str(path)


def test_a_checkpoint_of_another_preset_names_both(tmp_path):
    path = _hiera_t_lookalike(tmp_path / "sam2.1_hiera_large.pt")
    with pytest.raises(SAM2CheckpointError) as err:
        check_sam2_checkpoint(path, preset="paper")
    assert str(err.value) == (
        f"{path}: holds the SAM2 image encoder hiera_t (embed_dim 96, 12 blocks), the encoder of model preset "
        "'tiny', but model preset 'paper' builds hiera_l (embed_dim 144, 48 blocks): give the checkpoint of preset "
        "'paper' (sam2.1_hiera_large.pt) or set model_preset to 'tiny'"
    )
    with pytest.raises(SAM2CheckpointError, match="builds Hiera \\(embed_dim 16, 6 blocks\\)"):
        check_sam2_checkpoint(path, preset="micro")


def test_files_that_are_no_checkpoint_are_refused(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"<html>404</html>")
    with pytest.raises(SAM2CheckpointError, match="cannot be read as a PyTorch checkpoint"):
        check_sam2_checkpoint(junk, preset="paper")
    other = tmp_path / "other.pt"
    torch.save({"model": {"sam_mask_decoder.w": torch.zeros(1)}}, other)
    with pytest.raises(SAM2CheckpointError, match="no SAM2 image encoder in it"):
        check_sam2_checkpoint(other, preset="paper")
