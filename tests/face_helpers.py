"""Shared pieces for the face pipeline tests: sample photos, a composed group photo, stand-in restorers."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from codeformer.data.images import Picture, read_image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ASTRONAUT = EXAMPLES / "astronaut.png"
GRACE = EXAMPLES / "grace_hopper.jpg"


def load_rgb(path: Path) -> np.ndarray:
    """H×W×3 uint8 RGB pixels of a sample photo."""
    return read_image(path).pixels[:, :, :3].copy()


def group_photo() -> np.ndarray:
    """A 700×1760 RGB canvas with four faces: astronaut, Grace Hopper, and both again mirrored and shrunk."""
    canvas = np.full((700, 1760, 3), 90, np.uint8)
    astro, grace = load_rgb(ASTRONAUT), load_rgb(GRACE)
    canvas[0:512, 0:512] = astro
    canvas[50:650, 520:1032] = grace
    small_astro = cv2.resize(astro[:, ::-1], (384, 384), interpolation=cv2.INTER_AREA)
    small_grace = cv2.resize(grace[:, ::-1], (320, 375), interpolation=cv2.INTER_AREA)
    canvas[300:684, 1040:1424] = small_astro
    canvas[0:375, 1430:1750] = small_grace
    return canvas


class IdentityRestorer:
    """Returns its input: the pipeline's geometry alone decides the output."""

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def restore(self, x: torch.Tensor, w: float) -> torch.Tensor:
        self.batch_sizes.append(x.shape[0])
        return x.clone()


class ConvRestorer:
    """A fixed, seeded 3×3 convolution plus a colour shift: deterministic and far from the identity."""

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(3, 3, 3, 3, generator=g) * 0.2
        self.weight[:, :, 1, 1] += torch.eye(3) * 0.5
        self.batch_sizes: list[int] = []

    def restore(self, x: torch.Tensor, w: float) -> torch.Tensor:
        self.batch_sizes.append(x.shape[0])
        y = torch.nn.functional.conv2d(x, self.weight.to(x.device), padding=1) * (1.0 - 0.5 * w)
        return y + torch.tensor([0.3, -0.1, 0.0], device=x.device).view(1, 3, 1, 1)


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB between two arrays of the same shape."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def picture_of(pixels: np.ndarray, **kw) -> Picture:
    """A Picture around `pixels`, grey flag from the layout."""
    return Picture(np.ascontiguousarray(pixels), is_grey=pixels.shape[2] == 1, **kw)
