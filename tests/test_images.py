"""Tests for codeformer.data.images: faithful reads, metadata, errors, atomic writes."""

from __future__ import annotations

import io
import os
import pickle
import signal
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms, ImageFile, ImageOps

from codeformer.data import images
from codeformer.data.images import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    ImageWriteError,
    Picture,
    encode_image,
    from_rgb_float,
    is_image_path,
    read_image,
    rgb_float,
    write_image,
)
from tests.conftest import DATA

SHARED = DATA  # ../shared/data beside the project (tests/conftest.py)
SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def gradient(h: int = 24, w: int = 32, c: int = 3, dtype: type = np.uint8, seed: int = 0) -> np.ndarray:
    """A smooth H×W×C test image with some noise (not grey unless c == 1)."""
    top = 65535 if dtype == np.uint16 else 255
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    chans = [x / (w - 1), y / (h - 1), (x + y) / (w + h - 2), 1.0 - x / (w - 1)][:c]
    noise = np.random.default_rng(seed).uniform(-0.02, 0.02, (h, w, c))
    return np.rint(np.clip(np.stack(chans, axis=2) + noise, 0, 1) * top).astype(dtype)


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"  # Make
    return exif.tobytes()


# ------------------------------------------------------------------------------------------ reading
@pytest.mark.parametrize(("mode", "channels"), [("L", 1), ("RGB", 3), ("RGBA", 4)])
def test_png_8bit_read_exact(tmp_path: Path, mode: str, channels: int) -> None:
    arr = gradient(c=channels)
    path = tmp_path / "a.png"
    Image.fromarray(arr[..., 0] if channels == 1 else arr).save(path)
    pic = read_image(path)
    assert pic.pixels.shape == (24, 32, channels) and pic.pixels.dtype == np.uint8
    assert np.array_equal(pic.pixels, arr)
    assert pic.format == "PNG" and pic.note is None
    assert pic.is_grey == (channels == 1)
    assert pic.pixels.flags.writeable and pic.pixels.flags.c_contiguous


def test_16bit_grey_png(tmp_path: Path) -> None:
    arr = gradient(c=1, dtype=np.uint16)
    path = tmp_path / "g16.png"
    assert cv2.imwrite(str(path), arr[..., 0])
    pic = read_image(path)
    assert pic.pixels.dtype == np.uint16 and pic.pixels.shape == (24, 32, 1)
    assert np.array_equal(pic.pixels, arr) and pic.is_grey


@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_colour_read_exact(tmp_path: Path, ext: str, channels: int) -> None:
    arr = gradient(c=channels, dtype=np.uint16)
    path = tmp_path / f"c16{ext}"
    assert cv2.imwrite(str(path), arr[..., [2, 1, 0, 3][:channels]])  # OpenCV writes BGR(A)
    pic = read_image(path)
    assert pic.pixels.dtype == np.uint16 and np.array_equal(pic.pixels, arr)
    assert not pic.is_grey


@pytest.mark.parametrize("ext", [".png", ".tiff", ".bmp", ".webp", ".jpg", ".gif"])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_write_read_round_trip(tmp_path: Path, ext: str, channels: int) -> None:
    arr = gradient(c=channels)
    path = tmp_path / f"out{ext}"
    note = write_image(path, Picture(arr))
    pic = read_image(path)
    if channels == 4 and ext in (".jpg", ".bmp"):
        assert pic.pixels.shape[2] == 3 and "flattened onto white" in note
        return
    assert pic.is_grey == (channels == 1)
    got = pic.pixels[..., :1] if channels == 1 else pic.pixels  # WEBP and GIF store grey as colour
    assert got.shape == arr.shape or ext == ".gif"
    if ext in (".png", ".tiff", ".bmp"):
        assert np.array_equal(got, arr) and note is None
    elif ext == ".gif":  # 256 colours and on/off transparency
        assert got.shape[:2] == arr.shape[:2] and "256 colours" in note
    else:
        assert np.abs(got.astype(int) - arr).mean() < 3


