"""Co-Seg++: the image encoder runs once; the MTC-Decoder decodes in ``num_forwards`` passes, and each task's
low-resolution mask of one pass becomes, through an SSP-Encoder, the prompt of the other task in the next
(paper §3.1, §3.4, Eq. 12).
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from coseg.keys import OutputKeys
from coseg.networks.backbones import ENCODER_PRESETS, ImageEncoder, build_image_encoder
from coseg.networks.mtc_decoder import TASKS, MTCDecoder
from coseg.networks.ssp_encoder import SSPEncoder, mask_tokenizer
from coseg.networks.weights import freeze_trunk, load_sam2_weights

__all__ = ["PRESETS", "CoSegPlusPlus", "ConvPromptEncoder"]

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

    Build it with :meth:`from_preset` (``paper``, ``tiny``, ``micro``); the constructor takes built modules.

    Args:
        image_encoder: SAM2 image encoder (trunk with adapters + FPN neck, ``scalp`` 1: three levels at strides
            4, 8, 16; the stride-16 level is the image embedding).
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

    @classmethod
    def from_preset(cls, name: str = "paper", **overrides: Any) -> CoSegPlusPlus:
        """Build a Co-Seg++ network from a named preset, with overrides.

        Presets (:data:`PRESETS`): ``paper`` (SAM2 Hiera-L, 1024 px, the paper's §4.1.2 setting), ``tiny``
        (Hiera-T, 256 px, for CPUs), ``micro`` (about 0.4 M parameters, 64 px, for tests).

        Args:
            name: preset name.
            overrides: any of ``num_sem_classes``, ``num_inst_types``, ``num_forwards``, ``prompt_mode``,
                ``cross_task_attention``, ``prompt_encoder`` (``"ssp"`` | ``"conv"``), ``ssm_silu``,
                ``ssm_gate``, ``encoder`` (preset name or SAM2-style dict), ``adapter_ratio``,
                ``adapter_scale``, ``use_checkpoint``, ``decoder`` (dict merged into the decoder kwargs),
                ``ssp`` (dict merged into the SSP-Encoder kwargs), ``sam2_checkpoint`` (local path of an
                official SAM2 checkpoint for the encoder) and ``freeze_encoder`` (``True``, ``False`` or
                ``"auto"``: freeze the trunk, adapters excepted, exactly when ``sam2_checkpoint`` was loaded —
                an untrained frozen trunk would be useless, so without weights it trains, with a warning).
                ``image_size`` is accepted and informational (the network takes any multiple of 32).

        Raises:
            ValueError: unknown preset or override.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown Co-Seg++ preset {name!r}; choose one of {sorted(PRESETS)}")
        cfg = copy.deepcopy(PRESETS[name])
        unknown = set(overrides) - set(cfg) - {"ssm_silu", "ssm_gate"}
        if unknown:
            allowed = sorted(cfg) + ["ssm_gate", "ssm_silu"]
            raise ValueError(f"unknown Co-Seg++ options {sorted(unknown)}; allowed: {allowed}")
        for key in ("decoder", "ssp"):
            if key in overrides:
                cfg[key].update(overrides.pop(key))
        for key in ("ssm_silu", "ssm_gate"):
            if key in overrides:
                cfg["ssp"][key] = overrides.pop(key)
        cfg.update(overrides)

        encoder = build_image_encoder(
            cfg["encoder"],
            adapter_ratio=cfg["adapter_ratio"],
            adapter_scale=cfg["adapter_scale"],
            use_checkpoint=cfg["use_checkpoint"],
        )
        loaded = False
        if cfg["sam2_checkpoint"]:
            load_sam2_weights(encoder, os.path.expanduser(str(cfg["sam2_checkpoint"])))
            loaded = True
        freeze = cfg["freeze_encoder"]
        if freeze == "auto":
            freeze = loaded
            if not loaded:
                warnings.warn(
                    "Co-Seg++: no SAM2 checkpoint given (sam2_checkpoint=None): the image encoder starts from "
                    "random weights and is TRAINED instead of frozen. Pass the path of an official SAM2 "
                    "checkpoint (e.g. sam2.1_hiera_large.pt) for the paper's setting.",
                    stacklevel=2,
                )
        elif freeze not in (True, False):
            raise ValueError(f"freeze_encoder must be True, False or 'auto', got {freeze!r}")
        if freeze:
            freeze_trunk(encoder.trunk)
        d = encoder.neck.d_model
        k, s = int(cfg["num_inst_types"]), int(cfg["num_sem_classes"])
        if k < 2 or s < 2:
            raise ValueError(f"num_sem_classes and num_inst_types count the background: need >= 2, got {s}, {k}")
        decoder = MTCDecoder(
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
                prompt_encoders = {t: SSPEncoder(d, **cfg["ssp"]) for t in TASKS}
            elif cfg["prompt_encoder"] == "conv":
                mask_in_chans = cfg["ssp"].get("mask_in_chans", 16)
                prompt_encoders = {t: ConvPromptEncoder(d, mask_in_chans=mask_in_chans) for t in TASKS}
            else:
                raise ValueError(f"prompt_encoder must be 'ssp' or 'conv', got {cfg['prompt_encoder']!r}")
        model = cls(
            image_encoder=encoder,
            decoder=decoder,
            prompt_encoders=prompt_encoders,
            num_sem_classes=s,
            num_inst_types=k,
            num_forwards=int(cfg["num_forwards"]),
            prompt_mode=cfg["prompt_mode"],
        )
        model.preset = name
        model.image_size = cfg["image_size"]
        return model


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
        "use_checkpoint": False,
        "sam2_checkpoint": None,
        "freeze_encoder": "auto",
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

#: named configurations of :meth:`CoSegPlusPlus.from_preset`
PRESETS: dict[str, dict[str, Any]] = {
    "paper": _preset("hiera_l", 1024, dict(_SAM_DECODER), dict(_SSP)),
    "tiny": _preset("hiera_t", 256, dict(_SAM_DECODER), dict(_SSP)),
    "micro": _preset(
        MICRO_ENCODER,
        64,
        {"depth": 1, "num_heads": 2, "mlp_dim": 64, "attention_downsample_rate": 2},
        {"mask_in_chans": 8, "num_heads": 1, "mlp_dim": 64, "dropout": 0.0, "d_state": 4, "d_conv": 3},
    ),
}
assert set(ENCODER_PRESETS) >= {PRESETS["paper"]["encoder"], PRESETS["tiny"]["encoder"]}
