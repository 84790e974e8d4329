"""`-w auto`: choose the fidelity w of each face from its measured degradation, and the w-sweep strip.

The rule (written out in docs/evaluation.md) works on the aligned 512×512 input crop and the face size:

    size  = clip((face_size − 32) / (256 − 32), 0, 1)                 face side in input px
    blur  = clip(log10(sharpness) / log10(30), 0, 1)                  noise-corrected Laplacian variance of the crop
    noise = clip(1 − (noise_sigma − 3) / (15 − 3), 0, 1)              Immerkær σ of the luma (0–255), measured
                                                                      on the photo's pixel grid (`native_region`)
    q     = min(size, blur, noise)                                    the worst factor decides
    w     = 0.3 + (0.9 − 0.3) · q, rounded to 0.05

So a tiny or heavily blurred or very noisy face gets w near 0.3 (lean on the codebook prior: there is little
to be faithful to), a large crisp one w near 0.9 (keep what is there). The anchors are measured on the shared
photos: the astronaut's 169 px face scores sharpness ≈ 18; blurred with σ = 3 px on the crop, or shrunk 8×
and enlarged back, it scores ≈ 1.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from codeformer.data.images import Picture, from_rgb_float
from codeformer.face.align import crop_side_in_image, estimate_affine, invert_affine, transform_points, warp_face
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
from codeformer.metrics.noref import noise_sigma, sharpness

__all__ = ["AUTO_W_MAX", "AUTO_W_MIN", "AutoWRestorer", "Degradation", "auto_w", "measure", "sweep_strip",
           "w_from_degradation"]

AUTO_W_MIN, AUTO_W_MAX = 0.3, 0.9
SIZE_LOW, SIZE_HIGH = 32.0, 256.0  # face side, input px
SHARP_LOW, SHARP_HIGH = 1.0, 30.0  # sharpness of the 512 crop (log scale between the two)
NOISE_LOW, NOISE_HIGH = 3.0, 15.0  # luma noise σ, 0–255
W_STEP = 0.05


@dataclass(frozen=True)
class Degradation:
    """Measured state of one aligned input crop: face_size (input px), sharpness and noise_sigma (see
    `codeformer.metrics.noref`), and the three rule factors in [0, 1] (1 = no degradation)."""

    face_size: float
    sharpness: float
    noise_sigma: float

    @property
    def factors(self) -> dict[str, float]:
        """{"size", "blur", "noise"}: each in [0, 1], 1 meaning "no problem"."""
        size = (self.face_size - SIZE_LOW) / (SIZE_HIGH - SIZE_LOW)
        blur = math.log10(max(self.sharpness, SHARP_LOW) / SHARP_LOW) / math.log10(SHARP_HIGH / SHARP_LOW)
        noise = 1.0 - (self.noise_sigma - NOISE_LOW) / (NOISE_HIGH - NOISE_LOW)
        return {k: float(np.clip(v, 0.0, 1.0)) for k, v in (("size", size), ("blur", blur), ("noise", noise))}


def native_region(crop: np.ndarray, affine: np.ndarray | None, face_size: float) -> np.ndarray:
    """The middle of the face back on its photo's pixel grid, where the photo's pixel noise is white again
    (enlarging to 512 smooths it away). With the crop's 2×3 `affine` (photo → crop) the crop is warped back by
    its inverse (bilinear on the dense crop ≈ the photo's own pixels) and the central half is kept; without it
    the crop is subsampled (nearest) to `face_size`."""
    n = crop.shape[0]
    if affine is None:
        side = int(np.clip(round(face_size), 16, n))
        return crop if side >= n else cv2.resize(crop, (side, side), interpolation=cv2.INTER_NEAREST)
    back = invert_affine(affine)  # crop → photo
    corners = transform_points(np.array([[0.0, 0.0], [n - 1, 0.0], [0.0, n - 1], [n - 1, n - 1]]), back)
    x0, y0 = np.floor(corners.min(0))
    w, h = (np.ceil(corners.max(0)) - [x0, y0]).astype(int) + 1
    back[:, 2] -= (x0, y0)
    region = cv2.warpAffine(np.ascontiguousarray(crop), back, (int(w), int(h)), flags=cv2.INTER_LINEAR)
    return region[h // 4: max(h // 4 + 3, 3 * h // 4), w // 4: max(w // 4 + 3, 3 * w // 4)]


def measure(crop: np.ndarray, face_size: float, affine: np.ndarray | None = None) -> Degradation:
    """Degradation of an aligned H×W×3 RGB crop (uint8, or float in [0, 1]; normally 512×512) of a face
    `face_size` px wide in its photo: sharpness at the crop's scale (an enlarged small face reads as blurred),
    noise σ on the photo's pixel grid (`native_region`; `affine`: the crop's photo → crop 2×3 matrix)."""
    return Degradation(float(face_size), sharpness(crop), noise_sigma(native_region(crop, affine, face_size)))


def w_from_degradation(degradation: Degradation) -> float:
    """The rule of the module docstring: w in [0.3, 0.9], a multiple of 0.05."""
    q = min(degradation.factors.values())
    w = AUTO_W_MIN + (AUTO_W_MAX - AUTO_W_MIN) * q
    return round(round(w / W_STEP) * W_STEP, 2)


def auto_w(crop: np.ndarray, face_size: float = 512.0, affine: np.ndarray | None = None) -> float:
    """The fidelity w for an aligned RGB crop (uint8 or float in [0, 1]) of a face `face_size` px wide in its
    photo (`affine`: photo → crop, see `measure`): lower for heavier degradation. Rule: the module docstring."""
    return w_from_degradation(measure(crop, face_size, affine))


class AutoWRestorer:
    """A `Restorer` that picks w per face with `auto_w` (the options' own w is ignored); each `FaceResult.w`
    holds the w chosen. Same `restore(image, options)` contract as `Restorer.restore`."""

    def __init__(self, restorer: Restorer) -> None:
        self.restorer = restorer

    @property
    def options(self) -> RestoreOptions:
        return self.restorer.options

    def restore(self, image: Picture | np.ndarray, options: RestoreOptions | None = None) -> RestoreResult:
        """Restore every selected face of `image`, each with its own automatic w."""
        opts = options or self.restorer.options
        if opts.profile != "default" or opts.paste_mask != "square" or opts.needs_upsampler:
            raise ValueError("automatic w takes the default profile with the square mask and no upsampler")
        rgb, grey = as_rgb_float(image)
        if opts.aligned:
            crop = cv2.resize(rgb, (512, 512), interpolation=cv2.INTER_LINEAR)
            w = auto_w(crop, float(max(rgb.shape[:2])))
            return self.restorer.restore(image, replace(opts, w=w))
        t0 = time.perf_counter()
        detected = self.restorer.detect(rgb, opts)
        affines = [estimate_affine(face.landmarks5) for face in detected]
        crops = [warp_face(rgb, m) for m in affines]
        ws = [auto_w(crop, crop_side_in_image(m), m) for crop, m in zip(crops, affines, strict=True)]
        t1 = time.perf_counter()
        restored: list[np.ndarray] = [np.empty(0)] * len(crops)
        for w in sorted(set(ws)):  # one batched model call per distinct w
            idx = [i for i, wi in enumerate(ws) if wi == w]
            out = self.restorer.restore_crops(np.stack([crops[i] for i in idx]), replace(opts, w=w))
            for i, face in zip(idx, out, strict=True):
                restored[i] = to_grey_rgb(face) if grey else face
        t2 = time.perf_counter()
        out_rgb = paste_back(rgb, restored, [invert_affine(m) for m in affines], opts.upscale)
        if grey:
            out_rgb = to_grey_rgb(out_rgb)
        faces = [FaceResult(d.box, d.score, d.landmarks5, crop_side_in_image(m), w, to_uint8(c), to_uint8(r), m,
                            d.detector)
                 for d, m, w, c, r in zip(detected, affines, ws, crops, restored, strict=True)]
        if opts.draw_boxes:
            out_rgb = draw_boxes(out_rgb, [f.box for f in faces], opts.upscale)
        timings = {"detect_align_measure": t1 - t0, "restore": t2 - t1, "paste": time.perf_counter() - t2}
        if isinstance(image, Picture):
            return RestoreResult(from_rgb_float(image, out_rgb), faces, timings)
        return RestoreResult(np.clip(out_rgb, 0.0, 1.0).astype(np.float32), faces, timings)


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    """The tile with a 24 px white band below it carrying `text`."""
    band = np.full((24, tile.shape[1], 3), 255, np.uint8)
    cv2.putText(band, text, (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([tile, band], axis=0)


def sweep_strip(restorer: Restorer, face: FaceResult, ws: Sequence[float], options: RestoreOptions | None = None,
                tile: int = 192) -> np.ndarray:
    """One row: the input crop, then the face restored with each w of `ws`, each `tile` px square and labelled.
    Returns (tile + 24)×(tile·(1 + len(ws)))×3 uint8 RGB."""
    opts = options or restorer.options
    crop = face.cropped.astype(np.float32) / 255.0
    tiles = [_label(cv2.resize(face.cropped, (tile, tile), interpolation=cv2.INTER_AREA), "input")]
    for w in ws:
        out = restorer.restore_crops(crop[None], replace(opts, w=float(w)))[0]
        tiles.append(_label(cv2.resize(to_uint8(out), (tile, tile), interpolation=cv2.INTER_AREA), f"w={w:g}"))
    return np.concatenate(tiles, axis=1)
