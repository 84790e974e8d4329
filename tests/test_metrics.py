"""Metrics against independent computations: scikit-image (PSNR, SSIM), closed forms (noise PSNR, Y of pure
colours, Fréchet distance of known Gaussians), and properties (identical → inf / 1 / 0)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from codeformer.metrics.fid import (
    FIDInceptionV3,
    activation_statistics,
    frechet_distance,
    frechet_distance_of_features,
)
from codeformer.metrics.fidelity import LPIPSMetric, psnr, rgb_to_y, ssim
from codeformer.metrics.identity import cosine_similarity, landmark_distance
from codeformer.metrics.noref import gaussian_blur, match_sharpness, noise_sigma, sharpness
from codeformer.models.lpips import LPIPS
from tests.face_helpers import ASTRONAUT, load_rgb


@pytest.fixture(scope="module")
def lpips_metric() -> LPIPSMetric:
    """LPIPS with random (non-negative-head) weights: the properties hold for any weights."""
    torch.manual_seed(0)
    return LPIPSMetric(LPIPS())


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    """A 96×80 photo patch and a noisy, slightly blurred copy (uint8 RGB)."""
    img = load_rgb(ASTRONAUT)[60:156, 170:250]
    rng = np.random.default_rng(1)
    other = np.clip(cv2.GaussianBlur(img, (3, 3), 0.8) + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    return img, other


def test_identical_images(lpips_metric: LPIPSMetric) -> None:
    img = np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    assert psnr(img, img) == math.inf and psnr(img, img, y_channel=True) == math.inf
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    assert ssim(img, img, y_channel=True) == pytest.approx(1.0, abs=1e-12)
    assert lpips_metric(img, img) == pytest.approx(0.0, abs=1e-7)


def test_known_noise_psnr() -> None:
    ref = np.full((64, 64, 3), 128, np.uint8)
    checker = np.indices((64, 64)).sum(0) % 2 * 10 - 5  # ±5 everywhere: MSE exactly 25
    img = (ref.astype(int) + checker[..., None]).astype(np.uint8)
    assert psnr(img, ref) == pytest.approx(10 * math.log10(255**2 / 25), abs=1e-9)
    rng = np.random.default_rng(0)
    a = 0.1  # uniform noise U(-a, a) on [0, 1] images: MSE = a²/3 in [0, 1] units
    noisy = 0.5 + rng.uniform(-a, a, (256, 256, 3))
    assert psnr(noisy, np.full_like(noisy, 0.5)) == pytest.approx(10 * math.log10(3 / a**2), abs=0.05)


def test_y_channel_of_pure_colours() -> None:
    colours = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    np.testing.assert_allclose(rgb_to_y(colours)[0], [16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966],
                               atol=1e-9)


def test_psnr_ssim_match_scikit_image(pair: tuple[np.ndarray, np.ndarray]) -> None:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    img, other = pair
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    assert psnr(other, img) == pytest.approx(peak_signal_noise_ratio(img, other, data_range=255), abs=1e-9)
    assert ssim(other, img) == pytest.approx(structural_similarity(img, other, channel_axis=-1, **kw), abs=1e-6)
    y_img, y_other = rgb_to_y(img), rgb_to_y(other)
    assert ssim(other, img, y_channel=True) == pytest.approx(structural_similarity(y_img, y_other, **kw), abs=1e-6)
    assert psnr(other, img, y_channel=True) == pytest.approx(
        peak_signal_noise_ratio(y_img, y_other, data_range=255), abs=1e-9)
    cropped = ssim(other, img, crop_border=4)
    assert cropped == pytest.approx(structural_similarity(img[4:-4, 4:-4], other[4:-4, 4:-4], channel_axis=-1,
                                                          **kw), abs=1e-6)
    rng = np.random.default_rng(3)  # float [0, 1] input is the same as its 0–255 version
    a, b = rng.random((24, 30, 3)), rng.random((24, 30, 3))
    assert ssim(a, b) == pytest.approx(structural_similarity(a * 255, b * 255, channel_axis=-1, **kw), abs=1e-6)


def test_metric_errors() -> None:
    a = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(a, np.zeros((20, 21, 3), np.uint8))
    with pytest.raises(ValueError, match="11×11"):
        ssim(a[:8, :8], a[:8, :8])
    with pytest.raises(ValueError, match="dtype"):
        psnr(a.astype(np.int32), a.astype(np.int32))


def test_lpips_orders_distortions(pair: tuple[np.ndarray, np.ndarray], lpips_metric: LPIPSMetric) -> None:
    img, other = pair
    lp = lpips_metric
    near, far = lp(other, img), lp(255 - img, img)
    assert 0.0 < near < far
    assert lp(img, other) == pytest.approx(near, rel=1e-5)


def test_frechet_distance_known_gaussians() -> None:
    # 1-D: N(0, 1) vs N(1, 4): (0 − 1)² + 1 + 4 − 2·√4 = 2.
    assert frechet_distance(np.array([0.0]), np.array([[1.0]]), np.array([1.0]), np.array([[4.0]])) == \
        pytest.approx(2.0, abs=1e-12)
    # Non-commuting 2×2 covariances: tr √(S1 S2) = √(tr M + 2√det M) for a 2×2 M with non-negative eigenvalues.
    s1 = np.array([[2.0, 0.5], [0.5, 1.0]])
    s2 = np.array([[1.0, -0.3], [-0.3, 3.0]])
    m = s1 @ s2
    tr_sqrt = math.sqrt(np.trace(m) + 2 * math.sqrt(np.linalg.det(m)))
    mu1, mu2 = np.array([0.0, 1.0]), np.array([2.0, -1.0])
    expected = 8.0 + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, abs=1e-10)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-10)
    # Statistics of samples: unbiased covariance, as numpy.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3))
    mu, sigma = activation_statistics(x)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False))
    np.testing.assert_allclose(mu, x.mean(0))


@pytest.mark.parametrize("n1,n2", [(4, 6), (3, 3), (40, 30)])
def test_fid_of_features_equals_fid_of_statistics(n1: int, n2: int) -> None:
    rng = np.random.default_rng(n1)
    f1, f2 = rng.normal(size=(n1, 12)), rng.normal(0.3, 1.5, size=(n2, 12))
    expected = frechet_distance(*activation_statistics(f1), *activation_statistics(f2))
    assert frechet_distance_of_features(f1, f2) == pytest.approx(expected, rel=1e-6, abs=1e-8)


def test_fid_inception_layout_and_load() -> None:
    net = FIDInceptionV3()
    # torchvision Inception3 without the aux head, with the TF 1008-class fc: 23,850,960 parameters.
    assert sum(p.numel() for p in net.parameters()) == 23_850_960
    state = net.state_dict()
    assert state["fc.weight"].shape == (1008, 2048)
    assert state["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape == (384, 384, 3, 1)
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    saved = {k: v.clone() for k, v in state.items() if not k.endswith("num_batches_tracked")}
    with torch.no_grad():
        net.Mixed_6b.branch7x7_2.conv.weight.zero_()
        net.Conv2d_1a_3x3.bn.running_var.fill_(3.0)
    # pytorch-fid's file has no num_batches_tracked entries: still a strict load.
    net.load_fid_state_dict(saved)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in saved.items())
    with pytest.raises(KeyError, match="mismatch"):
        net.load_fid_state_dict({**saved, "AuxLogits.fc.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="mismatch"):
        net.load_fid_state_dict({k: v for k, v in saved.items() if k != "fc.bias"})


def test_noise_sigma_and_sharpness() -> None:
    rng = np.random.default_rng(0)
    flat = np.full((128, 128), 0.5) + rng.normal(0, 8 / 255, (128, 128))
    assert noise_sigma(flat) == pytest.approx(8.0, rel=0.05)
    crop = load_rgb(ASTRONAUT)[40:232, 130:322]
    values = [sharpness(gaussian_blur(crop, s)) for s in (0.0, 0.7, 1.5, 3.0)]
    assert values == sorted(values, reverse=True) and values[-1] < values[0] / 10
    target = sharpness(gaussian_blur(crop.astype(np.float32) / 255, 1.2))
    assert match_sharpness(crop.astype(np.float32) / 255, target) == pytest.approx(1.2, abs=0.1)


def test_landmark_distance_and_cosine() -> None:
    pts = np.array([[10.0, 10], [30, 10], [20, 20], [12, 30], [28, 30]])
    assert landmark_distance(pts, pts, 100) == 0.0
    assert landmark_distance(pts + [3.0, 4.0], pts, 50) == pytest.approx(0.1)
    assert cosine_similarity(np.array([1.0, 0]), np.array([0.0, 2])) == pytest.approx(0.0)
    assert cosine_similarity(np.array([1.0, 1]), np.array([2.0, 2])) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        landmark_distance(pts, pts[:4], 10)


def test_lpips_lives_with_the_networks_so_metrics_never_import_losses():
    """LPIPS has two users, the training loss and the metric: it lives in `models`, and the metrics package
    loads without the losses package (no metrics → losses edge, so no cycle can form through it)."""
    import subprocess
    import sys

    code = ("import sys, codeformer.metrics, codeformer.metrics.fidelity; "
            "print(sorted(m for m in sys.modules if m.startswith('codeformer.losses')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    from codeformer.losses.perceptual import LPIPSLoss
    from codeformer.models.lpips import LPIPS

    assert isinstance(LPIPSLoss().lpips, LPIPS)
