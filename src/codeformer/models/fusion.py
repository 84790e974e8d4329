"""Controllable feature transformation (stage 3) and AdaIN.

At a few decoder resolutions, LQ-encoder features predict a per-pixel scale and shift that modulate the
decoder features: out = dec + w · (dec ⊙ scale + shift). w ∈ [0, 1] trades quality (0) for fidelity (1).
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import ResBlock


class FuseBlock(nn.Module):
    """One fusion block for C channels (official `Fuse_sft_block`; keys `encode_enc`, `scale`, `shift`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.encode_enc = ResBlock(2 * channels, channels)
        self.scale = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.2, True),
                                   nn.Conv2d(channels, channels, 3, padding=1))
        self.shift = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.2, True),
                                   nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, enc: torch.Tensor, dec: torch.Tensor, w: float | torch.Tensor) -> torch.Tensor:
        """enc, dec (B, C, r, r); w a float or a (B,) tensor → dec + w·(dec·scale + shift)."""
        h = self.encode_enc(torch.cat([enc, dec], dim=1))
        residual = dec * self.scale(h) + self.shift(h)
        if isinstance(w, torch.Tensor):
            w = w.to(residual.dtype).view(-1, 1, 1, 1)  # one weight per sample
        return dec + w * residual


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Give `content` (B, C, h, w) the per-channel mean and std of `style` (B, C, h', w').

    The std is sqrt(unbiased variance + eps) over the spatial positions, as the official inference uses.
    """

    def stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.flatten(2)
        return flat.mean(2)[..., None, None], (flat.var(2, unbiased=True) + eps).sqrt()[..., None, None]

    c_mean, c_std = stats(content)
    s_mean, s_std = stats(style)
    return (content - c_mean) / c_std * s_std + s_mean
