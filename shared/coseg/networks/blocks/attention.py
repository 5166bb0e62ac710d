"""Multi-head attention in SAM's layout (separate q/k/v projections, optional internal down-sampling) and
axial rotary position encoding (RoPE) for 2D token grids."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Attention", "axial_rope_angles", "apply_axial_rope"]


def axial_rope_angles(
    head_dim: int, grid_hw: tuple[int, int], theta: float = 10000.0, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines of 2D axial rotary position encoding for a row-major ``(h, w)`` token grid.

    The first half of the channel pairs rotates with the token's x (column) position, the second half with
    its y (row) position, with frequencies ``theta ** (-4 i / head_dim)`` (as SAM2's ``compute_axial_cis``).

    Args:
        head_dim: channels per head, divisible by 4.
        grid_hw: token grid (h, w); tokens are ordered row-major.
        theta: RoPE base.
        device: where to build the tables.

    Returns:
        ``(cos, sin)``, each of shape ``(h * w, head_dim // 2)``.
    """
    if head_dim % 4 != 0:
        raise ValueError(f"axial RoPE needs head_dim divisible by 4, got {head_dim}")
    h, w = grid_hw
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 4, device=device, dtype=torch.float32) / head_dim))
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    ang = torch.cat([xs.reshape(-1, 1) * freqs, ys.reshape(-1, 1) * freqs], dim=1)  # (h*w, head_dim/2)
    return ang.cos(), ang.sin()


def apply_axial_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of ``x`` (``(..., L, head_dim)``) by the angles of :func:`axial_rope_angles`."""
    x2 = x.float().reshape(*x.shape[:-1], -1, 2)
    a, b = x2.unbind(-1)
    out = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1)
    return out.flatten(-2).to(x.dtype)


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v projections and an optional internal width reduction.

    Parameter names follow SAM's ``Attention`` (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``).

    Args:
        embedding_dim: width of the queries (and of the output).
        num_heads: attention heads; must divide ``embedding_dim // downsample_rate``.
        downsample_rate: the attention runs at width ``embedding_dim // downsample_rate``.
        dropout: attention dropout (training only).
        kv_in_dim: width of keys/values if different from ``embedding_dim``.
        use_rope: apply 2D axial rotary position encoding to q and k; both must then be the ``h * w``
            tokens, row-major, of the grid passed to ``forward`` as ``grid_hw`` (self- or grid-to-grid attention).
        rope_theta: RoPE base.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        *,
        downsample_rate: int = 1,
        dropout: float = 0.0,
        kv_in_dim: int | None = None,
        use_rope: bool = False,
        rope_theta: float = 10000.0,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.kv_in_dim = kv_in_dim if kv_in_dim is not None else embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads != 0:
            raise ValueError(f"num_heads={num_heads} must divide the attention width {self.internal_dim}")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.v_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)
        self.dropout_p = dropout
        self.use_rope = use_rope
        self.rope_theta = rope_theta

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)  # (B, heads, N, C/heads)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        grid_hw: tuple[int, int] | None = None,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend ``q`` (``(B, Nq, embedding_dim)``) to ``k``/``v`` (``(B, Nk, kv_in_dim)``).

        Args:
            grid_hw: token grid of q and k for RoPE (required when ``use_rope``); q and k must both hold
                ``h * w`` tokens.
            return_weights: also return the attention weights ``(B, heads, Nq, Nk)`` (computed explicitly,
                slower; for visualisation).

        Returns:
            ``(B, Nq, embedding_dim)``, and the weights if asked.
        """
        qh, kh, vh = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        if self.use_rope:
            if grid_hw is None:
                raise ValueError("this attention uses RoPE: pass grid_hw=(h, w) of the token grid")
            n = grid_hw[0] * grid_hw[1]
            if qh.shape[2] != n or kh.shape[2] != n:
                raise ValueError(f"RoPE grid {grid_hw} has {n} tokens but q/k have {qh.shape[2]}/{kh.shape[2]}")
            # rebuilt per call (cheap); a cache would hand inference-mode tensors to later autograd graphs
            cos, sin = axial_rope_angles(self.internal_dim // self.num_heads, grid_hw, self.rope_theta, q.device)
            qh, kh = apply_axial_rope(qh, cos, sin), apply_axial_rope(kh, cos, sin)
        dropout_p = self.dropout_p if self.training else 0.0
        weights = None
        if return_weights:
            scale = 1.0 / math.sqrt(qh.shape[-1])
            weights = torch.softmax((qh @ kh.transpose(-1, -2)) * scale, dim=-1)
            out = F.dropout(weights, dropout_p, self.training) @ vh
        else:
            out = F.scaled_dot_product_attention(qh, kh, vh, dropout_p=dropout_p)
        b, _, n, c = out.shape
        out = self.out_proj(out.transpose(1, 2).reshape(b, n, self.num_heads * c))
        return (out, weights) if return_weights else out
