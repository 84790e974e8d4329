"""No-reference quality estimates: noise σ, sharpness (Laplacian variance) and a blur that matches a sharpness.

All work on the BT.601 luma of an RGB image on the 0–255 scale (uint8, or float in [0, 1]), in float64.

- `noise_sigma`: Immerkær's estimator (J. Immerkær, "Fast noise variance estimation", CVIU 1996): the image is
  filtered with the 3×3 mask N = [[1, -2, 1], [-2, 4, -2], [1, -2, 1]], which cancels planes and most smooth
  shading, and σ = √(π/2) · mean(|I ∗ N|) / 6. It overestimates a little on strongly textured images.
- `laplacian_variance`: the variance of the 4-neighbour Laplacian [[0, 1, 0], [1, -4, 1], [0, 1, 0]] over the
  interior pixels, the usual focus measure (Pech-Pacheco et al. 2000). White noise of σ adds 20·σ² to it (the
  squared taps sum to 20), so on its own it reads noise as detail.
- `sharpness`: the Laplacian variance minus that noise share, max(var − 20·σ², 0): high for crisp detail, near 0
  for a blurred or strongly upsampled face. It depends on the image size; compare it only between images of the
  same size (e.g. 512×512 aligned face crops).
- `match_sharpness`: the Gaussian blur σ that brings an image's sharpness down to a target (bisection; sharpness
  falls monotonically with the blur), used to degrade a restored face back to its input's measured quality.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from codeformer.metrics.fidelity import to_255

__all__ = ["gaussian_blur", "laplacian_variance", "luma", "match_sharpness", "noise_sigma", "sharpness"]

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
_LAPLACIAN_NOISE_GAIN = 20.0  # sum of the squared taps of the 4-neighbour Laplacian
MAX_MATCH_SIGMA = 16.0


def luma(img: np.ndarray) -> np.ndarray:
    """H×W×3 RGB or H×W grey (uint8, or float in [0, 1]) → H×W float64 luma on the 0–255 scale."""
    arr = to_255(img)
    if arr.ndim == 3:
        arr = arr[..., :3] @ _LUMA if arr.shape[2] >= 3 else arr[..., 0]
    return arr


def noise_sigma(img: np.ndarray) -> float:
    """Estimated standard deviation of white noise in the image, on the 0–255 scale (Immerkær). Needs >= 3×3 px."""
    y = luma(img)
    if min(y.shape) < 3:
        raise ValueError(f"noise_sigma needs at least 3×3 px, got {y.shape[1]}×{y.shape[0]}")
    response = cv2.filter2D(y, cv2.CV_64F, _IMMERKAER)[1:-1, 1:-1]
    return float(math.sqrt(math.pi / 2.0) * np.abs(response).mean() / 6.0)


def laplacian_variance(img: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of the luma over the interior pixels (0–255 scale)."""
    y = luma(img)
    lap = cv2.Laplacian(y, cv2.CV_64F, ksize=1)[1:-1, 1:-1]
    return float(lap.var())


def sharpness(img: np.ndarray, sigma: float | None = None) -> float:
    """Noise-corrected Laplacian variance, max(var − 20·σ², 0); `sigma` defaults to `noise_sigma(img)`."""
    s = noise_sigma(img) if sigma is None else sigma
    return max(laplacian_variance(img) - _LAPLACIAN_NOISE_GAIN * s * s, 0.0)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian-blurred copy (kernel radius ⌈3σ⌉, reflected border) in the input's dtype; σ <= 0 copies."""
    if sigma <= 0:
        return np.array(img, copy=True)
    radius = max(1, math.ceil(3.0 * sigma))
    out = cv2.GaussianBlur(np.asarray(img), (2 * radius + 1, 2 * radius + 1), sigma, borderType=cv2.BORDER_REFLECT)
    return out


def match_sharpness(img: np.ndarray, target: float, iterations: int = 18) -> float:
    """The Gaussian σ in [0, 16] for which `sharpness(gaussian_blur(img, σ)) ≈ target` (bisection). Returns 0 when
    the image is already no sharper than `target`, 16 when even that blur leaves it sharper."""
    if sharpness(img) <= target:
        return 0.0
    lo, hi = 0.0, MAX_MATCH_SIGMA
    if sharpness(gaussian_blur(img, hi)) > target:
        return hi
    for _ in range(iterations):
        mid = (lo + hi) / 2.0
        if sharpness(gaussian_blur(img, mid)) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0
