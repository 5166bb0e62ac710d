"""Linking per-slice tooth instances into 3D teeth."""

from __future__ import annotations

import numpy as np
import pytest

from coseg.dental.link3d import link_instances_3d


def _stack(depth=6, size=12):
    return np.zeros((depth, size, size), dtype=np.int32)


def _objects(labels):
    return sorted(np.unique(labels[labels > 0]).tolist())


def test_two_touching_teeth_stay_two():
    inst = _stack()
    for z in range(6):
        a, b = (1, 2) if z % 2 == 0 else (7, 3)  # per-slice ids change from slice to slice
        inst[z, 3:9, 2:6] = a
        inst[z, 3:9, 6:10] = b  # touching along column 5 | 6
    linked = link_instances_3d(inst)
    assert _objects(linked.labels) == [1, 2]
    assert (linked.labels[:, 3:9, 2:6] == 1).all() and (linked.labels[:, 3:9, 6:10] == 2).all()


def test_a_tooth_split_in_one_slice_is_one_tooth():
    inst = _stack()
    inst[:, 3:9, 3:9] = 4
    inst[2] = 0
    inst[2, 3:9, 3:5] = 1  # the same tooth as two per-slice instances with a gap
    inst[2, 3:9, 7:9] = 2
    linked = link_instances_3d(inst)
    assert _objects(linked.labels) == [1]
    assert (linked.labels[inst > 0] == 1).all()


def test_two_teeth_merged_in_one_slice_are_split_back():
    inst = _stack()
    for z in range(6):
        inst[z, 3:9, 1:5] = 1
        inst[z, 3:9, 7:11] = 2
    inst[3, 3:9, 1:11] = 5  # under-segmentation: one instance covering both teeth and the gap
    linked = link_instances_3d(inst)
    assert _objects(linked.labels) == [1, 2]
    np.testing.assert_array_equal(linked.labels[3, 5], [0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 0])  # nearest tooth wins
    assert (linked.labels[:, 3:9, 1:5] == 1).all() and (linked.labels[:, 3:9, 7:11] == 2).all()


@pytest.mark.parametrize("merge_young, expected", [(3, 1), (1, 2)])
def test_young_pieces_meeting_merge(merge_young, expected):
    """Two cusps that meet in the crown two slices later are one molar unless they are already established."""
    inst = _stack()
    inst[0:2, 4:8, 2:5] = 1
    inst[0:2, 4:8, 7:10] = 2
    inst[2:6, 3:9, 2:10] = 1
    linked = link_instances_3d(inst, merge_young=merge_young)
    assert len(_objects(linked.labels)) == expected


@pytest.mark.parametrize("max_gap, expected", [(1, [1]), (0, [1, 2])])
def test_missed_slice_bridged_by_max_gap(max_gap, expected):
    inst = _stack()
    inst[:, 4:8, 4:8] = 3
    inst[2] = 0
    assert _objects(link_instances_3d(inst, max_gap=max_gap).labels) == expected


@pytest.mark.parametrize("shift, linked_ids", [(1, [1]), (3, [1, 2])])
def test_overlap_threshold(shift, linked_ids):
    """A 4-pixel-wide blob shifted by 1 px overlaps 3/4 >= 0.3; shifted by 3 px it overlaps 1/4 < 0.3."""
    inst = _stack(depth=2)
    inst[0, 4:8, 2:6] = 1
    inst[1, 4:8, 2 + shift : 6 + shift] = 1
    assert _objects(link_instances_3d(inst, min_overlap=0.3).labels) == linked_ids


def test_small_fragments_dropped_and_ids_in_order_of_appearance():
    inst = _stack()
    inst[2:6, 1:5, 1:5] = 9  # appears second
    inst[0:6, 7:11, 7:11] = 4  # appears first
    inst[0, 0, 11] = 2  # a one-voxel fragment
    linked = link_instances_3d(inst, min_voxels=5)
    assert _objects(linked.labels) == [1, 2]
    assert linked.labels[0, 8, 8] == 1 and linked.labels[3, 2, 2] == 2 and linked.labels[0, 0, 11] == 0
    assert linked.labels.dtype == np.int32


