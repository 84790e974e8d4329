"""Identity metric on the sample photos, the per-face report, `-w auto`, sweep strips and the reviewed batch run."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from codeformer.cli import build_parser
from codeformer.face.align import estimate_affine, warp_face
from codeformer.face.autow import AutoWRestorer, auto_w, measure, sweep_strip
from codeformer.face.batch import OutputOptions
from codeformer.face.detection import DlibDetector, Face
from codeformer.face.pipeline import FaceResult, RestoreOptions, Restorer
from codeformer.face.report import consistency, flag_summary, report_face
from codeformer.face.review import ReviewOptions, parse_sweep, run_reviewed_batch
from codeformer.metrics.identity import IdentityEmbedder
from tests.face_helpers import ASTRONAUT, GRACE, load_rgb


class RecordingModel:
    """Stand-in restorer: a light 3×3 box blur; records (batch size, w) of every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, float]] = []

    def restore(self, x: torch.Tensor, w: float) -> torch.Tensor:
        self.calls.append((x.shape[0], w))
        kernel = torch.full((3, 1, 3, 3), 1 / 9)
        return torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), kernel,
                                          groups=3)


@pytest.fixture(scope="module")
def embedder() -> IdentityEmbedder:
    return IdentityEmbedder.load()


@pytest.fixture(scope="module")
def astronaut_face() -> tuple[Face, np.ndarray]:
    """The astronaut's detected face and its aligned 512 crop (uint8)."""
    img = load_rgb(ASTRONAUT)
    face = DlibDetector().detect(img)[0]
    return face, warp_face(img, estimate_affine(face.landmarks5))


def test_identity_orders_same_person_above_other(embedder: IdentityEmbedder) -> None:
    astro, grace = load_rgb(ASTRONAUT), load_rgb(GRACE)
    down_up = cv2.resize(cv2.resize(astro, (256, 256), interpolation=cv2.INTER_AREA), (512, 512),
                         interpolation=cv2.INTER_CUBIC)
    same, other = embedder.compare(astro, down_up), embedder.compare(astro, grace)
    assert same.l2 < other.l2 and same.cosine > other.cosine
    assert same.same_person and not other.same_person
    assert embedder.compare(astro, astro).l2 == pytest.approx(0.0, abs=1e-6)


def _face_result(face: Face, cropped: np.ndarray, restored: np.ndarray, size: float | None = None) -> FaceResult:
    return FaceResult(face.box, face.score, face.landmarks5, size or face.size, 0.5, cropped, restored,
                      np.eye(2, 3))


def test_report_numbers_follow_blur(astronaut_face: tuple[Face, np.ndarray], embedder: IdentityEmbedder) -> None:
    face, crop = astronaut_face
    records = [report_face(_face_result(face, cv2.GaussianBlur(crop, (0, 0), s) if s else crop, crop), embedder)
               for s in (0.0, 1.5, 4.0)]
    sharp = [r["input_sharpness"] for r in records]
    assert sharp == sorted(sharp, reverse=True) and sharp[-1] < sharp[0] / 10
    sigmas = [r["consistency"]["blur_sigma"] for r in records]
    assert sigmas == sorted(sigmas) and sigmas[0] == 0.0 and sigmas[-1] > 2.5
    assert records[0]["w_auto"] >= records[1]["w_auto"] > records[2]["w_auto"]
    # The true sharp face degraded back matches each blurred input closely: nothing was invented.
    assert all(r["consistency"]["psnr_y"] > 40 for r in records)
    assert records[0]["identity"]["l2"] < records[2]["identity"]["l2"]
    assert all(not r["flags"] for r in records)
    assert set(records[0]) >= {"box", "score", "face_size", "input_noise_sigma", "w", "identity", "consistency"}


def test_report_flags_invented_detail_and_small_faces(astronaut_face: tuple[Face, np.ndarray]) -> None:
    face, crop = astronaut_face
    blurred = cv2.GaussianBlur(crop, (0, 0), 2.0)
    texture = np.clip(crop + 30 * np.sin(np.arange(512) / 4.0)[None, :, None], 0, 255).astype(np.uint8)
    assert consistency(blurred, texture)["psnr_y"] < consistency(blurred, crop)["psnr_y"] - 10
    record = report_face(_face_result(face, blurred, texture, size=40.0), embedder=None)
    assert record["identity"] is None
    assert record["flags"] == ["small_face", "invented_detail"]
    assert flag_summary([[record], []]) == "report: 1 face(s); flagged: 1 invented_detail, 1 small_face"


def test_auto_w_lower_for_heavier_degradation(astronaut_face: tuple[Face, np.ndarray]) -> None:
    _, crop = astronaut_face
    mild = auto_w(crop, 300.0)
    blurred = auto_w(cv2.GaussianBlur(crop, (0, 0), 3.0), 300.0)
    tiny = auto_w(crop, 40.0)
    rng = np.random.default_rng(0)
    noisy = auto_w(np.clip(crop + rng.normal(0, 20, crop.shape), 0, 255).astype(np.uint8), 300.0)
    assert 0.3 <= min(blurred, tiny, noisy) and mild <= 0.9
    assert blurred < mild and tiny < mild and noisy < mild
    ws = [auto_w(cv2.GaussianBlur(crop, (0, 0), s), 300.0) for s in (0.5, 1.0, 2.0, 3.0)]
    assert ws == sorted(ws, reverse=True)
    assert all(0.0 <= v <= 1.0 for v in measure(crop, 10.0).factors.values())


