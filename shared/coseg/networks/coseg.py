"""Co-Seg++: the image encoder runs once; the MTC-Decoder decodes in ``num_forwards`` passes, and each task's
low-resolution mask of one pass becomes, through an SSP-Encoder, the prompt of the other task in the next
(paper §3.1, §3.4, Eq. 12).
"""

from __future__ import annotations

import copy
import logging
import numbers
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from coseg.errors import InputFileError
from coseg.keys import OutputKeys
from coseg.networks.backbones import ENCODER_PRESETS, ImageEncoder, build_image_encoder, is_sam2_encoder
from coseg.networks.mtc_decoder import TASKS, MTCDecoder
from coseg.networks.ssp_encoder import SSPEncoder, mask_tokenizer
from coseg.networks.weights import (
    BUILD_ARGS_KEY,
    SAM2CheckpointError,
    freeze_trunk,
    load_sam2_weights,
    read_build_args,
)

__all__ = [
    "ARCHITECTURE_ARGS",
    "PRESETS",
    "RECORDED_ARGS",
    "CoSegPlusPlus",
    "ConvPromptEncoder",
    "build_args_conflicts",
]

logger = logging.getLogger(__name__)


class ConvPromptEncoder(nn.Module):
    """SAM's plain dense mask-prompt encoder (strided convolutions only); the ablation without SSP-Encoder.

    Same call signature as :class:`~coseg.networks.ssp_encoder.SSPEncoder`.
    """

    def __init__(self, embed_dim: int, *, mask_in_chans: int = 16) -> None:
        super().__init__()
        self.mask_downscaling = mask_tokenizer(embed_dim, mask_in_chans)

    def encode_sequence(self, image_embedding: torch.Tensor) -> None:
        return None

    def forward(
        self, mask_logits: torch.Tensor, image_embedding: torch.Tensor, sequence: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.mask_downscaling(mask_logits.to(image_embedding.dtype))


class CoSegPlusPlus(nn.Module):
    """The Co-Seg++ network.

    Build it with :meth:`from_preset` (``paper``, ``tiny``, ``cpu``, ``micro``), or with :meth:`from_saved` as the saved
    weights record it; the constructor takes built modules.

    Args:
        image_encoder: SAM2 image encoder (trunk with adapters + FPN neck, ``scalp`` 1: three levels at strides
            4, 8, 16; the stride-16 level is the image embedding), or the same with a convolutional trunk
            (``cpu`` preset).
        decoder: the :class:`~coseg.networks.mtc_decoder.MTCDecoder`.
        prompt_encoders: ``{"sem": ..., "inst": ...}``: the encoder of each task's masks (SSP-Encoder or the
            plain conv encoder); ``None`` when ``num_forwards == 1``.
        num_sem_classes: semantic classes incl. background.
        num_inst_types: object types incl. background.
        num_forwards: decoding passes (paper: 2). With 1 there are no prompts.
        prompt_mode: ``"mutual"`` (paper: a task's mask prompts the OTHER task) or ``"self"`` (each task
            prompts itself; for ablations).

    ``forward(image)`` takes ``(B, 3, H, W)`` normalised RGB (see :mod:`coseg.constants`), H and W multiples of
    :attr:`size_divisor`, and returns a dict with the keys of :class:`coseg.keys.OutputKeys`:
    ``sem_logits (B, S, H, W)``, ``inst_binary (B, 2, H, W)``, ``inst_hv (B, 2, H, W)``,
    ``inst_type (B, K, H, W)``, the pass-1 prompt logits ``sem_prompt_logits``/``inst_prompt_logits``
    ``(B, 1, H/4, W/4)``, and the pass-1 consistency maps ``sem_consistency``/``inst_consistency``
    ``(B, 2, H/16, W/16)``. With ``return_attention=True`` also ``sem_cross_attention`` /
    ``inst_cross_attention`` ``(B, heads, tokens, H/16 * W/16)`` of the last pass.

    Attributes:
        build_args: the :meth:`from_preset` arguments the network was built with (``None`` when built by the
            constructor). Its state dict records them (:data:`coseg.networks.weights.BUILD_ARGS_KEY`), and loading a
            state dict that records other values of :data:`ARCHITECTURE_ARGS` (the preset name aside) fails, naming
            each argument and both values, even when every tensor fits.
    """

    def __init__(
        self,
        *,
        image_encoder: ImageEncoder,
        decoder: MTCDecoder,
        prompt_encoders: Mapping[str, nn.Module] | None,
        num_sem_classes: int,
        num_inst_types: int,
        num_forwards: int = 2,
        prompt_mode: str = "mutual",
    ) -> None:
        super().__init__()
        if num_forwards < 1:
            raise ValueError(f"num_forwards must be >= 1, got {num_forwards}")
        if prompt_mode not in ("mutual", "self"):
            raise ValueError(f"prompt_mode must be 'mutual' or 'self', got {prompt_mode!r}")
        if num_forwards > 1 and (prompt_encoders is None or set(prompt_encoders) != set(TASKS)):
            raise ValueError(f"num_forwards={num_forwards} needs prompt encoders for both tasks {TASKS}")
        d = image_encoder.neck.d_model
        if decoder.transformer_dim != d:
            raise ValueError(f"decoder width {decoder.transformer_dim} != image embedding width {d}")
        if decoder.heads["sem"].num_tokens != 1 + num_sem_classes:
            raise ValueError(f"the decoder's semantic head does not have {num_sem_classes} outputs")
        if decoder.heads["inst"].num_tokens != 1 + 4 + num_inst_types:
            raise ValueError(f"the decoder's instance head does not have 2 + {num_inst_types} + 2 outputs")
        self.image_encoder = image_encoder
        self.decoder = decoder
        self.prompt_encoders = nn.ModuleDict(dict(prompt_encoders)) if num_forwards > 1 else None
        self.num_sem_classes = num_sem_classes
        self.num_inst_types = num_inst_types
        self.num_forwards = num_forwards
        self.prompt_mode = prompt_mode
        self.build_args: dict[str, Any] | None = None

    @property
    def size_divisor(self) -> int:
        """Input height and width must be multiples of this (32 for the SAM2 configs)."""
        return self.image_encoder.size_divisor

    def forward(self, image: torch.Tensor, *, return_attention: bool = False) -> dict[str, torch.Tensor]:
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"CoSegPlusPlus expects a (B, 3, H, W) image batch, got shape {tuple(image.shape)}")
        H, W = image.shape[-2:]
        enc = self.image_encoder(image)  # once per image; every pass reuses it
        emb = enc["vision_features"]
        pe = enc["vision_pos_enc"][-1]
        fpn = enc["backbone_fpn"]
        high_res = self.decoder.high_res_features(fpn[0], fpn[1])
        prompts = {t: self.decoder.no_prompt(t, emb) for t in TASKS}
        sequences: dict[str, torch.Tensor | None] = {}
        out: dict[str, torch.Tensor] = {}
        for p in range(self.num_forwards):
            last = p == self.num_forwards - 1
            heads = self.decoder(emb, pe, prompts, high_res, return_attention=return_attention and last)
            if p == 0:
                out[OutputKeys.SEM_PROMPT] = heads["sem"].masks[:, :1]
                out[OutputKeys.INST_PROMPT] = heads["inst"].masks[:, :1]
                out[OutputKeys.SEM_CONSISTENCY] = heads["sem"].consistency
                out[OutputKeys.INST_CONSISTENCY] = heads["inst"].consistency
            if not last:
                # each task's binary mask of this pass (not detached: the loss of one task reaches the other
                # task's queries and prompt encoder) prompts a task in the next pass
                assert self.prompt_encoders is not None
                encoded = {}
                for t in TASKS:
                    enc_t = self.prompt_encoders[t]
                    if t not in sequences:
                        sequences[t] = enc_t.encode_sequence(emb)
                    encoded[t] = enc_t(heads[t].masks[:, :1].contiguous(), emb, sequences[t])
                if self.prompt_mode == "mutual":
                    prompts = {"sem": encoded["inst"], "inst": encoded["sem"]}
                else:
                    prompts = encoded
        sem = heads["sem"].masks[:, 1:]
        inst = heads["inst"].masks[:, 1:]
        size = (H, W)
        out[OutputKeys.SEM_LOGITS] = F.interpolate(sem, size=size, mode="bilinear", align_corners=False)
        inst = F.interpolate(inst, size=size, mode="bilinear", align_corners=False)
        k = self.num_inst_types
        out[OutputKeys.INST_BINARY] = inst[:, :2]
        out[OutputKeys.INST_TYPE] = inst[:, 2 : 2 + k]
        out[OutputKeys.INST_HV] = inst[:, 2 + k :]
        if return_attention:
            out[OutputKeys.SEM_CROSS_ATTENTION] = heads["sem"].cross_task_attention
            out[OutputKeys.INST_CROSS_ATTENTION] = heads["inst"].cross_task_attention
        return out

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        # record the build arguments in torch's per-module metadata (kept by torch.save / torch.load)
        super()._save_to_state_dict(destination, prefix, keep_vars)
        metadata = getattr(destination, "_metadata", None)
        if self.build_args is not None and metadata is not None:
            metadata.setdefault(prefix[:-1], {})[BUILD_ARGS_KEY] = copy.deepcopy(self.build_args)

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # weights saved from a network built otherwise are refused even when every tensor fits (ssm_silu changes no
        # shape); torch raises all of error_msgs, whatever `strict`
        recorded = local_metadata.get(BUILD_ARGS_KEY)
        if isinstance(recorded, Mapping) and self.build_args is not None:
            conflicts = build_args_conflicts(
                self.build_args, recorded, keys=ARCHITECTURE_ARGS[1:], labels=("this network", "the weights")
            )
            if conflicts:
                error_msgs.append(
                    "the weights were saved from a network built with other arguments: " + "; ".join(conflicts)
                )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    @classmethod
    def from_preset(
        cls,
        name: str = "paper",
        *,
        num_sem_classes: int | None = None,
        num_inst_types: int | None = None,
        num_forwards: int | None = None,
        prompt_mode: str | None = None,
        cross_task_attention: bool | None = None,
        prompt_encoder: str | None = None,
        ssm_silu: bool | None = None,
        ssm_gate: bool | None = None,
        encoder: str | Mapping[str, Any] | None = None,
        adapter_ratio: float | None = None,
        adapter_scale: float | None = None,
        use_checkpoint: bool | None = None,
        decoder: Mapping[str, Any] | None = None,
        ssp: Mapping[str, Any] | None = None,
        image_size: int | None = None,
        sam2_checkpoint: str | os.PathLike | None = None,
        freeze_encoder: bool | str = "auto",
    ) -> CoSegPlusPlus:
        """Build a Co-Seg++ network from a named preset; every other argument left at ``None`` takes the preset's value.

        Presets (:data:`PRESETS`): ``paper`` (SAM2 Hiera-L, 1024 px, the paper's §4.1.2 setting), ``tiny``
        (Hiera-T, 256 px, for CPUs), ``cpu`` (NOT the paper's encoder: a MONAI ResNet-18 trained from scratch under
        the same FPN neck, SSP-Encoders and MTC-Decoder as ``tiny``, 256 px, for training on a CPU without SAM2
        weights), ``micro`` (about 0.4 M parameters, 64 px, for tests).

        The network remembers the arguments it was built with (:attr:`build_args`: ``name`` and the arguments of
        :data:`RECORDED_ARGS`, resolved), and its state dict records them: see :meth:`from_saved`.

        Args:
            name: preset name.
            num_sem_classes: semantic classes, background included (>= 2).
            num_inst_types: object types, background included (>= 2).
            num_forwards: decoding passes (>= 1; the paper: 2).
            prompt_mode: ``"mutual"`` or ``"self"``.
            cross_task_attention: the MTC-Decoder's cross-task attention.
            prompt_encoder: ``"ssp"`` (SSP-Encoder) or ``"conv"`` (SAM's plain mask encoder).
            ssm_silu: SiLU after the SSM's depthwise convolution (Table 8).
            ssm_gate: Mamba's gate branch in the SSM (Table 8).
            encoder: an :data:`~coseg.networks.ENCODER_PRESETS` name or a SAM2-style dict.
            adapter_ratio: adapter bottleneck ratio (0: no adapters).
            adapter_scale: adapter output scale.
            use_checkpoint: recompute the trunk's blocks in the backward pass (saves activation memory in training;
                changes no result).
            decoder: merged into the MTC-Decoder's keyword arguments.
            ssp: merged into the SSP-Encoder's keyword arguments (``ssm_silu`` / ``ssm_gate`` are arguments of their
                own).
            image_size: informational (the network takes any multiple of 32); not recorded.
            sam2_checkpoint: local path of an official SAM2 checkpoint for the encoder, loaded strictly (the bundles
                fetch the presets' checkpoints with ``download_large_files``: see :mod:`coseg.networks.pretrained`).
                Refused for a convolutional encoder (``cpu``).
            freeze_encoder: ``True``, ``False`` or ``"auto"``: freeze the trunk, adapters excepted, exactly when
                ``sam2_checkpoint`` was loaded -- an untrained frozen trunk would be useless, so without weights it
                trains, with a warning (no warning for a convolutional encoder, which always starts from random
                weights).

        Raises:
            ValueError: unknown preset, or an argument of the wrong type or value (booleans must be ``True`` or
                ``False``: the string ``"false"`` is refused, not read as true).
            SAM2CheckpointError: ``sam2_checkpoint`` is missing, unreadable or does not fit the preset's encoder (the
                message names the preset, the file and, for another SAM2 size, both encoders), or is given for a
                convolutional encoder.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown Co-Seg++ preset {name!r}; choose one of {sorted(PRESETS)}")
        cfg = copy.deepcopy(PRESETS[name])
        given = _preset_arguments(locals())
        for key, value in given.items():
            if value is None:
                continue
            if key in ("decoder", "ssp"):
                if not isinstance(value, Mapping):
                    raise ValueError(f"{key} must be a dict of keyword arguments, got {value!r}")
                cfg[key].update(copy.deepcopy(dict(value)))
            else:
                cfg[key] = value
        _check_settings(cfg)

        encoder_module = build_image_encoder(
            cfg["encoder"],
            adapter_ratio=cfg["adapter_ratio"],
            adapter_scale=cfg["adapter_scale"],
            use_checkpoint=cfg["use_checkpoint"],
        )
        loaded = False
        sam2 = is_sam2_encoder(cfg["encoder"])
        if sam2_checkpoint and not sam2:
            raise SAM2CheckpointError(
                f"model preset {name!r}: its image encoder is convolutional ({cfg['encoder'].get('backbone')}), not "
                f"SAM2's Hiera: no SAM2 checkpoint fits it ({sam2_checkpoint}); it trains from random weights"
            )
        if sam2_checkpoint:
            try:
                load_sam2_weights(encoder_module, os.path.expanduser(str(sam2_checkpoint)))
            except SAM2CheckpointError as err:
                raise SAM2CheckpointError(f"model preset {name!r}: {err}") from err
            loaded = True
        freeze = freeze_encoder
        if freeze == "auto":
            freeze = loaded
            if not loaded and sam2:
                warnings.warn(
                    "Co-Seg++: no SAM2 checkpoint given (sam2_checkpoint=None): the image encoder starts from "
                    "random weights and is TRAINED instead of frozen. Pass the path of an official SAM2 "
                    "checkpoint (e.g. sam2.1_hiera_large.pt) for the paper's setting.",
                    stacklevel=2,
                )
        elif freeze not in (True, False):
            raise ValueError(f"freeze_encoder must be True, False or 'auto', got {freeze!r}")
        if freeze:
            freeze_trunk(encoder_module.trunk)
        d = encoder_module.neck.d_model
        k, s = cfg["num_inst_types"], cfg["num_sem_classes"]
        decoder_module = MTCDecoder(
            transformer_dim=d,
            num_sem_outputs=s,
            num_inst_outputs=4 + k,
            fpn_dim=d,
            cross_task_attention=cfg["cross_task_attention"],
            **cfg["decoder"],
        )
        prompt_encoders = None
        if cfg["num_forwards"] > 1:
            if cfg["prompt_encoder"] == "ssp":
                ssm = {"ssm_silu": cfg["ssm_silu"], "ssm_gate": cfg["ssm_gate"]}
                prompt_encoders = {t: SSPEncoder(d, **cfg["ssp"], **ssm) for t in TASKS}
            else:
                mask_in_chans = cfg["ssp"].get("mask_in_chans", 16)
                prompt_encoders = {t: ConvPromptEncoder(d, mask_in_chans=mask_in_chans) for t in TASKS}
        model = cls(
            image_encoder=encoder_module,
            decoder=decoder_module,
            prompt_encoders=prompt_encoders,
            num_sem_classes=s,
            num_inst_types=k,
            num_forwards=cfg["num_forwards"],
            prompt_mode=cfg["prompt_mode"],
        )
        model.preset = name
        model.image_size = cfg["image_size"]
        model.build_args = _plain({"name": name, **{key: cfg[key] for key in RECORDED_ARGS[1:]}})
        return model

    @classmethod
    def from_saved(
        cls,
        path: str | os.PathLike,
        *,
        name: str | None = None,
        num_sem_classes: int | None = None,
        num_inst_types: int | None = None,
        num_forwards: int | None = None,
        prompt_mode: str | None = None,
        cross_task_attention: bool | None = None,
        prompt_encoder: str | None = None,
        ssm_silu: bool | None = None,
        ssm_gate: bool | None = None,
        encoder: str | Mapping[str, Any] | None = None,
        adapter_ratio: float | None = None,
        adapter_scale: float | None = None,
        use_checkpoint: bool | None = None,
        decoder: Mapping[str, Any] | None = None,
        ssp: Mapping[str, Any] | None = None,
        image_size: int | None = None,
    ) -> CoSegPlusPlus:
        """Build the network that saved weights were trained as, from the build arguments they record; the weights
        themselves are not loaded (the bundle's ``CheckpointLoader``, MONAI Label or ``monai.bundle.load`` do that).

        Every argument but ``path`` is optional: ``None`` takes the recorded value. A value given must agree with the
        recorded one (``use_checkpoint`` and ``image_size`` excepted: they change no result); dicts (``decoder``,
        ``ssp``, ``encoder``) are compared entry by entry. The trunk is never frozen and no SAM2 file is read: the
        weights come from ``path``.

        Without a record (weights saved before the build arguments were recorded) the network is built from the
        given arguments and the preset's values for the others, with a warning: a setting that changes no tensor
        shape (``ssm_silu``) cannot be checked then. Without a file at ``path`` it is built from the given arguments
        (for tools that need the network but no weights, like ``verify_net_in_out``).

        Args:
            path: ``model.pt`` (a state dict) or a training checkpoint (``{"model": state_dict, ...}``).
            name, ...: as for :meth:`from_preset`.

        Raises:
            InputFileError: the file cannot be read, or a given argument contradicts the recorded one (the message
                names the file, each argument and both values).
            ValueError: an argument of the wrong type or value.
        """
        given = {"name": name, **_preset_arguments(locals())}
        explicit = {k: v for k, v in given.items() if v is not None}
        p = os.fspath(path)
        if not os.path.exists(p):
            logger.info("no saved weights at %s: the network is built from the given arguments %s", p, explicit)
            return cls.from_preset(**explicit, freeze_encoder=False)
        recorded = read_build_args(p)
        if recorded is None:
            warnings.warn(
                f"{p}: records no network build arguments (saved before they were recorded); building the network "
                f"from the config's settings {explicit} and the preset's values for the others. A setting these "
                "weights were trained with that changes no tensor shape (ssm_silu) cannot be checked: save the "
                "weights again from a network built by this version to record them.",
                stacklevel=2,
            )
            return cls.from_preset(**explicit, freeze_encoder=False)
        conflicts = build_args_conflicts(explicit, recorded, keys=ARCHITECTURE_ARGS, labels=("config", "weights"))
        if conflicts:
            raise InputFileError(
                p,
                "the weights were trained as another network than the config asks for: "
                + "; ".join(conflicts)
                + ". Leave these settings unset (null) to use the recorded ones, or give weights of that network.",
            )
        args = {**recorded, **{k: v for k, v in explicit.items() if k not in ARCHITECTURE_ARGS}}
        unknown = set(args) - set(RECORDED_ARGS) - {"image_size"}
        if unknown:
            raise InputFileError(p, f"records unknown build arguments {sorted(unknown)} (saved by a newer coseg?)")
        return cls.from_preset(**args, freeze_encoder=False)


#: :meth:`CoSegPlusPlus.from_preset` arguments that decide the network's tensors and what it computes
ARCHITECTURE_ARGS = (
    "name",
    "num_sem_classes",
    "num_inst_types",
    "num_forwards",
    "prompt_mode",
    "cross_task_attention",
    "prompt_encoder",
    "ssm_silu",
    "ssm_gate",
    "encoder",
    "adapter_ratio",
    "adapter_scale",
    "decoder",
    "ssp",
)

#: the arguments a network records (:attr:`CoSegPlusPlus.build_args`, saved with its state dict); ``use_checkpoint``
#: only changes memory use in training and may differ when the weights are loaded
RECORDED_ARGS = (*ARCHITECTURE_ARGS, "use_checkpoint")


def _plain(value: Any) -> Any:
    """``value`` as plain JSON-like data (dicts, lists, str, int, float, bool, None), which
    ``torch.load(weights_only=True)`` reads back."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise ValueError(f"a build argument must be plain data (numbers, strings, lists, dicts), got {value!r}")


def _resolved_encoder(value: Any) -> Any:
    return ENCODER_PRESETS[value] if isinstance(value, str) and value in ENCODER_PRESETS else value


def build_args_conflicts(
    given: Mapping[str, Any],
    recorded: Mapping[str, Any],
    *,
    keys: Sequence[str],
    labels: tuple[str, str] = ("given", "recorded"),
) -> list[str]:
    """The entries of ``given`` that contradict ``recorded``, among ``keys``, as ``"key: given X, recorded Y"``.

    Dicts are compared entry by entry over the entries ``given`` has (``decoder={"depth": 2}`` agrees with any
    recorded decoder of depth 2); an encoder preset name equals its dict; numbers compare by value.

    Args:
        given: arguments of :meth:`CoSegPlusPlus.from_preset` (``None`` values are ignored).
        recorded: the recorded arguments.
        keys: the arguments to compare.
        labels: how the message calls ``given`` and ``recorded``.

    Returns:
        One line per disagreement (nested keys joined with ``.``), empty when they agree.
    """
    out: list[str] = []

    def compare(key: str, a: Any, b: Any) -> None:
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for sub in a:
                compare(f"{key}.{sub}", a[sub], b.get(sub))
        elif _plain(a) != _plain(b):
            out.append(f"{key}: {labels[0]} {a!r}, {labels[1]} {b!r}")

    for key in keys:
        if key not in given or given[key] is None:
            continue
        a, b = given[key], recorded.get(key)
        if key == "encoder":
            a, b = _resolved_encoder(a), _resolved_encoder(b)
        compare("name (preset)" if key == "name" else key, a, b)
    return out


def _check_settings(cfg: dict[str, Any]) -> None:
    """Check (and normalise to ``int``) the settings of a preset with its overrides; raise ``ValueError``."""
    for key in ("cross_task_attention", "ssm_silu", "ssm_gate", "use_checkpoint"):
        if not isinstance(cfg[key], bool):
            raise ValueError(f"{key} must be True or False, got {cfg[key]!r} ({type(cfg[key]).__name__})")
    for key, low in (("num_sem_classes", 2), ("num_inst_types", 2), ("num_forwards", 1)):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            detail = " (background included)" if low == 2 else ""
            raise ValueError(f"{key} must be an integer >= {low}{detail}, got {value!r}")
        cfg[key] = int(value)
    if cfg["prompt_mode"] not in ("mutual", "self"):
        raise ValueError(f"prompt_mode must be 'mutual' or 'self', got {cfg['prompt_mode']!r}")
    if cfg["prompt_encoder"] not in ("ssp", "conv"):
        raise ValueError(f"prompt_encoder must be 'ssp' or 'conv', got {cfg['prompt_encoder']!r}")
    for key in ("adapter_ratio", "adapter_scale"):
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], numbers.Real) or cfg[key] < 0:
            raise ValueError(f"{key} must be a number >= 0, got {cfg[key]!r}")
    if not isinstance(cfg["encoder"], (str, Mapping)):
        raise ValueError(f"encoder must be a preset name or a dict, got {cfg['encoder']!r}")
    clash = {"ssm_silu", "ssm_gate"} & set(cfg["ssp"])
    if clash:
        raise ValueError(f"pass {sorted(clash)} as arguments of their own, not inside ssp")
    _plain({k: cfg[k] for k in RECORDED_ARGS[1:]})  # raises on anything a weights-only load could not read


