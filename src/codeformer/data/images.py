"""Faithful image file I/O: alpha, 16-bit, grey, ICC/EXIF kept; bomb guard; atomic writes.

The official CodeFormer drops alpha, squeezes 16-bit to 8-bit and can turn grey inputs black (#222).
Here a file becomes a :class:`Picture` (pixels in the file's own layout and depth plus its metadata),
the model works on :func:`rgb_float`, and :func:`from_rgb_float` rebuilds the input's layout.
Every failure is an :class:`ImageReadError` / :class:`ImageWriteError` with a one-line message
``"<name>: <problem>"``. Pillow's global MAX_IMAGE_PIXELS is never changed: sizes are checked here.
Format details Pillow gets wrong (16-bit colour, CMYK, EXIF patching) are in ``_imagebytes``.
"""

from __future__ import annotations

import contextlib
import io
import numbers
import os
import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image

from codeformer.atomic import temp_path
from codeformer.data._imagebytes import (
    EXIF_HEAD,
    ORIENTATION,
    cmyk_to_rgb,
    decode_16bit,
    exif_for_new_pixels,
    needs_16bit_decoder,
    orient,
    png16,
    reset_orientation,
    tiff16,
)

DEFAULT_MAX_PIXELS = 178_956_970  # the same as Pillow's default MAX_IMAGE_PIXELS
_EXT_FORMAT = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG",
               ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP", ".gif": "GIF",
               ".avif": "AVIF"}
IMAGE_EXTENSIONS = frozenset(_EXT_FORMAT)
# Only these Pillow decoders are tried: no EPS (Ghostscript), no guessing of magic-less formats like TGA.
_READ_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF", "AVIF", "PPM")
_HEIF_BRANDS = (b"ftypheic", b"ftypheix", b"ftyphevc", b"ftypmif1", b"ftypmsf1")
_TEXT_BYTES = bytes([7, 8, 9, 10, 12, 13, 27]) + bytes(range(0x20, 0x100))  # as file(1) guesses text
_GREY_VARIANCE = 10.0  # official is_gray: mean variance of channel differences (8-bit units) <= 10
# What Pillow's decoders raise on broken data (LOAD_TRUNCATED_IMAGES stays False, so truncation raises).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, TypeError, EOFError, IndexError, KeyError, struct.error,
                  zlib.error)


class _OneLineError(ValueError):
    def __init__(self, name: str, problem: str) -> None:
        self.name, self.problem = (" ".join(str(t).split()) for t in (name, problem))
        super().__init__(f"{self.name}: {self.problem}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # picklable across worker processes
        return type(self), (self.name, self.problem)


class ImageReadError(_OneLineError):
    """A file that cannot be read as an image; ``str()`` is one line ``"<name>: <problem>"``."""


class ImageWriteError(_OneLineError):
    """An image that cannot be written; ``str()`` is one line ``"<name>: <problem>"``."""


@dataclass
class Picture:
    """An image as stored in its file.

    pixels: H×W×C array, C = 1 (grey), 3 (RGB) or 4 (RGBA, straight alpha); uint8 or uint16 (the
    source depth). format: Pillow's name ("PNG", "JPEG", ...). icc_profile / exif: raw bytes or None;
    exif starts with ``b"Exif\\0\\0"`` and its orientation is 1 (already applied to ``pixels``).
    is_grey: one channel, or colour channels (near) identical. note: what reading changed, or None.
    dpi: (horizontal, vertical) resolution from the file, or None.
    """

    pixels: np.ndarray
    format: str = "PNG"
    icc_profile: bytes | None = None
    exif: bytes | None = None
    is_grey: bool = False
    note: str | None = None
    dpi: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        p = self.pixels
        if p.ndim != 3 or p.shape[2] not in (1, 3, 4) or p.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"Picture pixels must be H×W×{{1,3,4}} uint8/uint16, got {p.shape} {p.dtype}")

    @property
    def has_alpha(self) -> bool:
        """True for RGBA (C = 4)."""
        return self.pixels.shape[2] == 4

    @property
    def bit_depth(self) -> int:
        """8 (uint8) or 16 (uint16)."""
        return 16 if self.pixels.dtype == np.uint16 else 8


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """True for a name with an image extension (any case); hidden files such as ``._x.jpg`` are skipped."""
    name = Path(path).name
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS


def format_from_extension(path: str | os.PathLike[str]) -> str:
    """The write format for ``path``'s extension ("PNG", "JPEG", ...); ImageWriteError if unknown."""
    fmt = _EXT_FORMAT.get(Path(path).suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(_EXT_FORMAT))
        raise ImageWriteError(str(path), f"unknown image extension {Path(path).suffix!r} (use {known})")
    return fmt


def looks_grey(pixels: np.ndarray, threshold: float = _GREY_VARIANCE) -> bool:
    """Grey test of the official code: mean variance of the pairwise channel differences, in 8-bit units.

    pixels: H×W×C uint8/uint16 (alpha ignored). Large images are subsampled to about 250k pixels.
    """
    if pixels.shape[2] == 1:
        return True
    step = max(1, int((pixels.shape[0] * pixels.shape[1] / 250_000) ** 0.5))
    rgb = pixels[::step, ::step, :3].astype(np.float32) / (257.0 if pixels.dtype == np.uint16 else 1.0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return float(((r - g).var() + (g - b).var() + (b - r).var()) / 3.0) <= threshold


def rgb_float(pic: Picture) -> np.ndarray:
    """H×W×3 float32 in [0, 1] for the model: grey replicated, alpha dropped, 16-bit divided by 65535."""
    rgb = pic.pixels[..., :3].astype(np.float32)
    rgb *= 1.0 / (65535.0 if pic.bit_depth == 16 else 255.0)
    return np.repeat(rgb, 3, axis=2) if rgb.shape[2] == 1 else rgb


def from_rgb_float(pic: Picture, rgb: np.ndarray) -> Picture:
    """Build the output Picture from model output ``rgb`` (H'×W'×3 float, nominally [0, 1]).

    The result has ``pic``'s layout and depth: one channel (Rec. 601 luma) if ``pic`` had one, its
    alpha resized to H'×W' if it had alpha, uint16 if it was 16-bit. NaN becomes 0 and values are
    clipped to [0, 1] before scaling, so nothing can wrap around (issue #222: black output).
    Metadata (format, ICC, EXIF, is_grey, dpi) is carried over; note is None. The dpi is scaled with
    the size, so the print size stays; in the EXIF, the pixel dimensions are updated and the
    thumbnail (a preview of the unrestored input) is removed.
    """
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 array, got shape {rgb.shape}")
    rgb = np.fmin(np.fmax(rgb, 0.0), 1.0)  # fmax/fmin drop NaN: NaN → 0, +inf → 1, -inf → 0
    if pic.pixels.shape[2] == 1:
        rgb = np.fmin(rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32), 1.0)[..., None]
    rgb *= 65535.0 if pic.bit_depth == 16 else 255.0
    out = np.rint(rgb, out=rgb).astype(pic.pixels.dtype)
    if pic.has_alpha:
        alpha, (h, w) = pic.pixels[..., 3], out.shape[:2]
        if alpha.shape != (h, w):
            shrink = h * w < alpha.size
            alpha = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        out = np.concatenate([out, alpha[..., None]], axis=2)
    (h, w), (h0, w0) = out.shape[:2], pic.pixels.shape[:2]
    exif = exif_for_new_pixels(pic.exif, w, h) if pic.exif else None
    dpi = (pic.dpi[0] * w / w0, pic.dpi[1] * h / h0) if pic.dpi else None
    return Picture(np.ascontiguousarray(out), pic.format, pic.icc_profile, exif, pic.is_grey, None, dpi)


# ---------------------------------------------------------------------------------------------- reading
def read_image(source: str | os.PathLike[str] | bytes, name: str | None = None,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Picture:
    """Read an image file (or its bytes, e.g. from stdin) into a :class:`Picture`.

    EXIF orientation is applied to the pixels and reset to 1 in the kept EXIF bytes. Palette images
    become RGB/RGBA, grey+alpha becomes RGBA, CMYK becomes RGB (through its ICC profile when it has
    one), 16-bit grey/colour PNG and TIFF stay uint16, animations give their first frame (with a
    note); 32-bit float images are refused. Width×height from the header is checked against
    ``max_pixels`` (None: no limit) before anything is decoded. Raises ImageReadError (one line,
    starting with ``name``, else the path, else ``"<stdin>"``) for anything unreadable.
    """
    max_pixels = max_pixels if max_pixels is not None else 1 << 62
    if isinstance(source, (bytes, bytearray, memoryview)):
        label, data = name or "<stdin>", bytes(source)
    else:
        label = name or os.fspath(source)
        data = _read_bytes(source, label, max_pixels)
    if not data:
        raise ImageReadError(label, "empty file")
    im = _open_lazy(data, label)
    try:
        return _decode(im, data, label, max_pixels)
    finally:
        im.close()


def _read_bytes(path: str | os.PathLike[str], label: str, max_pixels: int) -> bytes:
    try:
        # Checked before opening: opening a FIFO for reading blocks until a writer comes, i.e. forever.
        kind = special_file_kind(path)
        if kind is not None:
            raise ImageReadError(label, f"not a regular file ({kind})")
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError
            if not stat.S_ISREG(st.st_mode):  # swapped for something else since the check
                raise ImageReadError(label, "not a regular file")
            if st.st_size > 8 * max_pixels + (64 << 20):  # beyond 16-bit RGBA at the pixel limit
                raise ImageReadError(label, f"file too large ({st.st_size / 1e9:.1f} GB)")
            return f.read()
    except FileNotFoundError:
        raise ImageReadError(label, "no such file") from None
    except IsADirectoryError:
        raise ImageReadError(label, "is a directory") from None
    except PermissionError:  # Windows reports a directory this way
        raise ImageReadError(label, "is a directory" if os.path.isdir(path) else "permission denied") from None
    except OSError as exc:
        raise ImageReadError(label, f"cannot read file ({exc.strerror or exc})") from exc


def special_file_kind(path: str | os.PathLike[str]) -> str | None:
    """"FIFO", "socket", "device" for such a file (after following links), None for a regular file, a folder
    or a missing path. Reading a FIFO or a device can block or never end, so these are never opened."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return None


def _open_lazy(data: bytes, label: str) -> Image.Image:
    """Identify ``data`` with the allowed Pillow plugins, reading only the header (no size check yet)."""
    Image.init()
    for fmt in _READ_FORMATS:
        factory, accept = Image.OPEN.get(fmt, (None, None))
        if factory is None or (accept is not None and accept(data[:16]) is not True):
            continue
        try:
            return factory(io.BytesIO(data), label)
        except _DECODE_ERRORS as exc:
            raise ImageReadError(label, f"truncated or corrupt {fmt}") from exc
    if data[4:12] in _HEIF_BRANDS:
        raise ImageReadError(label, "HEIC/HEIF images are not supported (convert to JPEG or PNG)")
    pillow_fmt = Image.registered_extensions().get(Path(label).suffix.lower())
    if pillow_fmt and pillow_fmt not in _READ_FORMATS:  # named like a format we choose not to parse
        raise ImageReadError(label, f"unsupported image format {pillow_fmt} (convert to PNG or JPEG)")
    is_text = not data[:4096].translate(None, _TEXT_BYTES)
    raise ImageReadError(label, "not an image (a text file)" if is_text else "not an image")


def _decode(im: Image.Image, data: bytes, label: str, max_pixels: int) -> Picture:
    fmt = "JPEG" if im.format == "MPO" else str(im.format)
    width, height = im.size
    if width <= 0 or height <= 0:
        raise ImageReadError(label, f"image has no pixels ({width}×{height})")
    if width * height > max_pixels:
        raise ImageReadError(label, f"image too large ({width}×{height} = {_amount(width * height)},"
                                    f" limit {_amount(max_pixels)})")
    notes: list[str] = []
    try:
        frames = getattr(im, "n_frames", 1)
        if frames > 1 and fmt != "JPEG":  # a phone's MPO JPEG: the other pictures are previews
            kind = {"GIF": "animated GIF", "TIFF": "multi-page TIFF"}.get(fmt, f"animated {fmt}")
            notes.append(f"{kind}: used the first of {frames} frames")
        im.seek(0)
        im.load()
        orientation = im.getexif().get(ORIENTATION, 1)
        if needs_16bit_decoder(im, data):
            pixels, icc = decode_16bit(data, (width, height)), im.info.get("icc_profile") or None
            if pixels is None:
                raise ImageReadError(label, f"truncated or corrupt {fmt}")
        else:
            pixels, icc, note = _pillow_pixels(im, label)
            notes += [note] if note else []
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:  # a later frame larger than the header said
        raise ImageReadError(label, f"image too large (limit {_amount(max_pixels)})") from exc
    except _DECODE_ERRORS as exc:
        raise ImageReadError(label, f"truncated or corrupt {fmt}") from exc
    exif = im.info.get("exif") or None
    if exif is not None and not exif.startswith(EXIF_HEAD):
        exif = EXIF_HEAD + exif
    dpi = im.info.get("dpi")  # only kept when it is two sane numbers
    ok = isinstance(dpi, tuple) and len(dpi) == 2 and all(isinstance(d, numbers.Real) and 1 <= d <= 1e5 for d in dpi)
    dpi = (float(dpi[0]), float(dpi[1])) if ok else None
    if orientation in range(2, 9):
        pixels = orient(pixels, orientation)
        dpi = dpi[::-1] if dpi and orientation >= 5 else dpi  # a quarter turn swaps x and y
        if exif is not None and (exif := reset_orientation(exif)) is None:
            notes.append("EXIF dropped (unreadable, and its orientation was applied)")
    if icc is not None and not _icc_fits(icc, pixels.shape[2]):
        notes.append(f"ICC profile dropped (a {icc[16:20].decode('latin-1').strip()!r} profile)")
        icc = None
    pixels = np.require(pixels, requirements=["C", "W"])  # Pillow's arrays are read-only views of bytes
    return Picture(pixels, fmt, icc, exif, looks_grey(pixels), "; ".join(notes) or None, dpi)


def _amount(n: int) -> str:
    """1_600_000_000 → "1.6 gigapixels", 178_956_970 → "178 megapixels", 500 → "500 pixels"."""
    return f"{n / 1e9:.1f} gigapixels" if n >= 10**9 else f"{n // 10**6} megapixels" if n >= 10**6 else f"{n} pixels"


def _icc_fits(icc: bytes, channels: int) -> bool:
    """Whether the profile's colour space (header bytes 16-20) suits pixels with ``channels`` channels."""
    return icc[16:20] == (b"GRAY" if channels == 1 else b"RGB ")


def _pillow_pixels(im: Image.Image, label: str) -> tuple[np.ndarray, bytes | None, str | None]:
    """Pixels (H×W×C uint8/uint16), the ICC profile to keep, and a note, for a loaded Pillow image."""
    icc, mode, note = im.info.get("icc_profile") or None, im.mode, None
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(im)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ImageReadError(label, "32-bit integer pixels outside 0-65535 are not supported")
        return arr.astype(np.uint16)[..., None], icc, None
    if mode == "F":
        raise ImageReadError(label, "32-bit float images are not supported (convert to 16-bit)")
    if mode == "1":
        im = im.convert("L")
    elif mode in ("L", "RGB") and "transparency" in im.info:  # a PNG colour key (tRNS chunk)
        im, note = im.convert("RGBA"), "transparent colour turned into alpha"
    elif mode in ("P", "PA"):
        transparent = mode == "PA" or "transparency" in im.info or im.palette.mode == "RGBA"
        im = im.convert("RGBA" if transparent else "RGB")
        note = f"palette expanded to {im.mode}"
    elif mode in ("LA", "La"):
        im, note = im.convert("RGBA"), "grey+alpha expanded to RGBA"
    elif mode == "CMYK":
        im, icc, note = cmyk_to_rgb(im, icc)
    elif mode not in ("L", "RGB", "RGBA"):
        try:
            im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
        except ValueError:
            raise ImageReadError(label, f"unsupported colour mode {mode}") from None
        note = f"{mode} converted to {im.mode}" if mode not in ("RGBX", "RGBa") else None
    arr = np.asarray(im)
    return (arr[..., None] if arr.ndim == 2 else arr), icc, note


# ---------------------------------------------------------------------------------------------- writing
def encode_image(pic: Picture, format: str, quality: int = 95, name: str = "<stdout>") -> bytes:
    """``pic`` encoded as ``format`` ("PNG", "jpg", ...) as :func:`write_image` would, e.g. for stdout;
    failures raise ImageWriteError starting with ``name``."""
    buf, fmt = io.BytesIO(), _format_name(format)
    try:
        _encode_into(buf, pic, fmt, quality)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ImageWriteError(name, f"cannot encode {fmt} ({exc})") from exc
    return buf.getvalue()


def _format_name(fmt: str) -> str:
    """ "png", "jpg", ".tif" → "PNG", "JPEG", "TIFF"; other names upper-cased."""
    return _EXT_FORMAT.get("." + fmt.lower().lstrip("."), fmt.upper())


def write_image(path: str | os.PathLike[str], pic: Picture, format: str | None = None,
                quality: int = 95) -> str | None:
    """Write ``pic`` to ``path`` atomically; return a note on what the format could not keep, or None.

    The format comes from the extension unless given; quality (1-100) is for JPEG/WEBP/AVIF (WEBP
    at 100 is lossless). ICC and EXIF are kept by JPEG, PNG, WEBP, AVIF and TIFF (not EXIF by 16-bit
    colour TIFF); 16-bit is kept by PNG and TIFF and reduced to 8-bit elsewhere; JPEG/BMP have no
    alpha, so RGBA is flattened onto white.
    The data go to ``.<name>.tmp-<pid>-<random>`` in the same folder, are fsynced and renamed over
    ``path`` (keeping an old file's permissions); on any failure the temp file is removed and an old
    ``path`` is left untouched. Raises ImageWriteError (one line) on failure.
    """
    path = Path(os.path.realpath(path)) if os.path.islink(path) else Path(path)  # keep a symlink, update its file
    fmt = _format_name(format) if format else format_from_extension(path)
    tmp = temp_path(path)  # cut by bytes; a crash's leftover is swept by `atomic.remove_stale_temporaries`
    try:
        with open(tmp, "xb") as f:
            note = _encode_into(f, pic, fmt, quality)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, Exception) and not isinstance(exc, ImageWriteError):
            problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ImageWriteError(str(path), f"cannot write {fmt} ({problem})") from exc
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX only)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return note


