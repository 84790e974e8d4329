"""Format details for :mod:`codeformer.data.images`, where Pillow alone falls short.

Pillow reads and writes 16-bit colour PNG/TIFF only as 8-bit, and re-serialising EXIF with it can
lose data. Here: OpenCV decoding of 16-bit colour files, colour-managed CMYK, EXIF patched in
place, and hand-written 16-bit PNG/TIFF output (each checked by tests/test_images.py).
"""

from __future__ import annotations

import contextlib
import io
import struct
import zlib

import cv2
import numpy as np
from PIL import Image, ImageCms

EXIF_HEAD = b"Exif\x00\x00"  # how EXIF bytes start in a JPEG APP1 segment and in Picture.exif
ORIENTATION = 0x0112


def orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation 2-8 to H×W×C pixels, as PIL.ImageOps.exif_transpose does."""
    if orientation in (5, 6, 7, 8):
        pixels = np.rot90(pixels, k={5: -1, 6: -1, 7: 1, 8: 1}[orientation])
    if orientation in (2, 5, 7):
        return pixels[:, ::-1]
    return {3: pixels[::-1, ::-1], 4: pixels[::-1]}.get(orientation, pixels)


def _ifd(exif: bytes, endian: str, at: int) -> tuple[list[tuple[int, int, int, int]], int]:
    """Entries (tag, type, count, position of the value field) of the IFD at ``at``, and the position
    of its next-IFD pointer. Positions count from the start of ``exif`` (which has the Exif header)."""
    if at < len(EXIF_HEAD):
        raise struct.error("IFD outside the EXIF data")
    count = struct.unpack_from(endian + "H", exif, at)[0]
    struct.unpack_from(endian + "I", exif, at + 2 + 12 * count)  # the whole IFD must be there
    entries = [(*struct.unpack_from(endian + "HHI", exif, at + 2 + 12 * i), at + 2 + 12 * i + 8)
               for i in range(count)]
    return entries, at + 2 + 12 * count


def _set(out: bytearray, endian: str, entries: list[tuple[int, int, int, int]], values: dict[int, int]) -> set[int]:
    """Write ``values`` into matching single SHORT/LONG entries (left-justified); the tags written."""
    done = set()
    for tag, kind, count, pos in entries:
        if tag in values and count == 1 and kind in (3, 4):
            if kind == 3 and values[tag] > 0xFFFF:  # too big for a SHORT: the entry becomes a LONG
                kind = 4
                struct.pack_into(endian + "H", out, pos - 6, kind)
            struct.pack_into(endian + ("H" if kind == 3 else "I"), out, pos, values[tag])
            done.add(tag)
    return done


def _patch(exif: bytes, ifd0: dict[int, int], exif_ifd: dict[int, int], drop_ifd1: bool) -> tuple[bytes, set[int]]:
    """Overwrite values in IFD0 and the Exif sub-IFD in place, keeping all other bytes; ``drop_ifd1``
    unlinks the thumbnail directory. Returns the new bytes and the tags written; raises
    KeyError/struct.error on a layout it cannot read."""
    base = len(EXIF_HEAD)
    endian = {b"II": "<", b"MM": ">"}[exif[base:base + 2]]
    out = bytearray(exif)
    entries, next_at = _ifd(exif, endian, base + struct.unpack_from(endian + "I", exif, base + 4)[0])
    if drop_ifd1:
        struct.pack_into(endian + "I", out, next_at, 0)
    done = _set(out, endian, entries, ifd0)
    pointer = [pos for tag, kind, count, pos in entries if tag == 0x8769 and kind in (4, 13) and count == 1]
    if exif_ifd and pointer:
        sub = base + struct.unpack_from(endian + "I", exif, pointer[0])[0]
        done |= _set(out, endian, _ifd(exif, endian, sub)[0], exif_ifd)
    return bytes(out), done


def reset_orientation(exif: bytes) -> bytes | None:
    """Set the IFD0 orientation tag to 1 in place, keeping every other EXIF byte as it was.

    An unusual layout is re-serialised by Pillow; None when even that fails (better no EXIF than
    EXIF that makes viewers rotate the already-rotated pixels again)."""
    with contextlib.suppress(KeyError, struct.error):
        patched, done = _patch(exif, {ORIENTATION: 1}, {}, drop_ifd1=False)
        if ORIENTATION in done:
            return patched
    try:
        parsed = Image.Exif()
        parsed.load(exif)
        parsed[ORIENTATION] = 1
        return parsed.tobytes()
    except Exception:  # any failure of Pillow's parser on corrupt EXIF
        return None


def exif_for_new_pixels(exif: bytes, width: int, height: int) -> bytes:
    """EXIF for restored pixels: PixelX/YDimension set to ``width``/``height`` and the embedded
    thumbnail (a preview of the unrestored input) unlinked. Unreadable layouts are returned as is."""
    with contextlib.suppress(KeyError, struct.error):
        return _patch(exif, {}, {0xA002: width, 0xA003: height}, drop_ifd1=True)[0]
    return exif


def needs_16bit_decoder(im: Image.Image, data: bytes) -> bool:
    """16-bit colour (or grey+alpha) PNG/TIFF, which Pillow would squeeze to 8 bits."""
    if im.format == "PNG":  # IHDR: bit depth at byte 24, colour type at 25
        return data[24] == 16 and data[25] in (2, 4, 6)
    if im.format == "TIFF" and im.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        bits = getattr(im, "tag_v2", {}).get(258, (8,))
        return 16 in (bits if isinstance(bits, tuple) else (bits,))
    return False


def decode_16bit(data: bytes, size: tuple[int, int]) -> np.ndarray | None:
    """H×W×C uint16 (C = 1, 3 or 4, RGB order; grey+alpha expanded to RGBA) decoded by OpenCV, without
    applying EXIF orientation; None if OpenCV fails or disagrees with the header's (width, height)."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or (arr.shape[1], arr.shape[0]) != size or arr.dtype not in (np.uint8, np.uint16):
        return None
    arr = arr[..., None] if arr.ndim == 2 else arr
    order = {1: [0], 2: [0, 0, 0, 1], 3: [2, 1, 0], 4: [2, 1, 0, 3]}[arr.shape[2]]  # BGR(A) → RGB(A)
    return arr[..., order]


