"""Full-reference fidelity metrics: PSNR, SSIM (RGB or the BT.601 Y channel) and LPIPS.

Images are H×W×3 RGB arrays, either uint8 (0–255) or float in [0, 1]; both are taken to the 0–255 scale in
float64 before anything is computed, so `data_range` is always 255.

- Y channel: BasicSR's `bgr2ycbcr(..., y_only=True)` on [0, 1] input, times 255: Y = 16 + 65.481·R + 128.553·G
  + 24.966·B (R, G, B in [0, 1]), so Y lies in [16, 235]. It is not rounded.
- PSNR: 10·log10(255² / MSE) over all pixels (and channels); +inf for identical images. Same as scikit-image's
  `peak_signal_noise_ratio(ref, img, data_range=255)`.
- SSIM: Wang et al. 2004 with an 11×11 Gaussian window (σ = 1.5, the window scikit-image builds with
  truncate=3.5), K1 = 0.01, K2 = 0.03, population (not sample) covariances, computed per channel and averaged over
  the pixels at least 5 px from the border (the window never leaves the image there) and over channels. Same as
  `structural_similarity(ref, img, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=255, channel_axis=-1)`, and as BasicSR's `calculate_ssim`.
- `crop_border` removes that many pixels on each side before either metric (BasicSR's convention for SR).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch

from codeformer.models.lpips import LPIPS

__all__ = ["LPIPSMetric", "psnr", "rgb_to_y", "ssim", "to_255"]

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # int(3.5 * 1.5 + 0.5), scikit-image's truncate=3.5 → an 11×11 window
SSIM_K1 = 0.01
SSIM_K2 = 0.03
DATA_RANGE = 255.0
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64)  # R, G, B


def to_255(img: np.ndarray) -> np.ndarray:
    """uint8 (0–255) or float in [0, 1] (H×W[×C]) → float64 on the 0–255 scale. Other dtypes are an error."""
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        return arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float64) * 255.0
    raise ValueError(f"expected a uint8 image or a float image in [0, 1], got dtype {arr.dtype}")


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """H×W×3 RGB (uint8 or float in [0, 1]) → H×W float64 BT.601 luma in [16, 235] (BasicSR's y-only ycbcr)."""
    rgb = to_255(img)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 RGB image, got shape {rgb.shape}")
    return rgb @ (_Y_WEIGHTS / 255.0) + 16.0


def _prepare(img: np.ndarray, ref: np.ndarray, y_channel: bool, crop_border: int) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 0–255, H×W×C (C = 1 for Y), border cropped; shapes must match."""
    if np.shape(img) != np.shape(ref):
        raise ValueError(f"image shapes differ: {np.shape(img)} vs {np.shape(ref)}")
    if y_channel:
        a, b = rgb_to_y(img)[..., None], rgb_to_y(ref)[..., None]
    else:
        a, b = to_255(img), to_255(ref)
        if a.ndim == 2:
            a, b = a[..., None], b[..., None]
    if crop_border:
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    return a, b


def psnr(img: np.ndarray, ref: np.ndarray, y_channel: bool = False, crop_border: int = 0) -> float:
    """PSNR in dB between two same-shape H×W×3 RGB images (uint8 or float in [0, 1]); +inf when identical."""
    a, b = _prepare(img, ref, y_channel, crop_border)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(DATA_RANGE**2 / mse)


def _gaussian_window() -> np.ndarray:
    """The 11-tap 1-D Gaussian (σ = 1.5), normalised to sum 1, float64."""
    x = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
    return g / g.sum()


def _ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two H×W float64 planes (0–255) over the pixels whose window lies inside the image."""
    g = _gaussian_window()

    def blur(x: np.ndarray) -> np.ndarray:
        # Border handling is irrelevant: the border of width SSIM_RADIUS is cropped below.
        return cv2.sepFilter2D(x, cv2.CV_64F, g, g, borderType=cv2.BORDER_REFLECT)

    c1 = (SSIM_K1 * DATA_RANGE) ** 2
    c2 = (SSIM_K2 * DATA_RANGE) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a * mu_a
    var_b = blur(b * b) - mu_b * mu_b
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    r = SSIM_RADIUS
    return float(ssim_map[r:-r, r:-r].mean())


def ssim(img: np.ndarray, ref: np.ndarray, y_channel: bool = False, crop_border: int = 0) -> float:
    """SSIM of two same-shape H×W×3 RGB images (uint8 or float in [0, 1]), in [-1, 1]; 1 when identical.
    Both sides must be at least 11 px after cropping."""
    a, b = _prepare(img, ref, y_channel, crop_border)
    if min(a.shape[:2]) < 2 * SSIM_RADIUS + 1:
        raise ValueError(f"SSIM needs images of at least 11×11 px, got {a.shape[1]}×{a.shape[0]}")
    return float(np.mean([_ssim_channel(a[..., c], b[..., c]) for c in range(a.shape[2])]))


class LPIPSMetric:
    """LPIPS distance (VGG, v0.1) between RGB images, wrapping `codeformer.models.lpips.LPIPS`.

    Build with `LPIPSMetric.from_files(vgg_path, lin_path)` for the real metric; `LPIPSMetric(LPIPS())` gives a
    randomly initialised network (tests). `__call__(img, ref)`: two H×W×3 RGB images (uint8 or float in [0, 1],
    at least 16 px a side) → float >= 0, 0 for identical images.
    """

    def __init__(self, network: LPIPS, device: str | torch.device = "cpu") -> None:
        self.network = network
        self.device = torch.device(device)

    @classmethod
    def from_files(cls, vgg_path: str | Path, lin_path: str | Path, device: str | torch.device = "cpu") -> LPIPSMetric:
        """Load torchvision's `vgg16-397923af.pth` and LPIPS's v0.1 `vgg.pth` heads."""
        return cls(LPIPS.from_files(vgg_path, lin_path).to(device), device)

    def _tensor(self, img: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(to_255(img) / 127.5 - 1.0).float()  # H×W×3 in [-1, 1]
        return x.permute(2, 0, 1)[None].to(self.device)  # (1, 3, H, W)

    def __call__(self, img: np.ndarray, ref: np.ndarray) -> float:
        if np.shape(img) != np.shape(ref):
            raise ValueError(f"image shapes differ: {np.shape(img)} vs {np.shape(ref)}")
        with torch.no_grad():
            return float(self.network(self._tensor(img), self._tensor(ref))[0])
