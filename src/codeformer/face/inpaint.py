"""Face inpainting with the released inpainting model (`codeformer_inpainting.pth`): holes painted white → filled.

The official convention (`inference_inpainting.py`): an aligned 512×512 face whose holes (scratches, tears,
stains) are painted pure white; the hole mask is every pixel that is white in all three channels; the network
runs at w = 1 without AdaIN; the output is (1 − mask)·input + mask·network output.

Here the hole can also come from a separate black/white mask image (`read_mask`; white = hole), which the
official script lacks: the hole is painted white before the model sees it, as in training. Whole photos go
through the `Restorer` pipeline: the hole mask is warped into each aligned face crop (dilated by a few pixels, so
that the paste-back interpolation never reaches unfilled pixels), filled there, and pasted back. Finally the
output is composited with the hole mask in the input's own pixels, so no pixel outside the mask ever changes
(bit for bit, in the file's own depth). Hole pixels away from every detected face are left as they are (logged);
a hole that touches no face is an error, never a silent no-op.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import cv2
import numpy as np

from codeformer.data.images import Picture, from_rgb_float, read_image
from codeformer.face.align import (
    FACE_SIZE,
    crop_side_in_image,
    estimate_affine,
    invert_affine,
    template,
    transform_points,
    warp_face,
)
from codeformer.face.paste import paste_back
from codeformer.face.pipeline import (
    FaceResult,
    RestoreOptions,
    Restorer,
    RestoreResult,
    as_rgb_float,
    draw_boxes,
    to_grey_rgb,
    to_uint8,
)

log = logging.getLogger(__name__)

INPAINT_W = 1.0  # official: "w is fixed to 1, adain=False for inpainting"
CROP_MASK_DILATION = 3  # px in the 512 crop: covers the bicubic paste-back's reach (2 px) at any face scale ≥ 1


class MaskError(ValueError):
    """A hole mask that cannot be used; the message is one line and names the mask."""


def white_mask(image: Picture | np.ndarray) -> np.ndarray:
    """H×W bool: pixels whose colour channels are all at full scale (255, 65535, or ≥ 1.0 for float arrays) —
    the official hole convention. Alpha is ignored; a one-channel image uses its one channel."""
    px = image.pixels if isinstance(image, Picture) else np.asarray(image)
    if px.ndim == 2:
        px = px[:, :, None]
    colour = px[:, :, :3] if px.shape[2] >= 3 else px
    top = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}.get(px.dtype, 1.0)
    return np.all(colour >= top, axis=2)


def read_mask(path: str | Path) -> np.ndarray:
    """A black/white mask image → H×W bool hole mask (white = hole: luma at least half of full scale; with an
    alpha channel, also at least half opaque, so white strokes on a transparent layer work).
    Raises ImageReadError for an unreadable file and MaskError for a mask with no hole."""
    pic = read_image(path)
    px = pic.pixels.astype(np.float32) / (65535.0 if pic.bit_depth == 16 else 255.0)
    luma = px[:, :, 0] if px.shape[2] == 1 else px[:, :, :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    mask = luma >= 0.5
    if pic.has_alpha:
        mask &= px[:, :, 3] >= 0.5
    if not mask.any():
        raise MaskError(f"{path}: the mask has no hole (no white pixel; white marks what to fill)")
    return mask


def _named(name: str | None, problem: str) -> str:
    return f"{name}: {problem}" if name else problem


def check_mask(mask: np.ndarray, shape: tuple[int, ...], name: str | None = None) -> None:
    """Raise MaskError unless `mask` is an H×W bool array of the image's size with at least one hole pixel;
    `name` (the mask file) starts the message."""
    if mask.shape != tuple(shape[:2]):
        raise MaskError(_named(name, f"the mask is {mask.shape[1]}×{mask.shape[0]} but the image is "
                        f"{shape[1]}×{shape[0]}; they must be the same size"))
    if not mask.any():
        raise MaskError(_named(name, "no hole to fill (no pure-white pixel); paint the damage white "
                               "(255, 255, 255) or give a mask image"))


def _dilate(mask: np.ndarray, px: int) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def hole_in_crop(hole: np.ndarray, affine: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """The photo's H×W bool hole seen in the size×size crop of `affine` (image → crop): every crop pixel that a hole
    pixel reaches with a bilinear weight > 0, dilated by CROP_MASK_DILATION px so that the bicubic paste-back
    never reads an unfilled crop pixel. Returns size×size bool."""
    warped = cv2.warpAffine(hole.astype(np.float32), affine, (size, size), flags=cv2.INTER_LINEAR)
    return _dilate(warped > 0, CROP_MASK_DILATION)


class Inpainter(Restorer):
    """Fills the white-painted (or masked) holes of faces with the inpainting network.

    model: the inpainting CodeFormer (any object with `restore(x, w, adain_latent)`), already on `device`. The `w`
    and `adain` of the options are ignored (w = 1, no AdaIN); `upscale` must be 1 (the output keeps the input size).
    """

    def restore(self, image: Picture | np.ndarray, options: RestoreOptions | None = None,
                mask: np.ndarray | None = None, mask_name: str | None = None) -> RestoreResult:
        """Fill the hole of `image` (a Picture or an H×W[×C] array). mask: H×W bool (True = hole); None takes the
        pure-white pixels of the image; mask_name (its file) starts the mask errors. Raises MaskError (no hole,
        wrong size, no face, hole on no face)."""
        opts = dataclasses.replace(options or self.options, w=INPAINT_W, adain=False)
        if opts.upscale != 1:
            raise ValueError(f"inpainting keeps the input size: upscale must be 1, got {opts.upscale}")
        rgb, grey = as_rgb_float(image)
        hole = white_mask(image) if mask is None else np.asarray(mask, dtype=bool)
        check_mask(hole, rgb.shape, mask_name)
        if opts.aligned:
            filled, faces, timings = self._inpaint_aligned(rgb, hole, grey, opts)
        else:
            filled, faces, timings = self._inpaint_photo(rgb, hole, grey, opts, mask_name)
        out_rgb = np.where(hole[:, :, None], filled, rgb)  # nothing outside the hole changes
        if opts.draw_boxes:
            out_rgb = draw_boxes(out_rgb, [f.box for f in faces], 1)
        if isinstance(image, Picture):
            return RestoreResult(from_rgb_float(image, out_rgb), faces, timings)
        return RestoreResult(np.clip(out_rgb, 0.0, 1.0).astype(np.float32), faces, timings)

    def fill_crops(self, crops: np.ndarray, holes: np.ndarray, opts: RestoreOptions, grey: bool = False) -> np.ndarray:
        """The official step on N×512×512×3 float32 crops in [0, 1] with N×512×512 bool holes: paint the hole
        white, run the model at w = 1 without AdaIN, keep the model's pixels inside the hole only."""
        painted = np.where(holes[..., None], np.float32(1.0), crops)
        predicted = self.restore_crops(painted, opts)
        if grey:
            predicted = np.stack([to_grey_rgb(p) for p in predicted])
        return np.where(holes[..., None], predicted, crops).astype(np.float32)

    def _inpaint_aligned(self, rgb: np.ndarray, hole: np.ndarray, grey: bool,
                         opts: RestoreOptions) -> tuple[np.ndarray, list[FaceResult], dict[str, float]]:
        h, w = rgb.shape[:2]
        t0 = time.perf_counter()
        resized = (h, w) != (FACE_SIZE, FACE_SIZE)
        if resized:
            log.warning("aligned crop of %d×%d resized to %d×%d for the model and back (the official script "
                        "accepts 512×512 only); pixels outside the hole are kept as they are", w, h,
                        FACE_SIZE, FACE_SIZE)
            crop = cv2.resize(rgb, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LINEAR)
            crop_hole = cv2.resize(hole.astype(np.float32), (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LINEAR) > 0
            crop_hole = _dilate(crop_hole, CROP_MASK_DILATION)
        else:
            crop, crop_hole = rgb, hole
        t1 = time.perf_counter()
        filled = self.fill_crops(crop[None], crop_hole[None], opts, grey)[0]
        t2 = time.perf_counter()
        out = np.clip(cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0) if resized else filled
        sx, sy = FACE_SIZE / w, FACE_SIZE / h
        affine = np.array([[sx, 0.0, (sx - 1) / 2], [0.0, sy, (sy - 1) / 2]])  # pixel centres, as cv2.resize
        landmarks = transform_points(template(), invert_affine(affine))
        face = FaceResult((0.0, 0.0, float(w), float(h)), 1.0, landmarks, float(max(w, h)), INPAINT_W,
                          to_uint8(crop), to_uint8(filled), affine)
        return out, [face], {"detect": 0.0, "align": t1 - t0, "restore": t2 - t1, "paste": time.perf_counter() - t2}

    def _inpaint_photo(self, rgb: np.ndarray, hole: np.ndarray, grey: bool, opts: RestoreOptions,
                       name: str | None) -> tuple[np.ndarray, list[FaceResult], dict[str, float]]:
        t0 = time.perf_counter()
        detected = self.detect(rgb, opts)
        if not detected:
            raise MaskError("no face found, so the hole cannot be filled (for a face crop use --aligned)")
        t1 = time.perf_counter()
        affines = [estimate_affine(face.landmarks5) for face in detected]
        crops = np.stack([warp_face(rgb, m) for m in affines])
        holes = np.stack([hole_in_crop(hole, m) for m in affines])
        touched = holes.any(axis=(1, 2))
        if not touched.any():
            raise MaskError(_named(name, f"the hole lies on none of the {len(detected)} detected face(s); only "
                                         "faces are filled"))
        t2 = time.perf_counter()
        filled = crops.copy()
        filled[touched] = self.fill_crops(crops[touched], holes[touched], opts, grey)
        t3 = time.perf_counter()
        inverses = [invert_affine(m) for m in affines]
        out = paste_back(rgb, list(filled[touched]), [inv for inv, t in zip(inverses, touched, strict=True) if t])
        # paste weight per pixel: black faces on a white page give 1 − weight (the border warps to black too)
        coverage = 1.0 - paste_back(np.ones(rgb.shape[:2] + (1,), np.float32),
                                    [np.zeros((FACE_SIZE, FACE_SIZE, 1), np.float32)] * int(touched.sum()),
                                    [inv for inv, t in zip(inverses, touched, strict=True) if t])[:, :, 0]
        outside = int((hole & (coverage < 1.0)).sum())
        if outside:
            log.warning("%d of %d hole pixels lie outside the faces (or on their feathered edge) and are filled "
                        "only partly or not at all", outside, int(hole.sum()))
        t4 = time.perf_counter()
        results = [FaceResult(face.box, face.score, face.landmarks5, crop_side_in_image(m), INPAINT_W,
                              to_uint8(crop), to_uint8(fill), m)
                   for face, m, crop, fill in zip(detected, affines, crops, filled, strict=True)]
        return out, results, {"detect": t1 - t0, "align": t2 - t1, "restore": t3 - t2, "paste": t4 - t3}
