"""Input checks, SAM2 normalisation, stain jitter and output flattening of coseg.engines."""

from __future__ import annotations

import cv2
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from coseg.constants import PIXEL_MEAN, PIXEL_STD
from coseg.errors import InputFileError
from coseg.histo.transforms import RandHEDJitterd
from coseg.io import read_rgb
from coseg.keys import DataKeys
from coseg.losses import CoSegLoss, CoSegTargetsd
from coseg.transforms import (
    CheckedPILReader,
    CheckLabelsd,
    CheckRGBd,
    FlattenEngineOutputd,
    LoadCheckedImaged,
    SAM2Normalized,
)


def _img(c: int, value: float = 100.0, name: str = "/data/x.png") -> MetaTensor:
    return MetaTensor(torch.full((c, 4, 5), value), meta={"filename_or_obj": name})


def test_sam2_constants_are_imagenet_and_normalisation_uses_them():
    # SAM2 (sam2/utils/transforms.py) normalises 0-1 RGB with the ImageNet statistics
    assert PIXEL_MEAN == (0.485, 0.456, 0.406)
    assert PIXEL_STD == (0.229, 0.224, 0.225)
    img = torch.stack([torch.full((2, 2), 255.0 * m) for m in PIXEL_MEAN])
    img[:, 0, 0] = torch.tensor([255.0 * (m + s) for m, s in zip(PIXEL_MEAN, PIXEL_STD)])
    out = SAM2Normalized("image")({"image": img})["image"]
    torch.testing.assert_close(out[:, 1, 1], torch.zeros(3))
    torch.testing.assert_close(out[:, 0, 0], torch.ones(3))


def test_rgb_checks():
    ok = CheckRGBd("image")({"image": _img(3)})["image"]
    assert ok.shape == (3, 4, 5) and ok.dtype == torch.float32 and ok.meta["filename_or_obj"] == "/data/x.png"
    assert CheckRGBd("image")({"image": _img(4)})["image"].shape[0] == 3  # alpha dropped
    with pytest.raises(InputFileError, match=r"/data/x.png: image is grey"):
        CheckRGBd("image")({"image": _img(1)})
    assert CheckRGBd("image", allow_grey=True)({"image": _img(1)})["image"].shape[0] == 3
    with pytest.raises(InputFileError, match="2 channels"):
        CheckRGBd("image")({"image": _img(2)})
    with pytest.raises(InputFileError, match="16-bit"):
        CheckRGBd("image")({"image": _img(3, 4000.0)})
    rescaled = CheckRGBd("image", rescale_16bit=True)({"image": _img(3, 65535.0)})["image"]
    torch.testing.assert_close(rescaled, torch.full((3, 4, 5), 255.0))
    with pytest.raises(InputFileError, match="negative or non-finite"):
        CheckRGBd("image")({"image": _img(3, -1.0)})


def test_label_checks():
    image = _img(3)
    good = MetaTensor(torch.zeros(1, 4, 5), meta={"filename_or_obj": "/data/sem.png"})
    check = CheckLabelsd(["label_sem"], max_values={"label_sem": 2})
    check({"image": image, "label_sem": good})
    with pytest.raises(InputFileError, match=r"/data/sem.png: label_sem: label size \(3, 5\) differs"):
        check(
            {"image": image, "label_sem": MetaTensor(torch.zeros(1, 3, 5), meta={"filename_or_obj": "/data/sem.png"})}
        )
    with pytest.raises(InputFileError, match="beyond the class list"):
        check({"image": image, "label_sem": good + 3})
    with pytest.raises(InputFileError, match="non-integer"):
        check({"image": image, "label_sem": good + 0.5})
    with pytest.raises(InputFileError, match="negative"):
        check({"image": image, "label_sem": good - 1})


def test_empty_label_maps_train_without_nan():
    """An image without any object or region (all background) is a valid training sample."""
    zeros = np.zeros((1, 64, 64), np.int64)
    data = CoSegTargetsd()({DataKeys.LABEL_INST: zeros, DataKeys.LABEL_TYPE: zeros, DataKeys.LABEL_SEM: zeros})
    target = {k: torch.as_tensor(np.asarray(v))[None] for k, v in data.items()}
    pred = {
        "sem_logits": torch.randn(1, 3, 64, 64),
        "inst_binary": torch.randn(1, 2, 64, 64),
        "inst_type": torch.randn(1, 4, 64, 64),
        "inst_hv": torch.randn(1, 2, 64, 64),
        "sem_prompt_logits": torch.randn(1, 1, 16, 16),
        "inst_prompt_logits": torch.randn(1, 1, 16, 16),
        "sem_consistency": torch.softmax(torch.randn(1, 2, 4, 4), 1),
        "inst_consistency": torch.softmax(torch.randn(1, 2, 4, 4), 1),
    }
    assert torch.isfinite(CoSegLoss()(pred, target))


