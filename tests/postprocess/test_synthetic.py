"""Synthetic instance maps and perfect outputs (coseg.postprocess.synthetic)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from coseg.keys import OutputKeys
from coseg.postprocess.synthetic import perfect_outputs, random_ellipse_instances, random_instance_types


@pytest.mark.parametrize("inside", [False, True])
def test_ellipses_are_connected_sized_and_reproducible(inside):
    inst = random_ellipse_instances((128, 128), 25, min_area=12, inside=inside, seed=4)
    assert inst.dtype == np.int32 and inst.max() == 25
    np.testing.assert_array_equal(inst, random_ellipse_instances((128, 128), 25, min_area=12, inside=inside, seed=4))
    areas = np.bincount(inst.ravel())[1:]
    assert areas.min() >= 12
    for i in range(1, 26):
        assert ndimage.label(inst == i)[1] == 1
    edge = np.concatenate([inst[0], inst[-1], inst[:, 0], inst[:, -1]])
    assert (edge.max() == 0) == inside  # this seed cuts objects at the border unless told not to


def test_touching_fraction_controls_contacts():
    def contacts(inst: np.ndarray) -> int:
        a, b = inst[:, :-1], inst[:, 1:]
        return int(((a > 0) & (b > 0) & (a != b)).sum())

    def total(fraction: float) -> int:
        return sum(
            contacts(random_ellipse_instances((128, 128), 20, touching_fraction=fraction, seed=s)) for s in range(4)
        )

    assert total(1.0) >= 2 * total(0.0)


def test_too_full_image_draws_fewer(caplog):
    inst = random_ellipse_instances((16, 16), 50, seed=0)
    assert 0 < inst.max() < 50
    assert "too full" in caplog.text


def test_perfect_outputs_values():
    inst = np.zeros((9, 11), np.int32)
    inst[2:5, 1:6] = 1  # 3 x 5 block: centroid (x, y) = (3, 3)
    types = (inst > 0).astype(np.int32) * 2
    outputs = perfect_outputs(inst, types, num_types=3, logit=5.0)
    binary, hv, type_logits = (outputs[k] for k in (OutputKeys.INST_BINARY, OutputKeys.INST_HV, OutputKeys.INST_TYPE))
    assert binary.shape == (2, 9, 11) and hv.shape == (2, 9, 11) and type_logits.shape == (3, 9, 11)
    np.testing.assert_array_equal(binary[1], np.where(inst > 0, 5.0, -5.0))
    np.testing.assert_array_equal(binary[0], -binary[1])
    np.testing.assert_allclose(hv[0, 3, 1:6], [-1.0, -0.5, 0.0, 0.5, 1.0])  # horizontal: x - centroid, scaled
    np.testing.assert_allclose(hv[1, 2:5, 3], [-1.0, 0.0, 1.0])  # vertical: y - centroid, scaled
    assert (hv[:, inst == 0] == 0).all()
    np.testing.assert_array_equal(type_logits.argmax(axis=0), types)


def test_random_types_are_per_instance():
    inst = random_ellipse_instances((64, 64), 6, seed=2)
    types = random_instance_types(inst, 4, seed=2)
    assert types[inst == 0].max() == 0
    for i in range(1, inst.max() + 1):
        values = np.unique(types[inst == i])
        assert values.size == 1 and 1 <= values[0] <= 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"shape": (0, 5), "num_objects": 1}, "shape"),
        ({"shape": (8, 8), "num_objects": -1}, "num_objects"),
        ({"shape": (8, 8), "num_objects": 1, "radius_range": (3.0, 2.0)}, "radius_range"),
        ({"shape": (8, 8), "num_objects": 1, "touching_fraction": 1.5}, "touching_fraction"),
        ({"shape": (8, 8), "num_objects": 1, "min_area": 0}, "min_area"),
        ({"shape": (8, 8), "num_objects": 1, "max_overlap": 1.0}, "max_overlap"),
    ],
)
def test_bad_generator_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        random_ellipse_instances(**kwargs)


def test_bad_perfect_output_arguments():
    inst = np.zeros((4, 4), np.int32)
    with pytest.raises(ValueError, match="2D integer"):
        perfect_outputs(inst.astype(float))
    with pytest.raises(ValueError, match="num_types"):
        perfect_outputs(inst, num_types=1)
    with pytest.raises(ValueError, match="shape"):
        perfect_outputs(inst, np.zeros((3, 4), np.int32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        perfect_outputs(inst, np.full((4, 4), 2, np.int32))
    with pytest.raises(ValueError, match="logit"):
        perfect_outputs(inst, logit=0.0)
    with pytest.raises(ValueError, match="num_types"):
        random_instance_types(inst, 1)
