"""The official SAM2.1 checkpoints of the model presets, where a bundle keeps them, and the check a training config
runs before anything else.

The paper freezes a pretrained SAM2 image encoder (§3.4, §4.1.2): training the ``paper`` preset's Hiera-L from
random weights is not the paper's method, so the bundles refuse to start without the checkpoint unless told
``allow_random_encoder: true``. Each bundle lists the checkpoints in its ``large_files.yml`` (the model-zoo
convention) and ``python -m monai.bundle download_large_files --bundle_path <bundle>`` puts them in
``<bundle>/models/``, where :func:`sam2_checkpoint_path` finds the one of a preset.

Meta publishes no checksums for these files, so ``large_files.yml`` leaves ``hash_val`` empty and MONAI skips the
check (it warns); the strict loader (:func:`~coseg.networks.load_sam2_weights`) still refuses a file that is not the
preset's SAM2 image encoder.
"""

from __future__ import annotations

import logging
import os
import shlex
import warnings
from dataclasses import dataclass

from coseg.networks.backbones import is_sam2_encoder
from coseg.networks.coseg import PRESETS
from coseg.networks.weights import (
    SAM2CheckpointError,
    encoder_config_signature,
    read_sam2_checkpoint,
    sam2_encoder_signature,
)

__all__ = [
    "LARGE_FILES_DIR",
    "SAM2_CHECKPOINTS",
    "SAM2Release",
    "check_sam2_checkpoint",
    "fetch_command",
    "sam2_checkpoint_path",
]

logger = logging.getLogger(__name__)

#: the folder of a bundle that ``large_files.yml`` fills
LARGE_FILES_DIR = "models"

_RELEASE = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"


@dataclass(frozen=True)
class SAM2Release:
    """One official SAM2.1 checkpoint.

    Attributes:
        filename: its file name, also its name under ``<bundle>/models/``.
        url: where Meta publishes it.
        encoder: the :data:`~coseg.networks.ENCODER_PRESETS` name of its image encoder.
        size: its size, in words, for messages.
    """

    filename: str
    url: str
    encoder: str
    size: str


#: model preset -> the official SAM2.1 checkpoint of its encoder (``micro`` has none: tests write their own)
SAM2_CHECKPOINTS: dict[str, SAM2Release] = {
    "paper": SAM2Release("sam2.1_hiera_large.pt", _RELEASE + "sam2.1_hiera_large.pt", "hiera_l", "about 900 MB"),
    "tiny": SAM2Release("sam2.1_hiera_tiny.pt", _RELEASE + "sam2.1_hiera_tiny.pt", "hiera_t", "about 160 MB"),
}


def _check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise ValueError(f"unknown Co-Seg++ preset {preset!r}; choose one of {sorted(PRESETS)}")


def sam2_checkpoint_path(bundle_root: str | os.PathLike, preset: str) -> str | None:
    """Where ``download_large_files`` puts the official SAM2.1 checkpoint of a model preset.

    Args:
        bundle_root: the bundle folder (holding ``large_files.yml``).
        preset: a model preset of :data:`~coseg.networks.PRESETS`.

    Returns:
        ``<bundle_root>/models/<file name>`` (``sam2.1_hiera_large.pt`` for ``paper``, ``sam2.1_hiera_tiny.pt`` for
        ``tiny``), or ``None`` for a preset without an official checkpoint (``micro``).

    Raises:
        ValueError: unknown preset.
    """
    _check_preset(preset)
    release = SAM2_CHECKPOINTS.get(preset)
    if release is None:
        return None
    return os.path.join(os.fspath(bundle_root), LARGE_FILES_DIR, release.filename)


def fetch_command(bundle_root: str | os.PathLike) -> str:
    """The command that fetches a bundle's large files (``large_files.yml``) into ``<bundle_root>/models/``."""
    return f"python -m monai.bundle download_large_files --bundle_path {shlex.quote(os.fspath(bundle_root))}"


def _how_to_fetch(path: str, release: SAM2Release, bundle_root: str | os.PathLike | None) -> str:
    lines = []
    in_bundle = bundle_root is not None and os.path.isfile(os.path.join(os.fspath(bundle_root), "large_files.yml"))
    if in_bundle and os.path.abspath(path) == os.path.abspath(
        os.path.join(os.fspath(bundle_root), LARGE_FILES_DIR, release.filename)
    ):
        others = ", ".join(f"{r.filename} ({r.size})" for r in SAM2_CHECKPOINTS.values())
        lines += [
            "Fetch it first with",
            f"    {fetch_command(bundle_root)}",
            f"(it downloads every file of large_files.yml: {others}), or fetch only this one with",
        ]
    else:
        lines.append("Download it with")
    lines.append(f"    curl -L --create-dirs -o {shlex.quote(path)} {release.url}")
    return "\n".join(lines)


