"""HV watershed, instance table and parameter scaling (coseg.postprocess.instances)."""

from __future__ import annotations

import dataclasses
import warnings

import cv2
import numpy as np
import pytest
import torch
from monai.transforms import SobelGradients
from scipy import ndimage

from coseg.keys import OutputKeys
from coseg.postprocess import (
    InstanceTable,
    WatershedParams,
    hv_watershed,
    instance_table,
    instances_from_outputs,
    params_for_resolution,
    watershed_settings,
)
from coseg.postprocess.instances import _fill_holes, _sobel_kernels
from coseg.postprocess.synthetic import perfect_outputs, random_ellipse_instances, random_instance_types


def _draw(shape: tuple[int, int], ellipses: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Instance map of filled ellipses ``(cx, cy, ax, ay)``; later ones only take free pixels (so they touch)."""
    inst = np.zeros(shape, np.int32)
    for i, (cx, cy, ax, ay) in enumerate(ellipses, start=1):
        canvas = np.zeros(shape, np.uint8)
        cv2.ellipse(canvas, (cx, cy), (ax, ay), 0.0, 0.0, 360.0, 1, -1)
        inst[(canvas > 0) & (inst == 0)] = i
    return inst


# a touching pair, a touching cluster of three, a big ellipse touching a small circle, an isolated circle
TOUCHING_SCENE = [
    (20, 20, 8, 8),
    (35, 20, 8, 8),
    (70, 20, 8, 8),
    (84, 20, 8, 8),
    (77, 33, 8, 8),
    (35, 70, 16, 10),
    (58, 70, 8, 8),
    (95, 75, 9, 9),
]


def _touching_pairs(inst: np.ndarray) -> set[tuple[int, int]]:
    pairs = set()
    for a, b in ((inst[:, :-1], inst[:, 1:]), (inst[:-1], inst[1:])):
        hit = (a > 0) & (b > 0) & (a != b)
        pairs |= {tuple(sorted(p)) for p in zip(a[hit].tolist(), b[hit].tolist())}
    return pairs


def test_touching_objects_stay_separate(pq):
    gt = _draw((110, 120), TOUCHING_SCENE)
    assert _touching_pairs(gt) >= {(1, 2), (3, 4), (3, 5), (4, 5), (6, 7)}  # the scene really touches
    result = instances_from_outputs(**_as_kwargs(perfect_outputs(gt)))
    assert result.inst_map.max() == len(TOUCHING_SCENE)
    assert pq(gt, result.inst_map) >= 0.95
    # each ground-truth object is covered by exactly one predicted instance for >= 90 % of its pixels
    for g in range(1, gt.max() + 1):
        ids, counts = np.unique(result.inst_map[gt == g], return_counts=True)
        assert counts.max() >= 0.9 * counts.sum() and ids[counts.argmax()] > 0


def _as_kwargs(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        "binary": outputs[OutputKeys.INST_BINARY],
        "hv": outputs[OutputKeys.INST_HV],
        "types": outputs.get(OutputKeys.INST_TYPE),
    }


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_perfect_targets_recover_random_instances(seed, pq):
    gt = random_ellipse_instances((192, 192), 30, inside=True, seed=seed)
    assert len(_touching_pairs(gt)) >= 3
    types = random_instance_types(gt, 4, seed=seed)
    result = instances_from_outputs(**_as_kwargs(perfect_outputs(gt, types, num_types=4)))
    assert pq(gt, result.inst_map) >= 0.95
    # the type map follows the recovered instances: where an instance covers a gt object, types agree
    both = (gt > 0) & (result.inst_map > 0)
    assert (result.type_map[both] == types[both]).mean() >= 0.97


def test_matches_monai_hovernet_postprocessing(pq):
    """Same algorithm as MONAI's chain (which differs only in its blur, sigma 1, and its disk(2) opening)."""
    from monai.apps.pathology.transforms.post.array import HoVerNetInstanceMapPostProcessing

    gt = random_ellipse_instances((128, 128), 20, seed=7)
    outputs = perfect_outputs(gt)
    monai_post = HoVerNetInstanceMapPostProcessing(sobel_kernel_size=21, marker_threshold=0.4, marker_radius=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-image deprecations inside MONAI
        _, monai_map = monai_post(
            torch.as_tensor(outputs[OutputKeys.INST_BINARY]), torch.as_tensor(outputs[OutputKeys.INST_HV])
        )
    ours = instances_from_outputs(**_as_kwargs(outputs), with_contours=False).inst_map
    assert pq(np.asarray(monai_map)[0].astype(np.int32), ours) >= 0.95


def test_ids_are_contiguous_and_int32():
    gt = random_ellipse_instances((96, 96), 12, seed=3)
    inst = hv_watershed((gt > 0).astype(np.float32), perfect_outputs(gt)[OutputKeys.INST_HV])
    assert inst.dtype == np.int32
    assert set(np.unique(inst)) == set(range(inst.max() + 1))


def test_flat_hv_keeps_each_piece_as_one_instance():
    """Constant HV maps carry no border: every foreground piece (of >= min size) becomes one instance."""
    prob = np.zeros((40, 40), np.float32)
    prob[5:15, 5:15] = 1.0
    prob[25:35, 20:38] = 1.0
    prob[0:2, 30:33] = 1.0  # 6 px, below min_object_size = 10
    inst = hv_watershed(prob, np.zeros((2, 40, 40), np.float32))
    assert inst.max() == 2
    assert (inst[5:15, 5:15] == 1).all() and (inst[25:35, 20:38] == 2).all()
    assert inst[0:2, 30:33].max() == 0


def test_keep_unmarked_adds_pieces_without_marker():
    gt = _draw((64, 64), [(20, 20, 9, 9)])
    gt[50:53, 5:40] = 2  # a 3 px wide bar: its marker does not survive the 5x5 opening
    outputs = perfect_outputs(gt)
    prob = (gt > 0).astype(np.float32)
    dropped = hv_watershed(prob, outputs[OutputKeys.INST_HV])
    kept = hv_watershed(prob, outputs[OutputKeys.INST_HV], params=WatershedParams(keep_unmarked=True))
    assert dropped.max() == 1 and dropped[51, 20] == 0
    assert kept.max() == 2 and (kept[gt == 2] == 2).all() and (kept[gt == 1] == 1).all()


def test_empty_prediction_gives_empty_outputs():
    binary = np.stack([np.full((32, 48), 5.0), np.full((32, 48), -5.0)]).astype(np.float32)
    result = instances_from_outputs(binary, np.zeros((2, 32, 48)), np.zeros((3, 32, 48)))
    assert result.inst_map.shape == (32, 48) and result.inst_map.max() == 0
    assert result.type_map.shape == (32, 48) and result.type_map.max() == 0
    assert len(result.table) == 0 and result.table.to_records() == []
    assert result.table.centroids.shape == (0, 2) and result.table.bboxes.shape == (0, 4)


def test_type_majority_vote_hand_case():
    inst = np.zeros((4, 10), np.int32)
    types = np.zeros((4, 10), np.int32)
    inst[0, :] = 1  # 10 px: 6 x type 2, 4 x type 1 -> 2, prob 0.6
    types[0, :6], types[0, 6:] = 2, 1
    inst[1, :] = 2  # 10 px: 7 x background, 3 x type 3 -> 3 (background never wins over an object type), 0.3
    types[1, 7:] = 3
    inst[2, :] = 3  # all background votes -> 0, prob 1
    inst[3, :] = 4  # tie 5 x type 1, 5 x type 2 -> lower id 1, prob 0.5
    types[3, :5], types[3, 5:] = 2, 1
    table, type_map = instance_table(inst, types, num_types=4, with_contours=False)
    assert table.types.tolist() == [2, 3, 0, 1]
    np.testing.assert_allclose(table.type_probs, [0.6, 0.3, 1.0, 0.5])
    np.testing.assert_array_equal(type_map, np.array([2, 3, 0, 1])[:, None].repeat(10, axis=1))
    assert table.contours == []


def test_table_fields_hand_case():
    inst = np.zeros((12, 16), np.int32)
    inst[2:5, 3:8] = 1  # rectangle rows 2..4, columns 3..7
    inst[7:11, 10:12] = 2  # L shape: a 4x2 bar and one extra pixel
    inst[10, 12] = 2
    inst[0, 15] = 3  # one pixel in the corner
    table, type_map = instance_table(inst)
    assert len(table) == 3 and table.ids.tolist() == [1, 2, 3]
    assert table.areas.tolist() == [15, 9, 1]
    assert table.bboxes.tolist() == [[3, 2, 8, 5], [10, 7, 13, 11], [15, 0, 16, 1]]
    ys, xs = np.nonzero(inst == 2)
    np.testing.assert_allclose(table.centroids, [[5.0, 3.0], [xs.mean(), ys.mean()], [15.0, 0.0]])
    assert {tuple(p) for p in table.contours[0].tolist()} == {(3, 2), (7, 2), (7, 4), (3, 4)}
    assert table.contours[2].tolist() == [[15, 0]]
    # every contour point is a pixel of its instance, on its border, and the contour encloses the instance
    for i, contour in enumerate(table.contours, start=1):
        assert (inst[contour[:, 1], contour[:, 0]] == i).all()
    assert table.types.tolist() == [1, 1, 1] and (type_map == (inst > 0)).all()
    record = table.to_records()[0]
    assert record == {
        "id": 1,
        "type": 1,
        "type_prob": 1.0,
        "centroid": [5.0, 3.0],
        "bbox": [3, 2, 8, 5],
        "area": 15,
        "contour": table.contours[0].tolist(),
    }


def test_instance_table_bad_inputs():
    inst = np.zeros((5, 5), np.int32)
    inst[0, 0], inst[2, 2] = 1, 3  # id 2 missing
    with pytest.raises(ValueError, match="contiguous"):
        instance_table(inst)
    with pytest.raises(ValueError, match="2D integer"):
        instance_table(inst.astype(np.float32))
    with pytest.raises(ValueError, match="negative"):
        instance_table(-inst)
    inst[2, 2] = 2
    with pytest.raises(ValueError, match="shape"):
        instance_table(inst, np.zeros((4, 5), np.int32))
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        instance_table(inst, np.full((5, 5), 3, np.int32), num_types=3)


@pytest.mark.parametrize(
    "binary_shape, hv_shape, types_shape, match",
    [
        ((3, 16, 16), (2, 16, 16), None, "1 .object. or 2"),
        ((2, 16, 16), (1, 16, 16), None, "hv must have 2 channels"),
        ((2, 16, 16), (2, 16, 12), None, "hv spatial size"),
        ((2, 16, 16), (2, 16, 16), (1, 16, 16), "K >= 2"),
        ((2, 16, 16), (2, 16, 16), (3, 8, 16), "types spatial size"),
        ((16, 16), (2, 16, 16), None, r"\(C, H, W\)"),
    ],
)
def test_instances_from_outputs_bad_shapes(binary_shape, hv_shape, types_shape, match):
    types = None if types_shape is None else np.zeros(types_shape, np.float32)
    with pytest.raises(ValueError, match=match):
        instances_from_outputs(np.zeros(binary_shape, np.float32), np.zeros(hv_shape, np.float32), types)


def test_bad_values_and_activation():
    binary, hv = np.zeros((2, 8, 8), np.float32), np.zeros((2, 8, 8), np.float32)
    with pytest.raises(ValueError, match="activation"):
        instances_from_outputs(binary, hv, activation="relu")
    with pytest.raises(ValueError, match="needs 2 binary channels"):
        instances_from_outputs(binary[:1], hv, activation="softmax")
    bad = hv.copy()
    bad[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="hv contains NaN"):
        instances_from_outputs(binary, bad)
    with pytest.raises(TypeError, match="real numbers"):
        instances_from_outputs(np.array([["a"]]), hv)
    with pytest.raises(TypeError, match="WatershedParams"):
        hv_watershed(binary[0], hv, params={"binary_threshold": 0.5})


@pytest.mark.parametrize(
    "activation, binary",
    [
        ("softmax", lambda gt: np.stack([np.where(gt > 0, -3.0, 3.0), np.where(gt > 0, 3.0, -3.0)])),
        ("sigmoid", lambda gt: np.where(gt > 0, 4.0, -4.0)[None]),
        ("sigmoid", lambda gt: np.stack([np.zeros(gt.shape), np.where(gt > 0, 4.0, -4.0)])),
        (None, lambda gt: (gt > 0).astype(np.float32)[None]),
        (None, lambda gt: np.stack([gt == 0, gt > 0]).astype(np.float32)),
    ],
)
def test_activations_agree(activation, binary):
    gt = random_ellipse_instances((96, 96), 10, seed=5)
    hv = perfect_outputs(gt)[OutputKeys.INST_HV]
    reference = hv_watershed((gt > 0).astype(np.float32), hv)
    result = instances_from_outputs(binary(gt), hv, activation=activation, with_contours=False)
    np.testing.assert_array_equal(result.inst_map, reference)


def test_binary_threshold_is_inclusive():
    prob = np.zeros((20, 20), np.float32)
    prob[5:10, 5:10] = 0.5
    prob[12:17, 12:17] = 0.49
    inst = hv_watershed(prob, np.zeros((2, 20, 20)))
    assert inst.max() == 1 and (inst[5:10, 5:10] == 1).all()


def test_sobel_kernels_match_opencv_and_monai():
    rng = np.random.default_rng(0)
    image = rng.random((40, 50)).astype(np.float32)
    for size in (3, 5, 21):
        deriv, smooth = _sobel_kernels(size)
        ours = cv2.sepFilter2D(image, cv2.CV_64F, deriv, smooth)
        opencv = cv2.Sobel(image, cv2.CV_64F, 1, 0, ksize=size)
        np.testing.assert_allclose(ours / np.abs(ours).max(), opencv / np.abs(opencv).max(), atol=1e-5)
        monai = SobelGradients(kernel_size=size)(torch.as_tensor(image[None]))[1].numpy()
        np.testing.assert_allclose(ours / np.abs(ours).max(), monai / np.abs(monai).max(), atol=1e-5)
    assert _sobel_kernels(41)[0].shape == (41,)  # beyond cv2.Sobel's limit of 31


def test_fill_holes_matches_scipy():
    rng = np.random.default_rng(1)
    for _ in range(5):
        mask = ndimage.binary_opening(rng.random((60, 70)) > 0.4)
        np.testing.assert_array_equal(_fill_holes(mask), ndimage.binary_fill_holes(mask))


def test_scaled_params_rule():
    base = WatershedParams()
    assert base.scaled(1.0) == base
    half = base.scaled(0.5)
    assert (half.sobel_kernel_size, half.blur_kernel_size, half.marker_opening_size) == (11, 1, 3)
    assert (half.min_object_size, half.min_marker_size) == (3, 3)
    assert half.marker_threshold == base.marker_threshold and half.binary_threshold == base.binary_threshold
    double = base.scaled(2.0)
    assert (double.sobel_kernel_size, double.blur_kernel_size, double.marker_opening_size) == (43, 7, 11)
    assert (double.min_object_size, double.min_marker_size) == (40, 40)
    tiny = base.scaled(0.05)
    assert (tiny.sobel_kernel_size, tiny.blur_kernel_size, tiny.marker_opening_size, tiny.min_object_size) == (
        3,
        1,
        1,
        1,
    )
    # the scaled settings record the pixel size they are for; scaled() alone (other object sizes) keeps it
    assert half.mpp is None and base.scaled(2.0).mpp is None
    half_at_20x = dataclasses.replace(half, mpp=0.5)
    assert params_for_resolution(magnification=20) == half_at_20x == params_for_resolution(mpp=0.5)
    assert params_for_resolution(mpp=0.25) == dataclasses.replace(base, mpp=0.25)
    assert params_for_resolution(magnification=30).mpp == pytest.approx(1 / 3)
    assert params_for_resolution(magnification=20).scaled(4.0).mpp == 0.5
    custom = WatershedParams(sobel_kernel_size=15, keep_unmarked=True)
    assert params_for_resolution(magnification=20, base=custom) == WatershedParams(
        sobel_kernel_size=7,
        blur_kernel_size=1,
        marker_opening_size=3,
        min_object_size=3,
        min_marker_size=3,
        keep_unmarked=True,
        mpp=0.5,
    )
    # a base at the reference pixel size is accepted, one at another pixel size is not (it would be scaled twice)
    assert params_for_resolution(mpp=0.5, base=params_for_resolution(mpp=0.25)) == params_for_resolution(mpp=0.5)
    with pytest.raises(ValueError, match="reference resolution"):
        params_for_resolution(mpp=0.25, base=params_for_resolution(magnification=20))


def test_scaled_params_recover_small_objects(pq):
    """Objects half the 40x size (a 20x scan): the 40x settings fail, the scaled ones recover them."""
    scores = {"40x": [], "20x": []}
    for seed in range(3):
        gt = random_ellipse_instances((96, 96), 30, radius_range=(2.5, 5.0), min_area=4, seed=seed)
        outputs = perfect_outputs(gt)
        for name, params in (("40x", WatershedParams()), ("20x", params_for_resolution(magnification=20))):
            kwargs = _as_kwargs(outputs)
            scores[name].append(pq(gt, instances_from_outputs(**kwargs, params=params).inst_map))
    assert np.mean(scores["20x"]) >= 0.88
    assert np.mean(scores["40x"]) <= 0.6


def test_watershed_settings_combine_resolution_object_size_and_markers():
    base = params_for_resolution(magnification=20)
    assert watershed_settings() == WatershedParams()
    assert watershed_settings(magnification=20) == base == watershed_settings(mpp=0.5)
    glands = watershed_settings(magnification=20, object_scale=4.0, keep_unmarked=True)
    assert glands == dataclasses.replace(base.scaled(4.0), keep_unmarked=True)
    assert (glands.sobel_kernel_size, glands.marker_opening_size, glands.min_marker_size) == (45, 13, 48)
    with pytest.raises(ValueError, match="scale"):
        watershed_settings(object_scale=0.0)
    with pytest.raises(ValueError, match="exactly one"):
        watershed_settings(mpp=0.5, magnification=20)
    with pytest.raises(ValueError, match="keep_unmarked"):
        watershed_settings(keep_unmarked="yes")


def test_fixed_normalisation_does_not_depend_on_the_context(pq):
    """``normalisation="fixed"``: a crop's instances equal the whole image's there; per-image min-max differs."""
    gt = random_ellipse_instances((192, 192), 60, radius_range=(4, 8), seed=5)
    outputs = perfect_outputs(gt)
    prob, hv = outputs[OutputKeys.INST_BINARY][1], outputs[OutputKeys.INST_HV]
    # damp the HV maps as a weak network would: min-max per context then rescales them differently
    hv = hv * np.linspace(0.3, 1.0, 192, dtype=np.float32)[None, None, :]
    fixed = WatershedParams(normalisation="fixed")
    whole = hv_watershed(prob, hv, params=fixed)
    assert pq(gt, whole) >= 0.75
    crop = np.s_[:, 40:150]
    part = hv_watershed(prob[crop], hv[(slice(None),) + crop], params=fixed)
    # objects that do not touch the crop border are found identically
    inner = whole[crop]
    touching = np.unique(np.concatenate([inner[:, 0], inner[:, -1]]))
    keep = ~np.isin(inner, touching)
    assert pq(np.where(keep, inner, 0), np.where(keep, part, 0)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="normalisation"):
        WatershedParams(normalisation="global")
    assert WatershedParams(normalisation="fixed").scaled(0.5).normalisation == "fixed"


def test_gland_settings_recover_real_glands(shared_dir, pq):
    """Perfect outputs of real GlaS gland labels (20x): nucleus settings lose glands, the gland settings do not."""
    from PIL import Image

    from coseg.losses import compute_hv_maps

    files = sorted((shared_dir / "data" / "glas" / "train" / "gland_inst_cc").glob("*.png"))[:6]
    if not files:
        pytest.skip(f"no GlaS gland labels under {shared_dir / 'data' / 'glas'}")
    scores = {"nuclei": [], "glands": []}
    settings = {
        "nuclei": watershed_settings(magnification=20),
        "glands": watershed_settings(magnification=20, object_scale=4.0, keep_unmarked=True),
    }
    for f in files:
        gt = np.asarray(Image.open(f)).astype(np.int64)
        prob, hv = (gt > 0).astype(np.float32), compute_hv_maps(gt)
        for name, params in settings.items():
            scores[name].append(pq(gt, hv_watershed(prob, hv, params=params)))
    assert np.mean(scores["glands"]) >= 0.98
    assert np.mean(scores["nuclei"]) <= 0.9


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"binary_threshold": 1.0}, "binary_threshold"),
        ({"marker_threshold": 0.0}, "marker_threshold"),
        ({"min_object_size": 0}, "min_object_size"),
        ({"min_marker_size": 2.5}, "min_marker_size"),
        ({"sobel_kernel_size": 20}, "sobel_kernel_size"),
        ({"sobel_kernel_size": 1}, "sobel_kernel_size"),
        ({"blur_kernel_size": 4}, "blur_kernel_size"),
        ({"marker_opening_size": 0}, "marker_opening_size"),
        ({"watershed_connectivity": 3}, "watershed_connectivity"),
        ({"keep_unmarked": 1}, "keep_unmarked"),
        ({"mpp": 0.0}, "mpp"),
        ({"mpp": float("inf")}, "mpp"),
        ({"mpp": True}, "mpp"),
    ],
)
def test_bad_params(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WatershedParams(**kwargs)


def test_bad_resolution_arguments():
    with pytest.raises(ValueError, match="exactly one"):
        params_for_resolution()
    with pytest.raises(ValueError, match="exactly one"):
        params_for_resolution(mpp=0.25, magnification=40)
    with pytest.raises(ValueError, match="mpp must be a positive"):
        params_for_resolution(mpp=0.0)
    with pytest.raises(ValueError, match="magnification must be a positive"):
        params_for_resolution(magnification=float("nan"))
    with pytest.raises(ValueError, match="scale"):
        WatershedParams().scaled(-1.0)
    with pytest.raises(TypeError, match="base"):
        params_for_resolution(mpp=0.5, base={"sobel_kernel_size": 21})


def test_empty_table_has_typed_columns():
    table = InstanceTable.empty()
    assert len(table) == 0 and table.ids.dtype == np.int32 and table.areas.dtype == np.int64


@pytest.mark.parametrize("name", ["train_1_000", "train_5_006", "train_11_008", "train_20_009"])
def test_consep_tiles_with_perfect_targets(shared_dir, name, pq):
    """Real CoNSeP nuclei (40x): HoVer-Net's settings on perfect targets; keep_unmarked only adds instances."""
    from PIL import Image

    path = shared_dir / "data" / "consep256" / "train" / "inst" / f"{name}.png"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    gt = np.asarray(Image.open(path)).astype(np.int32)
    outputs = perfect_outputs(gt)
    default = instances_from_outputs(**_as_kwargs(outputs), with_contours=False).inst_map
    kept = instances_from_outputs(
        **_as_kwargs(outputs), params=WatershedParams(keep_unmarked=True), with_contours=False
    ).inst_map
    assert kept.max() >= default.max()
    np.testing.assert_array_equal(kept[default > 0], default[default > 0])
    assert pq(gt, kept) >= pq(gt, default) - 1e-9
    assert pq(gt, kept) >= 0.8
