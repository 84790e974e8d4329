"""Patch discriminator (`VQGANDiscriminator`): a 512² image → a 30×30 map of real/fake logits."""

from __future__ import annotations

import torch
from torch import nn


class PatchDiscriminator(nn.Module):
    """conv4×4/2 + LeakyReLU, then (n_layers − 1) × [conv4×4/2, BatchNorm, LeakyReLU], then one stride-1
    [conv, BatchNorm, LeakyReLU] and a stride-1 conv to one channel. Keys `main.{i}.*` as released."""

    def __init__(self, nc: int = 3, ndf: int = 64, n_layers: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(nc, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=False),
                   nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, nc, S, S) in [-1, 1] → logits (B, 1, S/16 − 2, S/16 − 2) for n_layers = 4."""
        return self.main(x)
