"""Fig. 10: the pass-1 binary mask prompts of both tasks and the cross-task attention maps, as heat maps over
the image.

For an ``(H, W)`` RGB image the network runs once with ``return_attention=True``; written per image (all PNGs
``H × W``, the colour map over the image at 50 %):

- ``<stem>_sem_prompt.png`` / ``<stem>_inst_prompt.png``: sigmoid of the pass-1 prompt logits
  (``OutputKeys.SEM_PROMPT`` / ``INST_PROMPT``), on an absolute 0–1 scale: the region mask that prompts the
  instance task, the object mask that prompts the semantic task;
- ``<stem>_attn_inst_to_sem.png``: ``OutputKeys.SEM_CROSS_ATTENTION``, where the semantic queries look among the
  instance image tokens (instance → semantic guidance);
- ``<stem>_attn_sem_to_inst.png``: ``OutputKeys.INST_CROSS_ATTENTION``, where the instance queries look among the
  semantic image tokens (semantic → instance guidance);
- ``<stem>_maps.npz``: the same maps as float arrays (prompts and attention at image size, attention also on the
  ``(h, w)`` token grid before upsampling).

The attention of the last decoder layer of the last pass is averaged over heads and over the chosen queries
(default all; ``token=0`` is the binary-mask query of each head), bilinearly upsampled from the token grid and
scaled to its own minimum–maximum for display. A network without cross-task attention (``cross_task_attention``
false) has prompts but no attention maps.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from coseg.constants import normalize
from coseg.io import atomic_write_path, read_rgb, write_rgb
from coseg.keys import OutputKeys

__all__ = ["MAP_NAMES", "attention_maps", "heat_overlay", "load_network", "run_attention", "write_attention_figures"]

logger = logging.getLogger(__name__)

#: the maps of :func:`attention_maps`, in file order
MAP_NAMES = ("sem_prompt", "inst_prompt", "attn_inst_to_sem", "attn_sem_to_inst")


def _select_tokens(attn: torch.Tensor, token: int | str) -> torch.Tensor:
    """``(B, heads, T, N)`` -> ``(B, N)``: mean over heads and over all queries or one."""
    attn = attn.float().mean(dim=1)  # (B, T, N)
    if token == "mean":
        return attn.mean(dim=1)
    t = int(token)
    if not 0 <= t < attn.shape[1]:
        raise ValueError(f"token must be 'mean' or a query index in [0, {attn.shape[1]}), got {token!r}")
    return attn[:, t]


@torch.no_grad()
def attention_maps(
    network: torch.nn.Module,
    image: np.ndarray,
    *,
    token: int | str = "mean",
    device: str | torch.device = "cpu",
    pad_value: int = 255,
) -> dict[str, np.ndarray]:
    """The pass-1 prompts and the cross-task attention of one image, at the image's size.

    The image is normalised as in training (SAM2's mean and std), padded at the bottom and right with
    ``pad_value`` to a multiple of the network's ``size_divisor`` and run whole, in eval mode.

    Args:
        network: a :class:`coseg.networks.CoSegPlusPlus`.
        image: ``(H, W, 3) uint8`` RGB.
        token: ``"mean"`` over all queries of each head, or the index of one query.
        device: where to run.
        pad_value: padding intensity (white, as the bundle's training pads).

    Returns:
        ``{"sem_prompt", "inst_prompt"}``: ``(H, W)`` probabilities in [0, 1]; when the network has cross-task
        attention also ``{"attn_inst_to_sem", "attn_sem_to_inst"}``: ``(H, W)`` attention (sums to about
        ``H*W / (h*w)`` over the image) and ``{"attn_inst_to_sem_grid", "attn_sem_to_inst_grid"}``: ``(h, w)``
        attention on the token grid (sums to 1).

    Raises:
        TypeError: ``image`` is not a uint8 array.
        ValueError: ``image`` is not ``(H, W, 3)``, or a bad ``token``.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise TypeError(f"image must be a uint8 numpy array, got {type(image).__name__} {getattr(image, 'dtype', '')}")
    if image.ndim != 3 or image.shape[-1] != 3 or min(image.shape[:2]) == 0:
        raise ValueError(f"image must have shape (H, W, 3), got {image.shape}")
    if not (token == "mean" or (isinstance(token, (int, np.integer)) and not isinstance(token, bool))):
        raise ValueError(f"token must be 'mean' or a query index, got {token!r}")
    H, W = image.shape[:2]
    div = int(getattr(network, "size_divisor", 32))
    Hp, Wp = -(-H // div) * div, -(-W // div) * div
    padded = np.full((Hp, Wp, 3), pad_value, np.uint8)
    padded[:H, :W] = image
    x = normalize(torch.from_numpy(padded).permute(2, 0, 1)).unsqueeze(0).to(device)
    was_training = network.training
    network.eval()
    try:
        out = network(x, return_attention=True)
    finally:
        network.train(was_training)
    maps: dict[str, np.ndarray] = {}
    for name, key in (("sem_prompt", OutputKeys.SEM_PROMPT), ("inst_prompt", OutputKeys.INST_PROMPT)):
        logits = F.interpolate(out[key].float(), size=(Hp, Wp), mode="bilinear", align_corners=False)
        maps[name] = torch.sigmoid(logits)[0, 0, :H, :W].cpu().numpy()
    for name, key in (
        ("attn_inst_to_sem", OutputKeys.SEM_CROSS_ATTENTION),
        ("attn_sem_to_inst", OutputKeys.INST_CROSS_ATTENTION),
    ):
        attn = out.get(key)
        if attn is None:
            continue
        flat = _select_tokens(attn, token)  # (B, h*w)
        h, w = _grid_shape(flat.shape[-1], Hp, Wp)
        grid = flat[0].reshape(h, w)
        maps[name + "_grid"] = grid.cpu().numpy()
        up = F.interpolate(grid[None, None], size=(Hp, Wp), mode="bilinear", align_corners=False)
        maps[name] = up[0, 0, :H, :W].cpu().numpy()
    if "attn_inst_to_sem" not in maps:
        logger.warning("the network has no cross-task attention (cross_task_attention false): prompts only")
    return maps


def _grid_shape(n: int, Hp: int, Wp: int) -> tuple[int, int]:
    """The ``(h, w)`` token grid with ``h * w == n`` and the image's aspect ratio."""
    for stride in (16, 8, 32, 4, 64):
        if (Hp // stride) * (Wp // stride) == n:
            return Hp // stride, Wp // stride
    raise ValueError(f"cannot match {n} attention tokens to a {Hp}x{Wp} input")


def heat_overlay(image: np.ndarray, values: np.ndarray, *, absolute: bool, alpha: float = 0.5) -> np.ndarray:
    """A jet colour map of ``values`` blended over ``image``.

    Args:
        image: ``(H, W, 3) uint8`` RGB.
        values: ``(H, W)`` float map.
        absolute: map [0, 1] to the colours (probabilities); otherwise the map's own minimum–maximum.
        alpha: weight of the colour map.

    Returns:
        ``(H, W, 3) uint8`` RGB.

    Raises:
        ValueError: shapes differ or ``alpha`` outside [0, 1].
    """
    if values.shape != image.shape[:2]:
        raise ValueError(f"map shape {values.shape} differs from the image's {image.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    v = np.nan_to_num(values.astype(np.float64))
    if not absolute:
        lo, hi = float(v.min()), float(v.max())
        v = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    v8 = np.clip(np.round(v * 255.0), 0, 255).astype(np.uint8)
    heat = cv2.cvtColor(cv2.applyColorMap(v8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return np.clip((1.0 - alpha) * image + alpha * heat, 0, 255).round().astype(np.uint8)


def write_attention_figures(
    image: np.ndarray, maps: Mapping[str, np.ndarray], output_dir: str | os.PathLike, stem: str
) -> list[Path]:
    """Write the heat-map PNGs and the ``.npz`` of :func:`attention_maps` (see the module docstring).

    Returns:
        The files written.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name in MAP_NAMES:
        if name in maps:
            path = out / f"{stem}_{name}.png"
            write_rgb(path, heat_overlay(image, maps[name], absolute=name.endswith("prompt")))
            files.append(path)
    npz = out / f"{stem}_maps.npz"
    with atomic_write_path(npz) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **{k: np.asarray(v, np.float32) for k, v in maps.items()})
    files.append(npz)
    return files


def load_network(
    bundle: str | os.PathLike,
    checkpoint: str | os.PathLike,
    *,
    config_files: Sequence[str | os.PathLike] = (),
    overrides: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> torch.nn.Module:
    """Build the bundle's ``network_def`` (``train.json`` + ``config_files`` + ``overrides``) and load a checkpoint.

    Args:
        bundle: the bundle root.
        checkpoint: ``model.pt`` (a state dict) or a training checkpoint with a ``"model"`` entry.
        config_files: extra override configs after ``train.json`` (e.g. a run's experiment overrides).
        overrides: bundle overrides (e.g. ``{"model_preset": "tiny", "prompt_mode": "self"}``).
        device: where to put the network.

    Returns:
        The network in eval mode.

    Raises:
        FileNotFoundError: no such checkpoint.
        RuntimeError: the checkpoint does not fit the network built from the configs (keys listed).
    """
    from monai.bundle import ConfigParser

    ckpt = Path(checkpoint).expanduser()
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: no such checkpoint")
    parser = ConfigParser()
    parser.read_config(f=[str(Path(bundle) / "configs" / "train.json")] + [str(p) for p in config_files])
    parser.update(dict(overrides or {}))
    # the weights come from the checkpoint: no SAM2 file is read and nothing is frozen (no warning either)
    parser.update({"sam2_weights": None, "network_def#freeze_encoder": False})
    network = parser.get_parsed_content("network_def", instantiate=True)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    try:  # shape mismatches and build arguments recorded with the weights that differ from the configs' raise
        result = network.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise RuntimeError(f"{ckpt} does not fit the network of these configs: {err}") from err
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(
            f"{ckpt} does not fit the network of these configs (same preset and switches?): "
            f"missing {list(result.missing_keys)[:8]}, unexpected {list(result.unexpected_keys)[:8]}"
        )
    return network.to(device).eval()


def run_attention(
    network: torch.nn.Module,
    images: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    token: int | str = "mean",
    device: str | torch.device = "cpu",
) -> list[Path]:
    """:func:`attention_maps` and :func:`write_attention_figures` for image files (stem = file name stem).

    Raises:
        InputFileError: an unreadable or non-RGB image (from :func:`coseg.io.read_rgb`).
        ValueError: two images with the same stem.
    """
    stems = [Path(p).stem for p in images]
    if len(set(stems)) != len(stems):
        raise ValueError(f"image file names must differ (outputs are named after them): {stems}")
    files = []
    for path, stem in zip(images, stems, strict=True):
        image = read_rgb(path)
        maps = attention_maps(network, image, token=token, device=device)
        files += write_attention_figures(image, maps, output_dir, stem)
    return files
