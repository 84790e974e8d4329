"""Paste restored faces back into the (optionally upscaled) photo with the official feathered square mask.

Pure functions: inputs are never modified; every result is a new float32 array. Each face is composited only
inside the bounding box of its warped square (plus a small margin), so pixels away from the faces are copied
unchanged, bit for bit, and the cost grows with the face area rather than the photo area.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from codeformer.face.align import scale_affine

ROI_MARGIN = 2  # px around a face's warped square; the mask is zero there, so blur sees the same neighbours


def upscale_image(img: np.ndarray, upscale: float) -> np.ndarray:
    """Enlarge an H×W[×C] float32 image in [0, 1] by `upscale` with Lanczos-4, clipped back to [0, 1].
    Returns a float32 copy (an unscaled copy when upscale is 1)."""
    img = np.asarray(img, dtype=np.float32)
    if upscale == 1:
        return img.copy()
    h, w = img.shape[:2]
    size = (round(w * upscale), round(h * upscale))
    out = cv2.resize(img, size, interpolation=cv2.INTER_LANCZOS4)
    if img.ndim == 3 and out.ndim == 2:  # OpenCV drops a single channel axis
        out = out[:, :, None]
    return np.clip(out, 0.0, 1.0)


def face_roi(inverse_affine: np.ndarray, face_size: int, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Integer (x0, y0, x1, y1) bounding the face square warped by `inverse_affine` into an image of
    `shape` (h, w), with a margin, clipped to the image; None when it misses the image."""
    edge = face_size - 0.5
    corners = np.array([[-0.5, -0.5], [edge, -0.5], [-0.5, edge], [edge, edge]])
    mapped = corners @ inverse_affine[:, :2].T + inverse_affine[:, 2]
    x0 = max(math.floor(mapped[:, 0].min()) - ROI_MARGIN, 0)
    y0 = max(math.floor(mapped[:, 1].min()) - ROI_MARGIN, 0)
    x1 = min(math.ceil(mapped[:, 0].max()) + ROI_MARGIN + 1, shape[1])
    y1 = min(math.ceil(mapped[:, 1].max()) + ROI_MARGIN + 1, shape[0])
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, y0, x1, y1


def _warp(img: np.ndarray, matrix: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    """warpAffine that keeps a trailing channel axis, zero outside the source."""
    out = cv2.warpAffine(img, matrix, size, flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if img.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    return out


def soft_square_mask(warped_ones: np.ndarray, upscale: int) -> np.ndarray:
    """The official feathered mask from a warped square of ones (H×W float32): erode by a (2·upscale)² kernel,
    w_edge = ⌊√(mask sum)⌋ // 20, erode again by 2·w_edge, Gaussian-blur with a (2·w_edge + 1) kernel.
    Returns H×W float32 in [0, 1]."""
    k = max(1, 2 * int(upscale))
    mask = cv2.erode(warped_ones, np.ones((k, k), np.uint8))
    w_edge = int(math.sqrt(float(mask.sum()))) // 20
    if w_edge > 0:
        mask = cv2.erode(mask, np.ones((2 * w_edge, 2 * w_edge), np.uint8))
        mask = cv2.GaussianBlur(mask, (2 * w_edge + 1, 2 * w_edge + 1), 0)
    return mask


def paste_back(
    background: np.ndarray,
    faces: Sequence[np.ndarray],
    inverse_affines: Sequence[np.ndarray],
    upscale: int = 1,
    masks: Sequence[np.ndarray | None] | None = None,
    canvas: np.ndarray | None = None,
) -> np.ndarray:
    """Composite restored faces into `background`.

    background: H×W×C float32 in [0, 1] (C = 1 or 3; an H×W grey image is also accepted).
    faces: S×S×C float32 in [0, 1], one per face, with the background's channel count (S×S for an H×W
    background). inverse_affines: 2×3 crop → input-image transforms (`align.invert_affine`). upscale: integer
    output scale; the background is enlarged with Lanczos-4. masks: optional S×S float32 masks in [0, 1] (e.g.
    from a parsing model), combined with the soft square mask by element-wise minimum. canvas: the enlarged
    background to paste on ((H·upscale)×(W·upscale)[×C] float32 in [0, 1], e.g. from a background upsampler;
    not modified) instead of the Lanczos-4 enlargement of `background`.
    Returns a new (H·upscale)×(W·upscale)[×C] float32 image in [0, 1]; faces later in the list lie on top.
    """
    if len(faces) != len(inverse_affines):
        raise ValueError(f"{len(faces)} faces but {len(inverse_affines)} inverse affines")
    if masks is not None and len(masks) != len(faces):
        raise ValueError(f"{len(faces)} faces but {len(masks)} masks")
    if canvas is None:
        out = upscale_image(background, upscale)
    else:
        h, w = np.asarray(background).shape[:2]
        if canvas.shape[:2] != (h * upscale, w * upscale):
            raise ValueError(f"canvas is {canvas.shape[1]}×{canvas.shape[0]}, expected {w * upscale}×{h * upscale}")
        out = np.array(canvas, dtype=np.float32, copy=True)
    for i, (face, inverse) in enumerate(zip(faces, inverse_affines, strict=True)):
        face = np.asarray(face, dtype=np.float32)
        size = face.shape[0]
        matrix = scale_affine(inverse, upscale)
        roi = face_roi(matrix, size, out.shape[:2])
        if roi is None:
            continue
        x0, y0, x1, y1 = roi
        local = matrix.copy()
        local[:, 2] -= (x0, y0)  # translate into the region's frame
        region_size = (x1 - x0, y1 - y0)
        # Bicubic for the face (see align.warp_face for the measured reason), clipped: bicubic overshoots.
        warped_face = np.clip(_warp(face, local, region_size, cv2.INTER_CUBIC), 0.0, 1.0)
        ones = np.ones((size, size), np.float32)
        mask = soft_square_mask(_warp(ones, local, region_size, cv2.INTER_LINEAR), upscale)
        if masks is not None and masks[i] is not None:
            parsing = _warp(np.asarray(masks[i], np.float32), local, region_size, cv2.INTER_LINEAR)
            mask = np.minimum(mask, parsing)
        if warped_face.ndim == 3:
            mask = mask[:, :, None]
        region = out[y0:y1, x0:x1]
        out[y0:y1, x0:x1] = mask * warped_face + (1.0 - mask) * region
    return out