def cmyk_to_rgb(im: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None, str]:
    """CMYK → RGB: colour-managed to sRGB (and tagged sRGB) when the file has a CMYK profile."""
    if icc:
        with contextlib.suppress(ImageCms.PyCMSError, OSError, ValueError):
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
            rgb = ImageCms.profileToProfile(im, src, srgb, outputMode="RGB")
            if rgb is not None:
                return rgb, srgb.tobytes(), "CMYK converted to sRGB with its ICC profile"
    return im.convert("RGB"), None, "CMYK converted to RGB"


def png16(px: np.ndarray, meta: dict[str, bytes], dpi: tuple[float, float] | None) -> bytes:
    """16-bit RGB/RGBA PNG via OpenCV (Pillow cannot), with iCCP/eXIf/pHYs chunks added after IHDR."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(px[..., [2, 1, 0, 3][: px.shape[2]]]))
    if not ok:
        raise ValueError("OpenCV could not encode a 16-bit PNG")
    chunks = []
    if "icc_profile" in meta:
        chunks.append((b"iCCP", b"ICC profile\0\0" + zlib.compress(meta["icc_profile"])))
    if "exif" in meta:
        exif = meta["exif"]
        chunks.append((b"eXIf", exif[len(EXIF_HEAD):] if exif.startswith(EXIF_HEAD) else exif))
    if dpi:
        chunks.append((b"pHYs", struct.pack(">IIB", *(round(d / 0.0254) for d in dpi), 1)))  # per metre
    data, ihdr_end = buf.tobytes(), 8 + 8 + 13 + 4
    extra = b"".join(struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
                     for kind, body in chunks)
    return data[:ihdr_end] + extra + data[ihdr_end:]


def tiff16(px: np.ndarray, icc: bytes | None, dpi: tuple[float, float] | None) -> bytes:
    """16-bit RGB/RGBA baseline TIFF: one deflate strip with horizontal predictor, straight alpha,
    ICC profile and resolution tags when given."""
    h, w, c = px.shape
    diff = px.astype("<u2")
    diff[:, 1:] -= px[:, :-1]  # predictor 2: wrapping differences along each row
    strip = zlib.compress(diff.tobytes(), 6)
    if len(strip) + len(icc or b"") > 0xFFFF0000:  # classic TIFF offsets are 32-bit
        raise ValueError("image too large for a TIFF file (4 GB); use PNG")
    # (tag, type, values): type 3 SHORT, 4 LONG, 5 RATIONAL (pairs), 7 UNDEFINED (bytes); strip at offset 8
    tags = [(256, 4, [w]), (257, 4, [h]), (258, 3, [16] * c), (259, 3, [8]), (262, 3, [2]), (273, 4, [8]),
            (277, 3, [c]), (278, 4, [h]), (279, 4, [len(strip)]), (284, 3, [1]), (317, 3, [2]),
            (339, 3, [1] * c)] + ([(338, 3, [2])] if c == 4 else []) + ([(34675, 7, icc)] if icc else [])
    if dpi:
        tags += [(282, 5, [round(dpi[0] * 1000), 1000]), (283, 5, [round(dpi[1] * 1000), 1000]), (296, 3, [2])]
    ifd_at = 8 + len(strip) + (len(strip) & 1)
    out_of_line = ifd_at + 2 + 12 * len(tags) + 4
    entries, extra = b"", b""
    for tag, kind, values in sorted(tags, key=lambda t: t[0]):
        value = bytes(values) if kind == 7 else struct.pack(f"<{len(values)}{'H' if kind == 3 else 'I'}", *values)
        count = len(values) // 2 if kind == 5 else len(values)
        if len(value) <= 4:
            entries += struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\0")
        else:
            entries += struct.pack("<HHII", tag, kind, count, out_of_line + len(extra))
            extra += value + b"\0" * (len(value) & 1)
    header = b"II*\0" + struct.pack("<I", ifd_at)
    ifd = struct.pack("<H", len(tags)) + entries + b"\0\0\0\0"
    return header + strip + b"\0" * (len(strip) & 1) + ifd + extra
