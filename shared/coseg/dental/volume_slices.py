"""Training slices cut from whole CBCT volumes on the fly, as ``coseg.dental.prepare`` would have written them.

MONAI Label hands a bundle ``{"image": volume, "label": label volume}`` pairs of whole studies (label volumes in
ToothFairy2 ids). :class:`VolumeSliceDataset` turns such pairs into the per-slice items the prepared-slice path's
``LoadImaged`` chain yields, so that the rest of a training config (random transforms, targets, normalisation) is
shared by both sources:

- the same slicing as ``coseg.dental.prepare``: labels mapped by name (:func:`coseg.dental.labels.build_label_map`;
  ToothFairy2's label names when no ``dataset.json`` is given), anatomical reorientation, resize and pad
  (:func:`coseg.dental.geometry.slice_geometry`), window and channels
  (:func:`coseg.dental.geometry.make_model_slices`); images and labels are bit-equal to the PNGs ``prepare`` writes
  for the same volume and settings;
- the same item layout: ``image`` ``(3, size, size)`` float32 in ``[0, 255]``, ``label_sem`` / ``label_inst`` /
  ``label_type`` ``(1, size, size)`` float32 (semantic class, tooth FDI number, tooth type in the bundle's
  ``tooth_types`` scheme, as :class:`coseg.dental.ToothTypesd` makes it from the prepared ``"fdi"`` slices) as
  :class:`monai.data.MetaTensor`, plus ``group``, ``case`` and ``slice`` as in ``datalist.json``.

Memory stays bounded by a few volumes: the dataset keeps at most ``cache_volumes`` decoded volumes per process (an
LRU cache), and :class:`VolumeSliceSampler` visits the volumes in blocks of that many, shuffling the slices within
a block (and the blocks' order every epoch), so each volume is read once per epoch and DataLoader worker. Building
the dataset reads every volume once (to check it and to find the slices with labels); the prepared-slice path stays
the fast one for large datasets.

:func:`cbct_slice_dataset` and :func:`slice_sampler` pick the path from the datalist items, so one ``train.json``
trains from a prepared dataset (``{"image", "label_sem", "label_inst", "label_type"}`` PNG items) or from label
volumes (``{"image", "label"}`` items, what MONAI Label's ``train#dataset#data`` override carries).
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from monai.data import CacheDataset, DistributedSampler, MetaTensor
from monai.transforms import apply_transform
from torch.utils.data import Dataset, RandomSampler, Sampler, SequentialSampler

from coseg.dental.geometry import SLICE_AXES, SliceGeometry, make_model_slices, slice_geometry
from coseg.dental.labels import TOOTHFAIRY2_LABELS, CbctLabelMap, build_label_map, tooth_type_lut
from coseg.dental.volumes import VOLUME_SUFFIXES, CbctCase, read_case
from coseg.errors import InputFileError

__all__ = [
    "SLICE_LABEL_KEYS",
    "VolumeSliceDataset",
    "VolumeSliceSampler",
    "cbct_slice_dataset",
    "slice_sampler",
    "datalist_source",
]

logger = logging.getLogger(__name__)

#: label keys of a prepared slice item (``coseg.dental.prepare``'s ``datalist.json``)
SLICE_LABEL_KEYS: tuple[str, str, str] = ("label_sem", "label_inst", "label_type")


def datalist_source(data: Sequence[Mapping[str, Any]]) -> Literal["slices", "volumes"]:
    """Whether datalist items are prepared slices or ``{image, label}`` volume pairs.

    Args:
        data: the items.

    Returns:
        ``"slices"`` when every item has the prepared label keys (:data:`SLICE_LABEL_KEYS`; also for an empty
        list), ``"volumes"`` when every item has ``image`` and ``label`` and none of those keys.

    Raises:
        ValueError: an item that is not a mapping, has no ``image``, has neither kind of label, or a datalist that
            mixes the two kinds.
    """
    kinds = set()
    for index, item in enumerate(data):
        if not isinstance(item, Mapping) or "image" not in item:
            raise ValueError(f"datalist item {index} is not a mapping with an 'image': {item!r}")
        if all(k in item for k in SLICE_LABEL_KEYS):
            kinds.add("slices")
        elif "label" in item and not any(k in item for k in SLICE_LABEL_KEYS):
            kinds.add("volumes")
        else:
            raise ValueError(
                f"datalist item {index} ({item['image']}) has neither all of {list(SLICE_LABEL_KEYS)} (a prepared "
                f"slice) nor only a 'label' (a label volume): {sorted(item)}"
            )
    if len(kinds) > 1:
        raise ValueError("the datalist mixes prepared slices and {image, label} volumes; train on one kind at a time")
    return "volumes" if kinds == {"volumes"} else "slices"


def _case_id(image: str | os.PathLike) -> str:
    """Case id of a volume file: its name without the volume suffix and nnU-Net's ``_0000`` channel suffix."""
    name = Path(image).name
    lower = name.lower()
    suffix = next((s for s in VOLUME_SUFFIXES if lower.endswith(s)), "")
    stem = name[: len(name) - len(suffix)] if suffix else name
    return stem[:-5] if stem.endswith("_0000") else stem


