"""A stand-in for a perfectly trained CBCT network: it answers each slice of a known phantom with the ideal outputs
of its ground truth (semantic and object logits, HV maps, FDI type logits), looked up by the slice's normalised
pixels. It finds a slice only if the slicing cut it in the same anatomical frame, and every FDI class it predicts is
right, so what a volume pipeline around it gets wrong is the pipeline's doing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from coseg.constants import normalize
from coseg.dental.geometry import make_model_slices, slice_geometry
from coseg.dental.labels import TOOTHFAIRY2_LABELS, build_label_map, tooth_type_lut
from coseg.keys import OutputKeys
from coseg.losses.targets import compute_hv_maps
from coseg.transforms import LoadCheckedImaged

#: ToothFairy2 ids -> the bundle's regions and FDI tooth instances
LABEL_MAP = build_label_map({v: k for k, v in TOOTHFAIRY2_LABELS.items()})


def load_case(root: Path, case: str = "ToothFairy2F_001") -> tuple[torch.Tensor, np.ndarray]:
    """A case of a ToothFairy2-like folder as the bundle's preprocessing loads it: the image (MetaTensor with its
    affine, channel first) and its label volume in ToothFairy2 ids."""
    ext = "nii.gz" if (root / "imagesTr" / f"{case}_0000.nii.gz").exists() else "mha"
    loader = LoadCheckedImaged(keys=("image", "label"), image_only=True, ensure_channel_first=True)
    image, label = root / "imagesTr" / f"{case}_0000.{ext}", root / "labelsTr" / f"{case}.{ext}"
    item = loader({"image": str(image), "label": str(label)})
    return item["image"], np.asarray(item["label"][0]).astype(np.int64)


class Oracle(torch.nn.Module):
    """The ideal outputs of known model slices ``(N, s, s, 3)`` with their semantic and FDI instance maps
    ``(N, s, s)``; ``unknown`` counts the slices asked for that it does not know (answered with zeros)."""

    def __init__(self, slices: np.ndarray, sem: np.ndarray, inst: np.ndarray) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        types = tooth_type_lut("fdi")[inst]
        self.answers: dict[bytes, dict[str, np.ndarray]] = {}
        for k in range(len(slices)):
            key = normalize(torch.from_numpy(slices[k : k + 1]).permute(0, 3, 1, 2).float()).numpy().tobytes()
            binary = (inst[k] > 0).astype(int)
            self.answers[key] = {
                OutputKeys.SEM_LOGITS: 20.0 * np.eye(4, dtype=np.float32)[sem[k]].transpose(2, 0, 1),
                OutputKeys.INST_BINARY: 20.0 * np.eye(2, dtype=np.float32)[binary].transpose(2, 0, 1),
                OutputKeys.INST_HV: compute_hv_maps(inst[k]).astype(np.float32),
                OutputKeys.INST_TYPE: 20.0 * np.eye(33, dtype=np.float32)[types[k]].transpose(2, 0, 1),
            }
        self.unknown = 0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        found = []
        for k in range(x.shape[0]):
            answer = self.answers.get(x[k : k + 1].cpu().numpy().tobytes())
            if answer is None:  # a slice the phantom does not have: the slicing is in another frame
                self.unknown += 1
                answer = {key: np.zeros_like(v) for key, v in next(iter(self.answers.values())).items()}
            found.append(answer)
        return {key: torch.from_numpy(np.stack([a[key] for a in found])) for key in found[0]}


def oracle_for(root: Path, *, size: int, window: Sequence[float], channels: str = "repeat") -> Oracle:
    """The oracle of a ToothFairy2-like folder's first case, sliced axially at ``size`` as inference slices it."""
    image, label = load_case(root)
    geometry = slice_geometry(label.shape, np.asarray(image.affine), axis="axial", size=size)
    slices = make_model_slices(np.asarray(image[0], dtype=np.float32), geometry, window=window, channels=channels)
    sem, inst, _ = LABEL_MAP.apply(label)
    return Oracle(
        slices,
        geometry.to_model(sem, kind="label").astype(np.int64),
        geometry.to_model(inst, kind="label").astype(np.int64),
    )
