"""Tests for codeformer.data.degradation: determinism and a measurable effect for every op."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from codeformer.config import DEGRADATION_PRESETS, DegradationConfig
from codeformer.data.degradation import (
    LARGE,
    SMALL,
    add_gaussian_noise,
    blur,
    brush_stroke_mask,
    color_jitter,
    degrade,
    downsample,
    gaussian_kernel,
    jpeg,
    paint_white,
    quantize_8bit,
    random_kernel,
    resize_back,
    rgb_shift,
    to_grey,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """The astronaut photo, 128×128 float32 RGB in [0, 1]."""
    bgr = cv2.imread(str(DATA / "astronaut.png"), cv2.IMREAD_COLOR)
    assert bgr is not None
    small = cv2.resize(bgr, (128, 128), interpolation=cv2.INTER_AREA)
    return small[:, :, ::-1].astype(np.float32) / 255.0


def _laplacian_variance(img: np.ndarray) -> float:
    return float(cv2.Laplacian(img.mean(axis=2), cv2.CV_32F).var())


def test_presets_match_spec() -> None:
    assert (LARGE.blur_sigma, LARGE.downsample_range, LARGE.noise_range, LARGE.jpeg_range) == (
        (1.0, 15.0), (4.0, 30.0), (0.0, 20.0), (30.0, 80.0))
    assert (SMALL.blur_sigma, SMALL.downsample_range, SMALL.noise_range, SMALL.jpeg_range) == (
        (0.1, 10.0), (1.0, 12.0), (0.0, 15.0), (60.0, 100.0))
    for cfg in (LARGE, SMALL):
        assert cfg.kernel_size == 41 and cfg.iso_prob == 0.5
        assert cfg.color_jitter_prob == cfg.rgb_shift_prob == cfg.gray_prob == 0.0


@pytest.mark.parametrize("cfg", [LARGE, SMALL], ids=["large", "small"])
def test_degrade_deterministic_for_a_seed(face: np.ndarray, cfg: DegradationConfig) -> None:
    a = degrade(face, cfg, np.random.default_rng(7))
    b = degrade(face, cfg, np.random.default_rng(7))
    c = degrade(face, cfg, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_degrade_leaves_input_untouched(face: np.ndarray) -> None:
    before = face.copy()
    degrade(face, LARGE, np.random.default_rng(0))
    np.testing.assert_array_equal(face, before)


@pytest.mark.parametrize("seed", range(4))
def test_degrade_output_range_shape_and_8bit(face: np.ndarray, seed: int) -> None:
    cfg = DegradationConfig(rgb_shift_prob=0.5, color_jitter_prob=0.5)
    out = degrade(face, cfg, np.random.default_rng(seed))
    assert out.shape == face.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    levels = out * 255.0
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)


def test_gaussian_kernel_normalised_and_symmetric() -> None:
    iso = gaussian_kernel(41, 3.0, 3.0, 0.0)
    assert iso.shape == (41, 41)
    assert iso.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(iso, iso.T, atol=1e-15)
    np.testing.assert_allclose(iso, iso[::-1, :], atol=1e-15)
    np.testing.assert_allclose(iso, iso[:, ::-1], atol=1e-15)
    assert iso.argmax() == 20 * 41 + 20
    aniso = gaussian_kernel(41, 6.0, 1.0, 0.7)
    assert aniso.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(aniso, aniso[::-1, ::-1], atol=1e-15)  # point symmetric
    assert not np.allclose(aniso, aniso.T)
    # Rotating the axes by 90° swaps the two sigmas.
    np.testing.assert_allclose(gaussian_kernel(41, 6.0, 1.0, np.pi / 2), gaussian_kernel(41, 1.0, 6.0, 0.0),
                               atol=1e-12)


def test_gaussian_kernel_variance_matches_sigma() -> None:
    k = gaussian_kernel(41, 4.0, 2.0, 0.0)
    axis = np.arange(-20, 21)
    var_x = (k.sum(axis=0) * axis**2).sum()
    var_y = (k.sum(axis=1) * axis**2).sum()
    assert var_x == pytest.approx(16.0, rel=1e-3)
    assert var_y == pytest.approx(4.0, rel=1e-3)


def test_random_kernel_iso_and_aniso() -> None:
    rng = np.random.default_rng(0)
    iso = random_kernel(rng, (1.0, 15.0), iso_prob=1.0)
    np.testing.assert_allclose(iso, iso.T, atol=1e-15)
    assert iso.sum() == pytest.approx(1.0)
    anisos = [random_kernel(rng, (1.0, 15.0), iso_prob=0.0) for _ in range(5)]
    assert any(not np.allclose(k, k.T, atol=1e-6) for k in anisos)


def test_blur_lowers_high_frequency_energy_monotonically(face: np.ndarray) -> None:
    energies = [_laplacian_variance(face)]
    for sigma in (0.5, 1.0, 2.0, 4.0, 8.0):
        energies.append(_laplacian_variance(blur(face, gaussian_kernel(41, sigma, sigma, 0.0))))
    assert all(a > b for a, b in zip(energies, energies[1:], strict=False)), energies
    assert energies[-1] < 0.01 * energies[0]


def test_blur_preserves_constant_image() -> None:
    grey = np.full((32, 32, 3), 0.4, np.float32)
    out = blur(grey, gaussian_kernel(41, 5.0, 2.0, 1.0))
    np.testing.assert_allclose(out, grey, atol=1e-6)


@pytest.mark.parametrize("r", [1.0, 3.7, 4.0, 12.0, 30.0])
def test_downsample_size(r: float) -> None:
    img = np.zeros((512, 512, 3), np.float32)
    out = downsample(img, r)
    assert out.shape == (int(512 // r), int(512 // r), 3)
    assert resize_back(out, 512, 512).shape == (512, 512, 3)


def test_jpeg_lower_quality_larger_error(face: np.ndarray) -> None:
    err = {q: float(np.abs(jpeg(face, q) - face).mean()) for q in (30, 90)}
    assert err[30] > err[90] > 0.0
    out = jpeg(face, 50)
    assert out.shape == face.shape and out.dtype == np.float32


@pytest.mark.parametrize("sigma255", [5.0, 20.0])
def test_noise_sigma_recovered(sigma255: float) -> None:
    grey = np.full((256, 256, 3), 0.5, np.float32)
    noisy = add_gaussian_noise(grey, sigma255 / 255.0, np.random.default_rng(3))
    measured = float((noisy - grey).std()) * 255.0
    assert measured == pytest.approx(sigma255, rel=0.05)
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0


def test_noise_is_clipped() -> None:
    white = np.ones((16, 16, 3), np.float32)
    noisy = add_gaussian_noise(white, 0.5, np.random.default_rng(0))
    assert noisy.max() <= 1.0 and noisy.min() >= 0.0 and noisy.min() < 1.0


def test_grey_prob_one_gives_equal_channels(face: np.ndarray) -> None:
    cfg = DegradationConfig(gray_prob=1.0, color_jitter_prob=1.0, rgb_shift_prob=1.0)
    out = degrade(face, cfg, np.random.default_rng(1))
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 1])
    np.testing.assert_array_equal(out[:, :, 1], out[:, :, 2])


def test_to_grey_weights() -> None:
    img = np.zeros((2, 2, 3), np.float32)
    img[..., 0] = 1.0
    assert to_grey(img)[0, 0, 0] == pytest.approx(0.299, abs=1e-3)
    assert to_grey(img).shape == (2, 2, 3)


def test_rgb_shift_is_one_offset_per_channel(face: np.ndarray) -> None:
    grey = np.full((8, 8, 3), 0.5, np.float32)
    out = rgb_shift(grey, np.random.default_rng(0), 20 / 255)
    offsets = out - grey
    assert np.ptp(offsets.reshape(-1, 3), axis=0).max() < 1e-7
    assert np.abs(offsets).max() <= 20 / 255 + 1e-7


def test_color_jitter_range_and_identity(face: np.ndarray) -> None:
    out = color_jitter(face, np.random.default_rng(0))
    assert out.shape == face.shape and out.min() >= 0.0 and out.max() <= 1.0
    assert not np.allclose(out, face)
    # Degenerate ranges at the identity factors leave the image unchanged.
    same = color_jitter(face, np.random.default_rng(0), (1.0, 1.0), (1.0, 1.0), (1.0, 1.0), (0.0, 0.0))
    np.testing.assert_allclose(same, face, atol=1e-5)


def test_color_jitter_brightness_scales() -> None:
    grey = np.full((4, 4, 3), 0.4, np.float32)
    out = color_jitter(grey, np.random.default_rng(0), (0.5, 0.5), (1.0, 1.0), (1.0, 1.0), (0.0, 0.0))
    np.testing.assert_allclose(out, 0.2, atol=1e-6)


def test_quantize_8bit() -> None:
    x = np.array([[[-0.1, 0.5, 1.2]]], np.float32)
    np.testing.assert_allclose(quantize_8bit(x), [[[0.0, 128 / 255, 1.0]]], atol=1e-7)


def test_config_rejects_bad_ranges() -> None:
    from codeformer.config import ConfigError

    with pytest.raises(ConfigError, match="blur_sigma"):
        DegradationConfig(blur_sigma=(5.0, 1.0))
    with pytest.raises(ConfigError, match="downsample_range"):
        DegradationConfig(downsample_range=(0.5, 2.0))


def test_color_jitter_hue_rotates_red_to_green() -> None:
    red = np.zeros((2, 2, 3), np.float32)
    red[..., 0] = 1.0
    out = color_jitter(red, np.random.default_rng(0), (1.0, 1.0), (1.0, 1.0), (1.0, 1.0), (1 / 3, 1 / 3))
    np.testing.assert_allclose(out[0, 0], [0.0, 1.0, 0.0], atol=1e-5)


def test_config_yaml_round_trip(tmp_path: Path) -> None:
    from codeformer.config import load_yaml, save_yaml

    cfg = DegradationConfig(blur_sigma=(0.1, 10.0), gray_prob=0.01, color_jitter_prob=0.3)
    save_yaml(cfg, tmp_path / "deg.yaml")
    assert load_yaml(DegradationConfig, tmp_path / "deg.yaml") == cfg


# ------------------------------------------------------------------ colorization and inpainting presets (issue 16)
def test_variant_presets_match_the_official_configs() -> None:
    colour, inpaint = DEGRADATION_PRESETS["colorization"], DEGRADATION_PRESETS["inpainting"]
    # CodeFormer_colorization.yml: the "large" chain plus colour jitter 0.3 (shift 20), torch jitter 0.3, grey 0.01
    assert (colour.blur_sigma, colour.downsample_range, colour.noise_range, colour.jpeg_range) == (
        LARGE.blur_sigma, LARGE.downsample_range, LARGE.noise_range, LARGE.jpeg_range)
    assert (colour.rgb_shift_prob, colour.rgb_shift, colour.color_jitter_prob, colour.gray_prob) == (
        0.3, 20.0, 0.3, 0.01)
    assert (colour.brightness, colour.contrast, colour.saturation, colour.hue) == (
        (0.5, 1.5), (0.5, 1.5), (0.0, 1.5), (-0.1, 0.1))
    assert colour.corrupt and not colour.brush_strokes
    # CodeFormer_inpainting.yml: use_corrupt false, gen_inpaint_mask true; brush_stroke_mask's training values
    assert not inpaint.corrupt and inpaint.brush_strokes
    assert (inpaint.brush_count, inpaint.brush_vertices, inpaint.brush_width) == ((1, 3), (8, 27), (30.0, 70.0))
    assert inpaint.color_jitter_prob == inpaint.rgb_shift_prob == inpaint.gray_prob == 0.0


def test_brush_stroke_mask_is_seeded_and_within_the_official_ranges() -> None:
    a = brush_stroke_mask(512, 512, np.random.default_rng(3))
    assert a.dtype == bool and a.shape == (512, 512)
    np.testing.assert_array_equal(a, brush_stroke_mask(512, 512, np.random.default_rng(3)))
    assert not np.array_equal(a, brush_stroke_mask(512, 512, np.random.default_rng(4)))
    fractions = [brush_stroke_mask(512, 512, np.random.default_rng(s)).mean() for s in range(40)]
    assert 0.005 < min(fractions) and max(fractions) < 0.8 and 0.1 < float(np.mean(fractions)) < 0.4
    # the width range scales the strokes' area (same seeds, so the same polylines): twice the width, about twice
    # the area (a bit less: overlaps and round caps)
    thin = np.mean([brush_stroke_mask(512, 512, np.random.default_rng(s), stroke_width=(30.0, 30.0)).mean()
                    for s in range(10)])
    thick = np.mean([brush_stroke_mask(512, 512, np.random.default_rng(s), stroke_width=(60.0, 60.0)).mean()
                     for s in range(10)])
    assert 1.4 < thick / thin < 2.2, thick / thin
    small = brush_stroke_mask(32, 32, np.random.default_rng(0), count=(1, 1), stroke_width=(50.0, 50.0))
    assert 0 < small.mean() < 0.9  # widths scale with the size: 3 px at 32


def test_paint_white_and_the_inpainting_degradation(face: np.ndarray) -> None:
    mask = np.zeros(face.shape[:2], bool)
    mask[10:20, 30:90] = True
    painted = paint_white(face, mask)
    assert np.all(painted[mask] == 1.0) and np.array_equal(painted[~mask], face[~mask])
    before = face.copy()
    out = degrade(face, DEGRADATION_PRESETS["inpainting"], np.random.default_rng(5))
    np.testing.assert_array_equal(face, before)
    hole = np.all(out == 1.0, axis=2)
    assert 0.005 < hole.mean() < 0.8
    # no other degradation: outside the strokes the face is only rounded to 8 bits
    np.testing.assert_array_equal(out[~hole], quantize_8bit(face)[~hole])
    np.testing.assert_array_equal(out, degrade(face, DEGRADATION_PRESETS["inpainting"], np.random.default_rng(5)))


def test_colorization_degradation_shifts_colours_and_sometimes_greys(face: np.ndarray) -> None:
    cfg = DEGRADATION_PRESETS["colorization"]
    outs = [degrade(face, cfg, np.random.default_rng(s)) for s in range(12)]
    np.testing.assert_array_equal(outs[0], degrade(face, cfg, np.random.default_rng(0)))
    plain = [degrade(face, LARGE, np.random.default_rng(s)) for s in range(12)]
    # same draws up to the colour steps: some outputs differ only by the colour jitter
    assert any(not np.array_equal(a, b) for a, b in zip(outs, plain, strict=True))
    grey = DegradationConfig(**{**cfg.__dict__, "gray_prob": 1.0, "color_jitter_prob": 0.0})
    g = degrade(face, grey, np.random.default_rng(0))
    assert np.array_equal(g[:, :, 0], g[:, :, 1]) and np.array_equal(g[:, :, 1], g[:, :, 2])