@dataclass(frozen=True)
class _IndexedCase:
    """One volume pair of the dataset: its files, label map, geometry and the slices it contributes."""

    case: CbctCase
    label_map: CbctLabelMap
    geometry: SliceGeometry
    slices: tuple[int, ...]


@dataclass(frozen=True)
class _DecodedCase:
    """What the cache holds for one volume: the image and the mapped label volumes on the input grid."""

    image: np.ndarray
    sem: np.ndarray
    inst: np.ndarray


def _evenly_spaced(count: int, fraction: float) -> np.ndarray:
    """Boolean mask keeping about ``fraction`` of ``count`` positions, evenly spread (deterministic)."""
    positions = np.arange(count)
    return np.floor((positions + 1) * fraction) > np.floor(positions * fraction)


class VolumeSliceDataset(Dataset):
    """Per-slice training items cut from ``{image, label}`` CBCT volume pairs on the fly (see the module docstring).

    Args:
        data: ``[{"image": volume, "label": label volume}, ...]`` (paths; NIfTI, MetaImage, NRRD or DICOM folders
            as :func:`coseg.dental.volumes.read_volume` reads them). An item may name its own ``dataset_json``.
        transform: applied to each slice item (the random transforms of a training config).
        axis: anatomical slicing plane, see :data:`coseg.dental.geometry.SLICE_AXES`.
        size: side of the square slices (the model's patch size, as for inference).
        window: intensity window ``(low, high)`` mapped to ``[0, 255]``.
        channels: ``"repeat"`` or ``"adjacent"`` (as ``coseg.dental.prepare``).
        empty_fraction: share of the slices without any region or tooth that are kept, evenly spread along the
            slicing axis: 1 keeps every slice (``prepare`` without ``--skip-empty``), 0 none (``--skip-empty``).
        labels: label names of the label volumes: a ``dataset.json`` path or ``{id: name}``; ``None`` means the
            public ToothFairy2 names (:data:`coseg.dental.labels.TOOTHFAIRY2_LABELS`), the ids MONAI Label holds.
        cache_volumes: decoded volumes kept per process (>= 1).
        tooth_types: the scheme of ``label_type`` (:data:`coseg.dental.labels.TOOTH_TYPE_SCHEMES`): ``"jaw"``
            (upper / lower) or ``"fdi"`` (one type per FDI number).

    Raises:
        InputFileError: a volume that cannot be read or checked, a label volume off its image's grid, or label ids
            the label names do not list (naming the file); when reading: a volume whose grid changed since.
        ValueError: bad arguments, or no slice at all.
    """

    def __init__(
        self,
        data: Sequence[Mapping[str, Any]],
        transform: Callable[[dict[str, Any]], Any] | None = None,
        *,
        axis: Literal["axial", "coronal", "sagittal"] = "axial",
        size: int = 256,
        window: Sequence[float] = (-1000.0, 4000.0),
        channels: Literal["repeat", "adjacent"] = "repeat",
        empty_fraction: float = 1.0,
        labels: str | os.PathLike | Mapping[int, str] | None = None,
        cache_volumes: int = 2,
        tooth_types: str = "jaw",
    ) -> None:
        if axis not in SLICE_AXES:
            raise ValueError(f"axis must be one of {sorted(SLICE_AXES)}, got {axis!r}")
        if channels not in ("repeat", "adjacent"):
            raise ValueError(f"channels must be 'repeat' or 'adjacent', got {channels!r}")
        if len(window) != 2 or not float(window[0]) < float(window[1]):
            raise ValueError(f"window must be (low, high) with low < high, got {list(window)}")
        if not 0.0 <= float(empty_fraction) <= 1.0:
            raise ValueError(f"empty_fraction must lie in [0, 1], got {empty_fraction}")
        if isinstance(cache_volumes, bool) or not isinstance(cache_volumes, int) or cache_volumes < 1:
            raise ValueError(f"cache_volumes must be an integer >= 1, got {cache_volumes!r}")
        if datalist_source(data) != "volumes" or not data:
            raise ValueError("VolumeSliceDataset needs a non-empty list of {image, label} volume pairs")
        self.transform = transform
        self.type_lut = tooth_type_lut(tooth_types)
        self.axis, self.size, self.channels = axis, int(size), channels
        self.window = (float(window[0]), float(window[1]))
        self.empty_fraction = float(empty_fraction)
        self.cache_volumes = cache_volumes
        self._default_labels = labels
        self._label_maps: dict[str, CbctLabelMap] = {}
        self._cache: OrderedDict[int, _DecodedCase] = OrderedDict()
        self.cases: list[_IndexedCase] = [self._index(k, item) for k, item in enumerate(data)]
        self._items = [(k, n) for k, case in enumerate(self.cases) for n in case.slices]
        if not self._items:
            raise ValueError(
                f"no slices: the {len(self.cases)} volume(s) have no labelled slice and empty_fraction="
                f"{self.empty_fraction} keeps none of the others"
            )
        starts = np.cumsum([0] + [len(c.slices) for c in self.cases])
        self._case_ranges = [range(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]

    def _label_map(self, labels: str | os.PathLike | Mapping[int, str] | None) -> CbctLabelMap:
        key = "" if labels is None else os.fspath(labels) if isinstance(labels, (str, os.PathLike)) else repr(labels)
        if key not in self._label_maps:
            if labels is None:
                labels = {i: name for name, i in TOOTHFAIRY2_LABELS.items()}
            self._label_maps[key] = build_label_map(labels)
        return self._label_maps[key]

    def _decode(self, case: CbctCase, label_map: CbctLabelMap) -> tuple[_DecodedCase, SliceGeometry]:
        image, label = read_case(case)
        sem, inst, _ = label_map.apply(label.array, path=label.path)
        geometry = slice_geometry(image.array.shape, image.affine, axis=self.axis, size=self.size)
        array = image.array
        # apply_window works in float32: a float64 volume (scaled NIfTI) gives the same slices from a float32 copy
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        return _DecodedCase(image=array, sem=sem, inst=inst), geometry

    def _index(self, index: int, item: Mapping[str, Any]) -> _IndexedCase:
        case = CbctCase(case_id=_case_id(item["image"]), image=Path(item["image"]), label=Path(item["label"]))
        label_map = self._label_map(item.get("dataset_json", self._default_labels))
        decoded, geometry = self._decode(case, label_map)
        sem_m = geometry.to_model(decoded.sem, kind="label")
        inst_m = geometry.to_model(decoded.inst, kind="label")
        labelled = sem_m.reshape(len(sem_m), -1).any(axis=1) | inst_m.reshape(len(inst_m), -1).any(axis=1)
        keep = labelled.copy()
        keep[~labelled] = _evenly_spaced(int((~labelled).sum()), self.empty_fraction)
        self._remember(index, decoded)
        return _IndexedCase(case, label_map, geometry, tuple(int(n) for n in np.flatnonzero(keep)))

    def _remember(self, index: int, decoded: _DecodedCase) -> None:
        self._cache[index] = decoded
        self._cache.move_to_end(index)
        while len(self._cache) > self.cache_volumes:
            self._cache.popitem(last=False)

    def _volume(self, index: int) -> _DecodedCase:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        indexed = self.cases[index]
        decoded, geometry = self._decode(indexed.case, indexed.label_map)
        if geometry != indexed.geometry:
            raise InputFileError(indexed.case.image, "changed while training (its shape or affine differs)")
        self._remember(index, decoded)
        return decoded

    def __len__(self) -> int:
        return len(self._items)

    def case_indices(self, case: int) -> range:
        """Dataset indices of the slices of volume ``case`` (in slice order)."""
        return self._case_ranges[case]

    def slice_item(self, index: int) -> dict[str, Any]:
        """The slice item ``index`` before the transform (what ``LoadImaged`` yields for a prepared slice)."""
        k, n = self._items[index]
        indexed = self.cases[k]
        volume, geometry = self._volume(k), indexed.geometry
        image = make_model_slices(volume.image, geometry, window=self.window, channels=self.channels, slice_indices=[n])
        sem = geometry.canonical_to_model(geometry.to_canonical(volume.sem)[n : n + 1], kind="label")[0]
        inst = geometry.canonical_to_model(geometry.to_canonical(volume.inst)[n : n + 1], kind="label")[0]
        name = f"{indexed.case.case_id}_{self.axis}_{n:04d}"
        # a name like prepare's PNGs (overlays are named after it); the volume itself is under "source"
        filename = os.fspath(indexed.case.image.parent / name)
        out: dict[str, Any] = {"image": _meta_tensor(image[0].transpose(2, 0, 1), filename, -1, indexed.case.image)}
        for key, value in zip(SLICE_LABEL_KEYS, (sem, inst, self.type_lut[inst])):
            out[key] = _meta_tensor(value[None], filename, float("nan"), indexed.case.label)
        out.update({"group": indexed.case.case_id, "case": indexed.case.case_id, "slice": n})
        return out

    def __getitem__(self, index: int) -> Any:
        if not -len(self) <= index < len(self):
            raise IndexError(f"slice index {index} out of range for {len(self)} slices")
        item = self.slice_item(index % len(self))
        return apply_transform(self.transform, item) if self.transform is not None else item


def _meta_tensor(array: np.ndarray, filename: str, channel_dim: float, source: Path) -> MetaTensor:
    meta = {
        "filename_or_obj": filename,
        "source": os.fspath(source),
        "spatial_shape": np.array(array.shape[1:]),
        "original_channel_dim": channel_dim,
    }
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)), affine=torch.eye(4), meta=meta)


