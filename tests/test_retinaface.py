"""RetinaFace-R50 parity with the official facelib code: the kit's filled weights, saved in the released layout
(bare dict, `module.` names), loaded through our loader, must reproduce ../shared/parity/pipeline/
reference_pipeline.npz within its README's tolerances (section (a))."""

from __future__ import annotations

import hashlib
import json
import math

import cv2
import numpy as np
import pytest
import torch

from codeformer import weights
from codeformer.checkpoint import CheckpointError
from codeformer.face import retinaface as rf
from codeformer.face.detection import Face
from codeformer.face.retinaface import (
    RetinaFaceDetector,
    decode_boxes,
    decode_landmarks,
    load_retinaface,
    nms,
    prior_boxes,
    retinaface_from_state_dict,
    select_detections,
)
from codeformer.models.retinaface import RetinaFace
from codeformer.weights import WeightsError

from .conftest import PARITY, _fill_module
from .face_helpers import ASTRONAUT

KIT = PARITY / "pipeline"
KEYS = KIT / "keys_retinaface_r50.json"
BOX_TOL = 2e-3  # px
SCORE_TOL = 1e-5


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(KIT / "reference_pipeline.npz") as z:
        return {k: z[k] for k in z.files if k.startswith("rf_") or k == "meta_json"}


@pytest.fixture(scope="module")
def meta(ref) -> dict:
    return json.loads(str(ref["meta_json"]))


@pytest.fixture(scope="module")
def filled() -> dict[str, torch.Tensor]:
    return _fill_module().fill_state_dict(str(KEYS))  # the seed comes from the keys json


@pytest.fixture(scope="module")
def released_file(tmp_path_factory, filled):
    """The filled weights in the released layout: a bare state dict with every name prefixed by `module.`."""
    path = tmp_path_factory.mktemp("retinaface") / "detection_Resnet50_Final.pth"
    torch.save({"module." + k: v for k, v in filled.items()}, path)
    return path


@pytest.fixture(scope="module")
def detector(released_file) -> RetinaFaceDetector:
    return load_retinaface(released_file)


@pytest.fixture(scope="module")
def astronaut_bgr(meta) -> np.ndarray:
    bgr = cv2.imread(str(ASTRONAUT), cv2.IMREAD_COLOR)
    assert hashlib.sha256(bgr.tobytes()).hexdigest() == meta["astronaut_bgr_sha256"]
    return bgr


def test_filled_weights_are_the_kits(filled, meta):
    assert _fill_module().state_dict_sha256(filled) == meta["state_dict_sha256"]["retinaface_r50"]


def test_module_names_and_order_are_the_released_ones(filled):
    keys = [k for k, _, _ in json.loads(KEYS.read_text())["keys"]]
    assert list(RetinaFace().state_dict()) == keys == list(filled)


def test_released_layout_loads_strictly(released_file, detector, filled):
    raw = torch.load(released_file, map_location="cpu", weights_only=True)
    assert all(k.startswith("module.") for k in raw)
    for name, value in detector.model.state_dict().items():
        assert torch.equal(value, filled[name]), name
    # a file without the BatchNorm counters (what strict loading of the released file tolerates) loads too
    no_counters = {k: v for k, v in filled.items() if not k.endswith("num_batches_tracked")}
    assert len(no_counters) < len(filled)
    model = retinaface_from_state_dict(no_counters, "no_counters.pth")
    for name, value in model.state_dict().items():
        assert torch.equal(value, filled[name]), name
    assert not model.training


@pytest.mark.parametrize("case", ["a", "b"])
def test_priors(ref, case):
    h, w = ref[f"rf_{case}_input_bgr_u8"].shape[:2]
    assert np.array_equal(prior_boxes(h, w), ref[f"rf_{case}_priors"])