def _encode_into(fp: BinaryIO, pic: Picture, fmt: str, quality: int) -> str | None:
    """Encode ``pic`` as ``fmt`` into the open binary file ``fp``; return a note on losses or None."""
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be 1-100, got {quality}")
    px, notes = pic.pixels, []
    if px.dtype == np.uint16 and fmt not in ("PNG", "TIFF"):
        px = ((px.astype(np.uint32) + 128) // 257).astype(np.uint8)
        notes.append(f"{fmt} has no 16-bit: reduced to 8-bit")
    if px.shape[2] == 4 and fmt in ("JPEG", "BMP"):
        top = 65535.0 if px.dtype == np.uint16 else 255.0
        a = px[..., 3:].astype(np.float32) / top
        px = np.rint(px[..., :3] * a + top * (1.0 - a)).astype(px.dtype)
        notes.append(f"{fmt} has no alpha: flattened onto white")
    meta: dict[str, bytes] = {}
    if fmt in ("JPEG", "PNG", "WEBP", "TIFF", "AVIF"):
        meta = {k: v for k, v in (("icc_profile", pic.icc_profile), ("exif", pic.exif)) if v}
        if pic.icc_profile and not _icc_fits(pic.icc_profile, 3 if fmt in ("WEBP", "AVIF") else px.shape[2]):
            del meta["icc_profile"]
            notes.append("ICC profile not written (its colour space does not match the pixels)")
        if fmt == "JPEG" and len(pic.exif or b"") > 65533:  # one APP1 segment holds at most 64 KiB
            del meta["exif"]
            notes.append("EXIF not written (over the 64 KiB a JPEG can hold)")
    if px.dtype == np.uint16 and px.shape[2] > 1:
        fp.write(png16(px, meta, pic.dpi) if fmt == "PNG" else tiff16(px, meta.get("icc_profile"), pic.dpi))
        if "exif" in meta and fmt == "TIFF":
            notes.append("EXIF not written (16-bit colour TIFF)")
        return "; ".join(notes) or None
    options: dict[str, object] = dict(meta)
    if pic.dpi and fmt in ("JPEG", "PNG", "TIFF"):
        options["dpi"] = pic.dpi
    if fmt == "JPEG":
        options.update(quality=quality, subsampling=0 if quality >= 90 else 2)
    elif fmt == "WEBP":  # exact: keep the colour under transparent pixels
        options.update(quality=quality, lossless=quality == 100, exact=True)
    elif fmt == "AVIF":
        options.update(quality=quality)
    elif fmt == "TIFF":
        options.update(compression="tiff_lzw")
    elif fmt == "GIF":
        notes.append("GIF: reduced to 256 colours")
    try:
        Image.fromarray(px[..., 0] if px.shape[2] == 1 else px).save(fp, format=fmt, **options)
    except KeyError:
        raise ValueError(f"unknown image format {fmt!r}") from None
    return "; ".join(notes) or None
