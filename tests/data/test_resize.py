"""Instance maps resized by nearest neighbour keep every instance, whole (coseg.data.resize, ResizeLabelsd)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import Resize
from scipy import ndimage

from coseg.data.resize import keep_instances_whole
from coseg.losses import CoSegTargetsd
from coseg.transforms import ResizeLabelsd, for_input_mode

EIGHT = np.ones((3, 3), dtype=bool)


def _nearest(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    out = Resize(spatial_size=size, mode="nearest-exact", anti_aliasing=False)(
        torch.as_tensor(x[None], dtype=torch.float32)
    )
    return np.asarray(out[0]).astype(np.int64)


def _pieces(inst: np.ndarray, ident: int) -> int:
    return ndimage.label(inst == ident, structure=EIGHT)[1]


def _small_and_thin() -> tuple[np.ndarray, np.ndarray]:
    """A 40x40 map for a 4x shrink (nearest-exact samples rows and columns 2, 6, 10, ...): instance 1 is one pixel
    at (0, 0), between the samples; 2 is a big square; 3 is a 1-px wide U whose arms stand on sampled row 6 (at
    columns 10 and 18-22) while its bottom runs along row 7, which is not sampled. Types 1, 2, 3."""
    inst = np.zeros((40, 40), np.int64)
    inst[0, 0] = 1
    inst[20:36, 20:36] = 2
    inst[6, 10] = inst[6, 18:23] = 3
    inst[7, 10:23] = 3
    types = np.where(inst > 0, inst, 0)
    return inst, types


def test_nearest_shrinking_alone_loses_and_cuts_instances():
    """What the repair is for: MONAI's nearest-exact resize drops the 1-px instance and cuts the U in two."""
    inst, _ = _small_and_thin()
    assert _pieces(inst, 3) == 1
    small = _nearest(inst, (10, 10))
    assert 1 not in small and _pieces(small, 3) == 2


def test_repair_restores_lost_instances_at_their_centre_with_their_type():
    inst, types = _small_and_thin()
    fixed = keep_instances_whole(
        inst, _nearest(inst, (10, 10)), original_types=types, resized_types=_nearest(types, (10, 10))
    )
    assert set(np.unique(fixed.inst)) == {0, 1, 2, 3}
    assert fixed.inst[0, 0] == 1 and fixed.types[0, 0] == 1  # (0 + 0.5) / 4 - 0.5 = -0.375 -> pixel (0, 0)
    assert fixed.restored == [1] and fixed.trimmed == [3] and fixed.lost == []
    for ident in (1, 2, 3):
        assert _pieces(fixed.inst, ident) == 1, ident
    assert np.array_equal(fixed.types > 0, fixed.inst > 0)


def test_a_cut_instance_keeps_its_largest_piece():
    inst = np.zeros((12, 12), np.int64)
    inst[1, 1] = inst[1, 9:12] = 4  # on row 1, sampled by a 2x shrink (rows/columns 1, 3, 5, ...) ...
    inst[2, 1:12] = 4  # ... joined along row 2, which is not
    small = _nearest(inst, (6, 6))
    assert _pieces(small, 4) == 2
    fixed = keep_instances_whole(inst, small)
    assert fixed.trimmed == [4] and _pieces(fixed.inst, 4) == 1
    assert np.argwhere(fixed.inst == 4).tolist() == [[0, 4], [0, 5]]  # the larger piece


def test_an_instance_already_in_pieces_is_left_alone():
    inst = np.zeros((12, 12), np.int64)
    inst[1, 1:4] = 5
    inst[9, 7:11] = 5  # one id, two pieces in the annotation itself
    fixed = keep_instances_whole(inst, _nearest(inst, (6, 6)))
    assert fixed.trimmed == [] and _pieces(fixed.inst, 5) == 2


def test_enlarging_changes_nothing():
    inst, types = _small_and_thin()
    big = _nearest(inst, (50, 45))
    fixed = keep_instances_whole(inst, big, original_types=types, resized_types=_nearest(types, (50, 45)))
    assert np.array_equal(fixed.inst, big) and not (fixed.restored or fixed.trimmed or fixed.lost)
    assert {i: _pieces(big, i) for i in (1, 2, 3)} == {1: 1, 2: 1, 3: 1}


def test_an_instance_with_no_free_pixel_is_reported_lost():
    inst = np.full((8, 8), 7, np.int64)  # one instance everywhere ...
    inst[4, 4] = 8  # ... and a 1-px one inside it that a 4x shrink drops, with no background to put it on
    fixed = keep_instances_whole(inst, _nearest(inst, (2, 2)))
    assert fixed.lost == [8] and fixed.restored == []


def test_bad_arguments():
    with pytest.raises(ValueError, match="must be 2D"):
        keep_instances_whole(np.zeros((1, 4, 4)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="both type maps"):
        keep_instances_whole(np.zeros((4, 4)), np.zeros((2, 2)), original_types=np.zeros((4, 4)))
    with pytest.raises(ValueError, match="do not match"):
        keep_instances_whole(
            np.zeros((4, 4)), np.zeros((2, 2)), original_types=np.zeros((4, 4)), resized_types=np.zeros((3, 3))
        )


def test_resize_labelsd_keeps_instances_whole_and_the_targets_follow(caplog):
    inst, types = _small_and_thin()
    sem = (inst > 0).astype(np.int64)
    data = {
        k: torch.as_tensor(v[None], dtype=torch.float32)
        for k, v in (("label_sem", sem), ("label_inst", inst), ("label_type", types))
    }
    out = ResizeLabelsd(["label_sem", "label_inst", "label_type"], (10, 10))(data)
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: (1, 10, 10) for k in data}
    small_inst = np.asarray(out["label_inst"][0]).astype(np.int64)
    assert set(np.unique(small_inst)) == {0, 1, 2, 3}
    assert all(_pieces(small_inst, i) == 1 for i in (1, 2, 3))
    assert np.array_equal(np.asarray(out["label_type"][0]) > 0, small_inst > 0)
    # distance-map targets are computed on the repaired map: every instance has its own
    targets = CoSegTargetsd(keys="label_inst")(dict(out))
    assert targets["label_hv"].shape == (2, 10, 10)
    crowded = {"label_inst": torch.full((1, 8, 8), 7.0)}
    crowded["label_inst"][0, 4, 4] = 8
    with caplog.at_level("WARNING", logger="coseg.transforms"):
        ResizeLabelsd("label_inst", (2, 2), type_key=None)(crowded)
    assert "lost 1 instances no free pixel could hold (ids [8])" in caplog.text


def test_resize_labelsd_arguments():
    with pytest.raises(ValueError, match="inst_key 'label_inst' is not among keys"):
        ResizeLabelsd("label_sem", (4, 4))
    with pytest.raises(ValueError, match="spatial_size must be two positive ints"):
        ResizeLabelsd("label_inst", (4, 0), type_key=None)


def test_for_input_mode():
    assert for_input_mode("resize", crop=[1], resize=[2]) == [2]
    with pytest.raises(ValueError, match="input_mode must be one of \\('crop', 'resize'\\), got 'tile'"):
        for_input_mode("tile", crop=[1], resize=[2])
    with pytest.raises(ValueError, match="one choice per input mode"):
        for_input_mode("crop", crop=[1])
