"""Spatial-consistency loss between the two tasks' probability maps (paper Eq. 9)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SymmetricKLLoss"]


class SymmetricKLLoss(nn.Module):
    """``(KL(p || q) + KL(q || p)) / 2``, averaged over every element like ``F.kl_div(reduction="mean")``.

    ``p`` and ``q`` are probability maps ``(B, C, h, w)`` that sum to 1 over C (the softmax outputs of the
    semantic and instance heads' consistency layers). Probabilities are clamped at ``eps`` before the log.

    Args:
        eps: lower clamp of the probabilities.
    """

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        if p.shape != q.shape:
            raise ValueError(f"probability maps differ in shape: {tuple(p.shape)} vs {tuple(q.shape)}")
        p, q = p.float(), q.float()
        log_p, log_q = p.clamp_min(self.eps).log(), q.clamp_min(self.eps).log()
        return 0.5 * ((p * (log_p - log_q)).mean() + (q * (log_q - log_p)).mean())