@pytest.mark.parametrize("ext", [".png", ".tiff"])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_16bit_write_round_trip(tmp_path: Path, ext: str, channels: int) -> None:
    arr = gradient(c=channels, dtype=np.uint16)
    path = tmp_path / f"out16{ext}"
    icc = SRGB_ICC if channels > 1 else None
    assert write_image(path, Picture(arr, icc_profile=icc)) is None
    pic = read_image(path)
    assert pic.pixels.dtype == np.uint16 and np.array_equal(pic.pixels, arr) and pic.icc_profile == icc
    other = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # a second decoder agrees (BGR order)
    other = other[..., None] if other.ndim == 2 else other[..., [2, 1, 0, 3][:channels]]
    assert np.array_equal(other, arr)
    assert Image.open(path).mode == {1: "I;16", 3: "RGB", 4: "RGBA"}[channels]


def test_16bit_colour_tiff_notes_lost_exif(tmp_path: Path) -> None:
    note = write_image(tmp_path / "o.tif", Picture(gradient(dtype=np.uint16), exif=exif_bytes(1)))
    assert note == "EXIF not written (16-bit colour TIFF)"


def test_oversized_exif_is_left_out_of_jpeg(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x010E] = "x" * 70_000  # ImageDescription: a PNG can carry this, a JPEG cannot
    pic = Picture(gradient(), exif=exif.tobytes())
    assert write_image(tmp_path / "o.jpg", pic) == "EXIF not written (over the 64 KiB a JPEG can hold)"
    assert read_image(tmp_path / "o.jpg").exif is None
    assert write_image(tmp_path / "o.png", pic) is None and read_image(tmp_path / "o.png").exif == pic.exif


def test_webp_quality_100_is_lossless() -> None:
    arr = gradient(c=4)
    assert np.array_equal(read_image(encode_image(Picture(arr), "WEBP", quality=100)).pixels, arr)


def test_16bit_to_8bit_format_is_reduced_with_note(tmp_path: Path) -> None:
    arr = gradient(dtype=np.uint16)
    note = write_image(tmp_path / "o.jpg", Picture(arr))
    assert note and "8-bit" in note
    got = read_image(tmp_path / "o.jpg").pixels.astype(int)
    assert np.abs(got - arr.astype(int) // 257).mean() < 3


def test_rgba_to_jpeg_flattens_onto_white(tmp_path: Path) -> None:
    arr = np.zeros((16, 16, 4), np.uint8)
    arr[..., 0] = 200
    arr[:8, :, 3] = 255  # top opaque red-ish, bottom fully transparent
    note = write_image(tmp_path / "o.jpg", Picture(arr))
    assert "flattened onto white" in note
    got = read_image(tmp_path / "o.jpg").pixels
    assert got.shape == (16, 16, 3)
    assert (got[12:, :, :] > 245).all() and got[2:6, :, 0].mean() > 190 and got[2:6, :, 1].mean() < 15


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    im = Image.new("P", (8, 8), 0)
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    im.paste(1, (0, 0, 4, 8))
    im.info["transparency"] = 0
    im.save(tmp_path / "p.png", transparency=0)
    pic = read_image(tmp_path / "p.png")
    assert pic.pixels.shape == (8, 8, 4) and "palette expanded to RGBA" in pic.note
    assert (pic.pixels[:, :4] == [0, 255, 0, 255]).all() and (pic.pixels[:, 4:, 3] == 0).all()


@pytest.mark.parametrize("channels", [1, 3])
def test_png_colour_key_becomes_alpha(tmp_path: Path, channels: int) -> None:
    arr = np.zeros((4, 6, channels), np.uint8)
    arr[:2] = 200
    key = 0 if channels == 1 else (0, 0, 0)  # black is the transparent colour
    Image.fromarray(arr[..., 0] if channels == 1 else arr).save(tmp_path / "k.png", transparency=key)
    pic = read_image(tmp_path / "k.png")
    assert pic.pixels.shape == (4, 6, 4) and pic.note == "transparent colour turned into alpha"
    assert (pic.pixels[:2, :, 3] == 255).all() and (pic.pixels[2:, :, 3] == 0).all()


def test_palette_without_transparency_is_rgb(tmp_path: Path) -> None:
    Image.fromarray(gradient()).convert("P").save(tmp_path / "p.png")
    pic = read_image(tmp_path / "p.png")
    assert pic.pixels.shape == (24, 32, 3) and "palette" in pic.note


def test_one_bit_and_grey_alpha(tmp_path: Path) -> None:
    Image.fromarray(gradient(c=1)[..., 0] > 128).save(tmp_path / "b.png")
    pic = read_image(tmp_path / "b.png")
    assert pic.pixels.shape == (24, 32, 1) and set(np.unique(pic.pixels)) <= {0, 255}
    la = gradient(c=2)
    Image.fromarray(la).save(tmp_path / "la.png")
    pic = read_image(tmp_path / "la.png")
    assert pic.pixels.shape == (24, 32, 4) and pic.is_grey
    assert np.array_equal(pic.pixels[..., 3], la[..., 1]) and np.array_equal(pic.pixels[..., 2], la[..., 0])


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    Image.new("CMYK", (16, 12), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)  # pure red
    pic = read_image(tmp_path / "cmyk.jpg")
    assert pic.pixels.shape == (12, 16, 3) and "CMYK" in pic.note
    r, g, b = pic.pixels.reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 60 and b < 60
    assert pic.icc_profile is None  # no CMYK profile may be attached to RGB pixels


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path: Path, orientation: int) -> None:
    arr = gradient(10, 16)
    path = tmp_path / "o.png"
    Image.fromarray(arr).save(path, exif=exif_bytes(orientation))
    pic = read_image(path)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    assert np.array_equal(pic.pixels, expected)
    exif = Image.Exif()
    exif.load(pic.exif)
    assert exif[0x0112] == 1 and exif[0x010F] == "TestCam"


