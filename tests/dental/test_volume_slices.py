"""Training slices cut from label volumes on the fly: bit-equal to ``prepare_cbct``'s PNGs as the bundle loads them,
ToothFairy2 names by default, bad volumes named, empty-slice subsampling, the volume-block sampler (one read per
volume and epoch, DDP shares) and the choice between prepared slices and volumes."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import CacheDataset
from monai.transforms import Compose
from torch.utils.data import RandomSampler

import coseg.dental.volume_slices as volume_slices
from coseg.dental.labels import FDI_TEETH
from coseg.dental.prepare import prepare_cbct
from coseg.dental.synthetic import write_toothfairy2_like
from coseg.dental.volume_slices import (
    VolumeSliceDataset,
    VolumeSliceSampler,
    cbct_slice_dataset,
    datalist_source,
    slice_sampler,
)
from coseg.dental.volumes import find_toothfairy2_cases
from coseg.errors import InputFileError

REPO = Path(__file__).resolve().parents[2]
SHAPE = (16, 36, 44)
SIZE = 48
LABEL_KEYS = ("image", "label_sem", "label_inst", "label_type")


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """Two phantoms as ToothFairy2 ships them (MetaImage) but with permuted label ids: only mapping by name reads
    them right."""
    return write_toothfairy2_like(tmp_path_factory.mktemp("vs") / "raw", num_cases=2, shape=SHAPE, seed=4, reindex=True)


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    """Two phantoms in ToothFairy2's own ids, NIfTI: what MONAI Label holds."""
    return write_toothfairy2_like(
        tmp_path_factory.mktemp("vs") / "plain", num_cases=2, shape=SHAPE, seed=7, fmt="nii.gz"
    )


def _pairs(root: Path) -> list[dict[str, str]]:
    return [{"image": str(c.image), "label": str(c.label)} for c in find_toothfairy2_cases(root)]


@pytest.fixture(scope="module")
def load_chain():
    """The prepared-slice path's loading transforms, exactly as the bundle's train.json builds them."""
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "coseg_cbct" / "configs" / "train.json"))
    return Compose(parser.get_parsed_content("load_transforms"))


@pytest.mark.parametrize(
    "axis, channels, skip_empty",
    [("axial", "repeat", False), ("coronal", "adjacent", True), ("sagittal", "repeat", True)],
)
def test_slices_equal_what_prepare_writes(raw, tmp_path, load_chain, axis, channels, skip_empty):
    prepared = prepare_cbct(
        raw, tmp_path, axis=axis, size=SIZE, channels=channels, skip_empty=skip_empty, ratios=(1, 0, 0), progress=False
    )
    written = {(it["case"], it["slice"]): it for it in prepared["training"]}
    dataset = VolumeSliceDataset(
        _pairs(raw),
        axis=axis,
        size=SIZE,
        channels=channels,
        empty_fraction=0.0 if skip_empty else 1.0,
        labels=raw / "dataset.json",
    )
    ours = {(dataset.slice_item(i)["case"], dataset.slice_item(i)["slice"]): i for i in range(len(dataset))}
    assert sorted(ours) == sorted(written)
    if skip_empty:  # the phantoms do have empty coronal and sagittal slices
        assert len(written) < sum(case.geometry.num_slices for case in dataset.cases)
    for key, index in ours.items():
        paths = {k: str(tmp_path / v) for k, v in written[key].items() if k in LABEL_KEYS}
        expected = load_chain({**written[key], **paths})
        got = dataset[index]
        assert set(got) == set(expected)
        for name in LABEL_KEYS:
            assert type(got[name]) is type(expected[name])
            assert got[name].dtype == expected[name].dtype and got[name].shape == expected[name].shape, name
            assert torch.equal(got[name].as_tensor(), expected[name].as_tensor()), (key, name)
        assert got["group"] == got["case"] == key[0] and got["slice"] == key[1]
        # named like prepare's PNG (overlays are named after it), the volume under "source"
        assert Path(got["image"].meta["filename_or_obj"]).name == Path(paths["image"]).stem
        assert got["image"].meta["source"] == next(p["image"] for p in _pairs(raw) if key[0] in p["image"])