def test_majority_types():
    inst = _stack()
    types = np.zeros_like(inst)
    inst[:, 2:6, 2:6] = 1
    types[:, 2:6, 2:6] = 1
    types[0, 2:6, 2:6] = 2  # a minority of the voxels typed lower
    inst[:, 7:10, 7:10] = 2
    types[:, 7:10, 7:10] = 2
    inst[:, 0, 0] = 3  # no type
    linked = link_instances_3d(inst, types)
    assert linked.types == {1: 1, 2: 2, 3: 0}
    assert link_instances_3d(inst).types == {1: 0, 2: 0, 3: 0}


def test_empty_input():
    linked = link_instances_3d(_stack())
    assert not linked.labels.any() and linked.types == {}


@pytest.mark.parametrize(
    "kwargs",
    [{"min_overlap": 0.0}, {"min_overlap": 1.5}, {"max_gap": -1}, {"merge_young": 0}, {"min_voxels": 2.5}],
)
def test_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        link_instances_3d(_stack(), **kwargs)


def test_bad_arrays():
    with pytest.raises(ValueError):
        link_instances_3d(np.zeros((4, 4)))
    with pytest.raises(ValueError):
        link_instances_3d(np.zeros((2, 4, 4), dtype=float))
    with pytest.raises(ValueError):
        link_instances_3d(_stack(), np.zeros((6, 12, 11), dtype=np.int32))


def _occluding(gap_type: int, depth: int = 12):
    """A lower tooth (slices 0-5, type 2) under an upper tooth (slices 6-11, type 1) at the same place, as in
    occlusion or when a crown bleeds into the occlusal gap; ``gap_type`` types the two slices where they meet."""
    inst = np.zeros((depth, 12, 12), dtype=np.int32)
    types = np.zeros_like(inst)
    inst[:, 3:9, 3:9] = 1
    types[:6, 3:9, 3:9] = 2
    types[6:, 3:9, 3:9] = 1
    types[5:7, 3:9, 3:9] = gap_type
    return inst, types


@pytest.mark.parametrize("gap_type", [1, 2])
def test_teeth_of_two_jaws_standing_on_each_other_stay_two(gap_type):
    inst, types = _occluding(gap_type)
    linked = link_instances_3d(inst, types)
    assert _objects(linked.labels) == [1, 2]
    assert linked.types == {1: 2, 2: 1}  # the lower tooth first (axis 0 = inferior to superior), then the upper
    top = 7 if gap_type == 2 else 5  # the slices where they meet go with the jaw they are typed as
    assert (linked.labels[:top, 3:9, 3:9] == 1).all() and (linked.labels[top:, 3:9, 3:9] == 2).all()
    # without types (or one type for both) overlap alone links them into one object
    assert _objects(link_instances_3d(inst).labels) == [1]


def test_a_young_tooth_with_a_mistyped_first_slice_stays_one():
    inst, types = _occluding(2)
    types[6:] = 0
    types[:, 3:9, 3:9] = 1
    types[0, 3:9, 3:9] = 2  # the first slice typed otherwise: the object is young, it links
    linked = link_instances_3d(inst, types)
    assert _objects(linked.labels) == [1] and linked.types == {1: 1}


def test_groups_map_fdi_classes_to_jaws():
    inst, types = _occluding(2)
    fdi = np.where(types == 2, 20, np.where(types == 1, 3, 0))  # FDI classes: 20 = tooth 34, 3 = tooth 13
    jaw = np.zeros(33, dtype=np.int64)
    jaw[1:17], jaw[17:] = 1, 2
    assert _objects(link_instances_3d(inst, fdi, groups=jaw).labels) == [1, 2]
    fdi_same_jaw = np.where(types == 2, 20, np.where(types == 1, 21, 0))  # two lower classes: one jaw, one tooth
    assert _objects(link_instances_3d(inst, fdi_same_jaw, groups=jaw).labels) == [1]
    with pytest.raises(ValueError, match="groups"):
        link_instances_3d(inst, fdi, groups=jaw[:10])
    with pytest.raises(ValueError, match="groups"):
        link_instances_3d(inst, groups=jaw)