def _preset(encoder: Any, image_size: int, decoder: dict, ssp: dict) -> dict[str, Any]:
    return {
        "encoder": encoder,
        "image_size": image_size,
        "num_sem_classes": 3,  # PUMA as in the paper: background, tumour, stroma
        "num_inst_types": 4,  # background, tumour, TIL, other
        "num_forwards": 2,
        "prompt_mode": "mutual",
        "prompt_encoder": "ssp",
        "cross_task_attention": True,
        "adapter_ratio": 0.25,
        "adapter_scale": 0.5,
        "ssm_silu": False,
        "ssm_gate": False,
        "use_checkpoint": False,
        "decoder": decoder,
        "ssp": ssp,
    }


_SAM_DECODER = {"depth": 2, "num_heads": 8, "mlp_dim": 2048, "attention_downsample_rate": 2}
_SSP = {"mask_in_chans": 16, "num_heads": 1, "mlp_dim": 2048, "dropout": 0.1, "d_state": 8, "d_conv": 3}

#: the micro encoder: the shape of ``../shared/fixtures/sam2_encoder_micro.pt``
MICRO_ENCODER = {
    "trunk": {
        "embed_dim": 16,
        "num_heads": 1,
        "stages": [1, 2, 2, 1],
        "global_att_blocks": [2, 4],
        "window_pos_embed_bkg_spatial_size": [4, 4],
        "window_spec": [8, 4, 4, 2],
    },
    "neck": {
        "d_model": 32,
        "backbone_channel_list": [128, 64, 32, 16],
        "fpn_top_down_levels": [2, 3],
        "fpn_interp_model": "nearest",
    },
    "scalp": 1,
}

