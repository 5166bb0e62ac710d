"""Targets and the Co-Seg++ loss: hand-checked values, MONAI equivalence, and that training lowers it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import ComputeHoVerMaps

from coseg.keys import DataKeys as D
from coseg.keys import OutputKeys as K
from coseg.losses import CoSegLoss, CoSegTargetsd, HVGradientLoss, SymmetricKLLoss, compute_hv_maps, lowres_foreground
from coseg.networks import CoSegPlusPlus


def _disks(size: int = 64, n: int = 12, seed: int = 0, id_step: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    inst = np.zeros((size, size), np.int64)
    yy, xx = np.ogrid[:size, :size]
    for i in range(1, n + 1):
        cy, cx = rng.integers(4, size - 4, 2)
        r = rng.integers(1, 6)
        inst[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i * id_step
    return inst


@pytest.mark.parametrize("seed, id_step", [(0, 1), (1, 7), (2, 1000)])
def test_hv_maps_equal_monai(seed, id_step):
    inst = _disks(seed=seed, id_step=id_step)
    ref = ComputeHoVerMaps()(inst[None]).numpy()
    np.testing.assert_allclose(compute_hv_maps(inst), ref, atol=1e-6)


def test_hv_maps_hand_case():
    inst = np.zeros((3, 5), np.int64)
    inst[1, 1:4] = 9  # a horizontal bar: x - cx = -1, 0, 1; y constant
    inst[0, 0] = 4  # single pixel: all zeros
    hv = compute_hv_maps(inst[None])
    np.testing.assert_array_equal(hv[0, 1, 1:4], [-1, 0, 1])
    assert np.all(hv[1] == 0) and hv[0, 0, 0] == 0
    assert np.all(compute_hv_maps(np.zeros((4, 4), int)) == 0)
    with pytest.raises(ValueError, match="instance map"):
        compute_hv_maps(np.zeros((2, 4, 4), int))


def test_lowres_foreground_is_the_area_fraction():
    label = torch.zeros(1, 1, 4, 4)
    label[0, 0, 0, 0] = 5
    label[0, 0, 2:, 2:] = 1
    np.testing.assert_allclose(lowres_foreground(label, (2, 2))[0, 0].numpy(), [[0.25, 0.0], [0.0, 1.0]])


def test_symmetric_kl_matches_torch_kl_div():
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(2, 2, 3, 3), 1)
    q = torch.softmax(torch.randn(2, 2, 3, 3), 1)
    ref = (F.kl_div(p.log(), q, reduction="mean") + F.kl_div(q.log(), p, reduction="mean")) / 2
    loss = SymmetricKLLoss()
    torch.testing.assert_close(loss(p, q), ref)
    torch.testing.assert_close(loss(p, q), loss(q, p))
    assert float(loss(p, p)) == 0.0


def test_hv_gradient_loss_is_zero_for_the_target_and_only_sees_objects():
    inst = _disks()
    hv = torch.from_numpy(compute_hv_maps(inst))[None]
    focus = torch.from_numpy(inst > 0)[None, None]
    loss = HVGradientLoss()
    assert float(loss(hv, hv, focus)) == 0.0
    noisy = hv + 0.1 * torch.randn_like(hv)
    assert float(loss(noisy, hv, focus)) > 0
    # changes far from every object (beyond the 5x5 Sobel support) do not count
    near = F.max_pool2d(focus.float(), 9, 1, 4) > 0
    far_only = torch.where(near, hv, hv + 5 * torch.randn_like(hv))
    assert float(loss(far_only, hv, focus)) == pytest.approx(0.0, abs=1e-10)


def _targets(inst: np.ndarray, sem: np.ndarray) -> dict:
    data = {D.LABEL_INST: inst[None], D.LABEL_SEM: sem[None], D.LABEL_TYPE: ((inst % 3) + 1)[None]}
    data = CoSegTargetsd()(data)
    return {k: torch.as_tensor(np.asarray(v))[None] for k, v in data.items()}


def test_targets_transform_completes_the_labels():
    inst = _disks()
    typ = np.full_like(inst, 2)
    meta = MetaTensor(torch.from_numpy(inst[None]), meta={"filename_or_obj": "x.png"})
    out = CoSegTargetsd()({D.LABEL_INST: meta, D.LABEL_TYPE: typ[None], D.LABEL_SEM: np.zeros_like(inst)[None]})
    assert isinstance(out[D.LABEL_HV], MetaTensor) and out[D.LABEL_HV].meta["filename_or_obj"] == "x.png"
    assert out[D.LABEL_HV].shape == (2, 64, 64)
    t = np.asarray(out[D.LABEL_TYPE])[0]
    assert np.all(t[inst == 0] == 0) and np.all(t[inst > 0] == 2)
    single = CoSegTargetsd(allow_missing_sem=True)({D.LABEL_INST: inst[None]})
    assert np.array_equal(np.asarray(single[D.LABEL_TYPE])[0], (inst > 0).astype(int))
    assert np.all(np.asarray(single[D.LABEL_SEM]) == 0)
    with pytest.raises(KeyError, match="allow_missing_sem"):
        CoSegTargetsd()({D.LABEL_INST: inst[None]})


def _micro() -> CoSegPlusPlus:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CoSegPlusPlus.from_preset("micro", num_sem_classes=3, num_inst_types=4)


def test_loss_terms_and_weights():
    model = _micro()
    inst = _disks()
    target = _targets(inst, (np.arange(64)[None, :] // 22).repeat(64, 0))
    with torch.no_grad():
        pred = model(torch.randn(1, 3, 64, 64))
    loss = CoSegLoss()
    total = loss(pred, target)
    assert set(loss.last_terms) == {
        "pass1_sem_bce",
        "pass1_inst_bce",
        "pass1_kl",
        "sem_dice_ce",
        "binary_dice_ce",
        "type_dice_ce",
        "hv_mse",
        "hv_msge",
    }
    torch.testing.assert_close(total, torch.stack(list(loss.last_terms.values())).sum())
    # λ scales exactly the pass-1 terms
    double = CoSegLoss(pass1_weight=1.0)
    double(pred, target)
    for k, v in loss.last_terms.items():
        factor = 2.0 if k.startswith("pass1") else 1.0
        torch.testing.assert_close(double.last_terms[k], factor * v)
    expected_mse = 2.5 * F.mse_loss(pred[K.INST_HV], target[D.LABEL_HV].float())
    torch.testing.assert_close(loss.last_terms["hv_mse"], expected_mse)
    released = CoSegLoss(pass1_dice_weight=1.0, sem_weight=0.0)
    released(pred, target)
    assert "pass1_sem_dice" in released.last_terms and "sem_dice_ce" not in released.last_terms


def test_loss_errors():
    loss = CoSegLoss()
    with pytest.raises(KeyError, match="label_hv"):
        loss({}, {D.LABEL_SEM: 0, D.LABEL_INST: 0, D.LABEL_TYPE: 0})
    with pytest.raises(ValueError, match=">= 0"):
        CoSegLoss(kl_weight=-1)


def test_loss_decreases_when_training_the_micro_model():
    model = _micro()
    inst = _disks(seed=3)
    sem = np.zeros((64, 64), np.int64)
    sem[:, 32:] = 2
    sem[:, :32][inst[:, :32] > 0] = 1
    target = _targets(inst, sem)
    image = torch.randn(1, 3, 64, 64)
    loss_fn = CoSegLoss()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = loss_fn(model(image), target)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses
