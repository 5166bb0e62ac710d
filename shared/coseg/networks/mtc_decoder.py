"""Multi-Task Collaborative Decoder (MTC-Decoder, paper §3.3, Eq. 7-10).

Two heads, semantic and instance, each a SAM-style two-way transformer with its own query tokens, decoding
the shared image embedding plus that head's dense prompt ("prior spatial constraint"). Per layer and head:

1. self-attention on the queries;
2. cross-attention of the queries to the head's image tokens (image embedding ⊕ prior, Eq. 7);
3. cross-task guidance (``cross_task_attention``): the queries attend to the OTHER head's image tokens as
   keys/values, so instance queries read semantic context and semantic queries read instance detail;
4. an MLP on the queries;
5. reverse cross-attention: image tokens attend to the queries, giving a task-specific image embedding (Eq. 8).

After a final query-to-image attention, a 1x1 convolution + softmax of each task-specific embedding gives the
probability map of the KL consistency loss (Eq. 9); a SAM2 pixel decoder upsamples the embedding 4x with the
stride-8 and stride-4 FPN features, and each query's hypernetwork MLP turns it into one mask channel by a dot
product. Query 0 of each head is the low-resolution binary mask used as prompt (Eq. 10); the other queries
are the head's output channels.

With ``cross_task_attention=False`` the two heads are independent SAM2 two-way decoders (the released code's
decoder: the tasks meet only through prompts and the KL term).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from coseg.networks.blocks import MLP, Attention, LayerNorm2d, TokenwiseMLP

__all__ = ["TASKS", "HeadOutput", "MTCDecoder"]

#: the two tasks, in the order every per-task structure uses
TASKS = ("sem", "inst")


@dataclass
class HeadOutput:
    """One head's decoding of one pass.

    Attributes:
        masks: ``(B, num_tokens, 4h, 4w)`` mask logits; channel 0 is the binary prompt mask.
        consistency: ``(B, 2, h, w)`` softmax probability map of the task-specific embedding.
        cross_task_attention: ``(B, heads, num_tokens, h*w)`` attention of this head's queries over the other
            head's image tokens in the last layer, when requested.
    """

    masks: torch.Tensor
    consistency: torch.Tensor
    cross_task_attention: torch.Tensor | None = None


class _HeadLayer(nn.Module):
    """The parameters of one decoder layer for one head."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, downsample: int, cross_task: bool) -> None:
        super().__init__()
        self.self_attn = Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, num_heads, downsample_rate=downsample)
        self.norm2 = nn.LayerNorm(dim)
        if cross_task:
            self.cross_attn_token_to_task = Attention(dim, num_heads, downsample_rate=downsample)
            self.norm_task = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_dim, dim, num_layers=2, activation=nn.ReLU)
        self.norm3 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, num_heads, downsample_rate=downsample)
        self.norm4 = nn.LayerNorm(dim)


