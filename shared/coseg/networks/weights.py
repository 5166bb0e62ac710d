"""Loading official SAM2 weights into the image encoder, the freezing policy, and the build arguments that a Co-Seg++
state dict records.

Official checkpoints (``sam2_hiera_*.pt``, ``sam2.1_hiera_*.pt``) hold ``{"model": state_dict}`` with keys
``image_encoder.trunk.*`` and ``image_encoder.neck.*`` among the rest of SAM2 (memory attention, mask
decoder, ...). :func:`sam2_encoder_state_dict` is the one key filter; :func:`load_sam2_weights` loads it
strictly and reports every problem at once.

A state dict of :class:`~coseg.networks.CoSegPlusPlus` carries the arguments the network was built with in torch's
per-module metadata (``state_dict._metadata[prefix][BUILD_ARGS_KEY]``, beside torch's own ``version``), which
``torch.save`` / ``torch.load(weights_only=True)`` keep: every file holding the network's state dict (``model.pt``,
training checkpoints under ``"model"``) records them, and the file stays a plain state dict of tensors for MONAI's
tools. :func:`recorded_build_args` and :func:`read_build_args` read them back.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from coseg.errors import InputFileError
from coseg.networks.backbones.image_encoder import ENCODER_PRESETS, ImageEncoder

__all__ = [
    "BUILD_ARGS_KEY",
    "SAM2CheckpointError",
    "LoadReport",
    "EncoderSignature",
    "sam2_encoder_state_dict",
    "sam2_encoder_signature",
    "encoder_config_signature",
    "read_sam2_checkpoint",
    "load_sam2_weights",
    "freeze_trunk",
    "count_parameters",
    "read_build_args",
    "recorded_build_args",
]

logger = logging.getLogger(__name__)

_PREFIX = "image_encoder."

#: the entry of a state dict's per-module metadata that records the network's build arguments
BUILD_ARGS_KEY = "coseg_build_args"


class SAM2CheckpointError(ValueError):
    """A SAM2 checkpoint does not fit the image encoder; the message lists every problem."""


@dataclass
class LoadReport:
    """What :func:`load_sam2_weights` loaded.

    Attributes:
        loaded: encoder keys taken from the checkpoint.
        new: encoder keys that SAM2 does not have (adapters), left at their initialisation.
        ignored: checkpoint keys outside the image encoder (memory, mask decoder, ...), not used.
    """

    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def sam2_encoder_state_dict(checkpoint: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Pick the image encoder's entries of a SAM2 state dict and strip the ``image_encoder.`` prefix.

    Accepts a full SAM2 state dict (``image_encoder.trunk.*``) or an encoder-only one (``trunk.*``/``neck.*``).

    Returns:
        ``(encoder state dict with keys trunk.* / neck.*, ignored keys)``.
    """
    has_prefix = any(k.startswith(_PREFIX) for k in checkpoint)
    out: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for key, value in checkpoint.items():
        if has_prefix:
            if key.startswith(_PREFIX):
                out[key[len(_PREFIX) :]] = value
            else:
                ignored.append(key)
        elif key.startswith(("trunk.", "neck.")):
            out[key] = value
        else:
            ignored.append(key)
    return out, ignored


@dataclass(frozen=True)
class EncoderSignature:
    """What tells SAM2's image encoders apart: the trunk's stem width and its number of blocks.

    Attributes:
        embed_dim: channels of the patch embedding (``trunk.patch_embed.proj``).
        depth: number of Hiera blocks (``trunk.blocks.<i>``).
    """

    embed_dim: int
    depth: int

    def describe(self) -> str:
        """``"hiera_l (embed_dim 144, 48 blocks)"``: the :data:`~coseg.networks.ENCODER_PRESETS` name when one
        matches, else ``"Hiera (embed_dim 16, 6 blocks)"``."""
        names = [name for name, cfg in ENCODER_PRESETS.items() if encoder_config_signature(cfg) == self]
        return f"{names[0] if len(names) == 1 else 'Hiera'} (embed_dim {self.embed_dim}, {self.depth} blocks)"


