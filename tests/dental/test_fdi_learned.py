"""Learned FDI numbering: per-voxel votes, one tooth per number by maximal total vote, reassembly with it."""

from __future__ import annotations

import numpy as np
import pytest

from coseg.dental.assemble import UNNUMBERED_TOOTH_BASE, assemble_dental_prediction, assign_fdi_numbers, fdi_votes
from coseg.dental.geometry import slice_geometry
from coseg.dental.labels import FDI_TEETH, TOOTHFAIRY2_LABELS, build_label_map, fdi_type, tooth_type_lut
from coseg.dental.synthetic import make_phantom

CLS = {fdi: k for k, fdi in enumerate(FDI_TEETH, start=1)}  # FDI number -> FDI class


def _votes(rows: dict[int, dict[int, int]]) -> np.ndarray:
    votes = np.zeros((max(rows) + 1, len(FDI_TEETH) + 1), dtype=np.int64)
    for tooth, by_fdi in rows.items():
        for fdi, count in by_fdi.items():
            votes[tooth, CLS[fdi]] = count
    return votes


def test_each_tooth_takes_its_most_voted_number():
    assert assign_fdi_numbers(_votes({1: {11: 5, 12: 1}, 2: {36: 3}, 3: {48: 2, 47: 1}})) == {1: 11, 2: 36, 3: 48}


def test_a_conflict_goes_to_the_largest_total_vote_not_to_the_first_tooth():
    # both want 11; first-come (tooth 1) would leave tooth 2 with 12 (total 10 + 1); the best total is 9 + 9
    votes = _votes({1: {11: 10, 12: 9}, 2: {11: 9, 12: 1}})
    assert assign_fdi_numbers(votes) == {1: 12, 2: 11}
    # the same teeth with their ids swapped get the same numbers: no dependence on id or slice order
    assert assign_fdi_numbers(votes[[0, 2, 1]]) == {1: 11, 2: 12}


def test_a_large_tooth_keeps_its_number_against_a_fragment():
    assert assign_fdi_numbers(_votes({1: {21: 4}, 2: {21: 900, 22: 30}})) == {1: None, 2: 21}


def test_teeth_without_votes_stay_unnumbered():
    votes = _votes({1: {}, 2: {31: 7}})
    assert assign_fdi_numbers(votes) == {1: None, 2: 31}
    assert assign_fdi_numbers(np.zeros((1, 33))) == {}


@pytest.mark.parametrize("bad", [np.zeros((3, 32)), np.zeros(33), -np.ones((2, 33))])
def test_bad_votes_are_rejected(bad):
    with pytest.raises(ValueError):
        assign_fdi_numbers(bad)


def test_fdi_votes_hand_counted():
    labels = np.array([[0, 1, 1, 2], [2, 2, 0, 1]])
    classes = np.array([[5, 3, 3, 7], [7, 0, 9, 4]])
    votes = fdi_votes(labels, classes, 2)
    assert votes.shape == (3, 33)
    assert votes[0].sum() == 0 and votes[:, 0].sum() == 0  # background and "no vote" do not count
    assert (votes[1, 3], votes[1, 4], votes[2, 7]) == (2, 1, 2)
    assert votes.sum() == 5
    with pytest.raises(ValueError):
        fdi_votes(labels, classes[:, :3], 2)
    with pytest.raises(ValueError):
        fdi_votes(labels, classes + 30, 2)


SHAPE = (40, 64, 64)
LABEL_MAP = build_label_map({v: k for k, v in TOOTHFAIRY2_LABELS.items()})


def _model_slices(phantom, size=80):
    sem, inst, _ = LABEL_MAP.apply(phantom.label)
    geometry = slice_geometry(SHAPE, phantom.affine, axis="axial", size=size)
    inst_m = geometry.to_model(inst, kind="label").astype(np.int32)
    rng = np.random.default_rng(0)
    scrambled = inst_m.copy()
    for n in range(geometry.num_slices):  # per-slice ids agree with nothing
        lut = np.zeros(49, dtype=np.int32)
        lut[1:] = rng.permutation(48) + 1
        scrambled[n] = lut[inst_m[n]]
    classes = tooth_type_lut("fdi")[inst_m]
    return sem, inst, geometry, geometry.to_model(sem, kind="label"), scrambled, inst_m, classes


def test_learned_numbering_reassembles_the_phantom():
    phantom = make_phantom(SHAPE, seed=6, missing_teeth=[15, 37])
    sem, inst, geometry, sem_m, scrambled, _, classes = _model_slices(phantom)
    prediction = assemble_dental_prediction(sem_m, scrambled, classes, geometry, phantom.affine, numbering="learned")
    assert prediction.numbering == "learned"
    np.testing.assert_array_equal(prediction.semantic, sem)
    np.testing.assert_array_equal(prediction.teeth, inst)
    assert prediction.tooth_types == {f: fdi_type(f) for f in np.unique(inst)[1:].tolist()}


def test_learned_numbering_resolves_a_side_conflict_by_the_total_vote():
    """Most voxels of tooth 11 vote 21 (its mirror): it still gets 11, because tooth 21 votes 21 more."""
    phantom = make_phantom(SHAPE, seed=7, missing_teeth=[])
    _, inst, geometry, sem_m, scrambled, inst_m, classes = _model_slices(phantom)
    noisy = classes.copy()
    where = np.flatnonzero(inst_m.ravel() == 11)
    noisy.ravel()[where[: int(0.6 * len(where))]] = CLS[21]
    prediction = assemble_dental_prediction(sem_m, scrambled, noisy, geometry, phantom.affine, numbering="learned")
    np.testing.assert_array_equal(prediction.teeth, inst)


def test_learned_numbering_leaves_a_tooth_without_votes_unnumbered():
    phantom = make_phantom(SHAPE, seed=8, missing_teeth=[])
    _, inst, geometry, sem_m, scrambled, inst_m, classes = _model_slices(phantom)
    classes[inst_m == 26] = 0  # no pixel of tooth 26 voted
    prediction = assemble_dental_prediction(sem_m, scrambled, classes, geometry, phantom.affine, numbering="learned")
    unnumbered = prediction.teeth[inst == 26]
    assert np.all(unnumbered == UNNUMBERED_TOOTH_BASE + 1)
    assert prediction.tooth_types[UNNUMBERED_TOOTH_BASE + 1] == 0
    with pytest.raises(ValueError, match="numbering"):
        assemble_dental_prediction(sem_m, scrambled, classes, geometry, phantom.affine, numbering="guess")
