"""Streaming video restoration on short synthetic clips: frames, timing and audio kept, bounded memory, tracking,
flicker, atomic output, resume, corrupt frames and one-line errors. Stand-in detectors and restorers keep it fast;
one test runs the real dlib detector on a panning face."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from codeformer.face.pipeline import RestoreOptions, Restorer
from codeformer.face.tracking import TrackerParams
from codeformer.video import VideoOptions, report_path, restore_video, work_dir
from codeformer.video_io import VideoError, probe
from tests.video_helpers import (
    IdentityRestorer,
    NoFaceDetector,
    PatternRestorer,
    SquareDetector,
    audio_packets,
    decoded,
    pan_frames,
    square_frames,
    write_clip,
)

QUIET = VideoOptions(progress=False)


def stream_facts(path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        return {"rate": v.average_rate, "time_base": v.time_base, "frames": v.frames, "duration": c.duration,
                "audio": [a.codec_context.name for a in c.streams.audio]}


def frame_pts(path) -> list[int]:
    with av.open(str(path)) as c:
        return [f.pts for f in c.decode(video=0)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


def test_frames_fps_timestamps_and_audio_are_kept(tmp_path):
    src, out = tmp_path / "in.mp4", tmp_path / "out.mp4"
    frames = square_frames(20, h=48, w=64, side=16)
    write_clip(src, frames, fps=25)
    report = restore_video(Restorer(IdentityRestorer(), NoFaceDetector()), src, out, video=QUIET)
    assert report.frames == 20 and not report.failures
    assert stream_facts(out) == stream_facts(src)
    assert frame_pts(out) == frame_pts(src)
    assert audio_packets(out) == audio_packets(src)  # copied, not re-encoded
    got = decoded(out)
    assert len(got) == 20 and min(psnr(a, b) for a, b in zip(decoded(src), got, strict=True)) > 35
    assert json.loads(report_path(out).read_text())["frames"] == 20
    assert not work_dir(out).exists()


def test_rotation_is_kept_and_detection_sees_upright_frames(tmp_path):
    src, out = tmp_path / "in.mov", tmp_path / "out.mkv"
    write_clip(src, square_frames(6, h=48, w=64, side=16), audio=False, rotation=90)
    detector = NoFaceDetector()
    restore_video(Restorer(IdentityRestorer(), detector), src, out, video=QUIET)
    assert probe(out).rotation == 90
    assert {s[:2] for s in detector.shapes} == {(64, 48)}  # turned upright: width and height swapped
    assert decoded(out)[0].shape[:2] == (48, 64)  # stored in the coded orientation, as the input


def test_faces_of_a_window_go_to_the_model_together(tmp_path, test_device):
    src, out = tmp_path / "in.mp4", tmp_path / "out.mp4"
    write_clip(src, square_frames(12, squares=2), audio=False)
    model = IdentityRestorer()
    restorer = Restorer(model, SquareDetector(), test_device, options=RestoreOptions(batch_size=16))
    report = restore_video(restorer, src, out, video=VideoOptions(window=6, progress=False))
    assert model.batch_sizes == [12, 12]  # 6 frames × 2 faces per call
    assert report.faces == 24 and sorted(report.tracks) == [0, 1]
    assert all(t["frames"] == 12 for t in report.tracks.values())


def test_memory_is_bounded_in_clip_length(tmp_path):
    peaks = []
    for n in (16, 48):
        src, out = tmp_path / f"in{n}.mp4", tmp_path / f"out{n}.mp4"
        write_clip(src, square_frames(n, h=48, w=64, side=16, step=0), audio=False)
        video = VideoOptions(window=4, queue=2, segment_frames=8, progress=False)
        report = restore_video(Restorer(IdentityRestorer(), NoFaceDetector()), src, out, video=video)
        assert report.frames == n
        peaks.append(report.peak_frames)
    # Decode queue + its thread's frame in hand + the window + encode queue + the job being encoded.
    assert max(peaks) <= 2 + 1 + 4 + 2 + 1  # the same bound for 16 and 48 frames: flat in clip length


def test_track_id_stable_through_a_pan_with_dlib(tmp_path):
    src, out = tmp_path / "pan.mp4", tmp_path / "out.mp4"
    write_clip(src, pan_frames(12))
    report = restore_video(Restorer(IdentityRestorer()), src, out, video=QUIET)
    assert list(report.tracks) == [0]
    assert report.tracks[0]["frames"] == 12 and report.tracks[0]["detected"] >= 10
    assert report.flicker == pytest.approx(1.0, abs=0.1)  # an identity model adds no change of its own


def test_smoothing_lowers_flicker(tmp_path, test_device):
    src = tmp_path / "in.mp4"
    write_clip(src, square_frames(24, h=128, w=160, side=48, step=1), audio=False)
    flicker = {}
    for smooth in (True, False):
        restorer = Restorer(PatternRestorer(), SquareDetector(noise=1.5), test_device)
        video = VideoOptions(tracking=TrackerParams(smooth=smooth), progress=False)
        report = restore_video(restorer, src, tmp_path / f"out_{smooth}.mp4", video=video)
        flicker[smooth] = report.flicker
    assert flicker[True] < 0.75 * flicker[False]


def test_resume_after_interrupt_equals_an_uninterrupted_run(tmp_path):
    src = tmp_path / "in.mp4"
    write_clip(src, square_frames(20, step=2))
    video = VideoOptions(window=4, segment_frames=8, progress=False)
    whole = tmp_path / "whole.mp4"
    restore_video(Restorer(PatternRestorer(), SquareDetector(noise=1.0)), src, whole, video=video)

    target = tmp_path / "resumed.mp4"
    target.write_bytes(b"old output")
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C in the 4th window: segment 0 (frames 0-7) is complete
        restore_video(Restorer(PatternRestorer(interrupt_after=4), SquareDetector(noise=1.0)), src, target, video=video)
    assert target.read_bytes() == b"old output"  # untouched, no half-written file
    assert sorted(p.name for p in tmp_path.glob(".resumed*partial*")) == []
    assert (work_dir(target) / "seg_00000.mp4").is_file()

    resume = VideoOptions(window=4, segment_frames=8, progress=False, resume=True)
    report = restore_video(Restorer(PatternRestorer(), SquareDetector(noise=1.0)), src, target, video=resume)
    assert report.reused_segments == 1 and report.frames == 20
    a, b = decoded(whole), decoded(target)
    assert len(a) == len(b) == 20
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert audio_packets(target) == audio_packets(src)
    assert report.flicker == pytest.approx(json.loads(report_path(whole).read_text())["flicker"])


def test_resume_refuses_a_work_folder_of_other_options(tmp_path):
    src, target = tmp_path / "in.mp4", tmp_path / "out.mp4"
    write_clip(src, square_frames(10), audio=False)
    video = VideoOptions(window=4, segment_frames=4, progress=False)
    with pytest.raises(KeyboardInterrupt):
        restore_video(Restorer(PatternRestorer(interrupt_after=3), SquareDetector()), src, target, video=video)
    other = VideoOptions(window=4, segment_frames=4, progress=False, resume=True,
                         tracking=TrackerParams(smooth=False))
    with pytest.raises(VideoError, match="another input or options"):
        restore_video(Restorer(PatternRestorer(), SquareDetector()), src, target, video=other)


def test_corrupt_frame_is_reported_and_the_run_goes_on(tmp_path):
    src, out = tmp_path / "in.mkv", tmp_path / "out.mkv"
    write_clip(src, square_frames(10, h=48, w=64, side=16), codec="mjpeg", audio=False, corrupt=(4,))
    report = restore_video(Restorer(IdentityRestorer(), NoFaceDetector()), src, out, video=QUIET)
    assert report.frames == 9 and len(report.failures) == 1
    assert str(src) in report.failures[0] and "\n" not in report.failures[0]
    assert len(decoded(out)) == 9


def _audio_only(path):
    with av.open(str(path), "w") as c:
        a = c.add_stream("aac", rate=44100, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 44100, 0
        c.mux(a.encode(frame))
        c.mux(a.encode(None))


def _undecodable(path):
    """A Matroska file whose VP9 video stream holds random bytes: readable container, no decodable frame."""
    from fractions import Fraction

    with av.open(str(path), "w", format="matroska") as c:
        stream = c.add_mux_stream("vp9", rate=25, width=64, height=48)
        for i in range(3):
            packet = av.Packet(np.random.default_rng(i).integers(0, 256, 500, dtype=np.uint8).tobytes())
            packet.pts = packet.dts = i
            packet.time_base, packet.stream, packet.is_keyframe = Fraction(1, 25), stream, True
            c.mux(packet)


@pytest.mark.parametrize("kind, message", [("empty", "empty file"), ("garbage", "not a readable video"),
                                           ("audio", "no video stream"), ("missing", "no such file"),
                                           ("undecodable", "cannot decode the vp9 video stream")])
def test_unusable_inputs_give_one_line_errors_naming_the_file(tmp_path, kind, message):
    src = tmp_path / f"{kind}.mp4"
    if kind == "empty":
        src.write_bytes(b"")
    elif kind == "garbage":
        src.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    elif kind == "audio":
        _audio_only(src)
    elif kind == "undecodable":
        _undecodable(src)
    with pytest.raises(VideoError) as info:
        restore_video(Restorer(IdentityRestorer(), NoFaceDetector()), src, tmp_path / "out.mp4", video=QUIET)
    text = str(info.value)
    assert str(src) in text and message in text and "\n" not in text
    assert not (tmp_path / "out.mp4").exists()


def test_unknown_codec_and_container_are_one_line_errors(tmp_path):
    src = tmp_path / "in.mp4"
    write_clip(src, square_frames(4, h=48, w=64, side=16), audio=False)
    restorer = Restorer(IdentityRestorer(), NoFaceDetector())
    with pytest.raises(VideoError, match="WebM holds only"):
        restore_video(restorer, src, tmp_path / "out.webm", video=QUIET)
    with pytest.raises(VideoError, match="unknown video extension"):
        restore_video(restorer, src, tmp_path / "out.xyz", video=QUIET)
    bad_codec = VideoOptions(progress=False, encode=QUIET.encode.__class__(codec="no-such-codec"))
    with pytest.raises(VideoError, match="no-such-codec"):
        restore_video(restorer, src, tmp_path / "out.mp4", video=bad_codec)
    assert not (tmp_path / "out.mp4").exists()


def test_paste_faces_matches_whole_frame_paste_back():
    from codeformer.face.align import estimate_affine, invert_affine, warp_face
    from codeformer.face.paste import paste_back
    from codeformer.face.pipeline import to_uint8
    from codeformer.video import paste_faces
    from tests.video_helpers import SquareDetector

    frame = square_frames(1, h=160, w=240, side=60, squares=2)[0]
    faces = SquareDetector().detect(frame)
    affines = [estimate_affine(f.landmarks5) for f in faces]
    crops = [1.0 - warp_face(frame, m).astype(np.float32) / 255.0 for m in affines]  # far from the input
    inverses = [invert_affine(m) for m in affines]
    whole = to_uint8(paste_back(frame.astype(np.float32) / 255.0, crops, inverses, 1))
    got = paste_faces(frame, crops, inverses, 1)
    assert got.dtype == np.uint8 and np.abs(got.astype(int) - whole).max() <= 1
    assert paste_faces(frame, [], [], 1) is frame


def test_slow_detection_setting_is_pointed_out(tmp_path, caplog):
    from codeformer.face.detection import DlibDetector

    src, out = tmp_path / "in.mp4", tmp_path / "out.mp4"
    write_clip(src, square_frames(2, h=96, w=128, side=16), audio=False)
    restorer = Restorer(IdentityRestorer(), NoFaceDetector())
    restore_video(restorer, src, out, video=QUIET)
    assert "upsample" not in caplog.text  # not a dlib detector
    restorer.detector = DlibDetector()
    restorer.detector.detect = NoFaceDetector().detect  # keep the test fast: no dlib model load
    restore_video(restorer, src, out, opts=RestoreOptions(min_face=8), video=QUIET)
    assert "--min-face 12" in caplog.text  # 96 px short side → 640: the HOG window of 80 px is 12 px here
