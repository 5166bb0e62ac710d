"""The output-dict entry point (coseg.postprocess.postprocess_outputs): batching, torch / numpy, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coseg.keys import OutputKeys
from coseg.postprocess import PostprocessResult, WatershedParams, postprocess_outputs
from coseg.postprocess.synthetic import perfect_outputs, random_ellipse_instances, random_instance_types

H, W = 64, 80


def _image(seed: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Perfect outputs of one image (+ semantic logits of 3 classes) and its ground-truth maps."""
    gt = random_ellipse_instances((H, W), 8, inside=True, seed=seed)
    types = random_instance_types(gt, 3, seed=seed)
    outputs = perfect_outputs(gt, types, num_types=3)
    sem = np.zeros((H, W), np.int64)
    sem[:, W // 2 :] = 1
    sem[H // 2 :, : W // 4] = 2
    outputs[OutputKeys.SEM_LOGITS] = np.where(np.arange(3)[:, None, None] == sem[None], 4.0, -4.0).astype(np.float32)
    return outputs, gt, sem


def _batch(seeds: list[int]) -> tuple[dict[str, np.ndarray], list[np.ndarray], list[np.ndarray]]:
    images = [_image(s) for s in seeds]
    outputs = {key: np.stack([o[key] for o, _, _ in images]) for key in images[0][0]}
    return outputs, [g for _, g, _ in images], [s for _, _, s in images]


def _assert_same(a: PostprocessResult, b: PostprocessResult) -> None:
    np.testing.assert_array_equal(a.inst_map, b.inst_map)
    np.testing.assert_array_equal(a.type_map, b.type_map)
    np.testing.assert_array_equal(a.sem_map, b.sem_map)
    assert a.instances.to_records() == b.instances.to_records()


@pytest.fixture(scope="module")
def batch():
    return _batch([0, 1])


@pytest.fixture(scope="module")
def reference(batch):
    outputs, _, _ = batch
    return postprocess_outputs(outputs)


def test_batched_numpy_recovers_each_image(batch, reference, pq):
    _, gts, sems = batch
    assert len(reference) == 2
    for result, gt, sem in zip(reference, gts, sems):
        assert pq(gt, result.inst_map) >= 0.95
        np.testing.assert_array_equal(result.sem_map, sem)
        assert len(result.instances) == result.inst_map.max()
        assert result.inst_map.dtype == np.int32 and result.sem_map.dtype == np.int32


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_torch_batched_matches_numpy(batch, reference, dtype):
    outputs, _, _ = batch
    tensors = {key: torch.as_tensor(value).to(dtype) for key, value in outputs.items()}
    if dtype == torch.bfloat16:
        tensors[OutputKeys.INST_HV] = torch.as_tensor(outputs[OutputKeys.INST_HV])  # HV needs its precision
    for result, expected in zip(postprocess_outputs(tensors), reference):
        _assert_same(result, expected)


@pytest.mark.parametrize("as_torch", [False, True])
def test_without_batch_dim(batch, reference, as_torch):
    outputs, _, _ = batch
    single = {key: value[1] for key, value in outputs.items()}
    if as_torch:
        single = {key: torch.as_tensor(value) for key, value in single.items()}
    results = postprocess_outputs(single)
    assert len(results) == 1
    _assert_same(results[0], reference[1])


def test_extra_keys_ignored_and_missing_or_none_types_give_type_one(batch):
    outputs, _, _ = batch
    reduced = {
        OutputKeys.INST_BINARY: outputs[OutputKeys.INST_BINARY],
        OutputKeys.INST_HV: outputs[OutputKeys.INST_HV],
        OutputKeys.INST_TYPE: None,
        OutputKeys.SEM_LOGITS: None,
        OutputKeys.SEM_PROMPT: np.zeros((2, 1, 4, 4), np.float32),
    }
    results = postprocess_outputs(reduced, with_contours=False)
    for result in results:
        assert result.sem_map is None
        assert (result.type_map == (result.inst_map > 0)).all()
        assert result.instances.contours == []


def test_semantic_only(batch):
    outputs, _, sems = batch
    results = postprocess_outputs({OutputKeys.SEM_LOGITS: outputs[OutputKeys.SEM_LOGITS]}, sem_min_size=50)
    for result, sem in zip(results, sems):
        assert result.inst_map is None and result.type_map is None and result.instances is None
        np.testing.assert_array_equal(result.sem_map, sem)


def test_params_are_passed_through(batch):
    outputs, _, _ = batch
    strict = postprocess_outputs(outputs, params=WatershedParams(min_object_size=10**6))
    assert all(result.inst_map.max() == 0 and len(result.instances) == 0 for result in strict)


def test_empty_batch_prediction():
    outputs = {
        OutputKeys.INST_BINARY: np.stack([np.full((3, 16, 16), 4.0), np.full((3, 16, 16), -4.0)], axis=1),
        OutputKeys.INST_HV: np.zeros((3, 2, 16, 16)),
        OutputKeys.INST_TYPE: np.zeros((3, 4, 16, 16)),
        OutputKeys.SEM_LOGITS: np.zeros((3, 2, 16, 16)),
    }
    results = postprocess_outputs(outputs)
    assert len(results) == 3
    for result in results:
        assert result.inst_map.max() == 0 and result.type_map.max() == 0 and result.sem_map.max() == 0
        assert len(result.instances) == 0


def _valid() -> dict[str, np.ndarray]:
    return {
        OutputKeys.INST_BINARY: np.zeros((2, 2, 16, 16), np.float32),
        OutputKeys.INST_HV: np.zeros((2, 2, 16, 16), np.float32),
        OutputKeys.INST_TYPE: np.zeros((2, 3, 16, 16), np.float32),
        OutputKeys.SEM_LOGITS: np.zeros((2, 4, 16, 16), np.float32),
    }


@pytest.mark.parametrize(
    "key, shape, match",
    [
        (OutputKeys.INST_BINARY, (2, 3, 16, 16), "'inst_binary' must have 1 .object. or 2"),
        (OutputKeys.INST_HV, (2, 1, 16, 16), "'inst_hv' must have 2"),
        (OutputKeys.INST_TYPE, (2, 1, 16, 16), "'inst_type' must have >= 2"),
        (OutputKeys.SEM_LOGITS, (2, 0, 16, 16), "'sem_logits' must have >= 1"),
        (OutputKeys.INST_HV, (2, 2, 16, 12), "spatial size"),
        (OutputKeys.SEM_LOGITS, (2, 4, 8, 16), "spatial size"),
        (OutputKeys.INST_TYPE, (3, 3, 16, 16), "batch size"),
        (OutputKeys.INST_HV, (2, 16, 16), "all be .C, H, W. or all .B, C, H, W."),
        (OutputKeys.SEM_LOGITS, (1, 2, 4, 16, 16), "all be .C, H, W. or all .B, C, H, W."),
    ],
)
def test_bad_shapes_name_the_problem(key, shape, match):
    outputs = _valid()
    outputs[key] = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match=match):
        postprocess_outputs(outputs)


def test_bad_dicts():
    outputs = _valid()
    del outputs[OutputKeys.INST_HV]
    with pytest.raises(ValueError, match="'inst_hv' is missing"):
        postprocess_outputs(outputs)
    with pytest.raises(ValueError, match="neither"):
        postprocess_outputs({OutputKeys.INST_TYPE: np.zeros((2, 3, 16, 16))})
    with pytest.raises(TypeError, match="mapping"):
        postprocess_outputs([np.zeros((2, 2, 16, 16))])
    with pytest.raises(ValueError, match="activation"):
        postprocess_outputs(_valid(), activation="tanh")
    nan = _valid()
    nan[OutputKeys.SEM_LOGITS][0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="sem_logits contains NaN or infinite"):
        postprocess_outputs(nan)


def test_metatensor_with_grad(batch, reference):
    from monai.data import MetaTensor

    outputs, _, _ = batch
    tensors = {key: MetaTensor(torch.as_tensor(value)).requires_grad_(True) for key, value in outputs.items()}
    for result, expected in zip(postprocess_outputs(tensors), reference):
        _assert_same(result, expected)
