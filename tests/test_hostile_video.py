"""Videos as a hostile user gives them: a truncated fast-start MP4, a JPEG named .mp4, a killed run's temporary
(issue 13, items 4 and 5)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from codeformer.face.pipeline import Restorer
from codeformer.video import VideoOptions, restore_video
from codeformer.video_io import VideoError
from tests.face_helpers import EXAMPLES
from tests.test_cli_video import fake_model  # noqa: F401  (the CLI's stand-in model and detector)
from tests.video_helpers import IdentityRestorer, NoFaceDetector, decoded, square_frames, write_clip

QUIET = VideoOptions(progress=False)


def truncated_fast_start(tmp_path: Path, frames: int = 48) -> Path:
    """An MP4 whose header (moov, in front) promises `frames` frames, cut at 70 % of its frame data."""
    whole, fast = tmp_path / "whole.mp4", tmp_path / "fast.mp4"
    write_clip(whole, square_frames(frames, h=48, w=128, side=16), audio=False)
    with av.open(str(whole)) as src, av.open(str(fast), "w", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    data = fast.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # the header is in front: it survives the cut
    cut = tmp_path / "cut.mp4"
    mdat = data.find(b"mdat")
    cut.write_bytes(data[: mdat + (len(data) - mdat) * 7 // 10])  # keeps the key frame, loses the last frames
    return cut


def test_truncated_video_reports_its_missing_frames(tmp_path: Path, fake_model, capsys) -> None:  # noqa: F811
    from codeformer.cli import main

    cut = truncated_fast_start(tmp_path)
    report = restore_video(Restorer(IdentityRestorer(), NoFaceDetector()), cut, tmp_path / "a.mp4", video=QUIET)
    written = len(decoded(tmp_path / "a.mp4"))
    assert report.expected_frames == 48 and report.frames == written < 48
    assert report.missing_frames == 48 - written and f"{48 - written} missing" in report.summary()
    assert main(["restore", str(cut), "-o", str(tmp_path / "b.mp4"), "--no-progress"]) == 1
    assert f"{written} of the 48 frames" in capsys.readouterr().err


def test_a_jpeg_named_mp4_is_not_a_video(tmp_path: Path, fake_model, capsys) -> None:  # noqa: F811
    from codeformer.cli import main

    fake = tmp_path / "photo.mp4"
    fake.write_bytes((EXAMPLES / "grace_hopper.jpg").read_bytes())
    with pytest.raises(VideoError, match="not a video container"):
        restore_video(Restorer(IdentityRestorer(), NoFaceDetector()), fake, tmp_path / "out.mp4", video=QUIET)
    assert main(["restore", str(fake), "-o", str(tmp_path / "out.mp4"), "--no-progress"]) == 1
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert str(fake) in line and "not a video container" in line
    assert not (tmp_path / "out.mp4").exists()


def test_a_killed_video_runs_temporary_is_swept(tmp_path: Path) -> None:
    from codeformer.atomic import temp_path

    src = tmp_path / "in.mp4"
    write_clip(src, square_frames(4, h=48, w=64, side=16), audio=False)
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              check=True).stdout)
    mine = temp_path(tmp_path / "out.mp4", suffix=".mp4")
    stale = mine.with_name(mine.name.replace(f".tmp-{os.getpid()}-", f".tmp-{dead}-"))
    stale.write_bytes(b"half a video")
    os.utime(stale, (time.time() - 60, time.time() - 60))
    restore_video(Restorer(IdentityRestorer(), NoFaceDetector()), src, tmp_path / "out.mp4", video=QUIET)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4", "out.mp4.json"]


def test_resume_refuses_other_weights_or_precision(tmp_path: Path) -> None:
    """A resume must not mix segments of two networks: the weights file's hash and the precision are part of
    the work folder's fingerprint (through `model_info` from the CLI, or the runner's own tensors)."""
    import torch

    from codeformer.models.codeformer import CodeFormer
    from codeformer.runtime import TorchRunner
    from tests.conftest import TINY_CODEFORMER
    from tests.video_helpers import PatternRestorer, SquareDetector

    src, target = tmp_path / "in.mp4", tmp_path / "out.mp4"
    write_clip(src, square_frames(10), audio=False)
    weights_a, weights_b = tmp_path / "a.pth", tmp_path / "b.pth"
    weights_a.write_bytes(b"weights A")
    weights_b.write_bytes(b"weights B")
    info = {"runtime": "torch", "precision": "fp32", "device": "cpu", "weights": str(weights_a)}
    video = VideoOptions(window=4, segment_frames=4, progress=False)
    with pytest.raises(KeyboardInterrupt):
        restore_video(Restorer(PatternRestorer(interrupt_after=3), SquareDetector()), src, target, video=video,
                      model_info=info)
    resume = VideoOptions(window=4, segment_frames=4, progress=False, resume=True)
    for other in ({**info, "weights": str(weights_b)}, {**info, "precision": "bf16"}):
        with pytest.raises(VideoError, match="another input or options"):
            restore_video(Restorer(PatternRestorer(), SquareDetector()), src, target, video=resume, model_info=other)
    report = restore_video(Restorer(PatternRestorer(), SquareDetector()), src, target, video=resume, model_info=info)
    assert report.reused_segments == 2 and report.frames == 10

    # called as a library, without model_info: the runner's tensors and precision identify it
    torch.manual_seed(0)
    runner_a = TorchRunner(CodeFormer(**TINY_CODEFORMER))
    torch.manual_seed(1)
    runner_b = TorchRunner(CodeFormer(**TINY_CODEFORMER))
    runner_bf16 = TorchRunner(runner_a.model, precision="bf16")
    plain = tmp_path / "plain.mp4"
    with pytest.raises(KeyboardInterrupt):
        restore_video(Restorer(runner_a, InterruptingDetector(after=6)), src, plain, video=video)
    for other in (runner_b, runner_bf16):
        with pytest.raises(VideoError, match="another input or options"):
            restore_video(Restorer(other, NoFaceDetector()), src, plain, video=resume)
    assert restore_video(Restorer(runner_a, NoFaceDetector()), src, plain, video=resume).frames == 10


class InterruptingDetector(NoFaceDetector):
    """Finds nothing; a Ctrl-C on its call number `after` (a run killed mid-way)."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def detect(self, rgb, min_face: float = 0.0) -> list:
        if len(self.shapes) + 1 >= self.after:
            raise KeyboardInterrupt
        return super().detect(rgb, min_face)