def test_tiff_orientation_tag(tmp_path: Path) -> None:
    arr = gradient(10, 16)
    Image.fromarray(arr).save(tmp_path / "o.tif", tiffinfo={0x0112: 8})
    assert np.array_equal(read_image(tmp_path / "o.tif").pixels, np.rot90(arr))


def test_big_endian_and_32bit_integer_grey(tmp_path: Path) -> None:
    arr = gradient(c=1, dtype=np.uint16)[..., 0]
    Image.frombytes("I;16B", (32, 24), arr.astype(">u2").tobytes()).save(tmp_path / "be.tif")
    pic = read_image(tmp_path / "be.tif")
    assert pic.pixels.dtype == np.uint16 and np.array_equal(pic.pixels[..., 0], arr)
    Image.fromarray(arr.astype(np.int32)).save(tmp_path / "i32.tif")
    assert np.array_equal(read_image(tmp_path / "i32.tif").pixels[..., 0], arr)
    Image.fromarray(np.full((4, 4), 70000, np.int32)).save(tmp_path / "i32big.tif")
    with pytest.raises(ImageReadError, match="outside 0-65535"):
        read_image(tmp_path / "i32big.tif")


def exif_with_thumbnail(endian: str) -> bytes:
    """EXIF with Make, orientation 6, PixelX/YDimension 640×480 (SHORTs) and an IFD1 (thumbnail) directory."""
    exif = Image.Exif()
    exif.endian = endian
    exif[0x0112], exif[0x010F] = 6, "TestCam"
    exif.get_ifd(0x8769).update({0xA002: 640, 0xA003: 480})
    data = bytearray(exif.tobytes())
    e = "<" if data[6:8] == b"II" else ">"
    ifd0 = 6 + struct.unpack_from(e + "I", data, 10)[0]
    next_ifd = ifd0 + 2 + 12 * struct.unpack_from(e + "H", data, ifd0)[0]
    struct.pack_into(e + "I", data, next_ifd, len(data) - 6)
    data += struct.pack(e + "HHHIH", 1, 0x0103, 3, 1, 6) + bytes(2) + struct.pack(e + "I", 0)
    return bytes(data)


@pytest.mark.parametrize("endian", ["<", ">"])
def test_exif_patched_in_place(endian: str) -> None:
    source = exif_with_thumbnail(endian)
    exif = Image.Exif()
    exif.load(source)
    assert exif.get_ifd(ExifTags.IFD.IFD1) == {0x0103: 6}
    buf = io.BytesIO()
    Image.fromarray(gradient(8, 12)).save(buf, "JPEG", exif=source)
    pic = read_image(buf.getvalue())
    assert pic.pixels.shape == (12, 8, 3) and len(pic.exif) == len(source)
    exif.load(pic.exif)
    assert exif[0x0112] == 1 and exif[0x010F] == "TestCam" and exif.get_ifd(ExifTags.IFD.IFD1) == {0x0103: 6}
    out = from_rgb_float(pic, np.zeros((70000, 2, 3), np.float32))  # taller than a SHORT can say
    exif.load(out.exif)
    assert exif.get_ifd(0x8769) == {0xA002: 2, 0xA003: 70000} and exif.get_ifd(ExifTags.IFD.IFD1) == {}
    assert exif[0x0112] == 1 and exif[0x010F] == "TestCam"


