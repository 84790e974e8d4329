"""Tracks and landmark smoothing: stable ids, gap filling, One-Euro noise reduction and lag, state round trip."""

from __future__ import annotations

import numpy as np
import pytest

from codeformer.face.align import TEMPLATE_512
from codeformer.face.detection import Face
from codeformer.face.tracking import (
    OneEuroParams,
    Tracker,
    TrackerParams,
    box_iou,
    one_euro_step,
)

FPS = 25.0


def face_at(x: float, y: float, side: float = 100.0, noise: np.ndarray | None = None) -> Face:
    """A face whose box is at (x, y) with the template landmarks inside (plus optional (5, 2) noise)."""
    points = TEMPLATE_512 / 512 * side + np.array([x, y])
    if noise is not None:
        points = points + noise
    return Face((x, y, x + side, y + side), 1.0, points)


def pan(n: int, speed: float = 3.0, noise: float = 0.0, seed: int = 0) -> tuple[list[Face], np.ndarray]:
    """A face panning right at `speed` px a frame, landmarks perturbed by N(0, noise²) px; (faces, truth)."""
    rng = np.random.default_rng(seed)
    faces, truth = [], []
    for i in range(n):
        faces.append(face_at(50 + speed * i, 80, noise=rng.normal(0, noise, (5, 2))))
        truth.append(face_at(50 + speed * i, 80).landmarks5)
    return faces, np.stack(truth)


def run(tracker: Tracker, frames: list[list[Face]]) -> list:
    return [tracker.update(faces, i / FPS) for i, faces in enumerate(frames)]


def test_box_iou():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


def test_one_euro_steadies_still_points_and_follows_motion():
    params = OneEuroParams()
    rng = np.random.default_rng(1)
    truth = TEMPLATE_512 / 512 * 100
    x, dx, raws, smooths = truth.copy(), np.zeros((5, 2)), [], []
    for _ in range(100):
        raw = truth + rng.normal(0, 2.0, (5, 2))
        x, dx = one_euro_step(raw, x, dx, 1 / FPS, 100.0, params)
        raws.append(raw)
        smooths.append(x)
    raws, smooths = np.stack(raws)[20:], np.stack(smooths)[20:]
    assert np.abs(np.diff(smooths, axis=0)).mean() < 0.3 * np.abs(np.diff(raws, axis=0)).mean()
    assert np.abs(smooths - truth).mean() < 0.7 * np.abs(raws - truth).mean()
    # A fast move (a face size per second): the filter catches up to within a few px, not a fixed lag of many.
    x, dx = truth.copy(), np.zeros((5, 2))
    for i in range(1, 50):
        x, dx = one_euro_step(truth + [4.0 * i, 0.0], x, dx, 1 / FPS, 100.0, params)
    assert np.abs(x - (truth + [4.0 * 49, 0.0])).max() < 8.0


def test_one_euro_is_pure():
    a, b, c = np.ones((5, 2)), np.zeros((5, 2)), np.zeros((5, 2))
    one_euro_step(a, b, c, 0.04, 100.0, OneEuroParams())
    assert a.sum() == 10 and b.sum() == 0 and c.sum() == 0


def test_ids_stable_through_a_pan_with_two_faces():
    left, _ = pan(30, speed=3.0, noise=1.0, seed=1)
    right, _ = pan(30, speed=3.0, noise=1.0, seed=2)
    right = [face_at(f.box[0] + 300, f.box[1], noise=f.landmarks5 - face_at(*f.box[:2]).landmarks5) for f in right]
    # Detector order flips every frame: the ids must not.
    frames = [[a, b] if i % 2 else [b, a] for i, (a, b) in enumerate(zip(left, right, strict=True))]
    out = run(Tracker(), frames)
    assert all([f.track_id for f in faces] == [0, 1] for faces in out)
    left_first = out[0][0].box[0] < out[0][1].box[0]
    assert all((faces[0].box[0] < faces[1].box[0]) == left_first for faces in out)


def test_short_gap_filled_long_gap_ends_track():
    faces, _ = pan(20)
    frames = [[f] for f in faces]
    for i in (8, 9, 10):  # a 3-frame gap ≤ max_gap 5
        frames[i] = []
    out = run(Tracker(TrackerParams(max_gap=5)), frames)
    assert all(len(fs) == 1 and fs[0].track_id == 0 for fs in out)
    assert [fs[0].detected for fs in out[7:12]] == [True, False, False, False, True]
    # The filled landmarks keep moving with the face (extrapolated), not frozen.
    assert out[10][0].landmarks5[0, 0] > out[8][0].landmarks5[0, 0]
    frames = [[f] for f in faces]
    for i in range(5, 12):  # 7 frames > max_gap 3: the track ends, the face comes back as a new one
        frames[i] = []
    out = run(Tracker(TrackerParams(max_gap=3)), frames)
    assert [len(fs) for fs in out[5:12]] == [1, 1, 1, 0, 0, 0, 0]
    assert out[12][0].track_id == 1


def test_smoothing_lowers_jitter_of_perturbed_landmarks():
    faces, truth = pan(60, speed=2.0, noise=1.5, seed=3)
    frames = [[f] for f in faces]
    smooth = np.stack([fs[0].landmarks5 for fs in run(Tracker(TrackerParams(smooth=True)), frames)])
    raw = np.stack([fs[0].landmarks5 for fs in run(Tracker(TrackerParams(smooth=False)), frames)])
    np.testing.assert_allclose(raw, np.stack([f.landmarks5 for f in faces]))

    def jitter(points: np.ndarray) -> float:  # frame-to-frame motion beyond the true motion
        return float(np.abs(np.diff(points - truth, axis=0)).mean())

    assert jitter(smooth) < 0.5 * jitter(raw)
    assert np.abs(smooth - truth)[10:].mean() < np.abs(raw - truth)[10:].mean()


def test_state_round_trip_continues_identically():
    faces, _ = pan(30, noise=1.0)
    frames = [[f] for f in faces]
    whole = run(Tracker(), frames)
    first = Tracker()
    for i in range(12):
        first.update(frames[i], i / FPS)
    resumed = Tracker.from_state(first.state_dict())
    rest = [resumed.update(frames[i], i / FPS) for i in range(12, 30)]
    for a, b in zip(whole[12:], rest, strict=True):
        assert a[0].track_id == b[0].track_id
        np.testing.assert_array_equal(a[0].landmarks5, b[0].landmarks5)


def test_times_must_increase():
    tracker = Tracker()
    tracker.update([face_at(0, 0)], 1.0)
    with pytest.raises(ValueError, match="increase"):
        tracker.update([face_at(1, 0)], 1.0)
