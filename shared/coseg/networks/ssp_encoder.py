"""Spatio-Sequential Prompt Encoder (SSP-Encoder, paper §3.2, Eq. 4-6).

Turns one task's mask logits into a dense prompt ("prior spatial constraint") for the decoder of the other
task. Two branches:

- sequential (Eq. 4), on the shared image embedding as a row-major token sequence:
  LayerNorm -> Linear down-projection -> depthwise Conv1d -> selective state-space model (Mamba's S6:
  x_proj -> (dt, B, C), dt_proj, A = -exp(A_log), D, softplus dt) -> Linear up-projection.
  As the paper (Table 8) there is no SiLU and no gating by default; ``ssm_silu`` / ``ssm_gate`` add them.
- spatial (Eq. 5), on the mask logits: strided convolutions tokenize the mask to the embedding grid, a 1x1
  convolution expands channels, then self-attention.
Cross-attention (Eq. 6) with the spatial tokens as queries and the sequential tokens as keys/values, then a
feed-forward layer, gives the dense prompt ``(B, C, h, w)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from coseg.networks.blocks import Attention, LayerNorm2d
from coseg.ops import selective_scan

__all__ = ["SequentialBranch", "SSPEncoder", "mask_tokenizer"]


class SequentialBranch(nn.Module):
    """Mamba-style selective state-space branch on ``(B, L, d_model)`` tokens -> ``(B, L, d_model)``.

    Args:
        d_model: token width.
        d_inner: width inside the branch (the down-projection's output); default ``d_model``.
        d_state: SSM state size N.
        d_conv: depthwise convolution kernel (odd; 'same' padding keeps L).
        dt_rank: rank of the dt projection; ``"auto"`` = ceil(d_model / 16).
        dt_min, dt_max: range of the initial time steps (log-uniform), as Mamba.
        dt_init_floor: lower clamp of the initial time steps.
        ssm_silu: apply SiLU after the convolution (Mamba's default; off in the paper).
        ssm_gate: multiply the SSM output by SiLU of a gate branch (Mamba's default; off in the paper).
    """

    def __init__(
        self,
        d_model: int,
        *,
        d_inner: int | None = None,
        d_state: int = 8,
        d_conv: int = 3,
        dt_rank: int | str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        ssm_silu: bool = False,
        ssm_gate: bool = False,
    ) -> None:
        super().__init__()
        if d_conv % 2 != 1:
            raise ValueError(f"d_conv must be odd so that 'same' padding keeps the length, got {d_conv}")
        self.d_inner = d_inner or d_model
        self.d_state = d_state
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.ssm_silu, self.ssm_gate = ssm_silu, ssm_gate
        self.norm = nn.LayerNorm(d_model)
        self.in_proj = nn.Linear(d_model, self.d_inner * (2 if ssm_gate else 1))
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, padding=d_conv // 2, groups=self.d_inner)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        # Mamba's initialisation: dt_proj weight ~ U(+-dt_rank^-0.5); its bias is softplus^-1 of a
        # log-uniform time step in [dt_min, dt_max]; A = -(1..N) per channel; D = 1.
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, L, d_model) -> (B, L, d_model)``; L is the scan order (row-major image tokens)."""
        B, L, _ = tokens.shape
        xz = self.in_proj(self.norm(tokens))
        if self.ssm_gate:
            x, z = xz.chunk(2, dim=-1)
            z = z.transpose(1, 2)  # (B, d_inner, L)
        else:
            x, z = xz, None
        x = self.conv1d(x.transpose(1, 2))  # (B, d_inner, L)
        if self.ssm_silu:
            x = F.silu(x)
        x_dbl = self.x_proj(x.transpose(1, 2))  # (B, L, dt_rank + 2N)
        dt, Bm, Cm = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight).transpose(1, 2)  # (B, d_inner, L); bias goes in the scan
        y = selective_scan(
            x,
            delta,
            -torch.exp(self.A_log.float()),
            Bm.transpose(1, 2),  # (B, N, L)
            Cm.transpose(1, 2),
            D=self.D.float(),
            z=z,
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
        )
        return self.out_proj(y.transpose(1, 2).to(tokens.dtype))


def mask_tokenizer(embed_dim: int, mask_in_chans: int = 16) -> nn.Sequential:
    """SAM's dense mask tokenization: two stride-2 convolutions (4x down to the embedding grid) with LayerNorm2d +
    GELU, then a 1x1 channel expansion to ``embed_dim``: ``(B, 1, 4h, 4w) -> (B, embed_dim, h, w)``."""
    if mask_in_chans % 4:
        raise ValueError(f"mask_in_chans must be divisible by 4, got {mask_in_chans}")
    return nn.Sequential(
        nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
        LayerNorm2d(mask_in_chans // 4),
        nn.GELU(),
        nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
        LayerNorm2d(mask_in_chans),
        nn.GELU(),
        nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
    )


class _PromptAttentionLayer(nn.Module):
    """Pre-norm self-attention on the mask tokens, cross-attention to the sequential tokens, feed-forward."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, dropout: float, rope_theta: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, num_heads, dropout=dropout, use_rope=True, rope_theta=rope_theta)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, num_heads, dropout=dropout, use_rope=True, rope_theta=rope_theta)
        self.norm3 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, mlp_dim)
        self.linear2 = nn.Linear(mlp_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, spatial: torch.Tensor, sequential: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        x = self.norm1(spatial)
        spatial = spatial + self.dropout(self.self_attn(x, x, x, grid_hw=grid_hw))
        x = self.norm2(spatial)
        spatial = spatial + self.dropout(self.cross_attn(x, sequential, sequential, grid_hw=grid_hw))
        x = self.norm3(spatial)
        return spatial + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x)))))


class SSPEncoder(nn.Module):
    """Spatio-sequential prompt encoder: mask logits + image embedding -> dense prompt ``(B, C, h, w)``.

    Args:
        embed_dim: C, the image-embedding / decoder width.
        mask_in_chans: channels after the second tokenizing convolution (released code: 16).
        num_heads: heads of the attention layers (released code: 1).
        mlp_dim: feed-forward width (released code: 2048).
        dropout: dropout in the attention layer (released code: 0.1).
        rope_theta: base of the axial rotary position encoding of the attention layers.
        ssm: keyword arguments of :class:`SequentialBranch` (``d_state``, ``d_conv``, ``dt_rank``,
            ``ssm_silu``, ``ssm_gate``, ...).

    The mask logits must be ``(B, 1, 4h, 4w)`` for an image embedding of ``(B, C, h, w)``.
    """

    def __init__(
        self,
        embed_dim: int,
        *,
        mask_in_chans: int = 16,
        num_heads: int = 1,
        mlp_dim: int = 2048,
        dropout: float = 0.1,
        rope_theta: float = 10000.0,
        **ssm: object,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.sequential = SequentialBranch(embed_dim, **ssm)  # type: ignore[arg-type]
        self.mask_downscaling = mask_tokenizer(embed_dim, mask_in_chans)
        self.attention = _PromptAttentionLayer(embed_dim, num_heads, mlp_dim, dropout, rope_theta)

    def encode_sequence(self, image_embedding: torch.Tensor) -> torch.Tensor:
        """Sequential branch of the image embedding ``(B, C, h, w) -> (B, h*w, C)``.

        It does not depend on the mask: compute it once per image and pass it to :meth:`forward` in every pass.
        """
        return self.sequential(image_embedding.flatten(2).transpose(1, 2))

    def forward(
        self, mask_logits: torch.Tensor, image_embedding: torch.Tensor, sequence: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Args:
            mask_logits: ``(B, 1, 4h, 4w)`` one task's low-resolution mask logits.
            image_embedding: ``(B, C, h, w)``.
            sequence: the output of :meth:`encode_sequence` for this image embedding (computed if ``None``).

        Returns:
            the dense prompt ``(B, C, h, w)``.
        """
        B, C, h, w = image_embedding.shape
        if mask_logits.shape[1:] != (1, 4 * h, 4 * w) or mask_logits.shape[0] != B:
            raise ValueError(
                f"SSPEncoder expects mask logits of shape ({B}, 1, {4 * h}, {4 * w}) for an image embedding of "
                f"shape {tuple(image_embedding.shape)}, got {tuple(mask_logits.shape)}"
            )
        if sequence is None:
            sequence = self.encode_sequence(image_embedding)
        spatial = self.mask_downscaling(mask_logits.to(image_embedding.dtype)).flatten(2).transpose(1, 2)
        prompt = self.attention(spatial, sequence, (h, w))  # (B, h*w, C)
        return prompt.transpose(1, 2).reshape(B, C, h, w)
