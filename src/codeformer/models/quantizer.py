"""Nearest-neighbour vector quantizer with the straight-through estimator and the code loss.

Each latent vector z (one per position of the (B, C, h, w) latent) is replaced by its nearest codebook entry
e_k under squared L2 distance. The lookup has no gradient, so the quantized output is written as
z + sg(e_k − z): its value is e_k, its gradient is the identity onto z (straight-through).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

BETA_PLACEMENTS = ("official", "paper")


@dataclass
class Quantized:
    """Result of `VectorQuantizer.forward`.

    z_q: (B, C, h, w) quantized latent, value = codebook rows, gradient = straight-through to z.
    loss: scalar code loss (see `VectorQuantizer.code_loss`).
    indices: (B, h, w) int64 code indices, row-major over the grid.
    margin: (B, h, w) second-nearest minus nearest squared distance (how clear the choice was).
    perplexity: scalar, exp of the entropy of the code usage in this batch.
    mean_distance: scalar, mean of the whole (B·h·w, K) squared-distance matrix.
    """

    z_q: torch.Tensor
    loss: torch.Tensor
    indices: torch.Tensor
    margin: torch.Tensor
    perplexity: torch.Tensor
    mean_distance: torch.Tensor


class VectorQuantizer(nn.Module):
    """Codebook of `codebook_size` vectors of size `emb_dim` (key `embedding.weight`, shape (K, C)).

    `beta_placement` picks where β goes in the code loss ‖sg(z) − e‖² and ‖z − sg(e)‖²:
    - "official" (the released training code, and taming-transformers' `legacy` path): weight 1 on the
      commitment term ‖z − sg(e)‖² (moves the encoder) and β on the codebook term ‖sg(z) − e‖²;
    - "paper" (VQ-VAE and the CodeFormer paper): weight 1 on the codebook term and β on the commitment term.
    """

    def __init__(self, codebook_size: int, emb_dim: int, beta: float = 0.25, beta_placement: str = "official"):
        super().__init__()
        if beta_placement not in BETA_PLACEMENTS:
            raise ValueError(f"beta_placement must be one of {BETA_PLACEMENTS}, got {beta_placement!r}")
        self.codebook_size = codebook_size
        self.emb_dim = emb_dim
        self.beta = beta
        self.beta_placement = beta_placement
        self.embedding = nn.Embedding(codebook_size, emb_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)

    def distances(self, z: torch.Tensor) -> torch.Tensor:
        """Squared L2 distance of every latent vector to every code: z (B, C, h, w) → (B·h·w, K)."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.emb_dim)  # (B·h·w, C), row-major over the grid
        codebook = self.embedding.weight
        # |z|² + |e|² − 2 z·e: one matmul instead of a (N, K, C) difference tensor
        return flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1) - 2.0 * flat @ codebook.t()

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codebook rows for indices (B, h, w) int64 → (B, C, h, w)."""
        return F.embedding(indices, self.embedding.weight).permute(0, 3, 1, 2).contiguous()

    def code_loss(self, z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """Code loss for latent z and its selected codes e (both (B, C, h, w)); see the class docstring."""
        codebook_term = torch.mean((z.detach() - e) ** 2)  # gradient reaches only the codebook
        commitment_term = torch.mean((z - e.detach()) ** 2)  # gradient reaches only the encoder
        if self.beta_placement == "official":
            return commitment_term + self.beta * codebook_term
        return codebook_term + self.beta * commitment_term

    def forward(self, z: torch.Tensor) -> Quantized:
        """Quantize z (B, C, h, w) to its nearest codes."""
        b, _, h, w = z.shape
        d = self.distances(z)
        two = torch.topk(d, k=min(2, self.codebook_size), dim=1, largest=False)
        indices = two.indices[:, 0]
        margin = (two.values[:, 1] - two.values[:, 0]) if self.codebook_size > 1 else torch.zeros_like(indices)
        e = self.lookup(indices.view(b, h, w))
        loss = self.code_loss(z, e)
        usage = torch.bincount(indices, minlength=self.codebook_size).to(z.dtype) / indices.numel()
        perplexity = torch.exp(-torch.sum(usage * torch.log(usage + 1e-10)))
        z_q = z + (e - z).detach()  # straight-through estimator
        return Quantized(
            z_q=z_q,
            loss=loss,
            indices=indices.view(b, h, w),
            margin=margin.view(b, h, w),
            perplexity=perplexity,
            mean_distance=d.mean(),
        )