def test_decode_all_anchors(ref):
    h, w = ref["rf_a_input_bgr_u8"].shape[:2]
    priors = torch.from_numpy(ref["rf_a_priors"])
    boxes = decode_boxes(torch.from_numpy(ref["rf_a_loc"][0]), priors, h, w).numpy()
    points = decode_landmarks(torch.from_numpy(ref["rf_a_landms"][0]), priors, h, w).numpy()
    assert np.abs(boxes - ref["rf_a_boxes_all"]).max() <= BOX_TOL
    assert np.abs(points - ref["rf_a_landms_all"]).max() <= BOX_TOL


def test_selection_on_the_official_anchors(ref):
    """Threshold, order and NMS alone, fed the official decoded anchors: the same rows from the same anchors."""
    scores = ref["rf_a_conf"][0, :, 1]
    dets = select_detections(ref["rf_a_boxes_all"], scores, ref["rf_a_landms_all"], 0.8, 0.4)
    index = ref["rf_a_dets_anchor_index"]
    assert np.array_equal(dets[:, :4], ref["rf_a_boxes_all"][index])
    assert np.array_equal(dets[:, 4], scores[index])
    assert np.abs(dets - ref["rf_a_dets"]).max() <= BOX_TOL


@pytest.mark.parametrize("case", ["a", "b"])
def test_forward_and_detections(detector, ref, case):
    x = ref[f"rf_{case}_input_bgr_u8"]
    loc, conf, landms = detector.forward_raw(x)
    assert loc.shape == ref[f"rf_{case}_loc"].shape and conf.shape == ref[f"rf_{case}_conf"].shape
    assert np.abs(loc - ref[f"rf_{case}_loc"]).max() <= 1e-4
    assert np.abs(landms - ref[f"rf_{case}_landms"]).max() <= 1e-4
    assert np.abs(conf - ref[f"rf_{case}_conf"]).max() <= 1e-5
    dets = detector.detect_raw(x, conf_threshold=0.8, nms_threshold=0.4)
    want = ref[f"rf_{case}_dets"]
    assert dets.dtype == np.float32 and dets.shape == want.shape
    assert np.abs(dets[:, :4] - want[:, :4]).max() <= BOX_TOL
    assert np.abs(dets[:, 5:] - want[:, 5:]).max() <= BOX_TOL
    assert np.abs(dets[:, 4] - want[:, 4]).max() <= SCORE_TOL
    assert np.all(np.diff(dets[:, 4]) < 0)


def test_official_helper_landmarks(detector, ref, astronaut_bgr):
    det_faces, landmarks = detector.official_landmarks_5(astronaut_bgr, resize=640, eye_dist_threshold=5)
    want = ref["rf_a_helper_det_faces"]
    assert det_faces.dtype == np.float32 and det_faces.shape == (len(want), 15)
    assert np.abs(det_faces[:, :4] - want[:, :4]).max() <= BOX_TOL
    # the official quirk: the score is divided by the resize scale (640 / 512)
    assert np.abs(det_faces[:, 4] - want[:, 4]).max() <= SCORE_TOL
    assert np.abs(det_faces[:, 4] * 1.25 - ref["rf_a_dets"][:, 4]).max() <= SCORE_TOL
    assert all(lm.shape == (5, 2) and lm.dtype == np.float32 for lm in landmarks)
    assert np.abs(np.stack(landmarks) - ref["rf_a_helper_landmarks5"]).max() <= BOX_TOL


def test_official_eye_distance_quirk(detector, ref, meta, astronaut_bgr):
    det_faces, landmarks = detector.official_landmarks_5(astronaut_bgr, resize=640, eye_dist_threshold=16.5)
    kept = ref["rf_a_helper_eyedist16p5_kept_rows"]
    assert np.abs(det_faces[:, :5] - ref["rf_a_helper_det_faces"][kept]).max() <= BOX_TOL
    assert np.abs(np.stack(landmarks) - ref["rf_a_helper_landmarks5"][kept]).max() <= BOX_TOL
    # a true eye distance would have kept other rows: the quirk is what decides here
    truly = meta["retinaface"]["cases"]["a"]["eye_dist_threshold_16.5"]["rows_a_true_eye_distance_would_keep"]
    assert list(kept) != truly


