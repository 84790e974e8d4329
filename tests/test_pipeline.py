"""The Restorer pipeline and the batch runner: batching, grey/alpha/16-bit, aligned inputs, folders, stdin, JSON."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from codeformer.data.images import Picture, encode_image, read_image
from codeformer.face.batch import OutputOptions, restore_bytes, run_batch
from codeformer.face.detection import DlibDetector, Face
from codeformer.face.pipeline import RestoreOptions, Restorer
from codeformer.models.codeformer import CodeFormer
from tests.face_helpers import ASTRONAUT, GRACE, ConvRestorer, IdentityRestorer, group_photo, load_rgb, picture_of


class FixedDetector:
    """Returns the same faces for every image; counts its calls."""

    def __init__(self, faces: list[Face]) -> None:
        self.faces, self.calls = faces, 0

    def detect(self, rgb: np.ndarray, min_face: float = 0.0) -> list[Face]:
        self.calls += 1
        return list(self.faces)


@pytest.fixture(scope="module")
def detector() -> DlibDetector:
    return DlibDetector()


@pytest.fixture(scope="module")
def astronaut_faces(detector: DlibDetector) -> list[Face]:
    return detector.detect(load_rgb(ASTRONAUT))


@pytest.fixture(scope="module")
def group_faces(detector: DlibDetector) -> list[Face]:
    faces = detector.detect(group_photo(), min_face=48)
    assert len(faces) == 4
    return faces


def test_batched_restore_equals_one_face_at_a_time(group_faces: list[Face], test_device: torch.device) -> None:
    image = group_photo()
    results = {}
    for batch in (1, 3):
        model = ConvRestorer()
        restorer = Restorer(model, FixedDetector(group_faces), device=test_device,
                            options=RestoreOptions(batch_size=batch, min_face=48))
        results[batch] = restorer.restore(image)
        assert model.batch_sizes == ([1, 1, 1, 1] if batch == 1 else [3, 1])
    assert len(results[1].faces) == len(results[3].faces) == 4
    for single, batched in zip(results[1].faces, results[3].faces, strict=True):
        assert np.abs(single.restored.astype(int) - batched.restored.astype(int)).max() <= 1
    assert np.abs(results[1].image - results[3].image).max() < 1e-5
    assert not np.allclose(results[1].image, image / 255.0, atol=0.05)  # the conv really changed the faces


@pytest.mark.slow
def test_batched_equals_single_with_a_tiny_codeformer(test_device: torch.device) -> None:
    torch.manual_seed(0)
    model = CodeFormer(dim_embd=32, n_head=4, n_layers=1, codebook_size=16, latent_size=256, connect_list=(32, 64),
                       img_size=512, nf=32, ch_mult=(1, 1, 1, 1, 1, 1), res_blocks=1, attn_resolutions=(16,),
                       emb_dim=32).eval().to(test_device)
    crops = np.random.default_rng(0).random((2, 512, 512, 3), dtype=np.float32)
    batched = Restorer(model, FixedDetector([]), test_device).restore_crops(crops, RestoreOptions(batch_size=2))
    single = Restorer(model, FixedDetector([]), test_device).restore_crops(crops, RestoreOptions(batch_size=1))
    assert batched.shape == crops.shape and batched.dtype == np.float32
    assert 0 <= batched.min() and batched.max() <= 1
    assert np.abs(batched - single).max() < 1e-4


def test_grey_stays_grey_and_never_black(astronaut_faces: list[Face]) -> None:
    rgb = load_rgb(ASTRONAUT)
    luma = np.rint(rgb @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)[:, :, None]
    restorer = Restorer(ConvRestorer(), FixedDetector(astronaut_faces))  # ConvRestorer adds a colour cast
    one_channel = restorer.restore(picture_of(luma)).image
    assert one_channel.pixels.shape == luma.shape and one_channel.pixels.dtype == np.uint8
    assert abs(float(one_channel.pixels.mean()) - float(luma.mean())) < 0.1 * float(luma.mean())
    three = restorer.restore(Picture(np.repeat(luma, 3, axis=2), is_grey=True)).image.pixels
    assert three.shape == rgb.shape
    assert np.array_equal(three[..., 0], three[..., 1]) and np.array_equal(three[..., 1], three[..., 2])
    assert three.mean() > 0.9 * luma.mean()


def test_a_near_grey_tint_survives(astronaut_faces: list[Face]) -> None:
    luma = load_rgb(ASTRONAUT) @ np.array([0.299, 0.587, 0.114])
    tinted = np.rint(luma[..., None] * np.array([1.0, 0.95, 0.88])).astype(np.uint8)  # a faint sepia
    result = Restorer(ConvRestorer(), FixedDetector(astronaut_faces)).restore(Picture(tinted, is_grey=True))
    out = result.image.pixels.astype(float)
    x0, y0, x1, y1 = (int(v) for v in astronaut_faces[0].box)
    face_in, face_out = tinted[y0:y1, x0:x1].astype(float), out[y0:y1, x0:x1]
    assert not np.allclose(face_out, face_in, atol=2)  # restored...
    ratio_in = face_in.reshape(-1, 3).mean(0) / face_in.mean()
    ratio_out = face_out.reshape(-1, 3).mean(0) / face_out.mean()
    assert np.allclose(ratio_out, ratio_in, atol=0.01)  # ...with the input's tint, not the model's colour cast
    assert np.array_equal(out[440:], tinted[440:])  # the background is never converted


def test_rgba_keeps_alpha(astronaut_faces: list[Face]) -> None:
    rgb = load_rgb(ASTRONAUT)
    alpha = np.tile(np.linspace(0, 255, rgb.shape[1]).astype(np.uint8), (rgb.shape[0], 1))[:, :, None]
    pic = picture_of(np.concatenate([rgb, alpha], axis=2))
    out = Restorer(ConvRestorer(), FixedDetector(astronaut_faces)).restore(pic).image.pixels
    assert out.shape == (*rgb.shape[:2], 4)
    assert np.array_equal(out[..., 3], alpha[..., 0])
    up = Restorer(IdentityRestorer(), FixedDetector(astronaut_faces)).restore(pic, RestoreOptions(upscale=2))
    assert up.image.pixels.shape == (2 * rgb.shape[0], 2 * rgb.shape[1], 4)


def test_16_bit_stays_16_bit(astronaut_faces: list[Face]) -> None:
    rgb16 = load_rgb(ASTRONAUT).astype(np.uint16) * 257 + np.random.default_rng(0).integers(0, 200, (512, 512, 3),
                                                                                             dtype=np.uint16)
    result = Restorer(IdentityRestorer(), FixedDetector(astronaut_faces)).restore(picture_of(rgb16))
    out = result.image.pixels
    assert out.dtype == np.uint16 and out.shape == rgb16.shape
    assert np.array_equal(out[400:], rgb16[400:])  # far from the face: every 16-bit value kept
    assert np.any(out % 257 != 0)


def test_aligned_input_skips_detection_and_keeps_its_size() -> None:
    crop = np.ascontiguousarray(load_rgb(ASTRONAUT)[60:316, 120:376])  # 256×256, treated as aligned
    detector = FixedDetector([])
    restorer = Restorer(ConvRestorer(), detector, options=RestoreOptions(aligned=True))
    result = restorer.restore(picture_of(crop))
    assert detector.calls == 0
    assert result.image.pixels.shape == crop.shape and len(result.faces) == 1
    assert result.faces[0].restored.shape == (512, 512, 3)
    up = restorer.restore(crop, RestoreOptions(aligned=True, upscale=2)).image
    assert up.shape == (512, 512, 3) and up.dtype == np.float32


def test_draw_boxes_and_face_selection(group_faces: list[Face]) -> None:
    image = group_photo()
    restorer = Restorer(IdentityRestorer(), FixedDetector(group_faces))
    largest = restorer.restore(image, RestoreOptions(faces="largest"))
    assert len(largest.faces) == 1 and largest.faces[0].box == max(
        (f.box for f in group_faces), key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    boxed = restorer.restore(image, RestoreOptions(faces="largest", draw_boxes=True)).image
    x0, y0 = (round(v) for v in largest.faces[0].box[:2])
    assert np.allclose(boxed[y0 + 20, x0], (0.0, 1.0, 0.0))  # on the left edge of the box: green
    assert np.array_equal(boxed[5, 5], largest.image[5, 5])


def test_no_face_returns_the_input_unchanged() -> None:
    rgb = load_rgb(GRACE)
    result = Restorer(ConvRestorer(), FixedDetector([])).restore(picture_of(rgb))
    assert result.faces == [] and np.array_equal(result.image.pixels, rgb)


def test_options_are_checked_and_the_adain_knob_is_never_ignored() -> None:
    for bad in (dict(w=-0.1), dict(upscale=0), dict(faces="biggest"), dict(batch_size=0), dict(min_face=-1)):
        with pytest.raises(ValueError):
            RestoreOptions(**bad)
    crops = np.zeros((1, 512, 512, 3), np.float32)
    with pytest.raises(ValueError, match="AdaIN"):
        Restorer(IdentityRestorer(), FixedDetector([])).restore_crops(crops, RestoreOptions(adain=False))

    class WithSwitch:
        def restore(self, x, w, adain_latent=True):
            self.seen = (w, adain_latent)
            return x

    model = WithSwitch()
    Restorer(model, FixedDetector([])).restore_crops(crops, RestoreOptions(w=0.7, adain=False))
    assert model.seen == (0.7, False)


def size_of(path_or_bytes) -> tuple[int, int]:
    """(width, height) of an image file or its bytes."""
    pixels = read_image(path_or_bytes).pixels
    return pixels.shape[1], pixels.shape[0]


def make_folder(root: Path) -> tuple[Path, list[str]]:
    folder = root / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "astronaut.png").write_bytes(ASTRONAUT.read_bytes())
    (folder / "sub" / "grace.jpg").write_bytes(GRACE.read_bytes())
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("not an image at all\n")
    (folder / "cut.png").write_bytes(ASTRONAUT.read_bytes()[:5000])
    (folder / "dir.jpg").mkdir()
    (folder / "readme.txt").write_text("ignored: not an image name")
    return folder, ["empty.jpg", "notes.png", "cut.png"]  # and dir.jpg when not walked as a folder


def test_folder_run_goes_past_bad_files(tmp_path: Path, detector: DlibDetector) -> None:
    folder, bad = make_folder(tmp_path)
    out = tmp_path / "out"
    restorer = Restorer(IdentityRestorer(), detector)
    report = run_batch(restorer, [str(folder)], RestoreOptions(w=0.7),
                       OutputOptions(out, save_faces=True, compare=True, recursive=True), progress=False)
    assert report.images == 2 and report.faces == 2
    assert sorted(Path(src).name for src, _ in report.failures) == sorted(bad)
    for src, reason in report.failures:
        assert src in reason and "\n" not in reason
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "astronaut.png", "astronaut.png.json", "compare/astronaut.png", "compare/sub/grace.jpg",
        "faces/astronaut_00_cropped.png", "faces/astronaut_00_restored.png", "faces/sub/grace_00_cropped.png",
        "faces/sub/grace_00_restored.png", "sub/grace.jpg", "sub/grace.jpg.json"]
    assert size_of(out / "sub" / "grace.jpg") == (512, 600)
    assert size_of(out / "compare" / "astronaut.png") == (1024, 512)
    record = json.loads((out / "astronaut.png.json").read_text())
    assert record["size"] == [512, 512] and record["output_size"] == [512, 512] and record["notes"] == []
    (face,) = record["faces"]
    assert face["w"] == 0.7 and len(face["box"]) == 4 and np.array(face["landmarks5"]).shape == (5, 2)
    assert face["score"] > 0 and 100 < face["face_size"] < 300
    assert "3 failure(s)" in report.summary()
    flat = run_batch(restorer, [str(folder)], RestoreOptions(), OutputOptions(tmp_path / "flat"), progress=False)
    assert flat.images == 1 and sorted(Path(src).name for src, _ in flat.failures) == sorted([*bad, "dir.jpg"])
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["astronaut.png", "astronaut.png.json"]


def test_explicit_files_missing_inputs_and_name_clashes(tmp_path: Path, detector: DlibDetector) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "face.png").write_bytes(ASTRONAUT.read_bytes())
    out = tmp_path / "out"
    report = run_batch(Restorer(IdentityRestorer(), detector),
                       [str(tmp_path / "a" / "face.png"), str(tmp_path / "b" / "face.png"), str(tmp_path / "nope.png")],
                       RestoreOptions(), OutputOptions(out, ext="jpg"), progress=False)
    assert report.images == 2 and len(report.failures) == 1 and "nope.png" in report.failures[0][1]
    assert sorted(p.name for p in out.iterdir()) == ["face.jpg", "face.jpg.json", "face_2.jpg", "face_2.jpg.json"]
    assert read_image(out / "face.jpg").format == "JPEG"


def test_restore_bytes_keeps_format_and_size(astronaut_faces: list[Face]) -> None:
    data = GRACE.read_bytes()
    out, result = restore_bytes(Restorer(IdentityRestorer(), FixedDetector(astronaut_faces)), data, RestoreOptions())
    pic = read_image(out)
    assert pic.format == "JPEG" and size_of(out) == (512, 600) and len(result.faces) == 1
    png, _ = restore_bytes(Restorer(IdentityRestorer(), FixedDetector([])), data, RestoreOptions(), ext="png")
    assert png.startswith(b"\x89PNG")


@pytest.fixture()
def identity_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Make the CLI load an identity restorer from a stand-in weights file."""
    monkeypatch.setattr("codeformer.checkpoint.load_codeformer", lambda path, device="cpu": IdentityRestorer())
    monkeypatch.setattr("codeformer.runtime.TorchRunner", lambda model, *a, **k: model)  # run the stand-in as is
    weights = tmp_path / "stand-in.pth"
    weights.write_bytes(b"stand-in")
    return weights


