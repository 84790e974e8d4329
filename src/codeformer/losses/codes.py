"""Stage-2 code prediction losses (spec §2.3): cross-entropy on code indices and latent L2."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["code_accuracy", "code_losses"]


def code_losses(
    logits: torch.Tensor, lq_feat: torch.Tensor, target_codes: torch.Tensor, codebook_feat: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Unweighted code-prediction losses; the caller applies the weights (official CE ×0.5, L2 ×1.0).

    Args:
        logits: (B, N, K) float, the transformer's code logits for N = h·w positions (row-major).
        lq_feat: (B, C, h, w) float, the LQ encoder's latent.
        target_codes: (B, N) int64, ground-truth code indices in [0, K).
        codebook_feat: (B, C, h, w) float, the codebook entries of `target_codes`; detached here, as the
            official code does, so the codebook never receives this gradient.

    Returns:
        {"cross_entropy": mean CE over B·N positions, "latent_l2": mean((codebook_feat − lq_feat)²)},
        both scalar tensors.
    """
    cross_entropy = F.cross_entropy(logits.permute(0, 2, 1), target_codes)  # (B, K, N) against (B, N)
    latent_l2 = torch.mean((codebook_feat.detach() - lq_feat) ** 2)
    return {"cross_entropy": cross_entropy, "latent_l2": latent_l2}


@torch.no_grad()
def code_accuracy(logits: torch.Tensor, target_codes: torch.Tensor) -> torch.Tensor:
    """Fraction of positions whose arg-max code equals the target. (B, N, K), (B, N) → scalar in [0, 1]."""
    return (logits.argmax(dim=-1) == target_codes).float().mean()
