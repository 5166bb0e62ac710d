"""Semantic argmax and small-region removal (coseg.postprocess.semantic)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coseg.postprocess import remove_small_regions, semantic_map


def _grid(rows: list[str]) -> np.ndarray:
    return np.array([[int(c) for c in row] for row in rows], dtype=np.int32)


def test_small_region_takes_label_of_longest_shared_boundary():
    labels = _grid(
        [
            "11111222",
            "11111222",
            "11311222",
            "11111222",
            "11112222",
            "00000000",
        ]
    )
    # only the lone 3 is small: it is surrounded by 1 and becomes 1
    out = remove_small_regions(labels, min_size=2)
    expected = labels.copy()
    expected[2, 2] = 1
    np.testing.assert_array_equal(out, expected)


def test_neighbour_vote_counts_boundary_length():
    labels = _grid(
        [
            "1111222",
            "1133322",
            "1111222",
        ]
    )
    # the 3-region (3 px) touches 1 on 5 edges ((0,2),(0,3),(1,1),(2,2),(2,3)) and 2 on 3 edges
    # ((0,4),(1,5),(2,4)): it becomes 1
    out = remove_small_regions(labels, min_size=4)
    np.testing.assert_array_equal(out[1, 2:5], [1, 1, 1])
    np.testing.assert_array_equal(out[out != labels], [1, 1, 1])


def test_fill_background_and_background_kept():
    labels = _grid(
        [
            "00000",
            "01100",
            "00002",
            "22222",
        ]
    )
    out = remove_small_regions(labels, min_size=3, fill="background")
    expected = labels.copy()
    expected[1, 1:3] = 0
    np.testing.assert_array_equal(out, expected)
    # the background region itself is never removed unless asked, however small it is
    assert remove_small_regions(_grid(["111", "101", "111"]), min_size=5)[1, 1] == 0


def test_include_background_fills_small_holes():
    labels = _grid(["1111", "1001", "1111", "0000"])
    out = remove_small_regions(labels, min_size=3, include_background=True)
    np.testing.assert_array_equal(out, _grid(["1111", "1111", "1111", "0000"]))


def test_nested_small_regions_fill_from_outside_in():
    labels = _grid(
        [
            "1111111",
            "1222221",
            "1232221",
            "1222221",
            "1111111",
        ]
    )
    # the 3 (1 px) only touches the 2-ring (14 px); both are small: the ring takes 1, then the 3 takes 1
    out = remove_small_regions(labels, min_size=15)
    np.testing.assert_array_equal(out, np.ones_like(labels))


def test_only_small_regions_become_background():
    labels = _grid(["12", "21"])
    np.testing.assert_array_equal(remove_small_regions(labels, min_size=5), np.zeros((2, 2)))


@pytest.mark.parametrize("connectivity, expected_changed", [(1, True), (2, False)])
def test_connectivity(connectivity, expected_changed):
    labels = _grid(
        [
            "3000",
            "0300",
            "0000",
        ]
    )
    # 4-connected: two 1 px regions of class 3 (removed); 8-connected: one 2 px region (kept)
    out = remove_small_regions(labels, min_size=2, connectivity=connectivity)
    assert bool(out[0, 0] == 0) is expected_changed and bool(out[1, 1] == 0) is expected_changed


def test_min_size_one_is_identity_and_returns_copy():
    labels = _grid(["123", "456"])
    out = remove_small_regions(labels, min_size=1)
    np.testing.assert_array_equal(out, labels)
    assert out is not labels and out.dtype == np.int32


def test_semantic_map_argmax_and_cleanup():
    labels = _grid(["111222", "111222", "121222", "111222"])
    logits = np.full((3, *labels.shape), -2.0, np.float32)
    np.put_along_axis(logits, labels[None].astype(np.int64), 2.0, axis=0)
    np.testing.assert_array_equal(semantic_map(logits), labels)
    cleaned = semantic_map(torch.as_tensor(logits), min_size=2)
    expected = labels.copy()
    expected[2, 1] = 1
    np.testing.assert_array_equal(cleaned, expected)
    assert cleaned.dtype == np.int32


def test_semantic_map_of_empty_prediction():
    out = semantic_map(np.stack([np.ones((8, 8)), np.zeros((8, 8))]), min_size=10)
    assert out.shape == (8, 8) and out.max() == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"min_size": 0}, "min_size"),
        ({"min_size": 2.5}, "min_size"),
        ({"min_size": 2, "connectivity": 3}, "connectivity"),
        ({"min_size": 2, "fill": "nearest"}, "fill"),
    ],
)
def test_remove_small_regions_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        remove_small_regions(np.zeros((4, 4), np.int32), **kwargs)


def test_bad_label_maps():
    with pytest.raises(ValueError, match="2D integer"):
        remove_small_regions(np.zeros((4, 4), np.float32), min_size=2)
    with pytest.raises(ValueError, match="2D integer"):
        remove_small_regions(np.zeros((1, 4, 4), np.int32), min_size=2)
    with pytest.raises(ValueError, match="negative"):
        remove_small_regions(-np.ones((4, 4), np.int32), min_size=2)
    with pytest.raises(ValueError, match=r"\(S, H, W\)"):
        semantic_map(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="NaN"):
        semantic_map(np.full((2, 4, 4), np.nan))