#: the ``cpu`` encoder: MONAI's 2-D ResNet-18 (random weights) under SAM2's FPN neck, levels as Hiera-T's
CPU_ENCODER = {
    "backbone": "monai_resnet",
    "trunk": {"model_name": "resnet18"},
    "neck": {
        "d_model": 256,
        "backbone_channel_list": [512, 256, 128, 64],
        "fpn_top_down_levels": [2, 3],
        "fpn_interp_model": "nearest",
    },
    "scalp": 1,
}

#: named configurations of :meth:`CoSegPlusPlus.from_preset`
PRESETS: dict[str, dict[str, Any]] = {
    "paper": _preset("hiera_l", 1024, dict(_SAM_DECODER), dict(_SSP)),
    "tiny": _preset("hiera_t", 256, dict(_SAM_DECODER), dict(_SSP)),
    # NOT the paper's encoder: a ResNet-18 from scratch (no adapters: nothing is frozen), tiny's decoder and SSP
    "cpu": {**_preset(CPU_ENCODER, 256, dict(_SAM_DECODER), dict(_SSP)), "adapter_ratio": 0.0},
    "micro": _preset(
        MICRO_ENCODER,
        64,
        {"depth": 1, "num_heads": 2, "mlp_dim": 64, "attention_downsample_rate": 2},
        {"mask_in_chans": 8, "num_heads": 1, "mlp_dim": 64, "dropout": 0.0, "d_state": 4, "d_conv": 3},
    ),
}
assert set(ENCODER_PRESETS) >= {PRESETS["paper"]["encoder"], PRESETS["tiny"]["encoder"]}


#: the keyword arguments of :meth:`CoSegPlusPlus.from_preset` (and :meth:`~CoSegPlusPlus.from_saved`) that override
#: a preset's value (``None``: keep the preset's)
PRESET_ARGUMENTS = (
    "num_sem_classes",
    "num_inst_types",
    "num_forwards",
    "prompt_mode",
    "cross_task_attention",
    "prompt_encoder",
    "ssm_silu",
    "ssm_gate",
    "encoder",
    "adapter_ratio",
    "adapter_scale",
    "use_checkpoint",
    "decoder",
    "ssp",
    "image_size",
)


def _preset_arguments(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The preset-overriding arguments out of a builder's ``locals()``."""
    return {key: arguments[key] for key in PRESET_ARGUMENTS}