def test_toothfairy2_names_are_the_default(plain):
    """MONAI Label's label volumes come without a dataset.json: they are read with ToothFairy2's label names."""
    named = VolumeSliceDataset(_pairs(plain), size=SIZE, labels=plain / "dataset.json")
    default = VolumeSliceDataset(_pairs(plain), size=SIZE)
    assert len(default) == len(named) == 2 * SHAPE[0]
    teeth, regions = set(), set()
    for i in range(len(default)):
        a, b = default.slice_item(i), named.slice_item(i)
        for key in LABEL_KEYS:
            assert torch.equal(a[key].as_tensor(), b[key].as_tensor())
        teeth |= set(torch.unique(a["label_inst"]).int().tolist())
        regions |= set(torch.unique(a["label_sem"]).int().tolist())
    # FDI numbers and Co-Seg classes (7 would be ToothFairy2's pharynx id)
    assert teeth - {0} <= set(FDI_TEETH) and len(teeth) > 20 and regions == {0, 1, 2, 3}


def test_an_item_may_name_its_own_dataset_json(raw, plain):
    """Re-indexed volumes read by their own dataset.json beside ToothFairy2-id volumes read by the default names."""
    reindexed = [{**pair, "dataset_json": str(raw / "dataset.json")} for pair in _pairs(raw)]
    mixed = VolumeSliceDataset(reindexed + _pairs(plain), size=SIZE)
    alone = VolumeSliceDataset(_pairs(raw), size=SIZE, labels=raw / "dataset.json")
    wrong = VolumeSliceDataset(_pairs(raw), size=SIZE)  # ToothFairy2's names on permuted ids
    differs = False
    for i in range(len(alone)):
        a, b, c = mixed.slice_item(i), alone.slice_item(i), wrong.slice_item(i)
        assert all(torch.equal(a[k].as_tensor(), b[k].as_tensor()) for k in LABEL_KEYS)
        differs |= not torch.equal(b["label_inst"].as_tensor(), c["label_inst"].as_tensor())
    assert differs and len(mixed) == len(alone) + 2 * SHAPE[0]


def _rewrite_label(source: Path, dest: Path, *, value: int | None = None, shift_mm: float = 0.0) -> Path:
    volume = nib.load(source)
    array = np.asarray(volume.dataobj).copy()
    if value is not None:
        array[0, 0, 0] = value
    affine = volume.affine.copy()
    affine[0, 3] += shift_mm
    nib.save(nib.Nifti1Image(array, affine), dest)
    return dest


def test_unknown_label_ids_name_the_file(plain, tmp_path):
    case = find_toothfairy2_cases(plain)[0]
    bad = _rewrite_label(case.label, tmp_path / "bad_ids.nii.gz", value=200)
    with pytest.raises(InputFileError, match=r"bad_ids\.nii\.gz.*\[200\]"):
        VolumeSliceDataset([{"image": str(case.image), "label": str(bad)}], size=SIZE)


def test_a_label_off_the_image_grid_names_the_file(plain, tmp_path):
    case = find_toothfairy2_cases(plain)[0]
    moved = _rewrite_label(case.label, tmp_path / "moved.nii.gz", shift_mm=2.0)
    with pytest.raises(InputFileError, match=r"moved\.nii\.gz.*different voxel grid.*2 mm apart"):
        VolumeSliceDataset([{"image": str(case.image), "label": str(moved)}], size=SIZE)


def test_a_2d_study_is_refused_naming_it(tmp_path):
    """A histology study in the same MONAI Label datastore is not a volume."""
    png = tmp_path / "slide.png"
    png.write_bytes(b"\x89PNG")
    with pytest.raises(InputFileError, match=r"slide\.png.*unknown volume type"):
        VolumeSliceDataset([{"image": str(png), "label": str(png)}], size=SIZE)


def _slices(dataset: VolumeSliceDataset) -> dict[str, set[int]]:
    return {c.case.case_id: set(c.slices) for c in dataset.cases}