class _Head(nn.Module):
    """Per-head parameters outside the layers: tokens, no-prompt embedding, output layers."""

    def __init__(self, dim: int, num_heads: int, num_tokens: int, downsample: int, fpn_dim: int) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.tokens = nn.Embedding(num_tokens, dim)
        self.no_mask_embed = nn.Embedding(1, dim)
        self.final_attn_token_to_image = Attention(dim, num_heads, downsample_rate=downsample)
        self.norm_final_attn = nn.LayerNorm(dim)
        self.spatial_consistency = nn.Conv2d(dim, 2, kernel_size=1, bias=False)
        # SAM2 pixel decoder with high-resolution features (stride 8 -> dim/4, stride 4 -> dim/8 channels)
        self.conv_s0 = nn.Conv2d(fpn_dim, dim // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(fpn_dim, dim // 4, kernel_size=1)
        self.upscale1 = nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2)
        self.upscale_norm = LayerNorm2d(dim // 4)
        self.upscale2 = nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2)
        self.act = nn.GELU()
        self.hypernetworks = TokenwiseMLP(num_tokens, dim, dim, dim // 8, num_layers=3)

    def high_res(self, feat_s0: torch.Tensor, feat_s1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.conv_s0(feat_s0), self.conv_s1(feat_s1)

    def upscale(self, src: torch.Tensor, high_res: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        s0, s1 = high_res
        x = self.act(self.upscale_norm(self.upscale1(src) + s1))
        return self.act(self.upscale2(x) + s0)


class MTCDecoder(nn.Module):
    """Semantic and instance heads decoded together, layer by layer.

    Args:
        transformer_dim: width of the image embedding and of the queries (C).
        num_sem_outputs: output channels of the semantic head (its classes, background included).
        num_inst_outputs: output channels of the instance head (binary 2 + types + HV 2).
        fpn_dim: channels of the stride-4/stride-8 FPN features (the neck's d_model).
        depth: decoder layers.
        num_heads: attention heads.
        mlp_dim: hidden width of the query MLP.
        attention_downsample_rate: width reduction inside the query<->image attentions (SAM: 2).
        cross_task_attention: add the cross-task attention step (the paper's MTC-Decoder); ``False`` gives
            two independent SAM2 decoders.

    Each head has ``1 + num_*_outputs`` query tokens: token 0 is the binary prompt mask.
    """

    def __init__(
        self,
        *,
        transformer_dim: int = 256,
        num_sem_outputs: int,
        num_inst_outputs: int,
        fpn_dim: int | None = None,
        depth: int = 2,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        attention_downsample_rate: int = 2,
        cross_task_attention: bool = True,
    ) -> None:
        super().__init__()
        if transformer_dim % 8:
            raise ValueError(f"transformer_dim must be divisible by 8, got {transformer_dim}")
        if min(num_sem_outputs, num_inst_outputs) < 1 or depth < 1:
            raise ValueError("MTCDecoder needs at least one output per head and depth >= 1")
        dim, fpn_dim = transformer_dim, fpn_dim or transformer_dim
        self.transformer_dim = dim
        self.cross_task_attention = cross_task_attention
        self.layers = nn.ModuleList(
            nn.ModuleDict(
                {t: _HeadLayer(dim, num_heads, mlp_dim, attention_downsample_rate, cross_task_attention) for t in TASKS}
            )
            for _ in range(depth)
        )
        self.heads = nn.ModuleDict(
            {
                "sem": _Head(dim, num_heads, 1 + num_sem_outputs, attention_downsample_rate, fpn_dim),
                "inst": _Head(dim, num_heads, 1 + num_inst_outputs, attention_downsample_rate, fpn_dim),
            }
        )

    def no_prompt(self, task: str, image_embedding: torch.Tensor) -> torch.Tensor:
        """The learned dense embedding used when a head gets no prompt (pass 1): ``(1, C, 1, 1)``."""
        return self.heads[task].no_mask_embed.weight.reshape(1, -1, 1, 1).to(image_embedding.dtype)

    def high_res_features(
        self, feat_s0: torch.Tensor, feat_s1: torch.Tensor
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per-head projections of the stride-4 and stride-8 FPN features; compute once, reuse in every pass."""
        return {t: self.heads[t].high_res(feat_s0, feat_s1) for t in TASKS}

    def forward(
        self,
        image_embedding: torch.Tensor,
        image_pe: torch.Tensor,
        dense_prompts: dict[str, torch.Tensor],
        high_res: dict[str, tuple[torch.Tensor, torch.Tensor]],
        *,
        return_attention: bool = False,
    ) -> dict[str, HeadOutput]:
        """Decode one pass.

        Args:
            image_embedding: ``(B, C, h, w)`` shared image embedding.
            image_pe: ``(B or 1, C, h, w)`` its position encoding.
            dense_prompts: per task (``"sem"``, ``"inst"``) a dense prompt broadcastable to ``(B, C, h, w)``.
            high_res: the output of :meth:`high_res_features`.
            return_attention: also return the last layer's cross-task attention weights.

        Returns:
            ``{"sem": HeadOutput, "inst": HeadOutput}``.
        """
        B, C, h, w = image_embedding.shape
        key_pe = image_pe.flatten(2).transpose(1, 2).to(image_embedding.dtype)  # (B|1, h*w, C)
        tokens, queries, keys = {}, {}, {}
        for t in TASKS:
            tok = self.heads[t].tokens.weight.to(image_embedding.dtype)
            tokens[t] = tok.unsqueeze(0).expand(B, -1, -1)
            queries[t] = tokens[t]
            keys[t] = (image_embedding + dense_prompts[t]).flatten(2).transpose(1, 2)  # (B, h*w, C)
        other = {"sem": "inst", "inst": "sem"}
        attn_maps: dict[str, torch.Tensor | None] = {t: None for t in TASKS}
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            for t in TASKS:
                p, q = layer[t], queries[t]
                if i == 0:  # SAM skips the query position encoding in the first self-attention
                    q = p.norm1(p.self_attn(q, q, q))
                else:
                    qq = q + tokens[t]
                    q = p.norm1(q + p.self_attn(qq, qq, q))
                q = p.norm2(q + p.cross_attn_token_to_image(q + tokens[t], keys[t] + key_pe, keys[t]))
                queries[t] = q
            if self.cross_task_attention:
                snapshot = dict(keys)
                for t in TASKS:
                    p, q, kv = layer[t], queries[t], snapshot[other[t]]
                    want = return_attention and i == last
                    res = p.cross_attn_token_to_task(q + tokens[t], kv + key_pe, kv, return_weights=want)
                    if want:
                        res, attn_maps[t] = res
                    queries[t] = p.norm_task(q + res)
            for t in TASKS:
                p, q = layer[t], queries[t]
                q = p.norm3(q + p.mlp(q))
                k = keys[t]
                keys[t] = p.norm4(k + p.cross_attn_image_to_token(k + key_pe, q + tokens[t], q))
                queries[t] = q
        out = {}
        for t in TASKS:
            head, q, k = self.heads[t], queries[t], keys[t]
            q = head.norm_final_attn(q + head.final_attn_token_to_image(q + tokens[t], k + key_pe, k))
            src = k.transpose(1, 2).reshape(B, C, h, w)
            consistency = torch.softmax(head.spatial_consistency(src).float(), dim=1)
            up = head.upscale(src, high_res[t])  # (B, C/8, 4h, 4w)
            hyper = head.hypernetworks(q)  # (B, T, C/8)
            b, c, hh, ww = up.shape
            masks = (hyper @ up.reshape(b, c, hh * ww)).reshape(b, -1, hh, ww)
            out[t] = HeadOutput(masks=masks, consistency=consistency, cross_task_attention=attn_maps[t])
        return out