_RANDOM_HINT = (
    "To train the image encoder from random weights instead (not the paper's method: its encoder is a frozen, "
    "pretrained SAM2), set allow_random_encoder: true (command line: --allow_random_encoder true)."
)


def check_sam2_checkpoint(
    path: str | os.PathLike | None,
    *,
    preset: str,
    allow_random: bool = False,
    bundle_root: str | os.PathLike | None = None,
) -> str | None:
    """Check the SAM2 checkpoint a training run will load, before any data is read.

    A present file must hold the image encoder of ``preset`` (read memory-mapped: a second for Hiera-L); the full,
    strict load happens when the network is built. Without a file, training may only go on when ``allow_random``.

    Args:
        path: the checkpoint (the bundles' ``sam2_checkpoint``), or ``None`` for none.
        preset: the model preset the network is built from.
        allow_random: train the encoder from random weights when ``path`` is ``None`` or missing (with a warning).
        bundle_root: the bundle folder, to name the command that fetches the preset's checkpoint into it.

    A preset whose encoder is not SAM2's (``cpu``: a convolutional trunk, always trained from random weights) needs
    no checkpoint and no ``allow_random``: ``None`` passes, and a file given is refused.

    Returns:
        ``path`` (user folder expanded) when it is a file that fits, ``None`` when there is none and
        ``allow_random`` or the preset's encoder is not SAM2's.

    Raises:
        SAM2CheckpointError: no checkpoint and not ``allow_random`` (the message says which command fetches it), an
            unreadable file, a checkpoint of another encoder (the message names it and the preset's), or a
            checkpoint given for a preset whose encoder is not SAM2's.
        ValueError: unknown preset, or ``allow_random`` not a boolean.
    """
    _check_preset(preset)
    if allow_random not in (True, False):
        raise ValueError(f"allow_random_encoder must be true or false, got {allow_random!r}")
    release = SAM2_CHECKPOINTS.get(preset)
    if not is_sam2_encoder(PRESETS[preset]["encoder"]):
        if path is not None:
            raise SAM2CheckpointError(
                f"{os.fspath(path)}: model preset {preset!r} has a convolutional image encoder, not SAM2's Hiera: "
                "no SAM2 checkpoint fits it (it trains from random weights); set sam2_checkpoint to null"
            )
        logger.info("model preset %r: convolutional image encoder, trained from random weights", preset)
        return None
    if path is None:
        if allow_random:
            return None
        if release is None:
            raise SAM2CheckpointError(
                f"model preset {preset!r} has no official SAM2 checkpoint and sam2_checkpoint is null: set "
                "sam2_checkpoint to a SAM2-format checkpoint of its encoder. " + _RANDOM_HINT
            )
        default = None if bundle_root is None else sam2_checkpoint_path(bundle_root, preset)
        where = f"its default, {default}, is where `{fetch_command(bundle_root)}` puts it" if default else release.url
        raise SAM2CheckpointError(
            f"sam2_checkpoint is null, but model preset {preset!r} starts from the pretrained SAM2.1 encoder of "
            f"{release.filename}: set sam2_checkpoint to that file ({where}). " + _RANDOM_HINT
        )
    file = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(file):
        if allow_random:
            warnings.warn(
                f"{file}: no SAM2 checkpoint there; allow_random_encoder is true, so the image encoder of model "
                f"preset {preset!r} trains from random weights",
                stacklevel=2,
            )
            return None
        if release is None:
            raise SAM2CheckpointError(f"{file}: SAM2 checkpoint not found (sam2_checkpoint). " + _RANDOM_HINT)
        raise SAM2CheckpointError(
            f"{file}: the SAM2.1 checkpoint of model preset {preset!r} ({release.filename}, {release.size}) is "
            f"missing.\n{_how_to_fetch(file, release, bundle_root)}\n"
            "Or set sam2_checkpoint to where the file is. " + _RANDOM_HINT
        )
    held = sam2_encoder_signature(read_sam2_checkpoint(file, mmap=True))
    if held is None:
        raise SAM2CheckpointError(f"{file}: no SAM2 image encoder in it (no image_encoder.trunk.patch_embed weights)")
    wanted = encoder_config_signature(PRESETS[preset]["encoder"])
    if held != wanted:
        fits = [
            name
            for name, cfg in PRESETS.items()
            if is_sam2_encoder(cfg["encoder"]) and encoder_config_signature(cfg["encoder"]) == held
        ]
        other = f", the encoder of model preset {fits[0]!r}" if fits else ""
        right = f" ({release.filename})" if release else ""
        raise SAM2CheckpointError(
            f"{file}: holds the SAM2 image encoder {held.describe()}{other}, but model preset {preset!r} builds "
            f"{wanted.describe()}: give the checkpoint of preset {preset!r}{right}"
            + (f" or set model_preset to {fits[0]!r}" if fits else "")
        )
    logger.info("SAM2 checkpoint of model preset %r: %s", preset, file)
    return file