def test_official_only_center_face(detector, ref, astronaut_bgr):
    det_faces, landmarks = detector.official_landmarks_5(astronaut_bgr, resize=640, eye_dist_threshold=5,
                                                         only_center_face=True)
    assert det_faces.shape == (1, 15) and len(landmarks) == 1
    assert np.abs(det_faces[:, :5] - ref["rf_a_helper_center_det_face"]).max() <= BOX_TOL
    assert np.abs(landmarks[0] - ref["rf_a_helper_center_landmarks5"][0]).max() <= BOX_TOL


def test_detect_gives_faces_in_input_pixels(detector, ref, astronaut_bgr):
    """Our pipeline's entry: RGB in, Face records in the photo's pixels with the true probability as score and
    a correct eye distance. The 512 astronaut is detected at 640, so the rows are the official ones / 1.25."""
    faces = detector.detect(np.ascontiguousarray(astronaut_bgr[:, :, ::-1]))
    dets = ref["rf_a_dets"]
    true_eye = np.hypot(dets[:, 7] - dets[:, 5], dets[:, 8] - dets[:, 6]) / 1.25
    wanted = dets[true_eye >= 5.0]
    assert len(faces) == len(wanted) > 0
    for face, row in zip(faces, wanted, strict=True):
        assert isinstance(face, Face)
        assert np.abs(np.array(face.box) - row[:4] / 1.25).max() <= BOX_TOL
        assert abs(face.score - row[4]) <= SCORE_TOL
        assert face.landmarks5.shape == (5, 2)
        assert np.abs(face.landmarks5 - row[5:].reshape(5, 2) / 1.25).max() <= BOX_TOL
        assert face.eye_distance >= 5.0


def test_detect_drops_faces_with_close_eyes(detector, monkeypatch):
    """Rows whose true eye distance is under 5 px are dropped, whatever the official columns 6–9 say."""
    rows = np.zeros((2, 15), np.float32)
    rows[:, :5] = [10, 10, 110, 110, 0.9]
    rows[0, 5:] = [40, 50, 44, 50, 60, 100, 30, 200, 90, 200]  # eyes 4 px apart; columns 6–9 give norm ≈ 16
    rows[1, 5:] = [40, 50, 80, 50, 60, 70, 45, 90, 75, 90]
    monkeypatch.setattr(detector, "detect_raw", lambda bgr, *a, **k: rows.copy())
    faces = detector.detect(np.zeros((640, 640, 3), np.uint8))
    assert len(faces) == 1 and faces[0].eye_distance == pytest.approx(40.0)


def test_detect_feeds_bgr_and_accepts_grey_and_alpha(detector, monkeypatch):
    seen = []
    monkeypatch.setattr(detector, "detect_raw", lambda bgr, *a, **k: seen.append(bgr) or np.zeros((0, 15), np.float32))
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (640, 700, 4), dtype=np.uint8)
    assert detector.detect(rgba) == []
    assert np.array_equal(seen[-1], rgba[:, :, 2::-1])
    grey = rgba[:, :, 0].copy()
    assert detector.detect(grey) == []
    assert np.array_equal(seen[-1], np.repeat(grey[:, :, None], 3, axis=2))


