"""Alignment and paste-back: template round trip, identity-restorer geometry, upscale, purity, vectorised ≡ naive."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from codeformer.data.images import read_image, rgb_float
from codeformer.face.align import (
    TEMPLATE_512,
    crop_side_in_image,
    estimate_affine,
    invert_affine,
    scale_affine,
    similarity_least_squares,
    template,
    transform_points,
    warp_face,
)
from codeformer.face.detection import DlibDetector
from codeformer.face.paste import face_roi, paste_back, soft_square_mask
from codeformer.face.pipeline import RestoreOptions, Restorer
from tests.face_helpers import ASTRONAUT, GRACE, IdentityRestorer, psnr


def similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), tx], [scale * math.sin(a), scale * math.cos(a), ty]])


@pytest.fixture(scope="module")
def detector() -> DlibDetector:
    return DlibDetector()


@pytest.mark.parametrize("angle,scale", [(0, 0.3), (15, 0.5), (-25, 1.7)])
def test_template_round_trip(angle: float, scale: float) -> None:
    to_image = similarity(angle, scale, 140.0, 90.0)
    landmarks = transform_points(TEMPLATE_512, to_image)
    m = estimate_affine(landmarks)
    assert np.abs(transform_points(landmarks, m) - TEMPLATE_512).max() < 1.0
    assert crop_side_in_image(m) == pytest.approx(512 * scale, rel=1e-3)
    back = transform_points(TEMPLATE_512, invert_affine(m))
    assert np.abs(back - landmarks).max() < 1.0


def test_least_squares_fallback_matches_a_known_similarity() -> None:
    to_image = similarity(10, 0.4, 30.0, -12.0)
    landmarks = transform_points(TEMPLATE_512, to_image)
    fit = similarity_least_squares(landmarks, TEMPLATE_512)
    assert np.allclose(fit, invert_affine(to_image), atol=1e-9)
    assert np.allclose(template(256), TEMPLATE_512 / 2)


def test_scale_affine_maps_pixel_centres_like_resize() -> None:
    m = similarity(0, 1.0, 0.0, 0.0)
    assert np.allclose(transform_points([[0, 0], [9, 9]], scale_affine(m, 2)), [[0.5, 0.5], [18.5, 18.5]])


def test_warp_face_border_is_the_official_grey() -> None:
    img = np.zeros((64, 64, 3), np.float32)
    crop = warp_face(img, similarity(0, 1.0, 400.0, 400.0))
    assert crop.shape == (512, 512, 3) and crop.dtype == np.float32
    assert np.allclose(crop[0, 0], np.array([132, 133, 135]) / 255)
    assert np.array_equal(warp_face(np.zeros((8, 8, 3), np.uint8), similarity(0, 1, 100, 100), 16)[0, 0],
                          [132, 133, 135])


@pytest.mark.parametrize("path", [ASTRONAUT, GRACE], ids=lambda p: p.name)
def test_identity_restorer_returns_the_input(detector: DlibDetector, path) -> None:
    pic = read_image(path)
    before = pic.pixels.copy()
    result = Restorer(IdentityRestorer(), detector).restore(pic)
    assert np.array_equal(pic.pixels, before)  # input untouched
    out = result.image.pixels
    assert out.shape == before.shape and out.dtype == before.dtype
    assert len(result.faces) == 1
    x0, y0, x1, y1 = (int(v) for v in result.faces[0].box)
    assert psnr(out[y0:y1, x0:x1], before[y0:y1, x0:x1]) >= 40.0
    # Far from the face (outside the bounding box of its warped 512 square) the pixels are the input's, exactly.
    roi = face_roi(invert_affine(result.faces[0].affine), 512, out.shape[:2])
    far = np.ones(out.shape[:2], bool)
    far[roi[1]:roi[3], roi[0]:roi[2]] = False
    assert far.sum() > 0.3 * far.size
    assert np.array_equal(out[far], before[far])


def test_upscale_doubles_the_size(detector: DlibDetector) -> None:
    pic = read_image(GRACE)
    result = Restorer(IdentityRestorer(), detector).restore(pic, RestoreOptions(upscale=2))
    h, w = pic.pixels.shape[:2]
    assert result.image.pixels.shape == (2 * h, 2 * w, 3)
    reference = cv2.resize(pic.pixels, (2 * w, 2 * h), interpolation=cv2.INTER_LANCZOS4)
    assert psnr(result.image.pixels, reference) > 40.0
    array_result = Restorer(IdentityRestorer(), detector).restore(rgb_float(pic), RestoreOptions(upscale=2))
    assert array_result.image.shape == (2 * h, 2 * w, 3) and array_result.image.dtype == np.float32


def test_soft_mask_is_feathered() -> None:
    ones = np.zeros((300, 300), np.float32)
    ones[50:250, 50:250] = 1
    mask = soft_square_mask(ones, 1)
    assert mask.min() >= 0 and mask.max() <= 1
    assert mask[150, 150] == pytest.approx(1.0)
    # Nothing outside the square (the even erosion kernel may shift the feather by one pixel), and nearly
    # nothing on its border.
    assert not mask[:50].any() and not mask[:, 251:].any()
    assert mask[51, 150] < 0.01 and mask[150, 249] < 0.01
    profile = mask[150, 50:151]
    assert np.all(np.diff(profile) >= -1e-6)  # rises smoothly from the edge to the centre


def naive_paste(background, faces, inverse_affines, upscale):
    """Reference: whole-frame warps, one face at a time, written as plainly as possible."""
    h, w = background.shape[:2]
    size = (w * upscale, h * upscale)
    out = background.copy() if upscale == 1 else np.clip(
        cv2.resize(background, size, interpolation=cv2.INTER_LANCZOS4), 0, 1)
    for face, inverse in zip(faces, inverse_affines, strict=True):
        m = scale_affine(inverse, upscale)
        warped = np.clip(cv2.warpAffine(face, m, size, flags=cv2.INTER_CUBIC), 0, 1)
        mask = soft_square_mask(cv2.warpAffine(np.ones(face.shape[:2], np.float32), m, size), upscale)
        out = mask[:, :, None] * warped + (1 - mask[:, :, None]) * out
    return out


@pytest.mark.parametrize("upscale", [1, 2])
def test_paste_back_matches_the_whole_frame_reference(upscale: int) -> None:
    rng = np.random.default_rng(0)
    background = rng.random((200, 260, 3), dtype=np.float32)
    faces = [rng.random((512, 512, 3), dtype=np.float32) for _ in range(3)]
    # Three faces: one inside, one overlapping it, one hanging over the image edge.
    inverses = [similarity(5, 0.2, 40, 30), similarity(-10, 0.25, 90, 60), similarity(0, 0.3, 190, 120)]
    before = [background.copy()] + [f.copy() for f in faces]
    out = paste_back(background, faces, inverses, upscale)
    assert np.array_equal(background, before[0])
    assert all(np.array_equal(a, b) for a, b in zip(faces, before[1:], strict=True))
    reference = naive_paste(background, faces, inverses, upscale)
    assert out.shape == reference.shape and out.dtype == np.float32
    assert np.abs(out - reference).max() < 1e-3  # warpAffine's fixed-point positions may round differently


def test_paste_back_grey_and_parsing_masks() -> None:
    grey = np.full((100, 100), 0.25, np.float32)
    face = np.full((512, 512), 0.75, np.float32)
    inverse = similarity(0, 0.1, 25, 25)
    out = paste_back(grey, [face], [inverse])
    assert out.shape == (100, 100) and out[50, 50] == pytest.approx(0.75) and out[2, 2] == 0.25
    zero_mask = np.zeros((512, 512), np.float32)
    assert np.array_equal(paste_back(grey, [face], [inverse], masks=[zero_mask]), grey)
    with pytest.raises(ValueError, match="inverse"):
        paste_back(grey, [face], [])