def test_auto_w_restorer_picks_w_per_face() -> None:
    astro = load_rgb(ASTRONAUT)
    canvas = np.full((512, 800, 3), 90, np.uint8)
    canvas[:, :512] = astro
    canvas[300:500, 560:760] = cv2.resize(astro, (200, 200), interpolation=cv2.INTER_AREA)  # a ~66 px face
    model = RecordingModel()
    result = AutoWRestorer(Restorer(model, options=RestoreOptions(min_face=16))).restore(canvas)
    assert len(result.faces) == 2
    big, tiny = sorted(result.faces, key=lambda f: -f.face_size)
    assert tiny.w < big.w
    assert sorted(w for _, w in model.calls) == sorted({big.w, tiny.w})
    assert result.image.shape == canvas.shape
    strip = sweep_strip(Restorer(model), big, (0.0, 0.5, 1.0), tile=64)
    assert strip.shape == (64 + 24, 64 * 4, 3) and strip.dtype == np.uint8


def test_reviewed_batch_writes_reports(tmp_path: Path, embedder: IdentityEmbedder) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "astronaut.png").write_bytes(ASTRONAUT.read_bytes())
    (src / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    model = RecordingModel()
    review = ReviewOptions(report="html", auto_w=True, sweep=(0.0, 1.0), note="pipeline demo")
    report, summary = run_reviewed_batch(Restorer(model), [str(src)], RestoreOptions(), OutputOptions(out), review,
                                         progress=False, embedder=embedder)
    assert report.images == 1 and len(report.failures) == 1 and "broken.png" in report.failures[0][1]
    assert summary.startswith("report: 1 face(s); flagged:")
    doc = json.loads((out / "astronaut.png.report.json").read_text())
    face = doc["faces"][0]
    assert doc["auto_w"] and face["w"] == face["w_auto"]
    assert json.loads((out / "astronaut.png.json").read_text())["faces"][0]["w"] == face["w"]
    page = (out / "report.html").read_text()
    assert page.count("data:image/jpeg;base64,") == 3 and "pipeline demo" in page
    assert (out / "sweep" / "astronaut_00.png").is_file()
    assert not list(out.glob(".*tmp*"))


def test_cli_parses_auto_w_and_sweep() -> None:
    parser = build_parser()
    args = parser.parse_args(["restore", "x.png", "-o", "o", "-w", "auto", "--report", "html",
                              "--w-sweep", "0,0.25,0.5,0.75,1"])
    assert args.fidelity == "auto" and args.report == "html" and args.w_sweep == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert parser.parse_args(["restore", "x.png", "-o", "o", "-w", "0.7"]).fidelity == 0.7
    with pytest.raises(SystemExit):
        parser.parse_args(["restore", "x.png", "-w", "high"])
    with pytest.raises(ValueError, match="'a'"):
        parse_sweep("0,a")
    with pytest.raises(ValueError, match="w-sweep"):
        ReviewOptions(sweep=(0.5, 3.0))


def test_noise_is_measured_on_the_photo_grid(astronaut_face: tuple[Face, np.ndarray]) -> None:
    face, _ = astronaut_face
    img = load_rgb(ASTRONAUT).astype(np.float64)
    rng = np.random.default_rng(0)
    noisy = np.clip(img + rng.normal(0, 10, img.shape[:2])[..., None], 0, 255).astype(np.uint8)  # luma σ 10
    m = estimate_affine(face.landmarks5)
    crop, clean_crop = warp_face(noisy, m), warp_face(img.astype(np.uint8), m)
    measured = measure(crop, face.size, m).noise_sigma
    assert measured == pytest.approx(10.0, rel=0.3)
    assert measure(clean_crop, face.size, m).noise_sigma < measured / 2


def test_restore_cli_with_report_and_auto_w(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import codeformer.checkpoint
    from codeformer.cli import main

    model = RecordingModel()
    monkeypatch.setattr(codeformer.checkpoint, "load_codeformer", lambda path, device="cpu": model)
    monkeypatch.setattr("codeformer.runtime.TorchRunner", lambda model, *a, **k: model)  # run the stand-in as is
    fake_weights = tmp_path / "codeformer.pth"
    fake_weights.write_bytes(b"stand-in: load_codeformer is replaced")
    src = tmp_path / "in"
    src.mkdir()
    (src / "astronaut.png").write_bytes(ASTRONAUT.read_bytes())
    out = tmp_path / "out"
    rc = main(["restore", str(src), "-o", str(out), "--weights", str(fake_weights), "-w", "auto", "--report", "json",
               "--no-progress"])
    assert rc == 0
    assert "report: 1 face(s); flagged:" in capsys.readouterr().err
    doc = json.loads((out / "astronaut.png.report.json").read_text())
    assert doc["faces"][0]["w"] == doc["faces"][0]["w_auto"] == model.calls[0][1]
    assert not (out / "report.html").exists()
    assert main(["restore", "-", "--weights", str(fake_weights), "--report", "json"]) == 2