def test_cli_folder_run_exit_code_and_summary(tmp_path: Path, identity_model: Path, capsys) -> None:
    from codeformer.cli import main

    folder, bad = make_folder(tmp_path)
    code = main(["restore", str(folder), "-o", str(tmp_path / "out"), "--recursive", "--weights", str(identity_model),
                 "--no-progress", "-w", "0.7"])
    err = capsys.readouterr().err
    assert code == 1
    assert "2 image(s) restored, 2 face(s), 3 failure(s)" in err and "S-Lab" in err
    for name in bad:
        assert name in err
    only_good = [str(folder / "astronaut.png"), "-o", str(tmp_path / "out2"), "--weights", str(identity_model)]
    assert main(["restore", *only_good, "--no-progress"]) == 0


def test_cli_stdin_to_stdout(monkeypatch: pytest.MonkeyPatch, identity_model: Path) -> None:
    from codeformer.cli import main

    pic = read_image(ASTRONAUT)
    stdin = io.TextIOWrapper(io.BytesIO(encode_image(pic, "PNG")))
    stdout = io.TextIOWrapper(io.BytesIO())
    monkeypatch.setattr(sys, "stdin", stdin)
    monkeypatch.setattr(sys, "stdout", stdout)
    assert main(["restore", "-", "--weights", str(identity_model), "--no-progress"]) == 0
    result = read_image(stdout.buffer.getvalue())
    assert size_of(stdout.buffer.getvalue()) == (512, 512) and result.format == "PNG"