def test_empty_fraction_keeps_every_labelled_slice_and_a_share_of_the_empty_ones(plain):
    pairs = _pairs(plain)
    full, labelled, half = (
        VolumeSliceDataset(pairs, axis="coronal", size=SIZE, empty_fraction=f) for f in (1.0, 0.0, 0.5)
    )
    for case, every in _slices(full).items():
        assert every == set(range(SHAPE[1]))  # coronal: one slice per anterior-posterior position
        kept, some = _slices(labelled)[case], _slices(half)[case]
        empty = every - kept
        assert empty and kept < some < every
        assert len(some - kept) == len(empty) // 2
    for i in range(len(labelled)):
        item = labelled.slice_item(i)
        assert item["label_sem"].any() or item["label_inst"].any()


def test_volumes_without_any_region_or_tooth_give_no_slices(plain, tmp_path):
    case = find_toothfairy2_cases(plain)[0]
    volume = nib.load(case.label)
    canals = np.where(np.asarray(volume.dataobj) > 0, 3, 0).astype(np.uint8)  # canals: background for Co-Seg
    nib.save(nib.Nifti1Image(canals, volume.affine), tmp_path / "canals.nii.gz")
    pair = [{"image": str(case.image), "label": str(tmp_path / "canals.nii.gz")}]
    assert len(VolumeSliceDataset(pair, size=SIZE, empty_fraction=1.0)) == SHAPE[0]
    with pytest.raises(ValueError, match="no labelled slice"):
        VolumeSliceDataset(pair, size=SIZE, empty_fraction=0.0)


def _case_of(dataset: VolumeSliceDataset, index: int) -> int:
    return next(k for k in range(len(dataset.cases)) if index in dataset.case_indices(k))


def test_sampler_shuffles_every_epoch_and_keeps_volumes_together(plain):
    dataset = VolumeSliceDataset(_pairs(plain), size=SIZE, empty_fraction=1.0, cache_volumes=1)
    sampler = VolumeSliceSampler(dataset, shuffle=True, seed=3)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == sorted(second) == list(range(len(dataset))) and len(sampler) == len(dataset)
    assert first != second
    assert list(VolumeSliceSampler(dataset, shuffle=True, seed=3)) == first  # seeded
    for order in (first, second):  # block of one volume: each volume's slices in one run, shuffled
        cases = [_case_of(dataset, i) for i in order]
        runs = [c for j, c in enumerate(cases) if j == 0 or cases[j - 1] != c]
        assert sorted(runs) == [0, 1]
        assert order[: SHAPE[0]] != sorted(order[: SHAPE[0]])
    assert list(VolumeSliceSampler(dataset, shuffle=False)) == list(range(len(dataset)))


def test_sampler_reads_each_volume_once_per_epoch(plain, monkeypatch):
    dataset = VolumeSliceDataset(_pairs(plain) * 2, size=SIZE, cache_volumes=2)  # 4 volumes, 2 in memory
    reads = []
    original = volume_slices.read_case
    monkeypatch.setattr(volume_slices, "read_case", lambda case: reads.append(case) or original(case))
    for epoch in range(2):
        reads.clear()
        for index in VolumeSliceSampler(dataset, shuffle=True, seed=epoch):
            dataset.slice_item(index)
        assert len(reads) <= 4
    reads.clear()
    for index in RandomSampler(dataset, generator=torch.Generator().manual_seed(0)):  # what it avoids
        dataset.slice_item(index)
    assert len(reads) > 20


