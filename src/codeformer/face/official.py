"""The official FaceRestoreHelper's alignment and paste-back (sczhou/CodeFormer facelib), reproduced to the bit.

Everything here works on uint8 BGR photos and faces, in the official dtypes and with OpenCV, as the official
`face_restoration_helper.py` does. With OpenCV 5 the results equal the official outputs bit for bit (parity kit
`../shared/parity/pipeline`, part (d)); OpenCV 4.x quantises warp coordinates, which moves pasted values by at most
2 levels. Our default pipeline (`align.py`, `paste.py`) departs from these conventions on purpose; docs/restore.md
lists each difference.

The conventions that decide bit-parity, all kept here:
- alignment: LMEDS similarity of the float32 landmarks onto the 512 template; bilinear crop, grey border (135, 133,
  132) in BGR;
- inverse affine: the inverted matrix times `upscale` (all six entries), then, without a face upsampler and for
  upscale > 1, +0.5·upscale on the translation (the official half-pixel "correction"); with a face upsampler the
  matrix is divided by upscale and its translation multiplied back, and the face is 512·upscale. The official
  code edits its stored matrix in place on each paste; `paste_matrix` returns the matrix of one official call;
- masks: a warped square of float32 ones, eroded by even (2·s)² and (2·w_edge)² kernels with the default anchor,
  w_edge = int(√area) // 20 from the float32 sum, float32 GaussianBlur (2·w_edge + 1) with sigma from the size;
- parse mask: `parsing.parse_mask` in float64 (0/255 by class, blurred twice, border zeroed, /255), warped in
  float64, merged as `parse·f + soft·(1 − f)` with f = (parse < soft);
- blend: `mask·face + (1 − mask)·canvas` (float32 without parse, float64 with), truncated by `.astype(uint8)`.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from codeformer.face.align import FACE_SIZE, TEMPLATE_512

BORDER_BGR = (135, 133, 132)  # the official crop's constant border, BGR
MIN_SHORT_SIDE = 512  # the official read_image enlarges smaller photos to this short side
DETECT_SHORT_SIDE = 640  # get_face_landmarks_5(resize=640)
MAX_DETECT_LONG_SIDE = 8192  # ours: refuse photos whose detector input would be longer (the official has no cap)
EYE_DIST_THRESHOLD = 5  # get_face_landmarks_5(eye_dist_threshold=5), as the official script calls it


def official_read_resize(photo_bgr: np.ndarray) -> np.ndarray:
    """The official `read_image` size rule: a photo whose short side is below 512 is enlarged bilinearly by
    f = 512 / short side (`cv2.resize` with fx = fy = f, which rounds the size); others are returned as they are."""
    short = min(photo_bgr.shape[:2])
    if short >= MIN_SHORT_SIDE:
        return photo_bgr
    f = MIN_SHORT_SIDE / short
    return cv2.resize(photo_bgr, (0, 0), fx=f, fy=f, interpolation=cv2.INTER_LINEAR)


def parse_input(face_bgr: np.ndarray) -> np.ndarray:
    """The 512² uint8 BGR face the official parse mask is computed from: the restored (maybe upsampled) face
    resized bilinearly to 512 (a no-op at 512)."""
    return cv2.resize(face_bgr, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LINEAR)


def official_affine(landmarks5: np.ndarray, face_size: int = FACE_SIZE) -> np.ndarray:
    """2×3 float64 image → crop similarity: `cv2.estimateAffinePartial2D` with LMEDS of the (5, 2) landmarks onto
    the template scaled to `face_size`. The official landmarks are float32 (rows of the detector's output), so
    they are cast to float32 first; raises ValueError when OpenCV finds no transform."""
    src = np.asarray(landmarks5, dtype=np.float32).reshape(5, 2)
    matrix = cv2.estimateAffinePartial2D(src, TEMPLATE_512 * (face_size / FACE_SIZE), method=cv2.LMEDS)[0]
    if matrix is None:
        raise ValueError("estimateAffinePartial2D found no similarity for these landmarks")
    return matrix


def official_crop(photo_bgr: np.ndarray, affine: np.ndarray, face_size: int = FACE_SIZE) -> np.ndarray:
    """face_size² uint8 crop of an H×W×3 uint8 BGR photo: bilinear warp, constant border (135, 133, 132)."""
    return cv2.warpAffine(photo_bgr, affine, (face_size, face_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=BORDER_BGR)


def official_inverse_affine(affine: np.ndarray, upscale: int) -> np.ndarray:
    """The official `get_inverse_affine`: crop → upscaled image, `invertAffineTransform(affine) * upscale`."""
    return cv2.invertAffineTransform(affine) * upscale


def paste_matrix(inverse_affine: np.ndarray, upscale: int, face_upsampled: bool = False) -> np.ndarray:
    """The matrix one official `paste_faces_to_input_image` call warps with (a new array; the input is kept).

    face_upsampled: the face was enlarged by `upscale` first (the official --face_upsample): the matrix is
    divided by upscale and its translation multiplied back. Otherwise, for upscale > 1, 0.5·upscale is added to
    the translation (the official offset; the exact pixel-centre shift would be 0.5·(upscale − 1))."""
    matrix = np.array(inverse_affine, dtype=np.float64, copy=True)
    if face_upsampled:
        matrix /= upscale
        matrix[:, 2] *= upscale
    elif upscale > 1:
        matrix[:, 2] += 0.5 * upscale
    return matrix


def official_background(photo_bgr: np.ndarray, upscale: int, upsampled: np.ndarray | None = None) -> np.ndarray:
    """The canvas faces are pasted on, (H·s)×(W·s)×3 uint8: the photo enlarged bilinearly, or `upsampled` (a
    background upsampler's output) resized with Lanczos-4 to exactly that size (a copy when it already fits)."""
    h, w = photo_bgr.shape[:2]
    size = (w * upscale, h * upscale)
    if upsampled is None:
        return cv2.resize(photo_bgr, size, interpolation=cv2.INTER_LINEAR)
    return cv2.resize(upsampled, size, interpolation=cv2.INTER_LANCZOS4)


def erosion_mask(matrix: np.ndarray, face_size: int, out_size: tuple[int, int], upscale: int) -> np.ndarray:
    """out_size (w, h) → H×W float32: a face_size² square of ones warped with `matrix`, eroded by a (2·upscale)²
    kernel (even, default anchor: the top/left edge loses one pixel more; the image edge does not erode)."""
    ones = np.ones((face_size, face_size), dtype=np.float32)
    inv_mask = cv2.warpAffine(ones, matrix, out_size)
    return cv2.erode(inv_mask, np.ones((int(2 * upscale), int(2 * upscale)), np.uint8))


def soft_mask(inv_mask_erosion: np.ndarray) -> np.ndarray:
    """The feathered square, H×W float32: w_edge = int(√(float32 area)) // 20, erode by (2·w_edge)², float32
    GaussianBlur of size 2·w_edge + 1 (sigma from the size). Inside the face it may be one ulp above 1: the
    17-tap float32 kernel sums to 1.0000001, and the official blend uses that value as it is."""
    area = np.sum(inv_mask_erosion)
    w_edge = int(area**0.5) // 20
    centre = cv2.erode(inv_mask_erosion, np.ones((w_edge * 2, w_edge * 2), np.uint8))
    return cv2.GaussianBlur(centre, (w_edge * 2 + 1, w_edge * 2 + 1), 0)


def warp_parse_mask(mask: np.ndarray, matrix: np.ndarray, face_size: int, out_size: tuple[int, int]) -> np.ndarray:
    """H×W float64: the 512² float64 parse mask resized (bilinear) to face_size and warped with `matrix`
    (flags=3, which warpAffine runs as bilinear; float64, border 0)."""
    mask = cv2.resize(np.asarray(mask, dtype=np.float64), (face_size, face_size), interpolation=cv2.INTER_LINEAR)
    return cv2.warpAffine(mask, matrix, out_size, flags=3)


def paste_face(canvas: np.ndarray, face_bgr: np.ndarray, matrix: np.ndarray, upscale: int,
               parse_mask: np.ndarray | None = None) -> np.ndarray:
    """Blend one restored face into `canvas` as the official loop body does; returns the new canvas.

    canvas: H×W×3, uint8 (the background) or the float result of an earlier face. face_bgr: S×S×3 uint8 (S = 512,
    or 512·s when upsampled). matrix: from `paste_matrix`. parse_mask: the 512² float64 mask
    (`parsing.parse_mask(labels, np.float64)`), or None for the square mask alone. The result is float32 without
    a parse mask and float64 with one (the official dtypes); truncate with `.astype(np.uint8)` after the last face."""
    h, w = canvas.shape[:2]
    size = face_bgr.shape[0]
    inv_restored = cv2.warpAffine(face_bgr, matrix, (w, h))
    inv_mask_erosion = erosion_mask(matrix, size, (w, h), upscale)
    pasted = inv_mask_erosion[:, :, None] * inv_restored
    mask = soft_mask(inv_mask_erosion)[:, :, None]
    if parse_mask is not None:
        parse = warp_parse_mask(parse_mask, matrix, size, (w, h))[:, :, None]
        use_parse = (parse < mask).astype(np.int64)
        mask = parse * use_parse + mask * (1 - use_parse)
    return blend(canvas, pasted, mask)


def blend(canvas: np.ndarray, pasted: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`mask·pasted + (1 − mask)·canvas` in numpy's dtypes, computed only inside the box where mask ≠ 0.

    Outside that box the official full-image expression gives 0·pasted + 1·canvas, the canvas value exactly (the
    warped face is 0 there too), so restricting the arithmetic changes no value; it only saves time."""
    out_dtype = np.result_type(mask, pasted, canvas)
    out = canvas.astype(out_dtype, copy=canvas.dtype != out_dtype)
    rows = np.flatnonzero(mask.any(axis=(1, 2)))
    cols = np.flatnonzero(mask.any(axis=(0, 2)))
    if len(rows) == 0:
        return out
    ys, xs = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    m = mask[ys, xs]
    out[ys, xs] = m * pasted[ys, xs] + (1 - m) * canvas[ys, xs]
    return out


def paste_faces(background_bgr: np.ndarray, faces_bgr: Sequence[np.ndarray], inverse_affines: Sequence[np.ndarray],
                upscale: int, parse_masks: Sequence[np.ndarray | None] | None = None,
                face_upsampled: bool = False) -> np.ndarray:
    """The official `paste_faces_to_input_image` on a prepared canvas; returns (H·s)×(W·s)×3 uint8 BGR.

    background_bgr: the uint8 canvas from `official_background`. faces_bgr: restored faces, uint8 BGR, 512² (or
    512·s² with face_upsampled). inverse_affines: from `official_inverse_affine`, one per face (not modified).
    parse_masks: `parsing.parse_mask(labels, np.float64)` of each face, or None for the square mask. Faces later
    in the list lie on top.
    The float sum is truncated toward zero (no rounding, no clipping), as the official `.astype('uint8')`."""
    if len(faces_bgr) != len(inverse_affines):
        raise ValueError(f"{len(faces_bgr)} faces but {len(inverse_affines)} inverse affines")
    if parse_masks is not None and len(parse_masks) != len(faces_bgr):
        raise ValueError(f"{len(faces_bgr)} faces but {len(parse_masks)} parse masks")
    canvas = background_bgr
    for i, (face, inverse) in enumerate(zip(faces_bgr, inverse_affines, strict=True)):
        matrix = paste_matrix(inverse, upscale, face_upsampled)
        canvas = paste_face(canvas, face, matrix, upscale, None if parse_masks is None else parse_masks[i])
    return canvas.astype(np.uint8)