def test_hed_jitter_changes_colours_and_keeps_the_range():
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.uniform(60, 240, (3, 16, 16)).astype(np.float32))
    t = RandHEDJitterd("image", prob=1.0, sigma=0.2, bias=0.05)
    t.set_random_state(3)
    out = t({"image": img})["image"]
    assert out.shape == img.shape and float(out.min()) >= 0 and float(out.max()) <= 255
    assert float((out - img).abs().mean()) > 1.0
    t0 = RandHEDJitterd("image", prob=0.0)
    assert torch.equal(t0({"image": img})["image"], img)


def test_flatten_lifts_the_prediction_dict():
    d = {"image": 1, "pred": {"sem_logits": 2, "inst_hv": 3}, "label_sem": 4}
    out = FlattenEngineOutputd()(d)
    assert out == {"image": 1, "sem_logits": 2, "inst_hv": 3, "label_sem": 4}


def _bundle_loader(reader="coseg.transforms.CheckedPILReader", **kw):
    """The bundles' image loading step (configs/train.json and inference.json)."""
    return LoadCheckedImaged(
        keys="image", reader=reader, reverse_indexing=False, image_only=True, ensure_channel_first=True, **kw
    )


def test_truncated_or_missing_files_are_named_on_the_bundle_path(tmp_path):
    png = tmp_path / "tile.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(png)
    assert _bundle_loader()({"image": str(png)})["image"].shape == (3, 32, 32)
    png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    with pytest.raises(InputFileError, match="truncated") as err:
        _bundle_loader()({"image": str(png)})
    assert err.value.path == str(png)
    with pytest.raises(InputFileError, match="does not exist") as err:
        _bundle_loader()({"image": str(tmp_path / "gone.png")})
    assert err.value.path == str(tmp_path / "gone.png")
    volume = tmp_path / "scan_0000.nii.gz"
    voxels = np.random.default_rng(0).integers(-1000, 3000, (20, 21, 22)).astype(np.int16)
    nib.save(nib.Nifti1Image(voxels, np.eye(4)), volume)
    volume.write_bytes(volume.read_bytes()[: volume.stat().st_size // 2])
    loader = LoadCheckedImaged(keys="image", image_only=True, ensure_channel_first=True)  # cbct inference.json
    with pytest.raises(InputFileError, match="file is truncated") as err:
        loader({"image": str(volume)})
    assert err.value.path == str(volume)


def test_16bit_rgb_png_is_scaled_or_refused_on_the_bundle_path(tmp_path):
    vals = np.array([[[0, 128, 129], [257, 4095, 65535]]], dtype=np.uint16)  # (1, 2, 3); 4095: 12-bit white
    expect = np.array([[[0, 0, 1], [1, 16, 255]]], dtype=np.float32)  # round(v * 255 / 65535), as coseg.io
    path = tmp_path / "rgb16.png"
    cv2.imwrite(str(path), vals[..., ::-1])  # OpenCV writes BGR
    plain = _bundle_loader(reader="PILReader")({"image": str(path)})["image"]
    assert float(plain[1, 0, 1]) == 15  # Pillow silently keeps the high byte: 12-bit white 4095 -> 15
    out = _bundle_loader()({"image": str(path)})
    np.testing.assert_array_equal(out["image"].numpy(), np.moveaxis(expect, -1, 0))
    np.testing.assert_array_equal(out["image"].numpy(), np.moveaxis(read_rgb(path), -1, 0))
    assert out["image"].meta["filename_or_obj"] == str(path)
    checked = CheckRGBd("image")(out)["image"]  # and the bundle's next step accepts it
    assert checked.shape == (3, 1, 2)
    with pytest.raises(InputFileError, match="16-bit") as err:
        _bundle_loader(high_bit_depth="error")({"image": str(path)})
    assert err.value.path == str(path)
    grey16 = tmp_path / "inst.png"  # 16-bit label maps keep their values
    Image.fromarray(np.array([[0, 300], [70, 65535]], dtype=np.uint16)).save(grey16)
    label = _bundle_loader()({"image": str(grey16)})["image"]
    np.testing.assert_array_equal(label[0].numpy(), [[0, 300], [70, 65535]])
    with pytest.raises(ValueError, match="high_bit_depth"):
        CheckedPILReader(high_bit_depth="clip")