def test_nms_rule():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 9.5], [0, 0, 10, 5], [5, 0, 15, 10], [100, 100, 101, 101]],
                     np.float32)
    scores = np.array([0.9, 0.9, 0.8, 0.7, 0.6], np.float32)
    # box 1 ties box 0 on score: the stable sort keeps box 0 first, and box 1 (IoU 0.95) goes. IoU(0, 2) is
    # exactly 0.5 and survives a 0.5 threshold (only "> threshold" is dropped); IoU(0, 3) = 1/3; IoU(2, 3) = 0.2.
    assert nms(boxes, scores, 0.5).tolist() == [0, 2, 3, 4]
    assert nms(boxes, scores, 0.4).tolist() == [0, 3, 4]
    assert nms(boxes, scores, 0.3).tolist() == [0, 4]
    # torchvision compares the float32 IoU with a double threshold: 40/100 is 0.4000000059 in float32, > 0.4
    pair = np.array([[0, 0, 10, 10], [0, 0, 10, 4]], np.float32)
    assert nms(pair, np.array([0.9, 0.8], np.float32), 0.4).tolist() == [0]
    assert nms(boxes[:0], scores[:0], 0.4).tolist() == []


def test_nothing_above_threshold(detector, ref):
    dets = detector.detect_raw(ref["rf_a_input_bgr_u8"][:64, :96].copy(), conf_threshold=0.999)
    assert dets.shape == (0, 15) and dets.dtype == np.float32


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32),
                                 np.zeros((0, 8, 3), np.uint8)])
def test_bad_images_are_refused(detector, bad):
    with pytest.raises(ValueError, match="RetinaFace needs"):
        detector.forward_raw(bad)


def test_weights_table_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEFORMER_HOME", str(tmp_path))
    entry = weights.get(rf.WEIGHTS_NAME)
    assert entry.url.endswith("/detection_Resnet50_Final.pth")
    assert weights.cache_path(rf.WEIGHTS_NAME) == tmp_path / "weights" / "detection_Resnet50_Final.pth"


def test_missing_file_offline_is_one_line_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEFORMER_HOME", str(tmp_path))
    monkeypatch.setenv("CODEFORMER_OFFLINE", "1")

    def no_model(*args, **kwargs):
        raise AssertionError("the network was built before the weights were found")

    monkeypatch.setattr(rf, "RetinaFace", no_model)
    with pytest.raises(WeightsError) as info:
        load_retinaface()
    message = str(info.value)
    assert "\n" not in message and "put it at" in message
    assert str(tmp_path / "weights" / "detection_Resnet50_Final.pth") in message
    with pytest.raises(WeightsError, match="does not exist"):
        load_retinaface(tmp_path / "nowhere.pth")


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def _one_line_error(path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_retinaface(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_wrong_files_are_refused_in_one_line(tmp_path, filled, capsys):
    wrong_shape = dict(filled)
    wrong_shape["ClassHead.0.conv1x1.weight"] = torch.zeros(6, 256, 1, 1)
    torch.save({"module." + k: v for k, v in wrong_shape.items()}, tmp_path / "shape.pth")
    assert "wrong shape (ClassHead.0.conv1x1.weight" in _one_line_error(tmp_path / "shape.pth")

    other = {k: v for k, v in filled.items() if not k.startswith("LandmarkHead.")}
    other["extra.weight"] = torch.zeros(1)
    torch.save(other, tmp_path / "other.pth")
    message = _one_line_error(tmp_path / "other.pth")
    assert "6 missing" in message and "1 unexpected (extra.weight)" in message

    torch.save({"module.body.conv1.weight": torch.zeros(1), "x": Payload()}, tmp_path / "evil.pth")
    assert "refused" in _one_line_error(tmp_path / "evil.pth")
    assert "this must never run" not in capsys.readouterr().out


def test_no_grad_and_eval(detector, ref):
    assert not detector.model.training
    assert all(p.dtype == torch.float32 for p in detector.model.parameters())
    small = ref["rf_b_input_bgr_u8"][:33, :65].copy()  # odd sizes: 5×9, 3×5 and 2×3 maps
    loc, conf, landms = detector.forward_raw(small)
    n = sum(2 * math.ceil(33 / s) * math.ceil(65 / s) for s in (8, 16, 32))
    assert loc.shape == (1, n, 4) and conf.shape == (1, n, 2) and landms.shape == (1, n, 10)
    assert np.allclose(conf.sum(-1), 1.0, atol=1e-6)
