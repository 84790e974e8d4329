"""Face detection on the real sample photos, a composed group photo, grey and blank images; filters; selection."""

from __future__ import annotations

import numpy as np
import pytest

from codeformer.dlib_models import find_dlib_model, landmarks68_to_5
from codeformer.face.align import TEMPLATE_512
from codeformer.face.detection import (
    DlibDetector,
    Face,
    filter_faces,
    hog_upsample_for,
    landmarks_plausible,
    resize_short_side,
    select_faces,
)
from tests.face_helpers import ASTRONAUT, GRACE, group_photo, load_rgb


@pytest.fixture(scope="module")
def detector() -> DlibDetector:
    return DlibDetector()


def assert_plausible_face(face: Face) -> None:
    x0, y0, x1, y1 = face.box
    pts = face.landmarks5
    assert np.all((pts[:, 0] > x0) & (pts[:, 0] < x1) & (pts[:, 1] > y0) & (pts[:, 1] < y1)), (face.box, pts)
    left_eye, right_eye, nose, mouth_l, mouth_r = pts
    assert left_eye[0] < right_eye[0] and mouth_l[0] < mouth_r[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_l[1], mouth_r[1])


@pytest.mark.parametrize("path", [ASTRONAUT, GRACE], ids=lambda p: p.name)
def test_one_face_on_each_sample_photo(detector: DlibDetector, path) -> None:
    faces = detector.detect(load_rgb(path))
    assert len(faces) == 1
    assert_plausible_face(faces[0])
    assert faces[0].score > 0 and faces[0].eye_distance > 20


def test_every_face_of_a_composed_group_photo(detector: DlibDetector) -> None:
    faces = detector.detect(group_photo(), min_face=48)
    # Face centres as placed by group_photo(): astronaut, Grace Hopper, small mirrored astronaut, small Grace.
    expected = [(221, 126), (790, 280), (1255, 394), (1585, 150)]
    assert len(faces) == len(expected)
    centres = [((f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2) for f in faces]
    for ex in expected:
        assert min(np.hypot(cx - ex[0], cy - ex[1]) for cx, cy in centres) < 40, (ex, centres)
    for face in faces:
        assert_plausible_face(face)


def test_grey_image(detector: DlibDetector) -> None:
    rgb = load_rgb(ASTRONAUT)
    luma = np.rint(rgb @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    for grey in (luma, np.repeat(luma[:, :, None], 3, axis=2)):
        faces = detector.detect(grey)
        assert len(faces) == 1
        assert_plausible_face(faces[0])


def test_blank_and_noise_images_have_no_face(detector: DlibDetector) -> None:
    assert detector.detect(np.zeros((480, 640, 3), np.uint8)) == []
    assert detector.detect(np.full((300, 300, 3), 200, np.uint8)) == []
    noise = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    assert detector.detect(noise) == []


def test_detection_runs_on_a_short_side_640_copy_and_maps_back(detector: DlibDetector) -> None:
    rgb = load_rgb(ASTRONAUT)
    big = np.ascontiguousarray(np.repeat(np.repeat(rgb, 2, axis=0), 2, axis=1))  # 1024×1024: detected at 640
    small_face, big_face = detector.detect(rgb)[0], detector.detect(big)[0]
    assert np.allclose(np.array(big_face.box) / 2, small_face.box, atol=8)
    assert np.allclose((big_face.landmarks5 - 0.5) / 2, small_face.landmarks5, atol=3)


def test_resize_short_side() -> None:
    img = np.zeros((300, 900, 3), np.uint8)
    out, scale = resize_short_side(img, 640)
    assert out.shape == (640, 1920, 3) and scale == pytest.approx(640 / 300)
    out, scale = resize_short_side(np.zeros((1280, 1000, 3), np.uint8), 640)
    assert out.shape == (819, 640, 3) and scale == pytest.approx(0.64)
    out, scale = resize_short_side(np.zeros((10, 2000, 3), np.uint8), 640, max_long_side=4096)
    assert out.shape == (20, 4096, 3) and scale == pytest.approx(4096 / 2000)


def test_tiny_and_very_wide_images(detector: DlibDetector) -> None:
    assert detector.detect(np.zeros((3, 3, 3), np.uint8)) == []
    assert detector.detect(np.zeros((20, 5000, 3), np.uint8)) == []


def test_hog_upsample_grows_for_small_faces() -> None:
    assert hog_upsample_for(100) == 0
    assert hog_upsample_for(50) == 1
    assert hog_upsample_for(25) == 2
    assert hog_upsample_for(1) == 2  # capped


def test_landmarks68_to_5_order() -> None:
    pts = np.zeros((68, 2))
    pts[36:42] = (10, 20)
    pts[42:48] = (30, 20)
    pts[30] = (20, 30)
    pts[48] = (12, 40)
    pts[54] = (28, 40)
    assert np.array_equal(landmarks68_to_5(pts), [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]])


def test_landmark_sanity_rejects_broken_faces() -> None:
    box = (150.0, 150.0, 370.0, 420.0)
    good = TEMPLATE_512.copy()
    assert landmarks_plausible(good, box)
    assert not landmarks_plausible(good[[1, 0, 2, 3, 4]], box)  # eyes swapped
    upside_down = good.copy()
    upside_down[:, 1] = 600 - upside_down[:, 1]
    assert not landmarks_plausible(upside_down, box)
    nose_low = good.copy()
    nose_low[2, 1] = 420
    assert not landmarks_plausible(nose_low, box)
    assert not landmarks_plausible(good + 1000, box)  # far outside the box


def _face(box, landmarks=TEMPLATE_512, score=1.0) -> Face:
    return Face(box=box, score=score, landmarks5=np.asarray(landmarks, float))


def test_filters_and_selection() -> None:
    tiny = _face((0, 0, 4, 4), TEMPLATE_512 / 100)
    big = _face((150, 150, 370, 420))
    right = _face((650, 150, 870, 420), TEMPLATE_512 + (500, 0))
    smaller = _face((1000, 0, 1100, 100), (TEMPLATE_512 - 150) / 2.5 + 1000)
    assert filter_faces([tiny, big]) == [big]  # eye distance < 5 px
    assert filter_faces([big, smaller], min_face=150) == [big]
    faces = [smaller, big, right]
    assert select_faces(faces, "all", (600, 1200)) == faces
    assert select_faces(faces, "largest", (600, 1200)) in ([big], [right])
    assert select_faces(faces, "center", (600, 1200)) == [right]
    with pytest.raises(ValueError, match="largest"):
        select_faces(faces, "biggest", (600, 1200))


def test_model_file_is_found_without_importing_the_package() -> None:
    assert find_dlib_model().stat().st_size > 50_000_000
