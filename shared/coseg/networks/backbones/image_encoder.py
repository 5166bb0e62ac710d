"""SAM2's image encoder: Hiera trunk + FPN neck with sine position encodings, built from SAM2's yaml fields.

``build_image_encoder({"trunk": {...}, "neck": {...}, "scalp": 1})`` takes the field names of SAM2's configs
(``sam2/configs/sam2.1/sam2.1_hiera_*.yaml``); :data:`ENCODER_PRESETS` holds the four official sizes.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from coseg.networks.backbones.hiera import Hiera
from coseg.networks.backbones.resnet import ResNetTrunk

__all__ = [
    "BACKBONES",
    "ENCODER_PRESETS",
    "FpnNeck",
    "ImageEncoder",
    "PositionEmbeddingSine",
    "build_image_encoder",
    "is_sam2_encoder",
]


class PositionEmbeddingSine(nn.Module):
    """DETR/SAM2 sine position encoding of a feature map's grid: ``(B, C, H, W) -> (B, num_pos_feats, H, W)``.

    Channels are ``[y-encodings, x-encodings]``, each alternating sin/cos over ``num_pos_feats / 4``
    frequencies; positions 1..H and 1..W are normalised to ``(0, 2*pi]`` when ``normalize``.

    Args:
        num_pos_feats: output channels (even).
        temperature: frequency base.
        normalize: normalise positions by the grid size.
        scale: the normalised range (default ``2*pi``).
    """

    def __init__(
        self, num_pos_feats: int, *, temperature: float = 10000, normalize: bool = True, scale: float | None = None
    ) -> None:
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError(f"num_pos_feats must be even, got {num_pos_feats}")
        if scale is not None and not normalize:
            raise ValueError("scale is only used with normalize=True")
        self.num_pos_feats = num_pos_feats // 2
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale
        self._cache: dict[tuple, torch.Tensor] = {}

    def _encode(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        y = torch.arange(1, h + 1, dtype=torch.float32, device=device)
        x = torch.arange(1, w + 1, dtype=torch.float32, device=device)
        if self.normalize:
            eps = 1e-6
            y = y / (y[-1] + eps) * self.scale
            x = x / (x[-1] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        py, px = y[:, None] / dim_t, x[:, None] / dim_t  # (h, F), (w, F)
        py = torch.stack((py[:, 0::2].sin(), py[:, 1::2].cos()), dim=2).flatten(1)
        px = torch.stack((px[:, 0::2].sin(), px[:, 1::2].cos()), dim=2).flatten(1)
        pos = torch.cat((py[:, None, :].expand(h, w, -1), px[None, :, :].expand(h, w, -1)), dim=2)
        return pos.permute(2, 0, 1).contiguous()  # (num_pos_feats*2, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        if torch.compiler.is_compiling():  # traced into the graph: no Python-side cache, no graph break
            return self._encode(h, w, x.device).unsqueeze(0).expand(x.shape[0], -1, -1, -1)
        # inference-mode tensors must not be cached: a later training forward could not use them
        key = (h, w, x.device, torch.is_inference_mode_enabled())
        if key not in self._cache:
            with torch.no_grad():
                self._cache[key] = self._encode(h, w, x.device)
        return self._cache[key].unsqueeze(0).expand(x.shape[0], -1, -1, -1)


class FpnNeck(nn.Module):
    """SAM2's FPN neck: 1x1 lateral convs to ``d_model`` and nearest/bilinear top-down fusion on chosen levels.

    Args:
        position_encoding: module giving the position encoding of each output level.
        d_model: output channels.
        backbone_channel_list: trunk channels, deepest stage first (must equal the trunk's ``channel_list``).
        kernel_size, stride, padding: of the lateral convs.
        fpn_interp_model: interpolation of the top-down path (``"nearest"`` or ``"bilinear"``...).
        fuse_type: ``"sum"`` or ``"avg"`` of lateral and top-down features.
        fpn_top_down_levels: output levels (0 = highest resolution) that receive top-down features;
            default all.
    """

    def __init__(
        self,
        position_encoding: nn.Module,
        *,
        d_model: int,
        backbone_channel_list: Sequence[int],
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        fpn_interp_model: str = "bilinear",
        fuse_type: str = "sum",
        fpn_top_down_levels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if fuse_type not in ("sum", "avg"):
            raise ValueError(f"fuse_type must be 'sum' or 'avg', got {fuse_type!r}")
        self.position_encoding = position_encoding
        self.d_model = d_model
        self.backbone_channel_list = list(backbone_channel_list)
        self.convs = nn.ModuleList()
        for dim in self.backbone_channel_list:
            lateral = nn.Sequential()
            lateral.add_module("conv", nn.Conv2d(dim, d_model, kernel_size, stride=stride, padding=padding))
            self.convs.append(lateral)
        self.fpn_interp_model = fpn_interp_model
        self.fuse_type = fuse_type
        n = len(self.convs)
        self.fpn_top_down_levels = list(range(n) if fpn_top_down_levels is None else fpn_top_down_levels)

    def forward(self, xs: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Args:
            xs: trunk features, highest resolution first.

        Returns:
            ``(features, position encodings)``, highest resolution first, each ``(B, d_model, H_s, W_s)``.
        """
        n = len(self.convs) - 1
        if len(xs) != n + 1:
            raise ValueError(f"FpnNeck expects {n + 1} feature maps, got {len(xs)}")
        out: list[torch.Tensor] = [None] * (n + 1)  # type: ignore[list-item]
        pos: list[torch.Tensor] = [None] * (n + 1)  # type: ignore[list-item]
        prev = None
        for i in range(n, -1, -1):  # lowest resolution first
            lateral = self.convs[n - i](xs[i])
            if i in self.fpn_top_down_levels and prev is not None:
                top_down = F.interpolate(
                    prev.to(torch.float32),
                    scale_factor=2.0,
                    mode=self.fpn_interp_model,
                    align_corners=None if self.fpn_interp_model == "nearest" else False,
                    antialias=False,
                )
                prev = lateral + top_down
                if self.fuse_type == "avg":
                    prev = prev / 2
            else:
                prev = lateral
            out[i] = prev
            pos[i] = self.position_encoding(prev).to(prev.dtype)
        return out, pos


class ImageEncoder(nn.Module):
    """Trunk + neck; drops the ``scalp`` lowest-resolution levels (SAM2's ``ImageEncoder``).

    The trunk is SAM2's Hiera or, for the ``cpu`` model preset, a convolutional
    :class:`~coseg.networks.backbones.resnet.ResNetTrunk` with the same four levels.

    ``forward(x)`` returns ``{"vision_features": (B, d_model, H/16, W/16) for the SAM2 configs,
    "vision_pos_enc": [per level], "backbone_fpn": [per level, highest resolution first]}``.
    """

    def __init__(self, trunk: Hiera | ResNetTrunk, neck: FpnNeck, *, scalp: int = 0) -> None:
        super().__init__()
        if list(trunk.channel_list) != list(neck.backbone_channel_list):
            raise ValueError(
                f"trunk channels {trunk.channel_list} do not match the neck's backbone_channel_list "
                f"{neck.backbone_channel_list}"
            )
        if not 0 <= scalp < len(neck.backbone_channel_list):
            raise ValueError(f"scalp must be in [0, {len(neck.backbone_channel_list) - 1}], got {scalp}")
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp

    @property
    def size_divisor(self) -> int:
        """Input height and width must be multiples of this."""
        return self.trunk.size_divisor

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        features, pos = self.neck(self.trunk(x))
        if self.scalp > 0:
            features, pos = features[: -self.scalp], pos[: -self.scalp]
        return {"vision_features": features[-1], "vision_pos_enc": pos, "backbone_fpn": features}


_NECK = {"d_model": 256, "fpn_top_down_levels": [2, 3], "fpn_interp_model": "nearest"}

#: SAM2 / SAM2.1 image encoder configurations (identical for both releases), in SAM2's yaml field names.
ENCODER_PRESETS: dict[str, dict[str, Any]] = {
    "hiera_t": {
        "trunk": {
            "embed_dim": 96,
            "num_heads": 1,
            "stages": [1, 2, 7, 2],
            "global_att_blocks": [5, 7, 9],
            "window_pos_embed_bkg_spatial_size": [7, 7],
            "window_spec": [8, 4, 14, 7],
        },
        "neck": {**_NECK, "backbone_channel_list": [768, 384, 192, 96]},
        "scalp": 1,
    },
    "hiera_s": {
        "trunk": {
            "embed_dim": 96,
            "num_heads": 1,
            "stages": [1, 2, 11, 2],
            "global_att_blocks": [7, 10, 13],
            "window_pos_embed_bkg_spatial_size": [7, 7],
            "window_spec": [8, 4, 14, 7],
        },
        "neck": {**_NECK, "backbone_channel_list": [768, 384, 192, 96]},
        "scalp": 1,
    },
    "hiera_b+": {
        "trunk": {
            "embed_dim": 112,
            "num_heads": 2,
            "stages": [2, 3, 16, 3],
            "global_att_blocks": [12, 16, 20],
            "window_pos_embed_bkg_spatial_size": [14, 14],
            "window_spec": [8, 4, 14, 7],
        },
        "neck": {**_NECK, "backbone_channel_list": [896, 448, 224, 112]},
        "scalp": 1,
    },
    "hiera_l": {
        "trunk": {
            "embed_dim": 144,
            "num_heads": 2,
            "stages": [2, 6, 36, 4],
            "global_att_blocks": [23, 33, 43],
            "window_pos_embed_bkg_spatial_size": [7, 7],
            "window_spec": [8, 4, 16, 8],
        },
        "neck": {**_NECK, "backbone_channel_list": [1152, 576, 288, 144]},
        "scalp": 1,
    },
}

_TRUNK_KEYS = {
    "embed_dim",
    "num_heads",
    "drop_path_rate",
    "q_pool",
    "q_stride",
    "stages",
    "dim_mul",
    "head_mul",
    "window_pos_embed_bkg_spatial_size",
    "window_spec",
    "global_att_blocks",
    "adapter_ratio",
    "adapter_scale",
    "use_checkpoint",
}
_NECK_KEYS = {
    "d_model",
    "backbone_channel_list",
    "kernel_size",
    "stride",
    "padding",
    "fpn_interp_model",
    "fuse_type",
    "fpn_top_down_levels",
}
_RESNET_TRUNK_KEYS = {"model_name"}
_SKIPPED_SAM2_FIELDS = {"_target_", "position_encoding", "weights_path", "return_interm_layers"}

#: the trunks an encoder config may name in its ``backbone`` field (default ``"hiera"``)
BACKBONES = ("hiera", "monai_resnet")


def is_sam2_encoder(cfg: str | Mapping[str, Any]) -> bool:
    """Whether an encoder configuration (a preset name or a dict) builds SAM2's Hiera trunk, whose official
    checkpoints can be loaded (``False`` for the convolutional ``monai_resnet`` trunk)."""
    if isinstance(cfg, str):
        return True
    return cfg.get("backbone", "hiera") == "hiera"


def build_image_encoder(cfg: str | Mapping[str, Any], **trunk_overrides: Any) -> ImageEncoder:
    """Build SAM2's image encoder (with adapters) from a preset name or a dict in SAM2's yaml field names.

    Args:
        cfg: a preset name of :data:`ENCODER_PRESETS` (``hiera_t``, ``hiera_s``, ``hiera_b+``, ``hiera_l``) or
            ``{"trunk": {...Hiera kwargs...}, "neck": {...FpnNeck kwargs...}, "scalp": int}``. SAM2-only
            fields (``_target_``, ``position_encoding``) are ignored; the neck's position encoding is always
            ``PositionEmbeddingSine(d_model, normalize=True, temperature=10000)`` as in every SAM2 config.
            ``"backbone": "monai_resnet"`` builds the convolutional
            :class:`~coseg.networks.backbones.resnet.ResNetTrunk` instead (``trunk``: ``{"model_name": "resnet18"}``;
            the neck's ``backbone_channel_list`` must be its ``channel_list``); not a SAM2 encoder.
        trunk_overrides: extra Hiera kwargs (e.g. ``adapter_ratio=None``, ``use_checkpoint=True``). The ResNet trunk
            has no adapters and no activation checkpointing: it accepts ``adapter_ratio`` 0 or ``None``,
            ``use_checkpoint`` ``False``, and ignores ``adapter_scale``.

    Raises:
        ValueError: unknown preset, backbone or fields; adapters or activation checkpointing asked of the ResNet
            trunk.
    """
    if isinstance(cfg, str):
        if cfg not in ENCODER_PRESETS:
            raise ValueError(f"unknown encoder preset {cfg!r}; choose one of {sorted(ENCODER_PRESETS)}")
        cfg = ENCODER_PRESETS[cfg]
    cfg = copy.deepcopy(dict(cfg))
    unknown = set(cfg) - {"backbone", "trunk", "neck", "scalp", "image_size"}
    if unknown:
        raise ValueError(f"unknown image encoder fields {sorted(unknown)}")
    backbone = cfg.get("backbone", "hiera")
    if backbone not in BACKBONES:
        raise ValueError(f"unknown image encoder backbone {backbone!r}; choose one of {list(BACKBONES)}")
    trunk_cfg = {k: v for k, v in dict(cfg.get("trunk", {})).items() if k not in _SKIPPED_SAM2_FIELDS}
    if backbone == "monai_resnet":
        trunk_overrides = dict(trunk_overrides)
        if trunk_overrides.pop("adapter_ratio", None):
            raise ValueError("the monai_resnet trunk has no adapters: set adapter_ratio to 0")
        if trunk_overrides.pop("use_checkpoint", False):
            raise ValueError("the monai_resnet trunk does not support use_checkpoint (activation checkpointing)")
        trunk_overrides.pop("adapter_scale", None)
    trunk_cfg.update(trunk_overrides)
    neck_cfg = {k: v for k, v in dict(cfg.get("neck", {})).items() if k not in _SKIPPED_SAM2_FIELDS}
    trunk_keys = _TRUNK_KEYS if backbone == "hiera" else _RESNET_TRUNK_KEYS
    for name, given, allowed in (("trunk", trunk_cfg, trunk_keys), ("neck", neck_cfg, _NECK_KEYS)):
        bad = set(given) - allowed
        if bad:
            raise ValueError(f"unknown {name} fields {sorted(bad)}; allowed: {sorted(allowed)}")
    if "d_model" not in neck_cfg or "backbone_channel_list" not in neck_cfg:
        raise ValueError("the neck config needs d_model and backbone_channel_list")
    trunk = Hiera(**trunk_cfg) if backbone == "hiera" else ResNetTrunk(**trunk_cfg)
    neck = FpnNeck(PositionEmbeddingSine(neck_cfg["d_model"], normalize=True, temperature=10000), **neck_cfg)
    return ImageEncoder(trunk, neck, scalp=int(cfg.get("scalp", 0)))
