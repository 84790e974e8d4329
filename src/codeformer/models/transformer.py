"""The code-prediction transformer: pre-norm self-attention layers and the code-logit head.

Tokens are the h·w latent positions in row-major order, laid out batch-first as (B, N, D) here; the learned
position embedding (N, D) is added to the queries and keys of every layer but not to the values.
Parameter names follow `nn.MultiheadAttention` and the official layer (`self_attn.in_proj_weight`, `linear1`,
`norm1`, ...), so released checkpoints load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiheadSelfAttention(nn.Module):
    """Multi-head attention with packed q, k, v projections (`in_proj_weight` (3D, D)) and `out_proj`."""

    def __init__(self, dim: int, n_head: int) -> None:
        super().__init__()
        if dim % n_head:
            raise ValueError(f"dim {dim} is not divisible by n_head {n_head}")
        self.n_head = n_head
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        # the initialisation nn.MultiheadAttention uses
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, qk: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Queries and keys from `qk`, values from `v`; both (B, N, D) → (B, N, D)."""
        b, n, d = v.shape
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        # (B, N, D) -> (B, heads, N, D/heads)
        q = F.linear(qk, w_q, b_q).view(b, n, self.n_head, -1).transpose(1, 2)
        k = F.linear(qk, w_k, b_k).view(b, n, self.n_head, -1).transpose(1, 2)
        v = F.linear(v, w_v, b_v).view(b, n, self.n_head, -1).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(y.transpose(1, 2).reshape(b, n, d))


class TransformerLayer(nn.Module):
    """Pre-norm layer: x + Attn(LN(x) + pos, LN(x)), then x + FFN(LN(x)) with GELU; dropout is 0."""

    def __init__(self, dim: int, n_head: int, dim_mlp: int) -> None:
        super().__init__()
        self.self_attn = MultiheadSelfAttention(dim, n_head)
        self.linear1 = nn.Linear(dim, dim_mlp)
        self.linear2 = nn.Linear(dim_mlp, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x (B, N, D), pos (N, D) → (B, N, D)."""
        h = self.norm1(x)
        x = x + self.self_attn(h + pos, h)  # position on queries and keys only
        return x + self.linear2(F.gelu(self.linear1(self.norm2(x))))


def code_logit_head(dim: int, codebook_size: int) -> nn.Sequential:
    """LayerNorm then a bias-free linear layer to one logit per code (`idx_pred_layer`)."""
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, codebook_size, bias=False))
