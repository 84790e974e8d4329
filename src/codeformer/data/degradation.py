"""Synthetic face degradation for training (spec §2.5), as pure functions with explicit randomness.

Every image here is an H×W×3 float32 RGB array in [0, 1]. No function modifies its input; each returns a new
array. Every random draw comes from the `np.random.Generator` passed in, so `degrade(hq, cfg, rng)` is a
function of the image, the config and the generator state.

The official pipeline (`ffhq_blind_dataset.py`) works on BGR arrays; we work on RGB and convert only where a
library cares about channel order (JPEG chroma subsampling, grey conversion).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from codeformer.config import DEGRADATION_LARGE, DEGRADATION_SMALL, DegradationConfig

__all__ = [
    "LARGE",
    "SMALL",
    "add_gaussian_noise",
    "blur",
    "brush_stroke_mask",
    "color_jitter",
    "degrade",
    "downsample",
    "gaussian_kernel",
    "jpeg",
    "paint_white",
    "quantize_8bit",
    "random_kernel",
    "resize_back",
    "rgb_shift",
    "to_grey",
]

LARGE: DegradationConfig = DEGRADATION_LARGE
SMALL: DegradationConfig = DEGRADATION_SMALL

# ITU-R 601 luma weights as torchvision's rgb_to_grayscale uses them (the official torch colour jitter).
_TORCH_LUMA = np.array([0.2989, 0.587, 0.114], dtype=np.float32)


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """A bivariate Gaussian kernel, normalised to sum 1.

    Args:
        size: odd side length (the official pipeline uses 41).
        sigma_x, sigma_y: standard deviations along the kernel's own axes, in pixels (> 0).
        theta: rotation of those axes in radians. `sigma_x == sigma_y` gives an isotropic kernel.

    Returns:
        (size, size) float64 array, non-negative, summing to 1; point-symmetric, so correlation (what
        cv2.filter2D computes) equals convolution.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd integer, got {size}")
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError(f"kernel sigmas must be > 0, got {sigma_x}, {sigma_y}")
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    covariance = rotation @ np.diag([sigma_x**2, sigma_y**2]) @ rotation.T
    precision = np.linalg.inv(covariance)
    half = size // 2
    axis = np.arange(-half, half + 1, dtype=np.float64)
    xx, yy = np.meshgrid(axis, axis)  # xx varies along columns (x), yy along rows (y)
    grid = np.stack([xx, yy], axis=-1)  # (size, size, 2)
    mahalanobis = np.einsum("...i,ij,...j->...", grid, precision, grid)
    kernel = np.exp(-0.5 * mahalanobis)
    return kernel / kernel.sum()


def random_kernel(
    rng: np.random.Generator, sigma_range: tuple[float, float], size: int = 41, iso_prob: float = 0.5
) -> np.ndarray:
    """Draw the official random blur kernel: isotropic with probability `iso_prob`, else anisotropic.

    Isotropic: one σ ~ U(sigma_range), no rotation. Anisotropic: σx, σy ~ U(sigma_range) independently,
    rotation ~ U(−π, π). No multiplicative kernel noise (the official call passes noise_range=None).

    Returns:
        (size, size) float64 kernel summing to 1.
    """
    low, high = sigma_range
    if rng.random() < iso_prob:
        sigma = rng.uniform(low, high)
        return gaussian_kernel(size, sigma, sigma, 0.0)
    sigma_x = rng.uniform(low, high)
    sigma_y = rng.uniform(low, high)
    theta = rng.uniform(-math.pi, math.pi)
    return gaussian_kernel(size, sigma_x, sigma_y, theta)