def encoder_config_signature(cfg: str | Mapping) -> EncoderSignature:
    """The :class:`EncoderSignature` of an encoder configuration (an :data:`~coseg.networks.ENCODER_PRESETS` name
    or a SAM2-style dict), without building it.

    Raises:
        ValueError: unknown preset name, or a dict without ``trunk.embed_dim`` / ``trunk.stages``.
    """
    if isinstance(cfg, str):
        if cfg not in ENCODER_PRESETS:
            raise ValueError(f"unknown encoder preset {cfg!r}; choose one of {sorted(ENCODER_PRESETS)}")
        cfg = ENCODER_PRESETS[cfg]
    trunk = cfg.get("trunk", {}) if isinstance(cfg, Mapping) else {}
    if "embed_dim" not in trunk or "stages" not in trunk:
        raise ValueError(f"an encoder config needs trunk.embed_dim and trunk.stages, got {cfg!r}")
    return EncoderSignature(int(trunk["embed_dim"]), int(sum(trunk["stages"])))


def sam2_encoder_signature(checkpoint: Mapping[str, torch.Tensor]) -> EncoderSignature | None:
    """The :class:`EncoderSignature` of the image encoder a SAM2 state dict holds (with or without the
    ``image_encoder.`` prefix), or ``None`` when it holds no Hiera stem."""
    weights, _ = sam2_encoder_state_dict(checkpoint)
    stem = weights.get("trunk.patch_embed.proj.weight")
    if stem is None:
        return None
    blocks = {int(k.split(".")[2]) for k in weights if k.startswith("trunk.blocks.") and k.split(".")[2].isdigit()}
    return EncoderSignature(int(stem.shape[0]), max(blocks) + 1 if blocks else 0)


def read_sam2_checkpoint(path: str | os.PathLike, *, mmap: bool = False) -> Mapping[str, torch.Tensor]:
    """Read a SAM2 checkpoint file (``{"model": state_dict}`` or a bare state dict) with ``weights_only=True``.

    Args:
        path: the ``.pt`` file.
        mmap: memory-map the tensors instead of reading them (to look at shapes of a large file quickly).

    Returns:
        The state dict.

    Raises:
        SAM2CheckpointError: the file is missing, cannot be read, or holds no state dict of tensors.
    """
    return _read_checkpoint(path, mmap=mmap)


def _read_checkpoint(
    path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor], *, mmap: bool = False
) -> Mapping[str, torch.Tensor]:
    if isinstance(path_or_state_dict, Mapping):
        ckpt: object = path_or_state_dict
        source = "the given state dict"
    else:
        path = os.fspath(path_or_state_dict)
        if not os.path.isfile(path):
            raise SAM2CheckpointError(f"{path}: SAM2 checkpoint not found")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except Exception as err:  # torch raises several types for corrupt/unsafe files
            raise SAM2CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint ({err})") from err
        source = path
    if isinstance(ckpt, Mapping) and "model" in ckpt and isinstance(ckpt["model"], Mapping):
        ckpt = ckpt["model"]
    if not isinstance(ckpt, Mapping) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise SAM2CheckpointError(f"{source}: expected a state dict of tensors (or {{'model': state_dict}})")
    return ckpt


def load_sam2_weights(
    encoder: ImageEncoder, path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor]
) -> LoadReport:
    """Load the ``image_encoder.*`` weights of an official SAM2 checkpoint into ``encoder``, strictly.

    Keys of the rest of SAM2 are ignored. The only encoder parameters allowed to be absent from the
    checkpoint are the adapters (``trunk.blocks.<i>.adapter.*``), which SAM2 does not have.

    Args:
        encoder: built with :func:`~coseg.networks.backbones.build_image_encoder` with the checkpoint's config.
        path_or_state_dict: path of a ``.pt`` file (loaded with ``weights_only=True``) or a state dict.

    Returns:
        a :class:`LoadReport`.

    Raises:
        SAM2CheckpointError: missing file, unreadable file, no encoder keys, or any missing key, unexpected
            key or shape mismatch (all of them listed in the message).
    """
    ckpt = _read_checkpoint(path_or_state_dict)
    source = path_or_state_dict if not isinstance(path_or_state_dict, Mapping) else "state dict"
    weights, ignored = sam2_encoder_state_dict(ckpt)
    if not weights:
        raise SAM2CheckpointError(f"{source}: no image_encoder.trunk.* / image_encoder.neck.* keys found")
    own = encoder.state_dict()
    adapter_keys = {k for k in own if _is_adapter_key(k)}
    missing = sorted(k for k in own if k not in weights and k not in adapter_keys)
    unexpected = sorted(k for k in weights if k not in own)
    mismatched = sorted(
        f"{k}: checkpoint {tuple(weights[k].shape)} vs encoder {tuple(own[k].shape)}"
        for k in weights
        if k in own and weights[k].shape != own[k].shape
    )
    if missing or unexpected or mismatched:
        lines = [f"{source}: the SAM2 checkpoint does not fit this image encoder (wrong preset?)"]
        held, own_sig = sam2_encoder_signature(weights), _module_signature(encoder)
        if held is not None and held != own_sig:
            lines[0] = (
                f"{source}: holds the SAM2 image encoder {held.describe()}, but this network's encoder is "
                f"{own_sig.describe()}: use a checkpoint of this encoder, or build the network with the preset of "
                "the checkpoint's encoder"
            )
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                shown = keys[:20] + ([f"... and {len(keys) - 20} more"] if len(keys) > 20 else [])
                lines.append(f"  {title} ({len(keys)}): " + ", ".join(shown))
        raise SAM2CheckpointError("\n".join(lines))
    result = encoder.load_state_dict(weights, strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) == adapter_keys - set(weights)
    report = LoadReport(loaded=sorted(weights), new=sorted(adapter_keys - set(weights)), ignored=ignored)
    logger.info(
        "loaded %d SAM2 image-encoder tensors from %s (%d adapter tensors new, %d other SAM2 tensors ignored)",
        len(report.loaded),
        source,
        len(report.new),
        len(report.ignored),
    )
    return report


