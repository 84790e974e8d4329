"""The detection benchmark's scenes (seeded, ground truth trustworthy) and the default detector on a quick set of
them: recall, precision, landmark error, the badge photo, and the detector named in the per-face JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.detection import evaluate, match
from benchmarks.detection_scenes import SOURCES, badge_scene, load_sources, make_scenes, place_face
from codeformer.face.batch import sidecar
from codeformer.face.detection import DETECTORS, DlibDetector, HybridDetector, make_detector
from codeformer.face.pipeline import RestoreOptions, Restorer
from codeformer.face.report import report_face
from tests.face_helpers import ASTRONAUT, IdentityRestorer, load_rgb, picture_of

SMALL_CANVASES = ((800, 600), (1024, 768))


@pytest.fixture(scope="module")
def hybrid() -> HybridDetector:
    return HybridDetector()


def test_scenes_are_deterministic_for_a_seed() -> None:
    a, b = (make_scenes(3, seed=7, canvases=SMALL_CANVASES) for _ in range(2))
    c = make_scenes(3, seed=8, canvases=SMALL_CANVASES)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.rgb, y.rgb)
        assert [f.box for f in x.faces] == [f.box for f in y.faces]
        assert all(np.array_equal(f.landmarks5, g.landmarks5) for f, g in zip(x.faces, y.faces, strict=True))
    assert not all(x.rgb.shape == z.rgb.shape and np.array_equal(x.rgb, z.rgb) for x, z in zip(a, c, strict=True))


def test_ground_truth_constants_are_what_dlib_finds_on_the_clean_photos() -> None:
    detector = DlibDetector()
    for source, rgb in zip(SOURCES, load_sources(), strict=True):
        (face,) = detector.detect(rgb)
        assert np.allclose(face.landmarks5, source.landmarks5, atol=0.01), source.file
        assert np.allclose(face.box, source.box, atol=0.01), source.file


def test_ground_truth_follows_the_placement() -> None:
    """Points are placed as pixels are: HOG finds a face enlarged 1.5× where the ground truth says, and the
    ground truth of the same face turned 30° is the upright one turned 30° about the face centre."""
    rgb = load_sources()[0]
    size = 1.5 * (SOURCES[0].box[2] - SOURCES[0].box[0])
    upright_canvas, tilted_canvas = (np.full((700, 700, 3), 120, np.uint8) for _ in range(2))
    upright = place_face(upright_canvas, rgb, 0, (350.0, 350.0), size, 0.0, False, 0.0, "colour")
    tilted = place_face(tilted_canvas, rgb, 0, (350.0, 350.0), size, 30.0, False, 0.0, "colour")
    (face,) = DlibDetector().detect(upright_canvas)
    assert np.linalg.norm(face.landmarks5 - upright.landmarks5, axis=1).max() < 0.05 * upright.eye_distance
    t = np.radians(30.0)  # anticlockwise on screen (y down): x' = c·x + s·y, y' = −s·x + c·y about the centre
    turned = (upright.landmarks5 - 350.0) @ np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) + 350.0
    assert np.allclose(tilted.landmarks5, turned, atol=1e-6)


def test_default_detector_on_a_quick_scene_set(hybrid: HybridDetector) -> None:
    """Reduced targets of docs/detection.md on 8 small seeded scenes (19 faces, 6 heavily blurred, 5.4 MP): the
    default finds at least 80 % of the faces with at most one false box and a mean NME of at most 0.05, and more
    heavily blurred faces than HOG alone."""
    scenes = make_scenes(8, seed=4, face_free=0.0, canvases=SMALL_CANVASES)
    result = evaluate(hybrid, scenes, "hybrid")
    hog = evaluate(DlibDetector(), scenes, "hog")
    assert result.groups["all"][1] == 19 and result.groups["heavy blur"][1] == 6
    assert result.recall() >= 0.80
    assert result.false_boxes <= 1
    assert result.mean_nme() <= 0.05
    assert result.groups["heavy blur"][0] > hog.groups["heavy blur"][0]
    assert result.groups["all"][0] >= hog.groups["all"][0]


def test_badge_photo_has_exactly_its_two_faces(hybrid: HybridDetector) -> None:
    scene = badge_scene()
    faces = hybrid.detect(scene.rgb, min_face=32)
    pairs, false = match(faces, scene.faces)
    assert len(pairs) == 2 and false == []
    for face, truth in pairs:
        assert np.linalg.norm(face.landmarks5 - truth.landmarks5, axis=1).mean() < 0.05 * truth.eye_distance


def test_make_detector_names() -> None:
    assert DETECTORS[0] == "hybrid"
    assert isinstance(make_detector(), HybridDetector)
    assert isinstance(make_detector("hog"), DlibDetector)
    with pytest.raises(ValueError, match="unknown detector 'nope'"):
        make_detector("nope")


def test_detector_and_score_in_the_json_and_report(hybrid: HybridDetector) -> None:
    pic = picture_of(load_rgb(ASTRONAUT))
    opts = RestoreOptions()
    result = Restorer(IdentityRestorer(), hybrid).restore(pic, opts)
    (face,) = result.faces
    assert face.detector in ("hog", "hog+cnn") and face.score > 0
    record = json.loads(json.dumps(sidecar("in.png", "out.png", pic, result, opts, [])))
    assert record["faces"][0]["detector"] == face.detector
    assert record["faces"][0]["score"] == round(face.score, 4)
    report = report_face(face)
    assert report["detector"] == face.detector and report["score"] == round(face.score, 4)
    aligned = Restorer(IdentityRestorer(), hybrid).restore(pic, RestoreOptions(aligned=True))
    assert aligned.faces[0].detector == "aligned"


def test_restore_and_serve_take_a_detector_choice() -> None:
    from codeformer.cli import build_parser

    parser = build_parser()
    from codeformer.cli import _detector
    from codeformer.face.detection import HybridDetector

    default = parser.parse_args(["restore", "in.png", "-o", "out"]).detector
    assert default is None  # the profile decides: hybrid by default, retinaface for --profile official
    assert isinstance(_detector(default), HybridDetector)
    assert parser.parse_args(["restore", "in.png", "-o", "out", "--detector", "retinaface"]).detector == "retinaface"
    assert parser.parse_args(["restore", "in.png", "-o", "out", "--detector", "cnn"]).detector == "cnn"
    assert parser.parse_args(["serve", "--detector", "hog"]).detector == "hog"
    with pytest.raises(SystemExit):
        parser.parse_args(["restore", "in.png", "-o", "out", "--detector", "nope"])