def test_cli_rejects_bad_arguments(identity_model: Path, capsys) -> None:
    from codeformer.cli import main

    assert main(["restore", str(ASTRONAUT), "--weights", str(identity_model)]) == 2  # no -o
    assert main(["restore", str(ASTRONAUT), "-o", "x", "-w", "5", "--weights", str(identity_model)]) == 2
    assert "w must be" in capsys.readouterr().err
    assert main(["restore", str(ASTRONAUT), "-o", "x", "--ext", "xyz", "--weights", str(identity_model)]) == 2
    assert "--ext" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_end_to_end_with_the_parity_weights(tmp_path: Path, filled_checkpoint, capsys, test_device) -> None:
    """The real network (parity kit's filled weights) through the whole command on one photo."""
    from codeformer.cli import main

    out = tmp_path / "out"
    code = main(["restore", str(ASTRONAUT), "-o", str(out), "--weights", str(filled_checkpoint("codeformer")),
                 "--save-faces", "--no-progress", "-w", "0.7", "--device", str(test_device)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"device: {test_device.type}" in err  # the run says where it ran
    before, after = read_image(ASTRONAUT).pixels, read_image(out / "astronaut.png").pixels
    assert after.shape == before.shape and after.dtype == np.uint8
    cropped = read_image(out / "faces" / "astronaut_00_cropped.png").pixels
    restored = read_image(out / "faces" / "astronaut_00_restored.png").pixels
    assert restored.shape == (512, 512, 3) and not np.array_equal(restored, cropped)
    assert np.array_equal(after[420:], before[420:])  # below the face nothing moved
    assert json.loads((out / "astronaut.png.json").read_text())["faces"][0]["w"] == 0.7
