"""Bottleneck adapter for parameter-efficient fine-tuning of the frozen Hiera trunk (paper §3.4)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Adapter"]


class Adapter(nn.Module):
    """Houlsby-style bottleneck ``Linear(d, d*ratio) -> GELU -> Linear(d*ratio, d)``, output scaled by ``scale``.

    In every Hiera block it runs beside the MLP on the output of ``norm2``:
    ``x = x + MLP(norm2(x)) + scale * Adapter(norm2(x))`` (see :class:`coseg.networks.backbones.hiera.MultiScaleBlock`).
    The up-projection starts at zero, so a freshly inserted adapter leaves the pretrained block unchanged.

    Args:
        dim: feature size d of the block.
        ratio: bottleneck size as a fraction of ``dim`` (paper/released code: 0.25).
        scale: factor on the adapter's output (released code: 0.5).
    """

    def __init__(self, dim: int, *, ratio: float = 0.25, scale: float = 0.5) -> None:
        super().__init__()
        hidden = max(1, int(round(dim * ratio)))
        if ratio <= 0:
            raise ValueError(f"adapter ratio must be > 0, got {ratio}")
        self.down = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, dim)
        self.scale = scale
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.up(self.act(self.down(x)))