def _module_signature(encoder: ImageEncoder) -> EncoderSignature:
    return EncoderSignature(int(encoder.trunk.patch_embed.proj.out_channels), len(encoder.trunk.blocks))


def _is_adapter_key(key: str) -> bool:
    parts = key.split(".")
    return len(parts) > 3 and parts[0] == "trunk" and parts[1] == "blocks" and parts[3] == "adapter"


def freeze_trunk(trunk: nn.Module) -> None:
    """Freeze the Hiera trunk except its adapters (paper §3.4): by module, not by parameter-name matching. A trunk
    without blocks (the ``cpu`` preset's ResNet) is frozen whole."""
    trunk.requires_grad_(False)
    for block in getattr(trunk, "blocks", ()):
        if block.adapter is not None:
            block.adapter.requires_grad_(True)


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """``(learnable, frozen)`` parameter counts of ``module``."""
    learnable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    return learnable, frozen


def recorded_build_args(state_dict: Mapping[str, torch.Tensor]) -> dict | None:
    """The build arguments a Co-Seg++ state dict records (see the module docstring), or ``None``.

    Args:
        state_dict: a state dict as ``Module.state_dict()`` returns it or ``torch.load`` reads it back.

    Returns:
        The recorded arguments of :meth:`~coseg.networks.CoSegPlusPlus.from_preset` (a copy), or ``None`` when the
        state dict records none (saved before they were recorded, or rebuilt as a new dict that lost torch's
        metadata).

    Raises:
        ValueError: it records more than one network (a state dict of several Co-Seg++ networks).
    """
    metadata = getattr(state_dict, "_metadata", None)
    if not isinstance(metadata, Mapping):
        return None
    found = {p: m[BUILD_ARGS_KEY] for p, m in metadata.items() if isinstance(m, Mapping) and BUILD_ARGS_KEY in m}
    if len(found) > 1:
        raise ValueError(f"the state dict records the build arguments of several networks: {sorted(found)}")
    return dict(next(iter(found.values()))) if found else None


def read_build_args(path: str | os.PathLike) -> dict | None:
    """The build arguments recorded in a saved network: a state dict (``model.pt``) or a checkpoint holding it under
    ``"model"`` (``checkpoint_*.pt``). The file is read with ``weights_only=True`` and memory-mapped.

    Returns:
        The recorded arguments, or ``None`` when the file records none.

    Raises:
        InputFileError: the file is missing, cannot be read with ``torch.load(weights_only=True)``, or holds no state
            dict.
    """
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise InputFileError(p, "no such file (saved network weights expected)")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises several types for corrupt/unsafe files
        raise InputFileError(p, f"cannot be read with torch.load(weights_only=True): {err}") from err
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    if not isinstance(state, Mapping):
        raise InputFileError(p, f"holds a {type(state).__name__}, not a state dict (or {{'model': state_dict}})")
    try:
        return recorded_build_args(state)
    except ValueError as err:
        raise InputFileError(p, str(err)) from err
