"""coseg.histo.synthetic: H&E-like look, learnable coupling of regions and nuclei, the layout writer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from scipy import ndimage

from coseg.histo.synthetic import (
    SYNTHETIC_INSTANCE_TYPES,
    SYNTHETIC_SEMANTIC_CLASSES,
    make_sample,
    write_synthetic_dataset,
)
from coseg.io import read_label, read_rgb

TUMOUR, TIL, OTHER = 1, 2, 3


@pytest.fixture(scope="module")
def samples():
    return [make_sample(192, seed) for seed in range(3)]


def _majority_types(d):
    inst, typ = d["inst"], d["type"]
    return np.array([np.bincount(typ[inst == k]).argmax() for k in range(1, inst.max() + 1)])


def test_shapes_dtypes_ids_and_determinism(samples):
    d = samples[0]
    assert d["image"].shape == (192, 192, 3) and d["image"].dtype == np.uint8
    assert d["sem"].dtype == np.uint8 and d["type"].dtype == np.uint8 and d["inst"].dtype == np.int32
    assert set(np.unique(d["sem"])) <= set(SYNTHETIC_SEMANTIC_CLASSES)
    assert set(np.unique(d["type"])) <= set(SYNTHETIC_INSTANCE_TYPES)
    ids = np.unique(d["inst"])
    np.testing.assert_array_equal(ids, np.arange(ids.max() + 1))  # contiguous 0..n
    np.testing.assert_array_equal((d["inst"] > 0), (d["type"] > 0))
    again = make_sample(192, 0)
    for k in d:
        np.testing.assert_array_equal(again[k], d[k])
    assert not np.array_equal(samples[1]["image"], d["image"])


def test_nuclei_live_in_their_regions(samples):
    for d in samples:
        sem, inst = d["sem"], d["inst"]
        types = _majority_types(d)
        assert {TUMOUR, TIL, OTHER} <= set(types.tolist())
        # region at each nucleus' centre of mass
        coms = ndimage.center_of_mass(np.ones_like(inst), inst, range(1, inst.max() + 1))
        region = np.array([sem[int(y), int(x)] for y, x in coms])
        assert np.mean(region[types == TUMOUR] == 1) > 0.9
        assert np.mean(region[types == OTHER] == 2) > 0.9
        assert np.mean(region[types == TIL] > 0) > 0.9
        assert np.count_nonzero(inst[sem == 0]) < 0.02 * np.count_nonzero(sem == 0)  # background mostly empty


def test_tumour_nuclei_are_large_and_touch_and_spindles_are_elongated(samples):
    d = samples[0]
    inst = d["inst"]
    types = _majority_types(d)
    areas = np.bincount(inst.ravel())[1:]
    assert np.median(areas[types == TUMOUR]) > 3 * np.median(areas[types == TIL])
    # elongation from second moments
    elong = []
    for k in np.flatnonzero(types == OTHER) + 1:
        ys, xs = np.nonzero(inst == k)
        if len(ys) > 10:
            ev = np.linalg.eigvalsh(np.cov(np.stack([ys, xs])))
            elong.append(np.sqrt(ev[1] / ev[0]))
    assert np.median(elong) > 2.5
    # at least one pair of different tumour nuclei are 4-adjacent (touching objects kept apart)
    right = (inst[:, :-1] > 0) & (inst[:, 1:] > 0) & (inst[:, :-1] != inst[:, 1:])
    down = (inst[:-1] > 0) & (inst[1:] > 0) & (inst[:-1] != inst[1:])
    assert right.any() or down.any()


def test_lymphocytes_denser_near_the_tumour_border(samples):
    near, far = [], []
    for d in samples:
        tumour = d["sem"] == 1
        dist = np.where(tumour, ndimage.distance_transform_edt(tumour), ndimage.distance_transform_edt(~tumour))
        tissue = d["sem"] > 0
        til = d["type"] == TIL
        near.append(til[tissue & (dist < 12)].mean())
        far.append(til[tissue & (dist > 30)].mean())
    assert np.mean(near) > 1.5 * np.mean(far)


def test_looks_like_h_and_e(samples):
    for d in samples:
        img = d["image"].astype(float)
        grey = img.mean(-1)
        sem, typ = d["sem"], d["type"]
        bg = (sem == 0) & (typ == 0)
        stroma = (sem == 2) & (typ == 0)
        assert grey[bg].mean() > 225  # white empty background
        r, g, b = (img[stroma][:, c].mean() for c in range(3))
        assert r > g + 40 and b > g + 20  # pink eosin
        nuc = grey[typ > 0].mean()
        assert nuc < 0.6 * grey[stroma].mean()  # dark haematoxylin nuclei
        assert grey[typ == TIL].mean() < grey[typ == TUMOUR].mean()  # lymphocytes darkest
        assert img[typ > 0][:, 2].mean() > img[typ > 0][:, 0].mean()  # purple-blue nuclei
        assert grey[stroma].std() > 3  # texture, not flat colour


def test_fraction_arguments_and_errors():
    d = make_sample(64, 5, background_fraction=0.0, tumour_fraction=1.0)
    assert (d["sem"] == 1).all()
    d = make_sample(64, 5, background_fraction=0.5, tumour_fraction=0.0)
    assert set(np.unique(d["sem"])) == {0, 2}
    for kwargs in ({"size": 16}, {"size": 64.0}, {"background_fraction": 0.95}, {"nucleus_scale": 0.0}):
        with pytest.raises(ValueError):
            make_sample(**{"size": 64, **kwargs})
    with pytest.raises(TypeError):
        make_sample(64, seed=-1)


def test_write_synthetic_dataset_layout(tmp_path):
    out = tmp_path / "synth"
    info = write_synthetic_dataset(out, num_images=5, size=64, seed=3)
    assert info["semantic_classes"] == {"0": "background", "1": "tumour", "2": "stroma"}
    assert info["instance_types"]["2"] == "TIL"
    assert json.loads((out / "dataset.json").read_text(encoding="utf-8"))["label_kinds"] == ["sem", "inst", "type"]
    items = load_decathlon_datalist(out / "datalist.json", data_list_key="training", base_dir=out)
    dl = json.loads((out / "datalist.json").read_text(encoding="utf-8"))
    assert sum(len(dl[s]) for s in ("training", "validation", "test")) == 5
    it = items[0]
    img = read_rgb(it["image"])
    assert img.shape == (64, 64, 3)
    inst = read_label(it["label_inst"])
    assert inst.dtype == np.uint16
    typ = read_label(it["label_type"])
    np.testing.assert_array_equal(inst > 0, typ > 0)
    # reproducible
    again = write_synthetic_dataset(tmp_path / "again", num_images=5, size=64, seed=3)
    assert again["statistics"] == info["statistics"]
    with pytest.raises(FileExistsError):
        write_synthetic_dataset(out, num_images=1, size=64)
    with pytest.raises(ValueError):
        write_synthetic_dataset(tmp_path / "none", num_images=0)