class SkippingSquareDetector:
    """`SquareDetector`, but blind on the frames listed in `blind` (a detector's ordinary misses)."""

    def __init__(self, blind: tuple[int, ...] = ()) -> None:
        from tests.video_helpers import SquareDetector

        self.inner, self.blind, self.calls = SquareDetector(), blind, 0

    def detect(self, rgb, min_face: float = 0.0) -> list:
        self.calls += 1
        return [] if self.calls - 1 in self.blind else self.inner.detect(rgb, min_face)


def test_a_track_ends_at_a_cut_but_bridges_a_missed_detection(tmp_path: Path) -> None:
    import numpy as np

    from tests.video_helpers import background

    frames = square_frames(12, h=96, w=128, side=40)
    other_scene = (background(96, 128, seed=7) // 2).astype(np.uint8)  # no face: a cut to another shot
    cut = frames[:6] + [other_scene] * 6
    src = tmp_path / "cut.mp4"
    write_clip(src, cut, audio=False)
    report = restore_video(Restorer(IdentityRestorer(), SkippingSquareDetector()), src, tmp_path / "a.mp4",
                           video=QUIET)
    assert report.faces == 6 and report.tracks[0]["filled"] == 0  # nothing pasted on the frames after the cut

    src2 = tmp_path / "missed.mp4"
    write_clip(src2, frames, audio=False)  # the face stays; the detector misses it on frames 4 and 5
    report = restore_video(Restorer(IdentityRestorer(), SkippingSquareDetector(blind=(4, 5))), src2,
                           tmp_path / "b.mp4", video=QUIET)
    assert report.faces == 12 and report.tracks[0]["filled"] == 2 and len(report.tracks) == 1


def test_an_output_that_is_the_input_through_a_hard_link_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "in.mp4"
    write_clip(src, square_frames(2, h=48, w=64, side=16), audio=False)
    original = src.read_bytes()
    (tmp_path / "out").mkdir()
    os.link(src, tmp_path / "out" / "in.mp4")
    with pytest.raises(VideoError, match="overwrite the input"):
        restore_video(Restorer(IdentityRestorer(), NoFaceDetector()), src, tmp_path / "out" / "in.mp4", video=QUIET)
    assert src.read_bytes() == original


def test_video_output_paths_a_user_can_get_wrong(tmp_path: Path, fake_model, capsys) -> None:  # noqa: F811
    from codeformer.cli import main

    src = tmp_path / "in.mp4"
    write_clip(src, square_frames(2, h=48, w=64, side=16), audio=False)
    folder = tmp_path / "clips.mp4"  # a folder with a video's name: the output goes inside it
    folder.mkdir()
    assert main(["restore", str(src), "-o", str(folder), "--no-progress"]) == 0
    assert (folder / "in.mp4").is_file()
    with pytest.raises(VideoError, match="is a folder"):  # the library refuses before any work
        restore_video(Restorer(IdentityRestorer(), NoFaceDetector()), src, folder, video=QUIET)
    assert not (tmp_path / ".clips.mp4.work").exists()
    (tmp_path / "file").write_bytes(b"x")
    capsys.readouterr()
    assert main(["restore", str(src), "-o", str(tmp_path / "file" / "x.mp4"), "--no-progress"]) == 1
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert "cannot create the output folder" in line and "a file is in its path" in line


def test_expected_frames_from_a_duration_is_a_lower_bound() -> None:
    from fractions import Fraction
    from types import SimpleNamespace

    from codeformer.video_io import expected_frames

    counted = SimpleNamespace(frames=48, duration=None, time_base=None, average_rate=None, guessed_rate=None)
    assert expected_frames(counted) == 48
    timed = SimpleNamespace(frames=0, duration=4000, time_base=Fraction(1, 1000), average_rate=Fraction(25),
                            guessed_rate=None)  # 4 s at 25 fps: about 100 frames, variable rate allowed for
    assert expected_frames(timed) == 97
    unknown = SimpleNamespace(frames=0, duration=None, time_base=Fraction(1, 1000), average_rate=None,
                              guessed_rate=None)
    assert expected_frames(unknown) == 0