class VolumeSliceSampler(Sampler[int]):
    """Slice order for a :class:`VolumeSliceDataset` that reads each volume once per epoch.

    Every epoch the volumes are shuffled (seeded by ``seed`` and the epoch) and visited in blocks of
    ``block_volumes``; the slices of a block are shuffled together. With ``num_replicas > 1`` (DDP) each process
    gets its own volumes (balanced by slice count) and the same number of slices, ``ceil(len(dataset) /
    num_replicas)``: a share that is short repeats its first slices, one that is long drops its last (a process
    left without a volume, when there are fewer volumes than processes, takes every ``num_replicas``-th slice).

    Args:
        dataset: the dataset.
        shuffle: shuffle volumes and slices (else: volumes and slices in order).
        seed: seed of the shuffling; every process of a DDP run must use the same one.
        block_volumes: volumes whose slices are mixed (default: the dataset's ``cache_volumes``; more than that
            makes the dataset read volumes again).
        num_replicas: number of processes sharing the epoch (1: no sharing).
        rank: this process's index in ``[0, num_replicas)``.

    Raises:
        ValueError: on bad arguments.
    """

    def __init__(
        self,
        dataset: VolumeSliceDataset,
        *,
        shuffle: bool = True,
        seed: int = 0,
        block_volumes: int | None = None,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if not isinstance(dataset, VolumeSliceDataset):
            raise ValueError(f"VolumeSliceSampler needs a VolumeSliceDataset, got {type(dataset).__name__}")
        block_volumes = dataset.cache_volumes if block_volumes is None else block_volumes
        if isinstance(block_volumes, bool) or not isinstance(block_volumes, int) or block_volumes < 1:
            raise ValueError(f"block_volumes must be an integer >= 1, got {block_volumes!r}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas}, {rank}")
        self.dataset, self.shuffle, self.seed = dataset, bool(shuffle), int(seed)
        self.block_volumes, self.num_replicas, self.rank = block_volumes, num_replicas, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of epoch ``epoch`` next (otherwise each pass over the sampler advances the epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.num_replicas)

    def _my_cases(self, rng: np.random.Generator) -> list[int]:
        cases = [k for k in range(len(self.dataset.cases)) if len(self.dataset.case_indices(k))]
        if self.shuffle:
            cases = [cases[i] for i in rng.permutation(len(cases))]
        if self.num_replicas == 1:
            return cases
        totals, mine = [0] * self.num_replicas, []
        for k in cases:  # each volume, in the epoch's order, to the process with the fewest slices so far
            r = int(np.argmin(totals))
            totals[r] += len(self.dataset.case_indices(k))
            if r == self.rank:
                mine.append(k)
        return mine

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        order: list[int] = []
        cases = self._my_cases(rng)
        for start in range(0, len(cases), self.block_volumes):
            block = np.concatenate([self.dataset.case_indices(k) for k in cases[start : start + self.block_volumes]])
            order.extend((rng.permutation(block) if self.shuffle else block).tolist())
        length = len(self)
        if not order:  # more processes than volumes: this one repeats an interleaved share of all slices
            order = list(range(len(self.dataset)))[self.rank :: self.num_replicas] or list(range(len(self.dataset)))
        if len(order) < length:
            order = (order * math.ceil(length / len(order)))[:length]
        return iter(order[:length])


def cbct_slice_dataset(
    data: Sequence[Mapping[str, Any]],
    *,
    transform: Callable[[dict[str, Any]], Any] | None,
    volume_transform: Callable[[dict[str, Any]], Any] | None,
    cache_rate: float = 0.0,
    num_workers: int | None = 1,
    axis: Literal["axial", "coronal", "sagittal"] = "axial",
    size: int = 256,
    window: Sequence[float] = (-1000.0, 4000.0),
    channels: Literal["repeat", "adjacent"] = "repeat",
    empty_fraction: float = 1.0,
    labels: str | os.PathLike | Mapping[int, str] | None = None,
    cache_volumes: int = 2,
    tooth_types: str = "jaw",
) -> Dataset:
    """The training (or validation) dataset of the CBCT bundle for either kind of datalist.

    Args:
        data: prepared slice items (``coseg.dental.prepare``'s ``datalist.json``) or ``{image, label}`` volume pairs
            (what MONAI Label hands a bundle); see :func:`datalist_source`.
        transform: for slice items, the whole chain from ``LoadImaged`` on.
        volume_transform: for volume pairs, the chain after loading (the slices come out of the dataset as
            ``LoadImaged`` would yield them).
        cache_rate, num_workers: of the :class:`monai.data.CacheDataset` of slice items.
        axis, size, window, channels, empty_fraction, labels, cache_volumes, tooth_types: of the
            :class:`VolumeSliceDataset`.

    Returns:
        a :class:`monai.data.CacheDataset` over slice items, or a :class:`VolumeSliceDataset`.

    Raises:
        ValueError: see :func:`datalist_source` and :class:`VolumeSliceDataset`.
        InputFileError: see :class:`VolumeSliceDataset`.
    """
    if datalist_source(data) == "slices":
        return CacheDataset(data=list(data), transform=transform, cache_rate=cache_rate, num_workers=num_workers)
    logger.info("slicing %d label volume(s) on the fly (%s, %d px)", len(data), axis, size)
    return VolumeSliceDataset(
        data,
        volume_transform,
        axis=axis,
        size=size,
        window=window,
        channels=channels,
        empty_fraction=empty_fraction,
        labels=labels,
        cache_volumes=cache_volumes,
        tooth_types=tooth_types,
    )


def slice_sampler(dataset: Dataset, *, shuffle: bool = True, seed: int = 0, distributed: bool = False) -> Sampler:
    """The sampler of a CBCT training dataset from :func:`cbct_slice_dataset`.

    Args:
        dataset: the dataset.
        shuffle: shuffle every epoch.
        seed: seed of a :class:`VolumeSliceSampler`.
        distributed: share the epoch between the processes of the default process group.

    Returns:
        for prepared slices: :class:`torch.utils.data.RandomSampler` (what ``DataLoader(shuffle=True)`` uses; a
        ``SequentialSampler`` without ``shuffle``) or, when
        ``distributed``, MONAI's :class:`~monai.data.DistributedSampler` (``even_divisible``); for volumes: a
        :class:`VolumeSliceSampler` (with the process group's size and rank when ``distributed``).
    """
    if isinstance(dataset, VolumeSliceDataset):
        if distributed:
            import torch.distributed as dist

            return VolumeSliceSampler(
                dataset, shuffle=shuffle, seed=seed, num_replicas=dist.get_world_size(), rank=dist.get_rank()
            )
        return VolumeSliceSampler(dataset, shuffle=shuffle, seed=seed)
    if distributed:
        return DistributedSampler(dataset, even_divisible=True, shuffle=shuffle)
    return RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
