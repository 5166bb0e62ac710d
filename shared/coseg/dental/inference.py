"""Dental CBCT inference: prepared-slice datalists, volume checks, slice-wise volume inference with 3D tooth
linking, and the writer of its outputs.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.transforms import MapTransform

from coseg.constants import normalize
from coseg.data.datalist import read_datalist
from coseg.dental.volumes import VOLUME_SUFFIXES
from coseg.errors import InputFileError
from coseg.inferers import FULL_RESOLUTION_OUTPUTS
from coseg.io import source_name
from coseg.postprocess import WatershedParams, postprocess_outputs

__all__ = [
    "cbct_datalist",
    "cbct_cases",
    "volume_datalist",
    "CheckVolumed",
    "VolumeSliceInferer",
    "DentalInferenceWriter",
]

logger = logging.getLogger(__name__)


def cbct_datalist(
    dataset_dir: str | os.PathLike,
    split: str = "training",
    *,
    synthesize: bool = False,
    num_cases: int = 6,
    shape: Sequence[int] = (32, 128, 128),
    size: int = 256,
    seed: int = 0,
    skip_empty: bool = True,
    fraction: float = 1.0,
) -> list[dict[str, Any]]:
    """Items (2D slices) of one split of a dataset prepared by ``coseg.dental.prepare``.

    Args:
        dataset_dir: the prepared dataset folder.
        split: ``"training"``, ``"validation"`` or ``"test"``.
        synthesize: when there is no ``datalist.json``, write synthetic CBCT phantoms in ToothFairy2's layout to
            ``<dataset_dir>/raw`` and slice them into ``dataset_dir`` (the quickstart's embedded sample).
        num_cases, shape, seed: of the phantoms; ``size``, ``skip_empty``: of the slicing.
        fraction: keep this fraction of the split's slices (nested seeded subsets).

    Raises:
        FileNotFoundError: no datalist and ``synthesize`` is off.
    """
    root = Path(dataset_dir).expanduser()
    if not (root / "datalist.json").is_file():
        if not synthesize:
            raise FileNotFoundError(
                f"{root}: no datalist.json. Slice a ToothFairy2 dataset with `python -m coseg.dental.prepare "
                f"--input TOOTHFAIRY2_DIR --output {root}`, or run the quickstart preset (configs/quickstart.json)."
            )
        from coseg.dental.prepare import prepare_cbct
        from coseg.dental.synthetic import write_toothfairy2_like

        raw = root.parent / f"{root.name}_raw"
        logger.warning(
            "no dataset in %s: writing %d synthetic CBCT phantoms to %s and slicing them", root, num_cases, raw
        )
        write_toothfairy2_like(raw, num_cases=num_cases, shape=tuple(shape), seed=seed)
        prepare_cbct(raw, root, size=size, skip_empty=skip_empty, seed=seed, overwrite=True, progress=False)
    return read_datalist(root, split, fraction=fraction)


def cbct_cases(dataset_dir: str | os.PathLike, split: str = "test") -> list[dict[str, str]]:
    """The source volumes of one split of a prepared CBCT dataset: ``[{"image": path, "label": path,
    "dataset_json": path}, ...]`` (for volume inference and evaluation)."""
    root = Path(dataset_dir).expanduser()
    content = json.loads((root / "datalist.json").read_text(encoding="utf-8"))
    info = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    names = sorted({item["case"] for item in content.get(split, [])})
    if not names:
        raise ValueError(f"{root}/datalist.json: the split {split!r} has no cases")
    raw_json = str(Path(info["source"]) / "dataset.json")
    return [
        {"image": content["cases"][n]["image"], "label": content["cases"][n].get("label"), "dataset_json": raw_json}
        for n in names
    ]


def volume_datalist(inputs: str | os.PathLike | Sequence[str], *, split: str = "test") -> list[dict[str, str]]:
    """``[{"image": path}]`` for volume inference: one volume file, a DICOM series folder, a folder of volumes, a
    list of paths, or a dataset prepared by ``coseg.dental.prepare`` (its ``split`` cases' source volumes).

    Raises:
        FileNotFoundError: a missing path or a folder with neither volumes nor DICOM files.
    """
    if isinstance(inputs, (list, tuple)):
        paths = [Path(p) for p in inputs]
    else:
        root = Path(inputs).expanduser()
        if (root / "datalist.json").is_file():
            return [{"image": case["image"]} for case in cbct_cases(root, split)]
        if root.is_dir():
            vols = sorted(p for p in root.iterdir() if p.name.lower().endswith(VOLUME_SUFFIXES))
            if vols:
                paths = vols
            elif any(p.suffix.lower() in (".dcm", "") and p.is_file() for p in root.iterdir()):
                paths = [root]  # a DICOM series folder
            else:
                raise FileNotFoundError(f"{root}: no volumes ({', '.join(VOLUME_SUFFIXES)}) or DICOM files here")
        else:
            paths = [root]
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such volume")
    return [{"image": str(p.resolve())} for p in paths]


class CheckVolumed(MapTransform):
    """Check loaded volumes (``(1, I, J, K)`` after ``LoadImaged(..., ensure_channel_first=True)``); errors name the
    file: a 2D image, a 4D/multi-channel volume, an empty or constant volume, non-finite values."""

    def __init__(self, keys: KeysCollection = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            vol = d[key]
            name = source_name(vol)
            t = torch.as_tensor(vol)
            if t.ndim == 3:
                raise InputFileError(name, f"is 2D (shape {tuple(t.shape[1:])}); a 3D CBCT volume is expected")
            if t.ndim != 4:
                raise InputFileError(
                    name, f"has {t.ndim - 1} dimensions (shape {tuple(t.shape)}); a 3D volume is expected"
                )
            if t.shape[0] != 1:
                raise InputFileError(name, f"has {t.shape[0]} channels or time points; a single 3D volume is expected")
            if min(t.shape[1:]) < 2:
                raise InputFileError(name, f"is a single slice (shape {tuple(t.shape[1:])}); a 3D volume is expected")
            if not torch.isfinite(t).all():
                raise InputFileError(name, "has NaN or infinite values")
            if t.numel() == 0 or bool(t.max() == t.min()):
                raise InputFileError(name, "is empty (constant intensity)")
        return d


def _affine_of(inputs: torch.Tensor) -> np.ndarray:
    """The voxel-to-RAS affine of a (batched) MetaTensor volume."""
    if not isinstance(inputs, MetaTensor):
        raise TypeError("volume inference needs a MetaTensor with its affine (load volumes with LoadImaged)")
    affine = inputs.affine
    affine = affine[0] if affine.ndim == 3 else affine
    return np.asarray(affine.detach().cpu(), dtype=np.float64)


def pack_tooth_types(tooth_types: Mapping[int, int]) -> torch.Tensor:
    rows = sorted((int(k), int(v)) for k, v in tooth_types.items())
    return torch.tensor(rows, dtype=torch.int64).reshape(-1, 2)


def unpack_tooth_types(packed: Any) -> dict[int, int]:
    a = torch.as_tensor(packed).reshape(-1, 2).tolist()
    return {int(k): int(v) for k, v in a}


class VolumeSliceInferer(Inferer):
    """Segment a CBCT volume slice by slice with the 2D network, then put the result back together in 3D.

    The volume is sliced along an anatomical axis, windowed and resized exactly as ``coseg.dental.prepare``
    did for training (:func:`coseg.dental.geometry.make_model_slices`), run through the network in batches,
    post-processed per slice (semantic regions; tooth instances by watershed), reassembled on the input grid with
    per-slice teeth linked across slices into one id per tooth and numbered by FDI
    (:func:`coseg.dental.assemble.assemble_dental_prediction`).

    Teeth are numbered as ``numbering`` says: ``"learned"`` (a network with ``tooth_types="fdi"``: the FDI classes
    it predicts for every voxel of a tooth vote, one tooth per number, :func:`coseg.dental.assemble.assign_fdi_numbers`)
    or ``"heuristic"`` (jaw types and positions along the arch, :func:`coseg.dental.fdi.number_teeth_fdi`; the only
    choice for ``tooth_types="jaw"``, and the baseline the evaluation compares the learned numbers with).

    Returns (per call, batch of one volume) a dict of tensors with a leading batch dim:
    ``pred`` ``(1, 1, I, J, K)`` the combined label volume in ToothFairy2 ids (1 lower jawbone, 2 upper jawbone,
    7 pharynx, teeth by FDI number; what MONAI Label receives), ``semantic`` (0-3), ``teeth`` (tooth ids) and
    ``tooth_types`` ``(1, M, 2)`` pairs of (tooth id, 1 upper / 2 lower).

    Args:
        axis: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
        size: model input size (the slicing size used for training).
        window: intensity window (HU) mapped to [0, 255].
        channels: ``"repeat"`` or ``"adjacent"`` (as for training).
        batch_size: slices per network call.
        num_sem_classes: semantic classes incl. background (4: lower jawbone, upper jawbone, pharynx).
        watershed: the watershed settings of the tooth instances (the bundle config's ``watershed`` item,
            :func:`coseg.postprocess.watershed_settings`); default ``WatershedParams()``, HoVer-Net's 40x settings.
        sem_min_size: semantic regions smaller than this (pixels per slice) are absorbed by their neighbours.
        min_overlap, max_gap, merge_young, min_tooth_voxels: 3D tooth linking (see
            :func:`coseg.dental.link3d.link_instances_3d`).
        tooth_types: the network's tooth type scheme, ``"jaw"`` or ``"fdi"`` (its type output must have as many
            channels).
        numbering: ``"learned"`` (``"fdi"`` only) or ``"heuristic"``; ``None``: learned for ``"fdi"``, heuristic for
            ``"jaw"``.

    Raises:
        TypeError: ``watershed`` is not a :class:`~coseg.postprocess.WatershedParams`.
        ValueError: an unknown scheme or numbering, learned numbering of jaw types; (when called) a network whose
            type output does not match ``tooth_types``.
    """

    def __init__(
        self,
        *,
        axis: str = "axial",
        size: int = 256,
        window: Sequence[float] = (-1000.0, 4000.0),
        channels: str = "repeat",
        batch_size: int = 8,
        watershed: WatershedParams | None = None,
        sem_min_size: int = 16,
        min_overlap: float = 0.3,
        max_gap: int = 1,
        merge_young: int = 2,
        min_tooth_voxels: int = 0,
        tooth_types: str = "jaw",
        numbering: str | None = None,
    ) -> None:
        from coseg.dental.assemble import NUMBERINGS
        from coseg.dental.labels import TOOTH_TYPE_SCHEMES

        super().__init__()
        if tooth_types not in TOOTH_TYPE_SCHEMES:
            raise ValueError(f"tooth_types must be one of {TOOTH_TYPE_SCHEMES}, got {tooth_types!r}")
        numbering = numbering or ("learned" if tooth_types == "fdi" else "heuristic")
        if numbering not in NUMBERINGS:
            raise ValueError(f"numbering must be one of {NUMBERINGS} or None, got {numbering!r}")
        if numbering == "learned" and tooth_types != "fdi":
            raise ValueError("learned FDI numbering needs a network trained with tooth_types='fdi'")
        self.tooth_types, self.numbering = tooth_types, numbering
        self.axis, self.size, self.window, self.channels = axis, int(size), tuple(window), channels
        self.batch_size = int(batch_size)
        watershed = WatershedParams() if watershed is None else watershed
        if not isinstance(watershed, WatershedParams):
            raise TypeError(f"watershed must be a WatershedParams, got {type(watershed).__name__}")
        self.watershed = watershed
        self.sem_min_size = int(sem_min_size)
        self.link = {"min_overlap": min_overlap, "max_gap": max_gap, "merge_young": merge_young}
        self.min_tooth_voxels = int(min_tooth_voxels)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        from coseg.dental.assemble import assemble_dental_prediction, combined_toothfairy2
        from coseg.dental.geometry import make_model_slices, slice_geometry
        from coseg.dental.labels import fdi_class_lut, tooth_type_names
        from coseg.keys import OutputKeys

        num_types = len(tooth_type_names(self.tooth_types))
        to_jaw = fdi_class_lut("jaw") if self.tooth_types == "fdi" else None

        if inputs.ndim != 5 or inputs.shape[:2] != (1, 1):
            raise ValueError(
                f"VolumeSliceInferer expects one single-channel volume (1, 1, I, J, K), got {tuple(inputs.shape)}"
            )
        volume = inputs[0, 0].detach().float().cpu().numpy()
        affine = _affine_of(inputs)
        geometry = slice_geometry(volume.shape, affine, axis=self.axis, size=self.size)
        slices = make_model_slices(volume, geometry, window=self.window, channels=self.channels)  # (N, s, s, 3)
        device = next(network.parameters()).device if isinstance(network, torch.nn.Module) else inputs.device
        sem, inst, typ = [], [], []
        for start in range(0, len(slices), self.batch_size):
            batch = torch.from_numpy(slices[start : start + self.batch_size]).to(device).permute(0, 3, 1, 2).float()
            with torch.inference_mode(not torch.is_grad_enabled()):
                out = network(normalize(batch), *args, **kwargs)
            type_logits = out[OutputKeys.INST_TYPE]
            if type_logits.shape[1] != num_types:
                raise ValueError(
                    f"the network predicts {type_logits.shape[1]} tooth types but tooth_types={self.tooth_types!r} "
                    f"has {num_types} (background included): set tooth_types to the scheme it was trained with"
                )
            if self.numbering == "learned":  # every tooth pixel votes for its most likely FDI class
                votes = (type_logits[:, 1:].argmax(dim=1) + 1).to(torch.uint8).cpu().numpy()
            results = postprocess_outputs(
                {k: out[k] for k in FULL_RESOLUTION_OUTPUTS},
                params=self.watershed,
                with_contours=False,
                sem_min_size=self.sem_min_size,
            )
            for k, r in enumerate(results):
                sem.append(r.sem_map)
                inst.append(r.inst_map)
                if self.numbering == "learned":
                    typ.append(np.where(r.inst_map > 0, votes[k], 0).astype(np.uint8))
                else:
                    typ.append(r.type_map if to_jaw is None else to_jaw[r.type_map])
        pred = assemble_dental_prediction(
            np.stack(sem),
            np.stack(inst),
            np.stack(typ),
            geometry,
            affine,
            min_tooth_voxels=self.min_tooth_voxels,
            numbering=self.numbering,
            **self.link,
        )
        combined = combined_toothfairy2(pred.semantic, pred.teeth)
        meta = dict(inputs.meta) if isinstance(inputs, MetaTensor) else {}
        meta["affine"] = torch.as_tensor(affine)

        def vol(a: np.ndarray) -> MetaTensor:
            return MetaTensor(torch.from_numpy(np.ascontiguousarray(a))[None, None], meta=dict(meta))

        return {
            "pred": vol(combined),
            "semantic": vol(pred.semantic),
            "teeth": vol(pred.teeth.astype(np.int32)),
            "tooth_types": pack_tooth_types(pred.tooth_types)[None],
        }


class DentalInferenceWriter:
    """Write every volume an inference evaluator segments: NIfTI volumes with the input's exact affine and header,
    a JSON summary per structure and a PNG montage (:func:`coseg.dental.outputs.write_dental_outputs`).

    Args:
        output_dir: where the files go.
        window: intensity window of the montage.
        numbering: how the inferer numbered the teeth (``"learned"`` / ``"heuristic"``; the inferer's
            ``numbering``), recorded in each summary.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        *,
        window: Sequence[float] = (-1000.0, 4000.0),
        numbering: str = "heuristic",
    ) -> None:
        self.output_dir = os.fspath(output_dir)
        self.window = tuple(window)
        self.numbering = numbering
        self.written: list[dict[str, Path]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._write)

    def _write(self, engine: Engine) -> None:
        from coseg.dental.assemble import DentalPrediction
        from coseg.dental.outputs import write_dental_outputs
        from coseg.dental.volumes import read_volume

        items = engine.state.output
        for item in [items] if isinstance(items, Mapping) else items or []:
            path = source_name(item["image"], "")
            if not path:
                raise ValueError("DentalInferenceWriter needs the image's file name in its meta data")
            reference = read_volume(path)
            prediction = DentalPrediction(
                semantic=as_volume(item["semantic"]).astype(np.uint8),
                teeth=as_volume(item["teeth"]).astype(np.uint16),
                tooth_types=unpack_tooth_types(item["tooth_types"]),
                numbering=self.numbering,
            )
            paths = write_dental_outputs(self.output_dir, prediction, reference, window=self.window)
            self.written.append(paths)
            n_up = sum(1 for t in prediction.tooth_types.values() if t == 1)
            n_low = sum(1 for t in prediction.tooth_types.values() if t == 2)
            logger.info("%s: %d upper and %d lower teeth -> %s", Path(path).name, n_up, n_low, self.output_dir)


def as_volume(x: Any) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    return a
