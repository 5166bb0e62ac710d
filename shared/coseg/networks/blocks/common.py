"""Small building blocks shared by the encoder, the SSP-Encoder and the MTC-Decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LayerNorm2d", "MLP", "DropPath", "TokenwiseMLP"]


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of a ``(B, C, H, W)`` tensor (SAM's ``LayerNorm2d``).

    Args:
        num_channels: C.
        eps: added to the variance.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last layer_norm is one fused kernel; (B, C, H, W) -> (B, H, W, C) -> back
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class MLP(nn.Module):
    """A stack of Linear layers with an activation between them (SAM2's ``MLP``; its parameter names).

    Args:
        input_dim: input features.
        hidden_dim: features of every hidden layer.
        output_dim: output features.
        num_layers: number of Linear layers (>= 1).
        activation: activation class put between layers.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"MLP needs num_layers >= 1, got {num_layers}")
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.act(x)
        return x


class TokenwiseMLP(nn.Module):
    """One independent MLP per token, evaluated for all tokens in a single batched matmul per layer.

    SAM's hypernetworks keep one ``MLP`` per mask token and loop over them; here the weights of the ``T``
    MLPs are stacked so that ``(B, T, input_dim) -> (B, T, output_dim)`` costs ``num_layers`` bmm calls.

    Args:
        num_tokens: T.
        input_dim: input features.
        hidden_dim: hidden features.
        output_dim: output features.
        num_layers: Linear layers per MLP (>= 1).
        activation: activation class between layers.
    """

    def __init__(
        self,
        num_tokens: int,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int = 3,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        if num_layers < 1 or num_tokens < 1:
            raise ValueError(f"TokenwiseMLP needs num_layers >= 1 and num_tokens >= 1, got {num_layers}, {num_tokens}")
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(dims[:-1], dims[1:]):
            w = torch.empty(num_tokens, a, b)
            bound = a**-0.5  # nn.Linear's default init range
            nn.init.uniform_(w, -bound, bound)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.empty(num_tokens, 1, b).uniform_(-bound, bound)))
        self.num_tokens = num_tokens
        self.act = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] != self.num_tokens:
            raise ValueError(f"TokenwiseMLP expects {self.num_tokens} tokens, got input of shape {tuple(x.shape)}")
        h = x.transpose(0, 1)  # (T, B, C)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b.to(h.dtype), h, w.to(h.dtype))
            if i < last:
                h = self.act(h)
        return h.transpose(0, 1)


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability ``drop_prob``."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep
