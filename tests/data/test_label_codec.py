"""coseg.data.label_codec: value = sem + S * (type + T * k), painted types, DecodeLabeld."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from coseg.data.label_codec import DecodeLabeld, decode, encode, label_capacity
from coseg.histo.synthetic import make_sample
from coseg.keys import DataKeys

SEM = np.array([[0, 1, 1, 2], [0, 1, 2, 2], [0, 0, 2, 2]])
INST = np.array([[0, 50, 50, 0], [0, 0, 9, 9], [0, 0, 0, 0]])  # ids arbitrary: 9 -> k=1, 50 -> k=2
TYPE = np.array([[0, 1, 1, 0], [0, 0, 3, 3], [0, 0, 0, 0]])


def test_encode_hand_computed():
    v = encode(SEM, INST, TYPE, 3, 4)
    # S=3, T=4: object 50 (k=2, type 1) on sem 1 -> 1 + 3 * (1 + 4 * 2) = 28; object 9 (k=1, type 3) on
    # sem 2 -> 2 + 3 * (3 + 4) = 23
    expect = np.array([[0, 28, 28, 2], [0, 1, 23, 23], [0, 0, 2, 2]])
    np.testing.assert_array_equal(v, expect)
    assert v.dtype == np.uint16


def test_decode_hand_computed():
    sem, inst, typ = decode(np.array([[0, 28, 28, 2], [0, 1, 23, 23], [0, 0, 2, 2]]), 3, 4)
    np.testing.assert_array_equal(sem, SEM)
    np.testing.assert_array_equal(typ, TYPE)
    np.testing.assert_array_equal(inst, [[0, 2, 2, 0], [0, 0, 1, 1], [0, 0, 0, 0]])
    assert sem.dtype == inst.dtype == typ.dtype == np.int32


@pytest.mark.parametrize("seed", [0, 1])
def test_round_trip_on_synthetic_sample(seed):
    d = make_sample(96, seed)
    v = encode(d["sem"], d["inst"], d["type"], 3, 4)
    sem, inst, typ = decode(v, 3, 4)
    np.testing.assert_array_equal(sem, d["sem"])
    np.testing.assert_array_equal(typ, d["type"])
    np.testing.assert_array_equal(inst, d["inst"])  # synthetic ids are already 1..n
    # a float label (as LoadImage gives) decodes the same
    np.testing.assert_array_equal(decode(v.astype(np.float32), 3, 4)[1], inst)


def test_capacity_and_dtype_switch():
    assert label_capacity(3, 4) == 5460
    assert label_capacity(3, 4, np.uint32) == 357913940
    assert label_capacity(1, 1, np.uint8) == 255
    with pytest.raises(ValueError, match="unsigned"):
        label_capacity(3, 4, np.int32)
    for n, dtype in ((5460, np.uint16), (5461, np.uint32)):
        inst = np.arange(1, n + 1)[None]
        v = encode(np.zeros_like(inst), inst, np.ones_like(inst), 3, 4)
        assert v.dtype == dtype
        assert decode(v, 3, 4)[1].max() == n


def test_capacity_overflow_raises():
    inst = np.array([[0, 1]])
    assert label_capacity(65536, 65536, np.uint32) == 0
    with pytest.raises(ValueError, match="capacity"):
        encode(np.zeros_like(inst), inst, inst, 65536, 65536)


def test_painted_types_become_connected_components():
    # type 2 painted without indices: two blobs separated by a 1-pixel gap, one diagonal contact
    typ = np.array(
        [
            [2, 2, 0, 2, 0, 0],
            [2, 2, 0, 2, 0, 0],
            [0, 0, 0, 0, 2, 0],  # touches the blob above only at a corner: separate (4-connectivity)
            [1, 1, 1, 1, 0, 0],  # type 1 touching type 2? no: row 2 col 4 is not 4-adjacent to row 3
        ]
    )
    sem = np.zeros_like(typ)
    v = sem + 3 * typ  # k = 0 everywhere
    _, inst, out_t = decode(v, 3, 4)
    np.testing.assert_array_equal(out_t, typ)
    expect = np.array([[2, 2, 0, 3, 0, 0], [2, 2, 0, 3, 0, 0], [0, 0, 0, 0, 4, 0], [1, 1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(inst, expect)  # components numbered by type, then raster order
    # touching painted objects of the same type merge (documented): close the gap
    typ2 = typ.copy()
    typ2[0:2, 2] = 2
    _, inst2, _ = decode(sem + 3 * typ2, 3, 4)
    assert len(np.unique(inst2[typ2 == 2])) == 2  # the left blobs merged, the diagonal one stays apart


def test_indexed_objects_come_before_painted_ones():
    v = np.array([[0 + 3 * (1 + 4 * 1), 0, 3 * 2]])  # object k=1 type 1, then a painted type-2 pixel
    _, inst, typ = decode(v, 3, 4)
    np.testing.assert_array_equal(inst, [[1, 0, 2]])
    np.testing.assert_array_equal(typ, [[1, 0, 2]])


def test_errors():
    with pytest.raises(ValueError, match="num_sem_classes=3"):
        encode(SEM + 1, INST, TYPE, 3, 4)
    with pytest.raises(ValueError, match="num_inst_types=4"):
        encode(SEM, INST, TYPE + 1, 3, 4)
    with pytest.raises(ValueError, match="type 0"):
        encode(SEM, INST, np.zeros_like(TYPE), 3, 4)
    with pytest.raises(ValueError, match="shapes differ"):
        encode(SEM, INST[:2], TYPE, 3, 4)
    with pytest.raises(ValueError, match="negative"):
        encode(SEM - 1, INST, TYPE, 3, 4)
    with pytest.raises(TypeError, match="int"):
        encode(SEM, INST, TYPE, 3.0, 4)
    with pytest.raises(ValueError, match=">= 1"):
        decode(SEM, 0, 4)
    with pytest.raises(ValueError, match="non-integer"):
        decode(np.array([[0.5]]), 3, 4)
    with pytest.raises(TypeError):
        decode(np.array([["a"]]), 3, 4)
    # an object value without type: the sign of a wrong S/T (k=1, type 0 with S=3, T=4 -> 12)
    with pytest.raises(ValueError, match="without a type"):
        decode(np.array([[12]]), 3, 4)
    # with T = 1 there are no types and that is fine
    assert decode(np.array([[3]]), 3, 1)[1].max() == 1


def test_decode_labeld_metatensor_keeps_channel_meta_and_dtype():
    v = encode(SEM, INST, TYPE, 3, 4).astype(np.float32)
    mt = MetaTensor(torch.from_numpy(v)[None], meta={"filename_or_obj": "case.png"})
    t = DecodeLabeld(num_sem_classes=3, num_inst_types=4, scheme="indexed")
    out = t({DataKeys.LABEL: mt, DataKeys.IMAGE: "untouched"})
    assert out[DataKeys.IMAGE] == "untouched"
    for key, ref in ((DataKeys.LABEL_SEM, SEM), (DataKeys.LABEL_TYPE, TYPE)):
        x = out[key]
        assert isinstance(x, MetaTensor) and x.shape == (1, 3, 4) and x.dtype == torch.float32
        assert x.meta["filename_or_obj"] == "case.png"
        np.testing.assert_array_equal(x[0].numpy(), ref)
    np.testing.assert_array_equal(out[DataKeys.LABEL_INST][0].numpy(), [[0, 2, 2, 0], [0, 0, 1, 1], [0, 0, 0, 0]])
    out64 = DecodeLabeld(num_sem_classes=3, num_inst_types=4, scheme="indexed", dtype=torch.int64)({DataKeys.LABEL: mt})
    assert out64[DataKeys.LABEL_INST].dtype == torch.int64


def test_decode_labeld_numpy_without_channel_and_argument_errors():
    v = encode(SEM, INST, TYPE, 3, 4)
    out = DecodeLabeld(
        "lab", num_sem_classes=3, num_inst_types=4, scheme="indexed", sem_key="s", inst_key="i", type_key="t"
    )({"lab": v})
    assert isinstance(out["s"], np.ndarray) and out["s"].shape == (3, 4) and out["s"].dtype == np.uint16
    np.testing.assert_array_equal(out["t"], TYPE)
    with pytest.raises(ValueError, match="one key"):
        DecodeLabeld(["a", "b"], num_sem_classes=3, num_inst_types=4, scheme="indexed")
    with pytest.raises(ValueError, match="single channel"):
        DecodeLabeld(num_sem_classes=3, num_inst_types=4, scheme="indexed")({DataKeys.LABEL: np.stack([v, v])})
    with pytest.raises(ValueError, match="2\\*\\*24"):
        DecodeLabeld(num_sem_classes=3, num_inst_types=4, scheme="indexed")(
            {DataKeys.LABEL: np.full((1, 2, 2), 2.0**25, np.float32)}
        )
    with pytest.raises(KeyError):
        DecodeLabeld(num_sem_classes=3, num_inst_types=4, scheme="indexed")({"other": v})
    assert DecodeLabeld(num_sem_classes=3, num_inst_types=4, scheme="indexed", allow_missing_keys=True)(
        {"other": v}
    ) == {"other": v}


# ---- class-map scheme (MONAI Label labels and the bundles' ``pred``) ---------------------------------------


def test_class_map_hand_case_and_gap_between_touching_objects():
    from coseg.data.label_codec import class_map_names, decode_class_map, encode_class_map

    sem = np.array([[1, 1, 1, 2, 2], [1, 1, 1, 2, 2], [1, 1, 1, 2, 2]])
    inst = np.array([[0, 5, 5, 9, 0], [0, 5, 5, 9, 0], [0, 0, 0, 0, 0]])
    typ = np.array([[0, 1, 1, 3, 0], [0, 1, 1, 3, 0], [0, 0, 0, 0, 0]])
    cm = encode_class_map(sem, inst, typ, num_sem_classes=3)
    # object 9 touches object 5: it gives its border column back to the region (class 2)
    np.testing.assert_array_equal(cm, [[1, 3, 3, 2, 2], [1, 3, 3, 2, 2], [1, 1, 1, 2, 2]])
    inst_t = inst.copy()
    inst_t[:, 3] = 0
    inst_t[0:2, 4] = 9
    typ_t = np.where(inst_t == 9, 3, np.where(inst_t == 5, 1, 0))
    cm2 = encode_class_map(sem, inst_t, typ_t, num_sem_classes=3)
    s2, i2, t2 = decode_class_map(cm2, 3, 4)
    assert i2.max() == 2 and set(np.unique(t2)) == {0, 1, 3}
    # regions under objects come from the nearest region pixel: row 2 lies under nothing and is exact
    np.testing.assert_array_equal(s2[2], sem[2])
    assert s2[0, 1] == 1 and s2[0, 4] == 2
    assert class_map_names(
        {0: "background", 1: "tumour", 2: "stroma"}, {0: "bg", 1: "tumour", 2: "TIL"}, object_suffix=" nucleus"
    ) == {
        "0": "background",
        "1": "tumour",
        "2": "stroma",
        "3": "tumour nucleus",
        "4": "TIL nucleus",
    }


def test_class_map_round_trip_keeps_objects_apart_and_rejects_unknown_classes():
    from coseg.data.label_codec import decode_class_map, encode_class_map
    from coseg.histo.synthetic import make_sample

    s = make_sample(size=96, seed=4)
    cm = encode_class_map(s["sem"], s["inst"], s["type"], num_sem_classes=3)
    sem, inst, typ = decode_class_map(cm, 3, 4)
    n_true = len(np.unique(s["inst"])) - 1
    assert abs((len(np.unique(inst)) - 1) - n_true) <= 0.02 * n_true + 1  # objects reduced to nothing by gaps only
    assert (sem == s["sem"]).mean() > 0.97
    with pytest.raises(ValueError, match="beyond the class list"):
        decode_class_map(np.array([[0, 6]]), 3, 4)
    out = DecodeLabeld(num_sem_classes=3, num_inst_types=4)({DataKeys.LABEL: cm[None]})
    np.testing.assert_array_equal(out[DataKeys.LABEL_INST][0], inst)