def test_exif_rotated_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "rot.jpg"
    Image.fromarray(gradient(24, 40)).save(path, exif=exif_bytes(6), icc_profile=SRGB_ICC)
    pic = read_image(path)
    assert pic.pixels.shape == (40, 24, 3)  # orientation 6: width and height swapped
    assert len(pic.exif) == len(Image.open(path).info["exif"])  # patched in place, nothing else lost
    write_image(tmp_path / "out.jpg", pic)
    again = Image.open(tmp_path / "out.jpg")
    assert again.size == (24, 40) and again.getexif()[0x0112] == 1 and again.getexif()[0x010F] == "TestCam"
    assert again.info["icc_profile"] == SRGB_ICC


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp", ".tiff"])
def test_icc_and_exif_survive_write(tmp_path: Path, ext: str) -> None:
    pic = Picture(gradient(), icc_profile=SRGB_ICC, exif=exif_bytes(1))
    write_image(tmp_path / f"o{ext}", pic)
    back = read_image(tmp_path / f"o{ext}")
    assert back.icc_profile == SRGB_ICC
    if ext != ".tiff":  # TIFF keeps EXIF as tags of its own directory
        assert back.exif is not None
    assert Image.open(tmp_path / f"o{ext}").getexif()[0x010F] == "TestCam"


@pytest.mark.parametrize(("ext", "dtype"), [(".jpg", np.uint8), (".png", np.uint8), (".tif", np.uint8),
                                             (".png", np.uint16), (".tif", np.uint16)])
def test_dpi_kept_and_scaled_with_the_size(tmp_path: Path, ext: str, dtype: type) -> None:
    path = tmp_path / f"scan{ext}"
    write_image(path, Picture(gradient(dtype=dtype), dpi=(300.0, 600.0)))
    pic = read_image(path)
    assert pic.dpi is not None and np.allclose(pic.dpi, (300, 600), rtol=1e-3)
    assert Image.open(path).info["dpi"] == pytest.approx((300, 600), rel=1e-3)  # Pillow agrees
    doubled = from_rgb_float(pic, np.zeros((48, 64, 3), np.float32))  # 2× upscale: same print size
    assert np.allclose(doubled.dpi, (600, 1200), rtol=1e-3)


def test_dpi_follows_a_quarter_turn(tmp_path: Path) -> None:
    Image.fromarray(gradient()).save(tmp_path / "r.jpg", dpi=(100, 200), exif=exif_bytes(6))
    pic = read_image(tmp_path / "r.jpg")
    assert pic.dpi == (200.0, 100.0)
    assert read_image(png_bytes(gradient())).dpi is None


def test_animated_gif_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (10, 8), (20 * i, 100, 200)) for i in range(12)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    pic = read_image(tmp_path / "anim.gif")
    assert pic.pixels.shape == (8, 10, 3)
    assert pic.note.startswith("animated GIF: used the first of 12 frames")
    assert np.abs(pic.pixels.astype(int) - [0, 100, 200]).max() <= 8


