"""The official training perceptual loss, `LPIPSLoss`, on the LPIPS network of `models.lpips`."""

from __future__ import annotations

import torch
from torch import nn

from codeformer.models.lpips import LPIPS

__all__ = ["LPIPSLoss"]


class LPIPSLoss(nn.Module):
    """The official training perceptual loss (`LPIPSLoss`, range_norm and use_input_norm on).

    Inputs in [-1, 1] are mapped to [0, 1], then ImageNet mean/std normalised, then fed to LPIPS, which
    applies its own scaling layer on top. The double normalisation is what the official loss does (spec
    §2.1): LPIPS expects [-1, 1] input, so the official network sees a different input scale than LPIPS
    was calibrated on. We reproduce it, since the released weights were trained with it.

    forward(pred, target): (B, 3, H, W) in [-1, 1] → scalar, the batch mean of LPIPS(target, pred).
    The loss weight is applied by the caller.
    """

    def __init__(self, lpips: LPIPS | None = None) -> None:
        super().__init__()
        self.lpips = lpips if lpips is not None else LPIPS()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPSLoss:
        """Frozen loss network: stays in eval mode whatever a parent module asks."""
        return super().train(False)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred = ((pred + 1.0) / 2.0 - self.mean) / self.std
        target = ((target + 1.0) / 2.0 - self.mean) / self.std
        return self.lpips(target.contiguous(), pred.contiguous()).mean()
