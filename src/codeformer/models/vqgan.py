"""Encoder, generator (decoder) and the stage-1 `VQAutoEncoder`.

The block lists are built exactly as the official VQGAN builds them, so `encoder.blocks.{i}` and
`generator.blocks.{i}` of a released checkpoint land on the same layers. With the released config
(img 512, nf 64, ch_mult (1,2,2,4,4,8), 2 res blocks, attention at 16) an image (B, 3, 512, 512) in [-1, 1]
maps to a latent (B, 256, 16, 16) and back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import VQGANConfig
from .blocks import AttnBlock, Downsample, ResBlock, Upsample, group_norm
from .quantizer import Quantized, VectorQuantizer


class Encoder(nn.Module):
    """Image (B, 3, S, S) → latent (B, emb_dim, S/2^(L-1), S/2^(L-1)) with L = len(ch_mult).

    `skip_blocks` maps a resolution to the block after which its skip feature is taken: the last residual
    block of that resolution (the official `fuse_encoder_block` table for the released config).
    """

    def __init__(self, in_channels: int, nf: int, emb_dim: int, ch_mult: tuple[int, ...], res_blocks: int,
                 img_size: int, attn_resolutions: tuple[int, ...]) -> None:
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(in_channels, nf, 3, padding=1)]
        self.skip_blocks: dict[int, int] = {}
        in_mult = (1, *ch_mult)
        res = img_size
        ch = nf
        for level, mult in enumerate(ch_mult):
            ch = nf * in_mult[level]
            out_ch = nf * mult
            for _ in range(res_blocks):
                blocks.append(ResBlock(ch, out_ch))
                ch = out_ch
                self.skip_blocks[res] = len(blocks) - 1
                if res in attn_resolutions:
                    blocks.append(AttnBlock(ch))
            if level != len(ch_mult) - 1:
                blocks.append(Downsample(ch))
                res //= 2
        blocks += [ResBlock(ch, ch), AttnBlock(ch), ResBlock(ch, ch)]  # non-local middle
        blocks += [group_norm(ch), nn.Conv2d(ch, emb_dim, 3, padding=1)]  # no swish here, unlike taming
        self.blocks = nn.ModuleList(blocks)
        self.channels = {r: self.blocks[i].conv2.out_channels for r, i in self.skip_blocks.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def forward_with_skips(self, x: torch.Tensor, resolutions: tuple[int, ...]) -> tuple[torch.Tensor,
                                                                                       dict[int, torch.Tensor]]:
        """Latent plus the skip features {resolution: (B, C_r, r, r)} for the requested resolutions."""
        wanted = {self.skip_blocks[r]: r for r in resolutions}
        skips: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in wanted:
                skips[wanted[i]] = x
        return x, skips


class Generator(nn.Module):
    """Latent (B, emb_dim, s, s) → image (B, 3, s·2^(L-1), s·2^(L-1)), unbounded (about [-1, 1]).

    `fuse_blocks` maps a resolution to the block after which stage-3 fusion modulates the features: the first
    residual block after each upsample (for the lowest resolution, its last residual block), which is the
    official `fuse_generator_block` table for the released config.
    """

    def __init__(self, nf: int, emb_dim: int, ch_mult: tuple[int, ...], res_blocks: int, img_size: int,
                 attn_resolutions: tuple[int, ...]) -> None:
        super().__init__()
        ch = nf * ch_mult[-1]
        res = img_size // 2 ** (len(ch_mult) - 1)
        blocks: list[nn.Module] = [nn.Conv2d(emb_dim, ch, 3, padding=1)]
        blocks += [ResBlock(ch, ch), AttnBlock(ch), ResBlock(ch, ch)]  # non-local middle
        self.fuse_blocks: dict[int, int] = {}
        for level in reversed(range(len(ch_mult))):
            out_ch = nf * ch_mult[level]
            for j in range(res_blocks):
                blocks.append(ResBlock(ch, out_ch))
                ch = out_ch
                lowest = level == len(ch_mult) - 1
                if (j == 0 and not lowest) or (j == res_blocks - 1 and lowest):
                    self.fuse_blocks[res] = len(blocks) - 1
                if res in attn_resolutions:
                    blocks.append(AttnBlock(ch))
            if level != 0:
                blocks.append(Upsample(ch))
                res *= 2
        blocks += [group_norm(ch), nn.Conv2d(ch, 3, 3, padding=1)]  # no swish, no tanh
        self.blocks = nn.ModuleList(blocks)
        self.channels = {r: self.blocks[i].conv2.out_channels for r, i in self.fuse_blocks.items()}

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            z = block(z)
        return z


@dataclass
class AutoEncoded:
    """Result of `VQAutoEncoder.forward`: reconstruction (B, 3, S, S), latent z, and the quantizer result."""

    out: torch.Tensor
    z: torch.Tensor
    quant: Quantized


class VQAutoEncoder(nn.Module):
    """Stage-1 VQGAN: encoder → nearest-code quantizer → generator. Keys match `vqgan_code1024.pth`."""

    def __init__(self, img_size: int = 512, nf: int = 64, ch_mult: tuple[int, ...] = (1, 2, 2, 4, 4, 8),
                 res_blocks: int = 2, attn_resolutions: tuple[int, ...] = (16,), codebook_size: int = 1024,
                 emb_dim: int = 256, beta: float = 0.25, beta_placement: str = "official") -> None:
        super().__init__()
        self.img_size = img_size
        self.latent_res = img_size // 2 ** (len(ch_mult) - 1)
        self.encoder = Encoder(3, nf, emb_dim, ch_mult, res_blocks, img_size, attn_resolutions)
        self.quantize = VectorQuantizer(codebook_size, emb_dim, beta, beta_placement)
        self.generator = Generator(nf, emb_dim, ch_mult, res_blocks, img_size, attn_resolutions)

    @classmethod
    def from_config(cls, cfg: VQGANConfig) -> VQAutoEncoder:
        return cls(cfg.img_size, cfg.nf, cfg.ch_mult, cfg.res_blocks, cfg.attn_resolutions, cfg.codebook_size,
                   cfg.emb_dim, cfg.beta, cfg.beta_placement)

    def encode(self, x: torch.Tensor) -> Quantized:
        """Image (B, 3, S, S) in [-1, 1] → quantizer result (codes, quantized latent, code loss)."""
        return self.quantize(self.encoder(x))

    def decode_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices (B, h, w) → image (B, 3, S, S)."""
        return self.generator(self.quantize.lookup(indices))

    def forward(self, x: torch.Tensor) -> AutoEncoded:
        """Reconstruct x (B, 3, S, S) in [-1, 1]; the gradient reaches the encoder straight-through."""
        z = self.encoder(x)
        quant = self.quantize(z)
        return AutoEncoded(out=self.generator(quant.z_q), z=z, quant=quant)
