"""Colorization and inpainting: variant checkpoints load strictly, the official w / AdaIN / mask conventions,
nothing outside the hole or the faces changes, the luma structure survives colorization, bad input fails loudly."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from codeformer import weights
from codeformer.checkpoint import load_codeformer
from codeformer.data.images import Picture, read_image, write_image
from codeformer.face.align import estimate_affine, invert_affine
from codeformer.face.colorize import Colorizer, LumaInput
from codeformer.face.detection import DlibDetector, Face
from codeformer.face.inpaint import Inpainter, MaskError, check_mask, read_mask, white_mask
from codeformer.face.paste import paste_back
from codeformer.face.pipeline import RestoreOptions, to_uint8
from codeformer.models.codeformer import CodeFormer
from tests.conftest import PARITY, TINY_CODEFORMER, _fill_module
from tests.face_helpers import ASTRONAUT, load_rgb

LUMA = np.array([0.299, 0.587, 0.114])
FILL_RGB = (180, 50, 50)  # what the Fill stand-in paints


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread (after conftest's two): these tests run tiny models, and on a loaded 2-core machine two
    threads per process spend their time waiting for each other (measured: 11 s instead of 0.1 s of CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------------ stand-ins
class TinyAt512:
    """A real (tiny, seeded) CodeFormer behind a 512 ↔ 32 resize, recording every (w, adain) it is called with."""

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.net = CodeFormer(**TINY_CODEFORMER).eval()
        self.calls: list[tuple[float, bool]] = []

    def restore(self, x: torch.Tensor, w: float, adain_latent: bool = True) -> torch.Tensor:
        self.calls.append((float(w), bool(adain_latent)))
        small = torch.nn.functional.interpolate(x, size=32, mode="area")
        out = self.net.restore(small, w, adain_latent=adain_latent)
        return torch.nn.functional.interpolate(out, size=x.shape[-1], mode="nearest")


class Tint:
    """Colours a grey face: out = luma · (1.1, 1.0, 0.8) in [0, 1] units, so the luma structure is kept exactly up to
    a scale; far from any input colour. Records (w, adain) and what it saw."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, bool]] = []
        self.inputs: list[torch.Tensor] = []

    def restore(self, x: torch.Tensor, w: float, adain_latent: bool = True) -> torch.Tensor:
        self.calls.append((float(w), bool(adain_latent)))
        self.inputs.append(x.clone())
        luma = ((x + 1) / 2 * torch.tensor(LUMA, dtype=x.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)
        return (luma * torch.tensor([1.1, 1.0, 0.8]).view(1, 3, 1, 1)) * 2 - 1


class Fill:
    """An inpainting stand-in that returns a constant mid-red face (so filled pixels are easy to find)."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, bool]] = []
        self.inputs: list[torch.Tensor] = []

    def restore(self, x: torch.Tensor, w: float, adain_latent: bool = True) -> torch.Tensor:
        self.calls.append((float(w), bool(adain_latent)))
        self.inputs.append(x.clone())
        colour = torch.tensor(FILL_RGB, dtype=torch.float32).div(127.5).sub(1).view(1, 3, 1, 1)
        return colour.expand_as(x).clone()


class FixedDetector:
    def __init__(self, faces: list[Face]) -> None:
        self.faces = faces

    def detect(self, rgb: np.ndarray, min_face: float = 0.0) -> list[Face]:
        return list(self.faces)


@pytest.fixture(scope="module")
def astronaut_faces() -> list[Face]:
    faces = DlibDetector().detect(load_rgb(ASTRONAUT))
    assert len(faces) == 1
    return faces


def grey_u8(rgb: np.ndarray) -> np.ndarray:
    luma = np.rint(rgb.astype(np.float64) @ LUMA).clip(0, 255).astype(np.uint8)
    return np.repeat(luma[:, :, None], 3, axis=2)


def no_white(rgb: np.ndarray) -> np.ndarray:
    """`rgb` with no pure-white pixel (the astronaut has some, which the official convention counts as holes)."""
    return np.minimum(rgb, 250)


def stroke_mask(h: int, w: int, points: list[tuple[int, int]], width: int = 14) -> np.ndarray:
    canvas = np.zeros((h, w), np.uint8)
    cv2.polylines(canvas, [np.array(points, np.int32)], False, 1, width)
    return canvas.astype(bool)


# ------------------------------------------------------------------------------ variant checkpoints (full size)
def variant_keys(codebook: int) -> list[tuple[str, list[int], str]]:
    """The released variants' key list, derived from the restoration release's official keys (parity kit): no
    fusion block at 256, and a `codebook`-entry codebook (codebook and logit head)."""
    keys = json.loads((PARITY / "keys_codeformer.json").read_text())["keys"]
    out = []
    for name, shape, dtype in keys:
        if name.startswith("fuse_convs_dict.256."):
            continue
        if name in ("quantize.embedding.weight", "idx_pred_layer.1.weight"):
            shape = [codebook, *shape[1:]]
        out.append((name, shape, dtype))
    return out


@pytest.mark.parametrize("codebook, name", [(1024, "codeformer_colorization.pth"), (512, "codeformer_inpainting.pth")])
def test_variant_layouts_load_strictly(tmp_path: Path, codebook: int, name: str) -> None:
    fill = _fill_module()
    keys = variant_keys(codebook)
    sd = {k: fill.fill_tensor(k, shape, dtype, torch.Generator().manual_seed(fill.DEFAULT_SEED + i))
          for i, (k, shape, dtype) in enumerate(keys)}
    path = tmp_path / name
    torch.save({"params_ema": sd}, path)
    model = load_codeformer(path)
    assert model.quantize.embedding.weight.shape == (codebook, 256)
    assert model.connect_list == (32, 64, 128) and set(model.fuse_convs_dict) == {"32", "64", "128"}
    loaded = model.state_dict()
    assert list(loaded) == [k for k, _, _ in keys]  # same keys, same order as the official layout
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())


# ------------------------------------------------------------------------------------------ colorization
def test_colorize_aligned_is_the_official_call(caplog) -> None:
    net = TinyAt512()
    face = grey_u8(load_rgb(ASTRONAUT))
    out = Colorizer(net).restore(face, RestoreOptions(aligned=True, w=0.7, adain=False)).image
    assert net.calls == [(0.0, True)]  # w and adain of the options are overridden: w = 0 with AdaIN
    x = torch.from_numpy(face.astype(np.float32) / 255).permute(2, 0, 1)[None] * 2 - 1
    with torch.no_grad():
        official = net.restore(x, 0, adain_latent=True)
        no_adain = net.restore(x, 0, adain_latent=False)
    expected = to_uint8(((official.clamp(-1, 1) + 1) / 2)[0].permute(1, 2, 0).numpy())
    assert np.abs(to_uint8(out).astype(int) - expected).max() <= 1
    other = to_uint8(((no_adain.clamp(-1, 1) + 1) / 2)[0].permute(1, 2, 0).numpy())
    assert np.abs(to_uint8(out).astype(int) - other).mean() > 2  # AdaIN matters, and it is on
    assert "colour input" not in caplog.text


def test_colorize_keeps_the_luma_structure_and_the_background(astronaut_faces: list[Face]) -> None:
    rgb = load_rgb(ASTRONAUT)
    grey = Picture(grey_u8(rgb)[:, :, :1], is_grey=True)  # a one-channel grey photo
    model = Tint()
    out = Colorizer(model, FixedDetector(astronaut_faces)).restore(grey).image
    assert out.pixels.shape == (512, 512, 3)  # colour output from a one-channel input
    px = out.pixels.astype(np.float64)
    inverse = invert_affine(estimate_affine(astronaut_faces[0].landmarks5))
    weight = 1 - paste_back(np.ones((512, 512, 1), np.float32), [np.zeros((512, 512, 1), np.float32)], [inverse])
    inside, outside = weight[:, :, 0] > 0.99, weight[:, :, 0] == 0
    assert inside.sum() > 15_000 and outside.sum() > 50_000
    # background: the input's own grey, bit for bit
    assert np.array_equal(out.pixels[outside], np.repeat(grey.pixels[outside], 3, axis=1))
    # face: in colour now, with the input's luma structure (correlation of output luma with input luma)
    assert (px[inside][:, 0] - px[inside][:, 2]).mean() > 10
    corr = np.corrcoef((px @ LUMA)[inside], grey.pixels[:, :, 0][inside].astype(np.float64))[0, 1]
    assert corr > 0.99, corr


def test_colour_input_is_colorized_from_its_luma_with_a_note(caplog) -> None:
    rgb = load_rgb(ASTRONAUT)
    model = Tint()
    with caplog.at_level(logging.WARNING):
        Colorizer(model).restore(rgb, RestoreOptions(aligned=True))
    assert "colour input" in caplog.text and "luma" in caplog.text
    seen = model.inputs[0][0]
    assert torch.equal(seen[0], seen[1]) and torch.equal(seen[1], seen[2])  # the model saw grey
    model = Tint()
    Colorizer(model, from_colour=True).restore(rgb, RestoreOptions(aligned=True))
    assert not torch.equal(model.inputs[0][0][0], model.inputs[0][0][2])  # --from-colour: as it is


def test_luma_input_is_grey_and_in_range() -> None:
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    seen = []
    LumaInput(type("M", (), {"restore": lambda self, y, w, adain_latent=True: seen.append(y) or y})()).restore(x, 0)
    y = seen[0]
    assert torch.allclose(y[:, 0], (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1))
    assert torch.equal(y[:, 0], y[:, 2]) and y.min() >= -1 and y.max() <= 1


def test_colorize_non_512_aligned_crop_is_resized_with_a_note(caplog) -> None:
    face = grey_u8(cv2.resize(load_rgb(ASTRONAUT), (300, 260)))
    with caplog.at_level(logging.WARNING):
        out = Colorizer(Tint()).restore(face, RestoreOptions(aligned=True)).image
    assert out.shape == (260, 300, 3) and "300×260 resized to 512×512" in caplog.text


# --------------------------------------------------------------------------------------------- inpainting
def test_white_mask_and_read_mask(tmp_path: Path) -> None:
    px = np.full((4, 5, 3), 200, np.uint8)
    px[1, 2] = 255
    px[2, 3] = (255, 255, 254)  # not pure white: not a hole
    assert white_mask(px).sum() == 1 and white_mask(px)[1, 2]
    assert white_mask(px.astype(np.uint16) * 257).sum() == 1
    mask = np.zeros((6, 7), np.uint8)
    mask[2:4, 1:3] = 255
    write_image(tmp_path / "m.png", Picture(mask[:, :, None]))
    assert read_mask(tmp_path / "m.png").sum() == 4
    layer = np.full((6, 7, 4), 255, np.uint8)  # white everywhere, but only the stroke is opaque
    layer[:, :, 3] = 0
    layer[1, 1:5, 3] = 255
    write_image(tmp_path / "layer.png", Picture(layer))
    assert read_mask(tmp_path / "layer.png").sum() == 4
    write_image(tmp_path / "empty.png", Picture(np.zeros((6, 7, 1), np.uint8)))
    with pytest.raises(MaskError, match=r"empty\.png: the mask has no hole"):
        read_mask(tmp_path / "empty.png")
    with pytest.raises(MaskError, match=r"m\.png: the mask is 7×6 but the image is 5×4"):
        check_mask(read_mask(tmp_path / "m.png"), px.shape, "m.png")


def test_inpaint_aligned_is_the_official_composite() -> None:
    net = TinyAt512()
    face = load_rgb(ASTRONAUT).copy()
    hole = stroke_mask(512, 512, [(120, 200), (300, 260), (420, 240)], width=20)
    face[hole] = 255
    hole = white_mask(face)  # the official hole: the stroke and any pixel that was pure white already
    out = Inpainter(net).restore(face, RestoreOptions(aligned=True, w=0.3, adain=True)).image
    assert net.calls == [(1.0, False)]  # w = 1 without AdaIN whatever the options say
    out8 = to_uint8(out)
    assert np.array_equal(out8[~hole], face[~hole])  # (1 − mask)·input, bit for bit
    x = torch.from_numpy(face.astype(np.float32) / 255).permute(2, 0, 1)[None] * 2 - 1
    with torch.no_grad():
        pred = net.restore(x, 1, adain_latent=False)
    expected = to_uint8(((pred.clamp(-1, 1) + 1) / 2)[0].permute(1, 2, 0).numpy())
    assert np.abs(out8[hole].astype(int) - expected[hole]).max() <= 1  # + mask·output
    assert not np.array_equal(out8[hole], face[hole])


def test_inpaint_with_a_mask_file_paints_the_hole_white_first() -> None:
    model = Fill()
    face = load_rgb(ASTRONAUT)
    hole = stroke_mask(512, 512, [(100, 100), (400, 300)])
    out = Inpainter(model).restore(Picture(face), RestoreOptions(aligned=True), mask=hole).image.pixels
    seen = ((model.inputs[0][0].permute(1, 2, 0).numpy() + 1) / 2)
    assert np.all(seen[hole] == 1.0) and np.array_equal(to_uint8(seen[~hole]), face[~hole])
    assert np.array_equal(out[~hole], face[~hole])
    assert np.all(out[hole] == FILL_RGB)


def test_inpaint_fills_a_grey_face_with_grey() -> None:
    face = grey_u8(no_white(load_rgb(ASTRONAUT)))  # three equal channels
    hole = stroke_mask(512, 512, [(100, 300), (400, 320)])
    out = Inpainter(Fill()).restore(face, RestoreOptions(aligned=True), mask=hole).image
    filled = to_uint8(out)[hole]
    assert np.array_equal(filled[:, 0], filled[:, 1]) and np.array_equal(filled[:, 1], filled[:, 2])
    assert abs(int(filled[0, 0]) - round(float(np.dot(FILL_RGB, LUMA)))) <= 1


def test_inpaint_non_512_crop_keeps_every_pixel_outside_the_hole(caplog) -> None:
    face = cv2.resize(load_rgb(ASTRONAUT), (333, 301), interpolation=cv2.INTER_AREA)
    hole = stroke_mask(301, 333, [(60, 80), (250, 200)], width=9)
    face[hole] = 255
    hole = white_mask(face)
    with caplog.at_level(logging.WARNING):
        out = Inpainter(Fill()).restore(Picture(face), RestoreOptions(aligned=True)).image.pixels
    assert out.shape == face.shape and "333×301 resized" in caplog.text
    assert np.array_equal(out[~hole], face[~hole])
    assert np.abs(out[hole].astype(int) - FILL_RGB).max() <= 1  # filled to the hole's edge: no white fringe


def test_inpaint_whole_photo(astronaut_faces: list[Face], caplog) -> None:
    photo = np.full((700, 900, 3), 90, np.uint8)
    photo[100:612, 300:812] = load_rgb(ASTRONAUT)
    faces = [Face((f.box[0] + 300, f.box[1] + 100, f.box[2] + 300, f.box[3] + 100), f.score,
                  f.landmarks5 + (300, 100)) for f in astronaut_faces]
    hole = stroke_mask(700, 900, [(490, 200), (520, 240), (550, 215)], width=11)  # across the face
    away = np.zeros_like(hole)
    away[20:40, 20:60] = True  # far from the face
    photo[hole | away] = 255
    hole = white_mask(photo) & ~away  # the stroke, and the astronaut's own pure-white pixels
    with caplog.at_level(logging.WARNING):
        result = Inpainter(Fill(), FixedDetector(faces)).restore(Picture(photo), RestoreOptions())
    out = result.image.pixels
    assert np.array_equal(out[~hole & ~away], photo[~hole & ~away])  # nothing outside the hole moved
    assert np.array_equal(out[away], photo[away]) and "lie outside the faces" in caplog.text
    on_face = stroke_mask(700, 900, [(490, 200), (520, 240), (550, 215)], width=11)
    assert np.abs(out[on_face].astype(int) - FILL_RGB).max() <= 2  # the hole on the face is filled
    assert result.faces[0].w == 1.0


def test_inpaint_bad_input_fails_loudly(astronaut_faces: list[Face]) -> None:
    face = no_white(load_rgb(ASTRONAUT))
    with pytest.raises(MaskError, match="no hole to fill"):
        Inpainter(Fill()).restore(face, RestoreOptions(aligned=True))
    with pytest.raises(MaskError, match=r"m\.png: the mask is 10×10 but the image is 512×512"):
        Inpainter(Fill()).restore(face, RestoreOptions(aligned=True), mask=np.ones((10, 10), bool), mask_name="m.png")
    photo = face.copy()
    photo[:10, :10] = 255  # a hole, but in a corner far from the face
    with pytest.raises(MaskError, match="lies on none of the 1 detected face"):
        Inpainter(Fill(), FixedDetector(astronaut_faces)).restore(photo, RestoreOptions())
    with pytest.raises(MaskError, match="no face found"):
        Inpainter(Fill(), FixedDetector([])).restore(photo, RestoreOptions())
    with pytest.raises(ValueError, match="upscale must be 1"):
        Inpainter(Fill()).restore(photo, RestoreOptions(aligned=True, upscale=2))


# ---------------------------------------------------------------------------------------------------- CLI
@pytest.fixture()
def stand_ins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The commands load a stand-in (Tint for colorize, Fill for inpaint) from a stand-in weights file."""
    monkeypatch.setattr("codeformer.checkpoint.load_codeformer",
                        lambda path, device="cpu": Tint() if "color" in Path(path).name else Fill())
    monkeypatch.setattr("codeformer.runtime.TorchRunner", lambda model, *a, **k: model)
    for name in ("colorization", "inpainting"):
        (tmp_path / f"{name}.pth").write_bytes(b"stand-in")
    return tmp_path


def test_cli_colorize_and_inpaint(tmp_path: Path, stand_ins: Path, capsys) -> None:
    from codeformer.cli import main

    src = tmp_path / "in"
    src.mkdir()
    face = no_white(load_rgb(ASTRONAUT))
    write_image(src / "grey.png", Picture(grey_u8(face)[:, :, :1]))
    face[200:220, 150:350] = 255
    write_image(src / "scratched.png", Picture(face))
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    out = tmp_path / "out"
    code = main(["colorize", str(src / "grey.png"), "-o", str(out), "--aligned", "--no-progress",
                 "--weights", str(stand_ins / "colorization.pth")])
    assert code == 0, capsys.readouterr().err
    assert read_image(out / "grey.png").pixels.shape == (512, 512, 3)
    code = main(["inpaint", str(src / "scratched.png"), "-o", str(out), "--aligned", "--no-progress", "--save-faces",
                 "--weights", str(stand_ins / "inpainting.pth")])
    assert code == 0, capsys.readouterr().err
    filled = read_image(out / "scratched.png").pixels
    assert np.all(filled[200:220, 150:350] == FILL_RGB) and np.array_equal(filled[:200], face[:200])
    assert json.loads((out / "scratched.png.json").read_text())["faces"][0]["w"] == 1.0
    # a folder run goes on past a file with no hole and reports it
    capsys.readouterr()
    code = main(["inpaint", str(src), "-o", str(tmp_path / "out2"), "--aligned", "--no-progress",
                 "--weights", str(stand_ins / "inpainting.pth")])
    err = capsys.readouterr().err
    assert code == 1 and "1 image(s) restored" in err and "grey.png: no hole to fill" in err
    # -o on the inputs' own folder never writes over an input
    code = main(["colorize", str(src), "-o", str(src), "--aligned", "--no-progress",
                 "--weights", str(stand_ins / "colorization.pth")])
    assert code == 2 and capsys.readouterr().err.count("would overwrite the input") == 1  # refused up front
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before


def test_cli_mask_option_and_its_errors(tmp_path: Path, stand_ins: Path, capsys) -> None:
    from codeformer.cli import main

    face = load_rgb(ASTRONAUT)
    write_image(tmp_path / "face.png", Picture(face))
    mask = np.zeros((512, 512, 1), np.uint8)
    mask[300:310, 100:400] = 255
    write_image(tmp_path / "mask.png", Picture(mask))
    write_image(tmp_path / "small.png", Picture(mask[250:350, 250:350]))
    args = ["inpaint", str(tmp_path / "face.png"), "--aligned", "--no-progress", "--weights",
            str(stand_ins / "inpainting.pth")]
    assert main([*args, "-o", str(tmp_path / "o1"), "--mask", str(tmp_path / "mask.png")]) == 0
    out = read_image(tmp_path / "o1" / "face.png").pixels
    assert np.all(out[300:310, 100:400] == FILL_RGB) and np.array_equal(out[:300], face[:300])
    capsys.readouterr()
    assert main([*args, "-o", str(tmp_path / "o2"), "--mask", str(tmp_path / "small.png")]) == 1
    err = capsys.readouterr().err
    assert "small.png: the mask is 100×100 but the image is 512×512" in err
    assert not (tmp_path / "o2" / "face.png").exists()
    assert main(["inpaint", str(tmp_path), "-o", str(tmp_path / "o3"), "--mask", str(tmp_path / "mask.png")]) == 2
    assert "exactly one input image" in capsys.readouterr().err
    assert main([*args, "-o", str(tmp_path / "o4"), "--mask", str(tmp_path / "nothere.png")]) == 1
    assert "nothere.png" in capsys.readouterr().err


def test_cli_missing_weights_offline_is_one_line_before_any_work(tmp_path: Path, monkeypatch, capsys) -> None:
    from codeformer.cli import main

    monkeypatch.setenv("CODEFORMER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CODEFORMER_OFFLINE", "1")
    monkeypatch.delenv("CODEFORMER_COLORIZATION_WEIGHTS", raising=False)
    code = main(["colorize", str(ASTRONAUT), "-o", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert f"put it at {weights.weights_dir() / 'codeformer_colorization.pth'}" in err
    assert not (tmp_path / "out").exists()


def test_cli_notes_a_restoration_checkpoint_given_as_a_variant(tmp_path: Path, monkeypatch, capsys) -> None:
    from codeformer.cli import main

    restoration_like = Tint()
    restoration_like.connect_list = (32, 64, 128, 256)  # the layout of codeformer.pth
    monkeypatch.setattr("codeformer.checkpoint.load_codeformer", lambda path, device="cpu": restoration_like)
    monkeypatch.setattr("codeformer.runtime.TorchRunner", lambda model, *a, **k: model)
    (tmp_path / "codeformer.pth").write_bytes(b"stand-in")
    code = main(["colorize", str(ASTRONAUT), "-o", str(tmp_path / "out"), "--aligned", "--no-progress",
                 "--weights", str(tmp_path / "codeformer.pth")])
    assert code == 0 and "fusion block at 256 like the restoration model" in capsys.readouterr().err
