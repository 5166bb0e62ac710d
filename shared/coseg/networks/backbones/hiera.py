"""SAM2's hierarchical image encoder trunk (Hiera), re-implemented with SAM2's parameter names, plus
bottleneck adapters beside every block's MLP (Co-Seg++ §3.4).

Parameter names equal those of ``sam2/modeling/backbones/hieradet.py`` so that the ``image_encoder.trunk.*``
entries of official SAM2 / SAM2.1 checkpoints load unchanged (see :func:`coseg.networks.weights.load_sam2_weights`);
the adapters are the only new parameters (``blocks.<i>.adapter.*``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from coseg.networks.blocks import MLP, Adapter, DropPath

__all__ = ["Hiera", "MultiScaleBlock", "MultiScaleAttention", "PatchEmbed", "window_partition", "window_unpartition"]


def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Cut ``(B, H, W, C)`` into non-overlapping windows, zero-padding H and W up to multiples of the window.

    Returns:
        windows ``(B * num_windows, window_size, window_size, C)`` and the padded size ``(Hp, Wp)``.
    """
    B, H, W, C = x.shape
    pad_h, pad_w = (-H) % window_size, (-W) % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    Hp, Wp = H + pad_h, W + pad_w
    x = x.view(B, Hp // window_size, window_size, Wp // window_size, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, C), (Hp, Wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, pad_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: windows back to ``(B, H, W, C)``, padding removed."""
    Hp, Wp = pad_hw
    H, W = hw
    B = windows.shape[0] // ((Hp // window_size) * (Wp // window_size))
    x = windows.reshape(B, Hp // window_size, Wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, -1)
    return x[:, :H, :W, :] if (Hp > H or Wp > W) else x


class PatchEmbed(nn.Module):
    """Conv stem ``(B, C_in, H, W) -> (B, H/4, W/4, embed_dim)`` (7x7 kernel, stride 4, padding 3)."""

    def __init__(
        self,
        *,
        kernel_size: tuple[int, int] = (7, 7),
        stride: tuple[int, int] = (4, 4),
        padding: tuple[int, int] = (3, 3),
        in_chans: int = 3,
        embed_dim: int = 96,
    ) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel_size, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Hiera attention on ``(B, H, W, dim)`` tokens with optional max-pooling of the queries (stage change).

    Args:
        dim: input width.
        dim_out: output width (the qkv projection already produces ``dim_out``).
        num_heads: heads.
        q_pool: pooling module applied to the queries (``None``: no down-sampling).
    """

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_pool: nn.Module | None = None) -> None:
        super().__init__()
        self.dim, self.dim_out, self.num_heads = dim, dim_out, num_heads
        self.q_pool = q_pool
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, _ = x.shape
        # (B, H*W, 3, heads, C_head) -> three (B, heads, H*W, C_head)
        qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if self.q_pool is not None:
            # pool queries on the spatial grid: (B, heads, H*W, Ch) -> (B, heads*Ch, H, W) -> pooled -> back
            ch = q.shape[-1]
            q = q.transpose(1, 2).reshape(B, H, W, self.num_heads * ch).permute(0, 3, 1, 2)
            q = self.q_pool(q)
            H, W = q.shape[-2:]
            q = q.permute(0, 2, 3, 1).reshape(B, H * W, self.num_heads, ch).transpose(1, 2)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, heads, H*W, C_head)
        x = x.transpose(1, 2).reshape(B, H, W, -1)
        return self.proj(x)


class MultiScaleBlock(nn.Module):
    """One Hiera block: (windowed) attention with optional query pooling, then MLP with a parallel adapter.

    ``x = shortcut + drop_path(attn(norm1(x)))`` then
    ``x = x + drop_path(mlp(norm2(x))) + adapter(norm2(x))`` (the adapter term is absent when ``adapter`` is
    ``None``; its output scale lives inside :class:`~coseg.networks.blocks.Adapter`).

    Args:
        dim: input width.
        dim_out: output width (differs from ``dim`` at the first block of a stage: a Linear ``proj`` then
            maps the shortcut).
        num_heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of ``dim_out``.
        drop_path: stochastic depth rate.
        q_stride: query pooling stride at a stage change, else ``None``.
        window_size: attention window (0 = global attention).
        adapter_ratio: adapter bottleneck ratio; ``None`` for no adapter.
        adapter_scale: adapter output scale.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        q_stride: tuple[int, int] | None = None,
        window_size: int = 0,
        adapter_ratio: float | None = 0.25,
        adapter_scale: float = 0.5,
    ) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.window_size = window_size
        self.q_stride = q_stride
        self.pool = nn.MaxPool2d(kernel_size=q_stride, stride=q_stride, ceil_mode=False) if q_stride else None
        self.attn = MultiScaleAttention(dim, dim_out, num_heads=num_heads, q_pool=self.pool)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, num_layers=2, activation=nn.GELU)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)
        self.adapter = Adapter(dim_out, ratio=adapter_ratio, scale=adapter_scale) if adapter_ratio else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x  # (B, H, W, C)
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = self.proj(x)
            if self.pool is not None:
                shortcut = self.pool(shortcut.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

        window_size = self.window_size
        H, W = x.shape[1], x.shape[2]
        if window_size > 0:
            x, pad_hw = window_partition(x, window_size)
        x = self.attn(x)
        if self.q_stride:
            # the queries were pooled: windows and the grid shrank by the stride
            window_size = self.window_size // self.q_stride[0]
            H, W = shortcut.shape[1:3]
            pad_hw = (H + (-H) % window_size, W + (-W) % window_size) if window_size > 0 else (H, W)
        if self.window_size > 0:
            x = window_unpartition(x, window_size, pad_hw, (H, W))

        x = shortcut + self.drop_path(x)
        y = self.norm2(x)
        out = x + self.drop_path(self.mlp(y))
        if self.adapter is not None:
            out = out + self.adapter(y)
        return out


class Hiera(nn.Module):
    """SAM2's Hiera trunk: ``(B, 3, H, W) -> [stage features, high to low resolution]``.

    Keyword arguments and defaults are those of SAM2's yaml configs (``embed_dim``, ``num_heads``, ``stages``,
    ``global_att_blocks``, ``window_pos_embed_bkg_spatial_size``, ``window_spec``, ``q_pool``, ``q_stride``,
    ``dim_mul``, ``head_mul``, ``drop_path_rate``), plus the adapter settings.

    Args:
        embed_dim: width of stage 1.
        num_heads: heads of stage 1.
        drop_path_rate: stochastic depth, linearly increasing over blocks.
        q_pool: number of stage changes with query pooling.
        q_stride: pooling stride at those changes.
        stages: blocks per stage.
        dim_mul: width multiplier at each stage change.
        head_mul: heads multiplier at each stage change.
        window_pos_embed_bkg_spatial_size: size of the interpolated background position embedding.
        window_spec: attention window per stage (the first block of a stage still uses the previous
            stage's window, as SAM2 does).
        global_att_blocks: indices of blocks with global attention.
        adapter_ratio: adapter bottleneck ratio (``None``: no adapters).
        adapter_scale: adapter output scale.
        use_checkpoint: recompute blocks in the backward pass (saves activation memory when training).

    Input height and width must be multiples of :attr:`size_divisor`.
    """

    def __init__(
        self,
        *,
        embed_dim: int = 96,
        num_heads: int = 1,
        drop_path_rate: float = 0.0,
        q_pool: int = 3,
        q_stride: Sequence[int] = (2, 2),
        stages: Sequence[int] = (2, 3, 16, 3),
        dim_mul: float = 2.0,
        head_mul: float = 2.0,
        window_pos_embed_bkg_spatial_size: Sequence[int] = (14, 14),
        window_spec: Sequence[int] = (8, 4, 14, 7),
        global_att_blocks: Sequence[int] = (12, 16, 20),
        adapter_ratio: float | None = 0.25,
        adapter_scale: float = 0.5,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if len(stages) != len(window_spec):
            raise ValueError(f"stages {list(stages)} and window_spec {list(window_spec)} differ in length")
        if not 0 <= q_pool <= len(stages) - 1:
            raise ValueError(f"q_pool must be in [0, {len(stages) - 1}], got {q_pool}")
        self.window_spec = list(window_spec)
        self.q_stride = tuple(q_stride)
        depth = sum(stages)
        self.stage_ends = [sum(stages[: i + 1]) - 1 for i in range(len(stages))]
        self.q_pool_blocks = [end + 1 for end in self.stage_ends[:-1]][:q_pool]
        self.global_att_blocks = list(global_att_blocks)
        self.use_checkpoint = use_checkpoint

        self.patch_embed = PatchEmbed(embed_dim=embed_dim)
        self.window_pos_embed_bkg_spatial_size = tuple(window_pos_embed_bkg_spatial_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *self.window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, embed_dim, self.window_spec[0], self.window_spec[0]))

        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        cur_stage = 1
        self.blocks = nn.ModuleList()
        for i in range(depth):
            dim_out = embed_dim
            # the window "lags by a block": a stage's first block keeps the previous stage's window
            window_size = 0 if i in self.global_att_blocks else self.window_spec[cur_stage - 1]
            if i - 1 in self.stage_ends:
                dim_out = int(embed_dim * dim_mul)
                num_heads = int(num_heads * head_mul)
                cur_stage += 1
            self.blocks.append(
                MultiScaleBlock(
                    embed_dim,
                    dim_out,
                    num_heads,
                    drop_path=dpr[i],
                    q_stride=self.q_stride if i in self.q_pool_blocks else None,
                    window_size=window_size,
                    adapter_ratio=adapter_ratio,
                    adapter_scale=adapter_scale,
                )
            )
            embed_dim = dim_out
        # channel list high -> low depth order as SAM2 reports it (deepest stage first)
        self.channel_list = [self.blocks[i].dim_out for i in self.stage_ends[::-1]]
        stride = 4 * self.q_stride[0] ** len(self.q_pool_blocks)
        # the tiled window position embedding needs the stage-1 grid to be a multiple of window_spec[0]
        self.size_divisor = _lcm(stride, 4 * self.window_spec[0])

    def _get_pos_embed(self, hw: tuple[int, int]) -> torch.Tensor:
        h, w = hw
        pos = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        win = self.pos_embed_window
        pos = pos + win.tile(1, 1, h // win.shape[-2], w // win.shape[-1])
        return pos.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Args:
            x: ``(B, 3, H, W)`` normalised image, H and W multiples of :attr:`size_divisor`.

        Returns:
            one ``(B, C_s, H_s, W_s)`` feature map per stage, highest resolution first.
        """
        H, W = x.shape[-2:]
        if H % self.size_divisor or W % self.size_divisor:
            raise ValueError(
                f"Hiera input height and width must be multiples of {self.size_divisor}, got {H}x{W}; "
                "pad or resize the image"
            )
        x = self.patch_embed(x)
        x = x + self._get_pos_embed(x.shape[1:3])
        outputs = []
        for i, blk in enumerate(self.blocks):
            if self.use_checkpoint and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs


def _lcm(a: int, b: int) -> int:
    return a * b // math.gcd(a, b)