def blur(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Filter `img` (H×W×3 float32) with `kernel` (cv2.filter2D, reflect-101 border); float32 H×W×3."""
    return cv2.filter2D(img, -1, kernel)


def downsample(img: np.ndarray, r: float) -> np.ndarray:
    """Bilinear resize of `img` (H×W×3 float32) by `r` >= 1 to int(H // r)×int(W // r), at least 1 px."""
    h, w = img.shape[:2]
    new_h, new_w = max(1, int(h // r)), max(1, int(w // r))
    return cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)


def add_gaussian_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add i.i.d. Gaussian noise of standard deviation `sigma` (in [0, 1] units, e.g. 10/255) to every
    channel of every pixel, then clip to [0, 1]. Returns float32 of `img`'s shape."""
    noise = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(img + noise, 0.0, 1.0)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """JPEG encode/decode round trip with cv2 at integer `quality` (0-100). Input and output H×W×3 float32 RGB
    in [0, 1]; the input is rounded to 8 bits first, as cv2 does with the official float input."""
    img8 = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    bgr = np.ascontiguousarray(img8[:, :, ::-1])  # cv2's encoder expects BGR (chroma is subsampled)
    ok, encoded = cv2.imencode(".jpg", bgr, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise RuntimeError(f"cv2 could not JPEG-encode an image of shape {img.shape}")
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    return decoded[:, :, ::-1].astype(np.float32) / 255.0


def resize_back(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of `img` (h×w×3 float32) to `height`×`width`. Returns float32."""
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)


def rgb_shift(img: np.ndarray, rng: np.random.Generator, shift: float) -> np.ndarray:
    """Add one offset per channel, each ~ U(−shift, shift) (in [0, 1] units, official 20/255), then clip."""
    offset = rng.uniform(-shift, shift, 3).astype(np.float32)
    return np.clip(img + offset, 0.0, 1.0)


def _luma(img: np.ndarray) -> np.ndarray:
    """Grey level per pixel with torchvision's weights: H×W float32."""
    return img @ _TORCH_LUMA


def _blend(img: np.ndarray, other: np.ndarray | np.float32, factor: float) -> np.ndarray:
    return np.clip(factor * img + (1.0 - factor) * other, 0.0, 1.0).astype(np.float32)


def _adjust_hue(img: np.ndarray, hue: float) -> np.ndarray:
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)  # float32 input: H in degrees [0, 360), S and V in [0, 1]
    hsv[:, :, 0] = np.mod(hsv[:, :, 0] + hue * 360.0, 360.0)
    return np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), 0.0, 1.0)


def color_jitter(
    img: np.ndarray,
    rng: np.random.Generator,
    brightness: tuple[float, float] = (0.5, 1.5),
    contrast: tuple[float, float] = (0.5, 1.5),
    saturation: tuple[float, float] = (0.0, 1.5),
    hue: tuple[float, float] = (-0.1, 0.1),
) -> np.ndarray:
    """The official torch-style colour jitter: brightness, contrast, saturation and hue in a random order.

    Each factor is drawn uniformly from its range when its turn comes. Brightness scales the image;
    contrast blends with the image's mean grey level; saturation blends with the per-pixel grey image;
    hue rotates the HSV hue by `hue` turns. Results are clipped to [0, 1] after every step, as torchvision's
    functional ops do. Input and output H×W×3 float32 RGB in [0, 1].
    """
    out = img.astype(np.float32, copy=True)
    for op in rng.permutation(4):
        if op == 0:
            out = _blend(out, np.float32(0.0), rng.uniform(*brightness))
        elif op == 1:
            out = _blend(out, np.float32(_luma(out).mean()), rng.uniform(*contrast))
        elif op == 2:
            out = _blend(out, _luma(out)[:, :, None], rng.uniform(*saturation))
        else:
            out = _adjust_hue(out, rng.uniform(*hue))
    return out


def to_grey(img: np.ndarray) -> np.ndarray:
    """Grey conversion (cv2 weights 0.299, 0.587, 0.114) repeated into 3 equal channels. H×W×3 float32."""
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return np.repeat(grey[:, :, None], 3, axis=2)


def brush_stroke_mask(
    height: int,
    width: int,
    rng: np.random.Generator,
    count: tuple[int, int] = (1, 3),
    vertices: tuple[int, int] = (8, 27),
    stroke_width: tuple[float, float] = (30.0, 70.0),
) -> np.ndarray:
    """Free-form brush strokes, the official inpainting holes (DeepFill v2 style), as an H×W bool mask.

    Each of `count` strokes (inclusive range) is a polyline of `vertices` + 1 points: a random start, then steps
    of length ~ N(r, r // 2) clipped to [0, 2r] with r = √(H² + W²) / 8, turning by angles that alternate around
    ±2π/5 (spread up to 2π/12), every point clipped to the image. The line has a width ~ U(`stroke_width`), given
    in pixels of a 512 image and scaled by min(H, W) / 512, with round caps at the points.
    """
    mean_angle, angle_spread = 2 * math.pi / 5, 2 * math.pi / 12
    radius = math.sqrt(height * height + width * width) / 8
    scale = min(height, width) / 512.0
    canvas = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        n = int(rng.integers(vertices[0], vertices[1] + 1))
        low = mean_angle - rng.uniform(0, angle_spread)
        high = mean_angle + rng.uniform(0, angle_spread)
        turns = [rng.uniform(low, high) for _ in range(n)]
        angles = [2 * math.pi - a if i % 2 == 0 else a for i, a in enumerate(turns)]
        points = [(int(rng.integers(0, width)), int(rng.integers(0, height)))]
        for angle in angles:
            step = float(np.clip(rng.normal(radius, radius // 2), 0, 2 * radius))
            x = float(np.clip(points[-1][0] + step * math.cos(angle), 0, width))
            y = float(np.clip(points[-1][1] + step * math.sin(angle), 0, height))
            points.append((int(x), int(y)))
        thickness = max(1, int(rng.uniform(*stroke_width) * scale))
        cv2.polylines(canvas, [np.array(points, np.int32)], False, 1, thickness)
        for point in points:
            cv2.circle(canvas, point, thickness // 2, 1, -1)
    return canvas.astype(bool)


def paint_white(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`img` (H×W×3 float32) with the pixels of the H×W bool `mask` set to pure white (1.0). Returns a copy."""
    return np.where(mask[:, :, None], np.float32(1.0), img).astype(np.float32)


def quantize_8bit(img: np.ndarray) -> np.ndarray:
    """Round to the nearest of the 256 levels k/255 and clip to [0, 1]. Returns float32."""
    return (np.clip(np.rint(img * 255.0), 0, 255) / 255.0).astype(np.float32)


def degrade(hq: np.ndarray, cfg: DegradationConfig, rng: np.random.Generator) -> np.ndarray:
    """Make a synthetic low-quality input from a high-quality face, in the official order.

    blur (random kernel) → bilinear down by r → Gaussian noise + clip → JPEG → bilinear back to the HQ size
    (all only with `cfg.corrupt`) → white brush strokes (only with `cfg.brush_strokes`) → optional RGB shift
    → optional grey → optional torch-style colour jitter → round to 8 bits.

    The colour steps follow the official dataset code: the RGB shift and the grey conversion run on the
    numpy image, the torch-style jitter after them (so a grey image stays grey). Every optional step draws
    its coin even when its probability is 0, so turning one on does not shift the other draws.

    Args:
        hq: H×W×3 float32 RGB in [0, 1] (not modified).
        cfg: ranges and probabilities (`LARGE`, `SMALL` or a custom config).
        rng: the only source of randomness.

    Returns:
        H×W×3 float32 RGB in [0, 1], quantised to multiples of 1/255.
    """
    if hq.ndim != 3 or hq.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 image, got shape {hq.shape}")
    height, width = hq.shape[:2]
    img = hq.astype(np.float32, copy=False)
    if cfg.corrupt:
        img = blur(img, random_kernel(rng, cfg.blur_sigma, cfg.kernel_size, cfg.iso_prob))
        img = downsample(img, rng.uniform(*cfg.downsample_range))
        img = add_gaussian_noise(img, rng.uniform(*cfg.noise_range) / 255.0, rng)
        img = jpeg(img, int(rng.uniform(*cfg.jpeg_range)))
        img = resize_back(img, height, width)
    if cfg.brush_strokes:
        img = paint_white(img, brush_stroke_mask(height, width, rng, cfg.brush_count, cfg.brush_vertices,
                                                 cfg.brush_width))
    if rng.random() < cfg.rgb_shift_prob:
        img = rgb_shift(img, rng, cfg.rgb_shift / 255.0)
    if rng.random() < cfg.gray_prob:
        img = to_grey(img)
    if rng.random() < cfg.color_jitter_prob:
        img = color_jitter(img, rng, cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)
    return quantize_8bit(img)
