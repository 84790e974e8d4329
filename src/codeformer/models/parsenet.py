"""ParseNet: the face-parsing network of the official pipeline (facelib), with the released file's key names.

An encoder of stride-2 residual blocks takes the 512² face down to 32², ten residual blocks work there (with a
residual around all of them), and a decoder of nearest-×2 residual blocks brings it back to 512². Two heads read
the last features: `out_mask_conv` gives 19 class logits per pixel, `out_img_conv` a 3-channel image (the
pipeline uses only the logits). Every 3×3 conv is preceded by a reflection pad of 1; norm layers are BatchNorm
(eval mode: running statistics), activations LeakyReLU(0.2). Channels are 64 · 2^k clipped to [32, 256].

Input (B, 3, 512, 512) float32 RGB in [-1, 1]; outputs `(out_mask (B, 19, 512, 512), out_img (B, 3, 512, 512))`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Scale = Literal["none", "down", "up"]
LEAKY_SLOPE = 0.2


class BatchNormLayer(nn.Module):
    """BatchNorm2d under the attribute `norm`: the released file nests it as `<layer>.norm.norm.*`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class ConvLayer(nn.Module):
    """[nearest ×2 if `scale == "up"`] → reflection pad 1 → 3×3 conv (stride 2 if `scale == "down"`)
    → [BatchNorm if `norm`] → [LeakyReLU(0.2) if `act`]. The conv has a bias only without BatchNorm."""

    def __init__(self, in_ch: int, out_ch: int, scale: Scale = "none", norm: bool = False, act: bool = False) -> None:
        super().__init__()
        self.upsample = scale == "up"
        self.conv2d = nn.Conv2d(in_ch, out_ch, 3, stride=2 if scale == "down" else 1, bias=not norm)
        self.norm = BatchNormLayer(out_ch) if norm else None
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = self.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"))
        if self.norm is not None:
            x = self.norm(x)
        if self.act:
            x = F.leaky_relu(x, LEAKY_SLOPE)
        return x


class ResidualBlock(nn.Module):
    """conv1 (BN, LeakyReLU) → conv2 (BN), plus a shortcut. "down" strides in conv2, "up" enlarges before conv1;
    the shortcut is a plain conv (same scaling) when the size or width changes, else the identity."""

    def __init__(self, in_ch: int, out_ch: int, scale: Scale = "none") -> None:
        super().__init__()
        changes = scale != "none" or in_ch != out_ch
        self.shortcut_func = ConvLayer(in_ch, out_ch, scale) if changes else None
        self.conv1 = ConvLayer(in_ch, out_ch, "up" if scale == "up" else "none", norm=True, act=True)
        self.conv2 = ConvLayer(out_ch, out_ch, "down" if scale == "down" else "none", norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut_func is None else self.shortcut_func(x)
        return identity + self.conv2(self.conv1(x))


class ParseNet(nn.Module):
    """Face parsing network. The released `parsing_parsenet.pth` is `ParseNet(512, 512, 19)`:
    encoder 64→128→256→256→256 down to `min_feat_size`, `res_depth` blocks, decoder back to `out_size`."""

    def __init__(self, in_size: int = 512, out_size: int = 512, parsing_ch: int = 19, min_feat_size: int = 32,
                 base_ch: int = 64, res_depth: int = 10, ch_range: tuple[int, int] = (32, 256)) -> None:
        super().__init__()
        self.in_size, self.out_size = in_size, out_size
        lo, hi = ch_range

        def clip(c: int) -> int:
            return max(lo, min(c, hi))

        min_feat_size = min(in_size, min_feat_size)
        down_steps = int(math.log2(in_size // min_feat_size))
        up_steps = int(math.log2(out_size // min_feat_size))
        # `head` follows the unclipped width, as the released layout does (it reaches 1024 before clipping)
        encoder: list[nn.Module] = [ConvLayer(3, base_ch)]
        head = base_ch
        for _ in range(down_steps):
            encoder.append(ResidualBlock(clip(head), clip(head * 2), "down"))
            head *= 2
        self.encoder = nn.Sequential(*encoder)
        self.body = nn.Sequential(*[ResidualBlock(clip(head), clip(head)) for _ in range(res_depth)])
        decoder: list[nn.Module] = []
        for _ in range(up_steps):
            decoder.append(ResidualBlock(clip(head), clip(head // 2), "up"))
            head //= 2
        self.decoder = nn.Sequential(*decoder)
        self.out_img_conv = ConvLayer(clip(head), 3)
        self.out_mask_conv = ConvLayer(clip(head), parsing_ch)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, in, in) RGB in [-1, 1] → (class logits (B, parsing_ch, out, out), image (B, 3, out, out))."""
        feat = self.encoder(x)
        y = self.decoder(feat + self.body(feat))
        return self.out_mask_conv(y), self.out_img_conv(y)