def test_sampler_shares_volumes_between_processes(plain):
    dataset = VolumeSliceDataset(_pairs(plain), size=SIZE, empty_fraction=1.0)
    shares = [list(VolumeSliceSampler(dataset, seed=1, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == SHAPE[0]
    assert sorted(shares[0] + shares[1]) == list(range(len(dataset)))
    assert {_case_of(dataset, i) for i in shares[0]}.isdisjoint({_case_of(dataset, i) for i in shares[1]})
    three = [VolumeSliceSampler(dataset, seed=1, num_replicas=3, rank=r) for r in range(3)]
    assert [len(list(s)) for s in three] == [len(s) for s in three] == [11, 11, 11]  # ceil(32 / 3); one has no volume


def test_datalist_source():
    slice_item = {"image": "a.png", "label_sem": "s.png", "label_inst": "i.png", "label_type": "t.png"}
    volume_item = {"image": "a.nii.gz", "label": "l.nii.gz"}
    assert datalist_source([slice_item]) == "slices" and datalist_source([]) == "slices"
    assert datalist_source([volume_item, volume_item]) == "volumes"
    with pytest.raises(ValueError, match="mixes"):
        datalist_source([slice_item, volume_item])
    with pytest.raises(ValueError, match="neither"):
        datalist_source([{"image": "a.nii.gz"}])
    with pytest.raises(ValueError, match="neither"):
        datalist_source([{**volume_item, "label_sem": "s.png"}])


def test_the_bundle_helpers_pick_the_path_from_the_items(plain):
    marker = lambda d: {**d, "marked": True}  # noqa: E731
    item = {"image": "a.png", "label_sem": "s.png", "label_inst": "i.png", "label_type": "t.png"}
    slices = cbct_slice_dataset([item], transform=marker, volume_transform=None)
    assert isinstance(slices, CacheDataset) and isinstance(slice_sampler(slices), RandomSampler)
    volumes = cbct_slice_dataset(_pairs(plain), transform=None, volume_transform=marker, size=SIZE, empty_fraction=0)
    assert isinstance(volumes, VolumeSliceDataset) and volumes[0]["marked"]
    assert isinstance(slice_sampler(volumes, seed=0), VolumeSliceSampler)


@pytest.mark.parametrize(
    "kwargs, problem",
    [
        ({"axis": "oblique"}, "axis"),
        ({"channels": "rgb"}, "channels"),
        ({"window": (10, 10)}, "window"),
        ({"empty_fraction": 1.5}, "empty_fraction"),
        ({"cache_volumes": 0}, "cache_volumes"),
    ],
)
def test_bad_arguments(plain, kwargs, problem):
    with pytest.raises(ValueError, match=problem):
        VolumeSliceDataset(_pairs(plain), **kwargs)


def test_a_volume_replaced_while_training_is_named(plain, tmp_path):
    case = find_toothfairy2_cases(plain)[0]
    pair = {"image": str(tmp_path / "scan.nii.gz"), "label": str(tmp_path / "scan_label.nii.gz")}
    for source, dest in ((case.image, pair["image"]), (case.label, pair["label"])):
        nib.save(nib.load(source), dest)
    dataset = VolumeSliceDataset([pair, _pairs(plain)[1]], size=SIZE, cache_volumes=1)  # the second one is cached
    for source, dest in ((case.image, pair["image"]), (case.label, pair["label"])):
        volume = nib.load(source)
        nib.save(nib.Nifti1Image(np.asarray(volume.dataobj)[:-2], volume.affine), dest)  # 2 voxels fewer
    with pytest.raises(InputFileError, match=r"scan\.nii\.gz.*changed while training"):
        dataset.slice_item(0)


def test_fdi_tooth_types_equal_the_prepared_type_slices(raw, tmp_path):
    """With ``tooth_types="fdi"`` the volume path yields the FDI classes prepare writes; with "jaw" their jaws."""
    import cv2

    from coseg.dental.labels import fdi_class_lut

    prepared = prepare_cbct(raw, tmp_path, size=SIZE, ratios=(1, 0, 0), progress=False)
    written = {(it["case"], it["slice"]): it for it in prepared["training"]}
    fdi = VolumeSliceDataset(_pairs(raw), size=SIZE, labels=raw / "dataset.json", tooth_types="fdi")
    jaw = VolumeSliceDataset(_pairs(raw), size=SIZE, labels=raw / "dataset.json")
    seen = set()
    for i in range(len(fdi)):
        item = fdi.slice_item(i)
        png = cv2.imread(str(tmp_path / written[(item["case"], item["slice"])]["label_type"]), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(item["label_type"][0].numpy(), png)
        np.testing.assert_array_equal(jaw.slice_item(i)["label_type"][0].numpy(), fdi_class_lut("jaw")[png])
        seen |= set(np.unique(png).tolist())
    assert len(seen) > 20  # most FDI classes occur