def test_multipage_tiff_first_page(tmp_path: Path) -> None:
    pages = [Image.new("L", (6, 5), v) for v in (10, 200, 90)]
    pages[0].save(tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    pic = read_image(tmp_path / "pages.tif")
    assert (pic.pixels == 10).all() and "first of 3" in pic.note


def test_near_grey_colour_file_is_grey(tmp_path: Path) -> None:
    grey = np.repeat(gradient(c=1), 3, axis=2)
    grey[..., 0] = np.clip(grey[..., 0].astype(int) + 1, 0, 255)  # tiny cast, as in scanned photos
    Image.fromarray(grey).save(tmp_path / "g.jpg")
    assert read_image(tmp_path / "g.jpg").is_grey
    assert not read_image(encode_image(Picture(gradient()), "PNG")).is_grey


def test_shared_photos() -> None:
    pic = read_image(SHARED / "grace_hopper.jpg")
    assert pic.pixels.shape == (600, 512, 3) and pic.format == "JPEG" and pic.pixels.dtype == np.uint8
    astronaut = read_image(SHARED / "astronaut.png")
    assert astronaut.pixels.shape == (512, 512, 3) and not astronaut.is_grey


def test_unicode_name_and_bytes_input(tmp_path: Path) -> None:
    path = tmp_path / "фото 顔 ✓.png"
    arr = gradient()
    write_image(path, Picture(arr))
    assert path.exists() and np.array_equal(read_image(path).pixels, arr)
    pic = read_image(path.read_bytes(), name="stdin.png")
    assert np.array_equal(pic.pixels, arr)
    with pytest.raises(ImageReadError, match=r"^stdin: not an image"):
        read_image(b"hello", name="stdin")
    assert np.array_equal(read_image(encode_image(Picture(arr), "png")).pixels, arr)


def raw_png(arr: np.ndarray, colour_type: int) -> bytes:
    """A PNG written by hand (no Pillow/OpenCV): H×W×C uint16, big-endian samples, filter 0 rows."""
    h, w = arr.shape[:2]
    rows = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_hand_made_16bit_pngs() -> None:
    la = gradient(c=2, dtype=np.uint16)
    pic = read_image(raw_png(la, 4), name="la16.png")
    assert pic.pixels.dtype == np.uint16 and pic.pixels.shape == (24, 32, 4) and pic.is_grey
    assert np.array_equal(pic.pixels[..., 3], la[..., 1]) and np.array_equal(pic.pixels[..., 1], la[..., 0])
    rgb = gradient(dtype=np.uint16)
    assert np.array_equal(read_image(raw_png(rgb, 2)).pixels, rgb)
    data = raw_png(gradient(64, 64, dtype=np.uint16, seed=9), 2)
    with pytest.raises(ImageReadError, match="^t16.png: truncated or corrupt PNG$"):
        read_image(data[: len(data) // 2], name="t16.png")


def test_16bit_colour_png_orientation_and_exif(tmp_path: Path) -> None:
    arr = gradient(10, 16, dtype=np.uint16)
    write_image(tmp_path / "o.png", Picture(arr, icc_profile=SRGB_ICC, exif=exif_bytes(6)))
    pic = read_image(tmp_path / "o.png")
    assert pic.pixels.dtype == np.uint16 and np.array_equal(pic.pixels, np.rot90(arr, -1))
    assert Image.open(tmp_path / "o.png").getexif()[0x0112] == 6 and pic.icc_profile == SRGB_ICC
    exif = Image.Exif()
    exif.load(pic.exif)
    assert exif[0x0112] == 1


def test_mpo_reads_as_jpeg(tmp_path: Path) -> None:
    frames = [Image.fromarray(gradient()), Image.fromarray(gradient(seed=4))]
    frames[0].save(tmp_path / "phone.jpg", format="MPO", save_all=True, append_images=frames[1:])
    assert Image.open(tmp_path / "phone.jpg").format == "MPO"
    pic = read_image(tmp_path / "phone.jpg")
    assert pic.format == "JPEG" and pic.note is None and pic.pixels.shape == (24, 32, 3)


def test_mismatched_icc_profile_is_dropped(tmp_path: Path) -> None:
    Image.fromarray(gradient(c=1)[..., 0]).save(tmp_path / "g.png", icc_profile=SRGB_ICC)
    pic = read_image(tmp_path / "g.png")
    assert pic.icc_profile is None and "ICC profile dropped" in pic.note


# ------------------------------------------------------------------------------------------ errors
def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def huge_png_header(width: int, height: int) -> bytes:
    """A valid tiny PNG whose IHDR claims width×height (CRC recomputed)."""
    data = bytearray(png_bytes(np.zeros((1, 1, 3), np.uint8)))
    assert data[12:16] == b"IHDR"
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def noisy_bytes(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


BAD_FILES = {
    "empty.png": (b"", "empty file"),
    "trunc.png": (noisy_bytes("PNG")[:6000], "truncated or corrupt PNG"),
    "trunc.jpg": (noisy_bytes("JPEG")[:3000], "truncated or corrupt JPEG"),
    "noise.jpg": (np.random.default_rng(5).integers(0, 255, 5000, dtype=np.uint8).tobytes(), "not an image"),
    "notes.txt": ("a text file\nwith two lines é\n".encode(), "not an image"),
    "header-only.png": (noisy_bytes("PNG")[:40], "truncated or corrupt PNG"),
    "big.png": (huge_png_header(40000, 40000),
                "image too large (40000×40000 = 1.6 gigapixels, limit 178 megapixels)"),
    "photo.heic": (b"\0\0\0\x18ftypheic" + bytes(100), "HEIC/HEIF images are not supported"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_raise_one_line(tmp_path: Path, name: str) -> None:
    content, problem = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    assert message == f"{path}: {problem}" or message.startswith(f"{path}: {problem}")
    assert isinstance(info.value, ValueError) and info.value.name == str(path)


def test_errors_pickle() -> None:
    for err in (ImageReadError("a\nb.png", "empty file"), ImageWriteError("o.png", "cannot write PNG (x)")):
        again = pickle.loads(pickle.dumps(err))
        assert type(again) is type(err) and str(again) == str(err) and again.problem == err.problem
    assert str(ImageReadError("a\nb.png", "empty file")) == "a b.png: empty file"


@pytest.mark.filterwarnings("ignore")  # Pillow warns about corrupt EXIF/TIFF tags; that is fine
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "TIFF", "BMP", "PNG16"])
def test_damaged_files_only_raise_image_read_error(fmt: str) -> None:
    """Truncations and random byte changes: a Picture or an ImageReadError, never anything else."""
    if fmt == "PNG16":
        data = raw_png(gradient(16, 16, dtype=np.uint16), 2)
    else:
        buf = io.BytesIO()
        extra = {"exif": exif_with_thumbnail(">")} if fmt == "JPEG" else {}
        Image.fromarray(gradient(16, 16)).save(buf, fmt, **extra)
        data = buf.getvalue()
    rng = np.random.default_rng(11)
    variants = [data[:cut] for cut in np.linspace(1, len(data) - 1, 25).astype(int)]
    for _ in range(40):
        damaged = bytearray(data)
        for pos in rng.integers(0, len(data), 3):
            damaged[pos] = int(rng.integers(0, 256))
        variants.append(bytes(damaged))
    for variant in variants:
        try:
            pic = read_image(variant, name="damaged")
        except ImageReadError as err:
            assert "\n" not in str(err) and str(err).startswith("damaged: ")
        else:
            assert pic.pixels.ndim == 3


@pytest.mark.filterwarnings("ignore:Corrupt EXIF")
def test_exif_helpers_survive_garbage() -> None:
    from codeformer.data._imagebytes import exif_for_new_pixels, reset_orientation

    odd = bytearray(exif_bytes(6))  # orientation stored as an SLONG, which the in-place patch skips
    exif = Image.Exif()
    exif.load(bytes(odd))
    assert exif[0x0112] == 6
    e = "<" if odd[6:8] == b"II" else ">"
    ifd0 = 6 + struct.unpack_from(e + "I", odd, 10)[0]
    for i in range(struct.unpack_from(e + "H", odd, ifd0)[0]):
        entry = ifd0 + 2 + 12 * i
        if struct.unpack_from(e + "H", odd, entry)[0] == 0x0112:
            struct.pack_into(e + "HIH", odd, entry + 2, 9, 1, 0)  # type SLONG: not patchable in place
            struct.pack_into(e + "i", odd, entry + 8, 6)
    exif.load(reset_orientation(bytes(odd)))
    assert exif[0x0112] == 1 and exif[0x010F] == "TestCam"  # re-serialised by Pillow instead
    for junk in (b"", b"Exif\0\0", b"Exif\0\0MM\0*\xff\xff\xff\xff", bytes(range(256))):
        assert reset_orientation(junk) is None or isinstance(reset_orientation(junk), bytes)
        assert exif_for_new_pixels(junk, 10, 10) == junk


def test_directory_and_missing_path(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").mkdir()
    with pytest.raises(ImageReadError, match=r"x\.jpg: is a directory$"):
        read_image(tmp_path / "x.jpg")
    with pytest.raises(ImageReadError, match=r"nope\.png: no such file$"):
        read_image(tmp_path / "nope.png")


def test_bomb_rejected_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    data = huge_png_header(40000, 40000)
    decoded: list[str] = []  # behaviour, not time: the pixel decoder must never run for a bomb
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: decoded.append(im.format) or real_load(im))
    tracemalloc.start()
    with pytest.raises(ImageReadError, match="image too large"):
        read_image(data, name="big.png")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert decoded == [] and peak < 20_000_000
    assert read_image(png_bytes(gradient())).pixels.shape == (24, 32, 3) and "PNG" in decoded  # the probe sees
    limit_before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageReadError, match=r"small.png: image too large \(32×24 = 768 pixels, limit 100 pixels\)$"):
        read_image(png_bytes(gradient()), name="small.png", max_pixels=100)
    assert read_image(png_bytes(gradient()), max_pixels=24 * 32).pixels.shape == (24, 32, 3)
    assert read_image(huge_png_header(1, 1), max_pixels=None).pixels.shape == (1, 1, 3)
    assert Image.MAX_IMAGE_PIXELS == limit_before


def test_huge_file_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "video.jpg"
    with open(path, "wb") as f:  # sparse: costs no disk
        f.truncate(70 << 20)
    with pytest.raises(ImageReadError, match=r"video\.jpg: file too large \(0\.1 GB\)$"):
        read_image(path, max_pixels=1000)


def test_float_tiff_is_a_clear_error(tmp_path: Path) -> None:
    Image.fromarray(np.ones((4, 4), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ImageReadError, match="32-bit float"):
        read_image(tmp_path / "f.tif")


# ------------------------------------------------------------------------------- float helpers
def test_rgb_float_layouts() -> None:
    grey16 = Picture(np.full((4, 5, 1), 65535, np.uint16))
    out = rgb_float(grey16)
    assert out.shape == (4, 5, 3) and out.dtype == np.float32 and (out == 1.0).all()
    rgba = Picture(np.full((4, 5, 4), 51, np.uint8))
    assert rgb_float(rgba).shape == (4, 5, 3) and np.allclose(rgb_float(rgba), 0.2)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_bright_grey_never_turns_black(dtype: type) -> None:
    """Issue #222: values slightly above 1 must clip to white, not wrap to black."""
    top = np.iinfo(dtype).max
    pic = Picture(np.full((8, 8, 1), int(top * 0.98), dtype), is_grey=True)
    bright = rgb_float(pic) * 1.05 + 0.01
    before = bright.copy()
    out = from_rgb_float(pic, bright)
    assert np.array_equal(bright, before)  # the caller's array is left alone
    assert out.pixels.shape == (8, 8, 1) and out.pixels.dtype == dtype
    assert (out.pixels == top).all()
    nan = from_rgb_float(pic, np.full((8, 8, 3), np.nan, np.float32))
    assert (nan.pixels == 0).all()


def test_from_rgb_float_keeps_alpha_depth_and_metadata() -> None:
    arr = gradient(10, 12, 4, np.uint16)
    pic = Picture(arr, "TIFF", icc_profile=SRGB_ICC, exif=exif_bytes(1))
    same = from_rgb_float(pic, rgb_float(pic))
    assert np.array_equal(same.pixels, arr) and same.icc_profile == SRGB_ICC and same.format == "TIFF"
    big = from_rgb_float(pic, np.zeros((20, 24, 3), np.float32))
    assert big.pixels.shape == (20, 24, 4) and big.pixels.dtype == np.uint16
    assert abs(int(big.pixels[..., 3].mean()) - int(arr[..., 3].mean())) < 600
    with pytest.raises(ValueError):
        from_rgb_float(pic, np.zeros((20, 24), np.float32))


def test_encode_errors_are_one_line() -> None:
    with pytest.raises(ImageWriteError, match="^<stdout>: cannot encode XYZ"):
        encode_image(Picture(gradient()), "xyz")


def test_picture_validates() -> None:
    with pytest.raises(ValueError):
        Picture(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError):
        Picture(np.zeros((4, 4, 3), np.float32))


def test_image_paths() -> None:
    assert {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"} <= IMAGE_EXTENSIONS
    assert is_image_path("a/B.JPG") and is_image_path(Path("c.webp"))
    assert not is_image_path("notes.txt") and not is_image_path("._mac.jpg")
    assert not is_image_path(".x.png.tmp-0123abcd")


# ------------------------------------------------------------------------------------ atomic writes
def test_failed_write_leaves_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.png"
    write_image(target, Picture(gradient()))
    old = target.read_bytes()

    def broken(fp, pic, fmt, quality):  # writes some bytes, then the disk "fills up"
        fp.write(b"\x89PNG partial data" * 100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(images, "_encode_into", broken)
    with pytest.raises(ImageWriteError, match=r"out\.png: cannot write PNG \(No space left on device\)"):
        write_image(target, Picture(gradient(seed=1)))
    assert target.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_interrupt_cleans_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(fp, pic, fmt, quality):
        fp.write(b"x")
        raise KeyboardInterrupt

    monkeypatch.setattr(images, "_encode_into", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_image(tmp_path / "new.jpg", Picture(gradient()))
    assert list(tmp_path.iterdir()) == []


def test_bad_extension_and_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageWriteError, match=r"o\.xyz: unknown image extension '\.xyz'"):
        write_image(tmp_path / "o.xyz", Picture(gradient()))
    with pytest.raises(ImageWriteError, match="cannot write PNG"):
        write_image(tmp_path / "missing" / "o.png", Picture(gradient()))
    assert list(tmp_path.iterdir()) == []
    write_image(tmp_path / "o.xyz", Picture(gradient()), format="png")
    assert read_image(tmp_path / "o.xyz").format == "PNG"


def test_symlink_long_name_and_format_aliases(tmp_path: Path) -> None:
    real = tmp_path / "real.png"
    write_image(real, Picture(gradient()))
    (tmp_path / "link.png").symlink_to(real)
    write_image(tmp_path / "link.png", Picture(gradient(c=1)))
    assert (tmp_path / "link.png").is_symlink() and read_image(real).pixels.shape == (24, 32, 1)
    long = tmp_path / ("é" * 120 + ".jpg")  # 240 bytes: the temp name must be shortened
    write_image(long, Picture(gradient()))
    assert read_image(long).format == "JPEG" and len(list(tmp_path.iterdir())) == 3
    for alias, fmt in (("jpg", "JPEG"), (".tif", "TIFF"), ("Png", "PNG")):
        assert read_image(encode_image(Picture(gradient()), alias)).format == fmt


def test_unsupported_format_is_named(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(gradient()).save(buf, "TGA")
    (tmp_path / "old.tga").write_bytes(buf.getvalue())
    with pytest.raises(ImageReadError, match=r"old\.tga: unsupported image format TGA"):
        read_image(tmp_path / "old.tga")


def test_overwrite_keeps_permissions(tmp_path: Path) -> None:
    target = tmp_path / "o.png"
    write_image(target, Picture(gradient()))
    os.chmod(target, 0o640)
    write_image(target, Picture(gradient(seed=2)))
    assert target.stat().st_mode & 0o777 == 0o640


KILL_CHILD = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    import codeformer.data.images as images
    from codeformer.data.images import Picture, write_image

    def stop_here(*args):  # tell the parent where we are, then wait for SIGKILL
        print("here", flush=True)
        time.sleep(600)

    def half_written(fp, *args):
        fp.write(b"\\x89PNG\\r\\n half of a file")
        fp.flush()
        stop_here()

    if sys.argv[2] == "encoding":
        images._encode_into = half_written
    elif sys.argv[2] == "renaming":
        os.replace = stop_here  # written and fsynced, not yet renamed
    write_image(sys.argv[1], Picture(np.full((30, 40, 3), 200, np.uint8)))
    stop_here()  # "done": renamed
""")


def test_sigkill_mid_write_never_leaves_partial_file(tmp_path: Path) -> None:
    """SIGKILL at three exact points of a write (no sleeps to tune): while encoding, between fsync and rename,
    after the rename. The target is the old file, the old file, the new file; the next run sweeps the
    temporaries the killed writer left."""
    from codeformer.atomic import remove_stale_temporaries

    target = tmp_path / "big.png"
    old = encode_image(Picture(gradient()), "PNG")
    new = encode_image(Picture(np.full((30, 40, 3), 200, np.uint8)), "PNG")
    env = {**os.environ, "PYTHONPATH": str(Path(images.__file__).parents[2])}
    for stage, expected in (("encoding", old), ("renaming", old), ("done", new)):
        target.write_bytes(old)
        child = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(target), stage], stdout=subprocess.PIPE,
                                 env=env)
        assert child.stdout.readline().strip() == b"here"
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        assert target.read_bytes() == expected, stage
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p != target)
    assert len(leftovers) == 2 and all(n.startswith(".big.png.tmp-") and not is_image_path(n) for n in leftovers)
    assert len(remove_stale_temporaries(tmp_path, before=time.time() + 1)) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["big.png"]
