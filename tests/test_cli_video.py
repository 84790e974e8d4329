"""`codeformer restore` with video inputs: dispatch by extension, output file or folder, one-line errors."""

from __future__ import annotations

import pytest

import codeformer.checkpoint
import codeformer.face.detection
import codeformer.video
import codeformer.weights
from codeformer.cli import main
from tests.video_helpers import IdentityRestorer, NoFaceDetector, audio_packets, decoded, square_frames, write_clip


class FakeDlib(NoFaceDetector):
    """Stands in for the default detector (no model load); upsample fixed, as a configured one would be."""

    upsample = 0


@pytest.fixture
def fake_model(monkeypatch, tmp_path):
    """No weights and no dlib: an identity model and a detector that finds nothing."""
    (tmp_path / "codeformer.pth").write_bytes(b"stand-in")  # hashed for the resume fingerprint
    monkeypatch.setattr(codeformer.weights, "resolve", lambda *a, **k: tmp_path / "codeformer.pth")
    monkeypatch.setattr(codeformer.weights, "describe", lambda name: "fake weights")
    monkeypatch.setattr(codeformer.checkpoint, "load_codeformer", lambda *a, **k: IdentityRestorer())
    monkeypatch.setattr("codeformer.runtime.TorchRunner", lambda model, *a, **k: model)  # run the stand-in as is
    monkeypatch.setattr(codeformer.face.detection, "make_detector", lambda name="hybrid": FakeDlib())


def test_restore_video_to_a_file_and_to_a_folder(tmp_path, fake_model, capsys):
    src = tmp_path / "clip.mp4"
    write_clip(src, square_frames(8, h=48, w=64, side=16))
    assert main(["restore", str(src), "-o", str(tmp_path / "out.mkv"), "--no-progress", "--crf", "20"]) == 0
    assert len(decoded(tmp_path / "out.mkv")) == 8
    assert audio_packets(tmp_path / "out.mkv") == audio_packets(src)
    assert main(["restore", str(src), "-o", str(tmp_path / "outdir"), "--no-progress", "--no-smooth"]) == 0
    assert len(decoded(tmp_path / "outdir" / "clip.mp4")) == 8
    assert "8 frames" in capsys.readouterr().err


def test_video_argument_problems(tmp_path, fake_model, capsys):
    src = tmp_path / "clip.mp4"
    assert main(["restore", str(src), str(tmp_path / "a.png"), "-o", str(tmp_path)]) == 2
    assert "separate runs" in capsys.readouterr().err
    assert main(["restore", str(src), "-o", str(tmp_path), "--compare"]) == 2
    assert "--compare: for photos only" in capsys.readouterr().err


def test_bad_video_is_a_one_line_error(tmp_path, fake_model, capsys):
    src = tmp_path / "broken.mp4"
    src.write_bytes(b"not a video at all" * 100)
    assert main(["restore", str(src), "-o", str(tmp_path / "out.mp4"), "--no-progress"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and str(src) in err[0]
