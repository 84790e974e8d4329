"""Whole-photo restoration: detect → align → restore (batched) → paste back, as the `Restorer` API.

`Restorer.restore(image)` takes a `Picture` (from `codeformer.data.images.read_image`) or an RGB array and returns
a `RestoreResult` with the new image and one `FaceResult` per restored face. It never prints; it logs through
`logging.getLogger(__name__)`. The model is any object with `restore(x, w) -> Tensor` taking and returning
(B, 3, 512, 512) float32 RGB in [-1, 1] (e.g. `codeformer.checkpoint.load_codeformer(...)`), already on `device`.

Grey inputs are restored in RGB and each restored face is brought back to grey (`grey_like`): Rec. 601 luma
for an exactly grey photo, or the luma re-tinted like the input face for a near-grey one (sepia, scans), so grey
stays grey, a tint survives, and nothing turns black. The background of the photo is never converted.
The output keeps the input's size times `upscale`; with `aligned=True` the input is taken as an aligned face
crop of any size: it is resized to 512 (bilinear), restored, and resized back to its own size times `upscale`.

Two profiles (`RestoreOptions.profile`): "default" is the pipeline above (align.py, paste.py); "official" runs the
official script's conventions end to end (`official.py`): a RetinaFace detector's `official_landmarks_5`, LMEDS
alignment of float32 landmarks, bilinear warps, the official masks, offsets and dtypes, on the 8-bit BGR photo
(enlarged to a 512 short side first when smaller, as the official `read_image` does). Both profiles take the same
optional parts, passed to `Restorer` as objects: a face parser for `mask="parse"` and an upsampler for
`bg_upsampler="realesrgan"` / `face_upsample=True`. A requested part that is missing is an error, never skipped.
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np
import torch

from codeformer.data.images import Picture, from_rgb_float, rgb_float
from codeformer.face import detection, official
from codeformer.face.align import (
    FACE_SIZE,
    crop_side_in_image,
    estimate_affine,
    invert_affine,
    template,
    transform_points,
    warp_face,
)
from codeformer.face.detection import SELECTIONS, Face, FaceDetector, filter_faces, select_faces
from codeformer.face.parsing import parse_mask
from codeformer.face.paste import paste_back
from codeformer.oom import BatchLimit, run_in_chunks
from codeformer.runtime import host_to_device

log = logging.getLogger(__name__)

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # Rec. 601, as images.from_rgb_float uses
PROFILES: tuple[str, ...] = ("default", "official")
MASKS: tuple[str, ...] = ("square", "parse")
BG_UPSAMPLERS: tuple[str, ...] = ("realesrgan",)


class FaceModel(Protocol):
    """What the pipeline needs from a restoration model."""

    def restore(self, x: torch.Tensor, w: float) -> torch.Tensor:
        """(B, 3, 512, 512) float32 RGB in [-1, 1] → same shape, possibly outside [-1, 1]."""
        ...


class FaceParser(Protocol):
    """What `mask="parse"` needs: a callable labelling faces, e.g.
    `functools.partial(codeformer.face.parsing.parse, load_parsenet(...))` (all faces of a photo in one call)."""

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        """N×512×512×3 uint8 RGB faces → N×512×512 integer class map (argmax over the 19 ParseNet classes)."""
        ...


class Upsampler(Protocol):
    """What `bg_upsampler` / `face_upsample` need (e.g. `codeformer.upsampler.load_realesrgan(...)`)."""

    def enhance(self, img: np.ndarray, outscale: float) -> np.ndarray:
        """H×W×3 uint8 RGB → (int(H·outscale))×(int(W·outscale))×3 uint8 RGB."""
        ...


class OfficialDetector(Protocol):
    """What `profile="official"` needs from its detector: the official `get_face_landmarks_5` (RetinaFace)."""

    def official_landmarks_5(self, bgr: np.ndarray, resize: int = 640, eye_dist_threshold: float = 5,
                             only_center_face: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
        """H×W×3 uint8 BGR photo → ((n, 5) float32 [x0, y0, x1, y1, score/scale], n (5, 2) float32 landmarks)."""
        ...


# The fidelity range every entry point accepts: what the official inference script, its demos and these docs
# promise. Training reached w = 1.3 (spec §2), but no released tool exposes w > 1 and nothing measured it here.
W_RANGE = (0.0, 1.0)


def check_w(w: float, what: str = "w") -> float:
    """`w` if it lies in W_RANGE (NaN does not), else ValueError naming `what`."""
    if not W_RANGE[0] <= w <= W_RANGE[1]:
        raise ValueError(f"{what} must be in [{W_RANGE[0]:g}, {W_RANGE[1]:g}], got {w}")
    return w


@dataclass(frozen=True)
class RestoreOptions:
    """How to restore one photo. w: fidelity in W_RANGE = [0, 1] (0 = most restoration, 1 = closest to the
    input), the one range the CLI, the API and the server accept. upscale: integer output scale. faces: which
    faces to restore (all | largest | center). min_face: smallest face box side in input px. aligned: the input
    is already an aligned face crop. batch_size: faces per model call. draw_boxes: green box around each face.
    adain: the model's AdaIN of the predicted latent (the official inference default). profile: "default" (ours)
    or "official" (the official script's conventions, see the module docstring). mask: "square" (feathered square)
    or "parse" (face and hair from a face parser, within the square); None takes the profile's own: square for
    default, parse for official. bg_upsampler: None (bilinear for official, Lanczos-4 for default) or
    "realesrgan". face_upsample: enlarge each restored face with the upsampler before pasting (needs upscale > 1
    to change anything)."""


    w: float = 0.5
    upscale: int = 1
    faces: str = "all"
    min_face: float = 32.0
    aligned: bool = False
    batch_size: int = 4
    draw_boxes: bool = False
    adain: bool = True
    profile: str = "default"
    mask: str | None = None
    bg_upsampler: str | None = None
    face_upsample: bool = False

    @property
    def paste_mask(self) -> str:
        """The mask actually used: `mask`, or the profile's default."""
        if self.mask is not None:
            return self.mask
        return "parse" if self.profile == "official" else "square"

    @property
    def needs_upsampler(self) -> bool:
        return self.bg_upsampler is not None or self.face_upsample

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {self.profile!r}")
        if self.mask is not None and self.mask not in MASKS:
            raise ValueError(f"mask must be one of {', '.join(MASKS)}, got {self.mask!r}")
        if self.bg_upsampler is not None and self.bg_upsampler not in BG_UPSAMPLERS:
            raise ValueError(f"bg_upsampler must be None or one of {', '.join(BG_UPSAMPLERS)}, "
                             f"got {self.bg_upsampler!r}")
        if self.face_upsample and self.profile == "default" and self.upscale == 1:
            raise ValueError("face_upsample enlarges the faces for an upscale above 1; use upscale 2 or more")
        if self.aligned and (self.profile != "default" or self.mask == "parse" or self.needs_upsampler):
            raise ValueError("aligned inputs take no profile, mask or upsampler options (there is no paste-back)")
        check_w(self.w)
        if int(self.upscale) != self.upscale or not 1 <= self.upscale <= 8:
            raise ValueError(f"upscale must be an integer from 1 to 8, got {self.upscale}")
        if self.faces not in SELECTIONS:
            raise ValueError(f"faces must be one of {', '.join(SELECTIONS)}, got {self.faces!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.min_face < 0:
            raise ValueError(f"min_face must be >= 0, got {self.min_face}")


@dataclass
class FaceResult:
    """One restored face. box: (x0, y0, x1, y1) and landmarks5 ((5, 2) x, y) in input pixels; score: detector
    score; face_size: side in input pixels of the square that became the 512 crop; w: fidelity used;
    cropped / restored: 512×512×3 uint8 RGB; affine: 2×3 float64 input → crop; detector: which detector found
    it ("hog", "cnn", ...; "aligned" for an aligned input)."""

    box: tuple[float, float, float, float]
    score: float
    landmarks5: np.ndarray
    face_size: float
    w: float
    cropped: np.ndarray = field(repr=False)
    restored: np.ndarray = field(repr=False)
    affine: np.ndarray = field(repr=False)
    detector: str = "unknown"


@dataclass
class Prepared:
    """A photo's faces ready for the network (`Restorer.prepare`). faces: the detections (empty for an aligned
    input); affines: 2×3 float64 input → crop, one per face; crops: N×512×512×3 float32 RGB in [0, 1];
    timings: seconds of the stages so far."""

    faces: list[Face]
    affines: list[np.ndarray]
    crops: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class RestoreResult:
    """image: a `Picture` when the input was one (same layout, depth and metadata), else H'×W'×3 float32 RGB in
    [0, 1]. faces: one record per restored face. timings: seconds per stage (detect, align, restore, paste)."""

    image: Picture | np.ndarray
    faces: list[FaceResult]
    timings: dict[str, float] = field(default_factory=dict)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """float in [0, 1] → uint8 (rounded, clipped)."""
    return np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def to_grey_rgb(rgb: np.ndarray) -> np.ndarray:
    """H×W×3 float32 → its Rec. 601 luma replicated in three channels (float32)."""
    luma = rgb @ LUMA
    return np.repeat(luma[..., None], 3, axis=-1)


def grey_like(restored: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Bring restored faces back to the tone of grey reference crops (both N×S×S×3 float32 in [0, 1]).

    Each output channel is a linear function of the restored face's luma, fitted per face on the reference
    (channel ≈ a·luma + b, least squares): an exactly grey reference gives a = 1, b = 0; a tinted one keeps
    its tint. Use `to_grey_rgb` instead when the whole photo is exactly grey (channels bit-identical).
    """
    out = np.empty_like(restored)
    for i, (face, ref) in enumerate(zip(restored, reference, strict=True)):
        ref_luma = (ref @ LUMA).reshape(-1).astype(np.float64)
        design = np.stack([ref_luma, np.ones_like(ref_luma)], axis=1)  # (S·S, 2)
        coeffs, *_ = np.linalg.lstsq(design, ref.reshape(-1, 3).astype(np.float64), rcond=None)  # (2, 3)
        luma = face @ LUMA
        out[i] = np.clip(luma[..., None] * coeffs[0].astype(np.float32) + coeffs[1].astype(np.float32), 0.0, 1.0)
    return out


def _channels_equal(rgb: np.ndarray) -> bool:
    return bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))


def _to_grey(restored: np.ndarray, crops: np.ndarray, photo: np.ndarray) -> np.ndarray:
    """Grey restored faces: pure luma when the photo's channels are identical, else re-tinted like `crops`."""
    return to_grey_rgb(restored) if _channels_equal(photo) else grey_like(restored, crops)


def as_rgb_float(image: Picture | np.ndarray) -> tuple[np.ndarray, bool]:
    """(H×W×3 float32 in [0, 1], is_grey) from a Picture or an array: H×W or H×W×{1,3,4} uint8 (/255),
    uint16 (/65535) or float (taken as [0, 1]); alpha is ignored. An array is grey when its channels are equal."""
    if isinstance(image, Picture):
        return rgb_float(image), image.is_grey
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an H×W, H×W×1, H×W×3 or H×W×4 image, got shape {arr.shape}")
    arr = arr[:, :, :3]
    if arr.dtype == np.uint8:
        rgb = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        rgb = arr.astype(np.float32) / 65535.0
    else:
        rgb = arr.astype(np.float32)
    if rgb.shape[2] == 1:
        return np.repeat(rgb, 3, axis=2), True
    return rgb, _channels_equal(rgb)


def _model_kwargs(model: Any, adain: bool) -> dict[str, bool]:
    """Keyword for the model's AdaIN switch, if its `restore` has one; a non-default request to a model
    without the switch is an error rather than a silently ignored knob."""
    params = inspect.signature(model.restore).parameters
    for name in ("adain", "adain_latent"):
        if name in params:
            return {name: adain}
    if not adain:
        raise ValueError(f"{type(model).__name__}.restore has no AdaIN switch; cannot honour adain=False")
    return {}


def draw_boxes(rgb: np.ndarray, boxes: list[tuple[float, float, float, float]], scale: float) -> np.ndarray:
    """A copy of H×W×3 float32 `rgb` with a green rectangle around each (input-pixel) box scaled by `scale`."""
    out = rgb.copy()
    thickness = max(1, round(min(out.shape[:2]) / 300))
    for x0, y0, x1, y1 in boxes:
        p0 = (round(x0 * scale), round(y0 * scale))
        p1 = (round(x1 * scale) - 1, round(y1 * scale) - 1)
        cv2.rectangle(out, p0, p1, (0.0, 1.0, 0.0), thickness)
    return out


def _from_enlarged_crop(inverse_affine: np.ndarray, factor: int) -> np.ndarray:
    """Crop → image affine for a crop enlarged `factor` times (pixel centres as a resize maps them)."""
    shrink = np.array([[1.0 / factor, 0.0, (1.0 / factor - 1) / 2], [0.0, 1.0 / factor, (1.0 / factor - 1) / 2],
                       [0.0, 0.0, 1.0]])
    return np.asarray(inverse_affine, np.float64) @ shrink


class Restorer:
    """Restores every face of a photo with `model` (see the module docstring for the contract).

    detector: any `FaceDetector`; None makes the default (`make_detector()`) on first use (the official profile
    needs one with `official_landmarks_5`, i.e. RetinaFace). device: where input batches go (the model must
    already be there). options: default `RestoreOptions`, overridable per call. parser: a `FaceParser` for
    mask="parse". upsampler: an `Upsampler` for bg_upsampler / face_upsample.
    """

    def __init__(self, model: FaceModel, detector: FaceDetector | None = None, device: str | torch.device = "cpu",
                 options: RestoreOptions | None = None, parser: FaceParser | None = None,
                 upsampler: Upsampler | None = None):
        self.model = model
        self.detector = detector
        self.device = torch.device(device)
        self.options = options or RestoreOptions()
        self.batch_limit = BatchLimit()
        self.parser = parser
        self.upsampler = upsampler
        self.check(self.options)

    def check(self, options: RestoreOptions) -> None:
        """Raise ValueError when `options` asks for a part this Restorer was not given."""
        if options.paste_mask == "parse" and self.parser is None:
            raise ValueError("mask 'parse' needs a face parser (Restorer(..., parser=partial(parse, load_parsenet())))")
        if options.needs_upsampler and self.upsampler is None:
            raise ValueError("bg_upsampler / face_upsample need an upsampler (Restorer(..., upsampler=...))")
        if options.profile == "official" and not hasattr(self.detector, "official_landmarks_5"):
            raise ValueError("profile 'official' needs a RetinaFace detector (one with official_landmarks_5)")

    def detect(self, rgb: np.ndarray, options: RestoreOptions | None = None) -> list[Face]:
        """Faces to restore in H×W×3 float32 `rgb`: detected, filtered by min_face, eye distance and landmark
        sanity, then selected (all | largest | center)."""
        opts = options or self.options
        if self.detector is None:
            self.detector = detection.make_detector()  # looked up at call time, so tests can stand in
        faces = self.detector.detect(to_uint8(rgb), min_face=opts.min_face)
        faces = filter_faces(faces, min_face=opts.min_face)
        return select_faces(faces, opts.faces, rgb.shape)

    def restore_crops(self, crops: np.ndarray, options: RestoreOptions | None = None) -> np.ndarray:
        """Run the model on N×512×512×3 float32 crops in [0, 1], `batch_size` at a time, under no_grad.
        Returns N×512×512×3 float32 in [0, 1].

        Each chunk goes to the device as it is (N×H×W×3, through pinned memory on CUDA) and is scaled and
        permuted there into (B, 3, 512, 512) in [-1, 1]; a chunk that runs out of device memory is split in
        halves and the smaller batch is kept for the rest of the run (`self.batch_limit.notes` says when)."""
        opts = options or self.options
        kwargs = _model_kwargs(self.model, opts.adain)
        out = np.empty_like(crops, dtype=np.float32)
        with torch.no_grad():
            for start in range(0, len(crops), opts.batch_size):
                chunk = torch.from_numpy(np.ascontiguousarray(crops[start:start + opts.batch_size], np.float32))
                # one copy of the NHWC block to the device; scaled and made NCHW there
                x = (host_to_device(chunk, self.device).permute(0, 3, 1, 2) * 2.0 - 1.0).contiguous()
                y = run_in_chunks(self.model.restore, x, opts.w, self.batch_limit, **kwargs)
                if tuple(y.shape) != tuple(x.shape):
                    raise ValueError(f"model returned shape {tuple(y.shape)} for input {tuple(x.shape)}")
                y = (y.float().clamp(-1.0, 1.0) + 1.0) / 2.0
                out[start:start + len(chunk)] = y.permute(0, 2, 3, 1).cpu().numpy()
        return out

    def restore(self, image: Picture | np.ndarray, options: RestoreOptions | None = None) -> RestoreResult:
        """Restore all selected faces of `image` (a Picture or an H×W[×C] array, see `as_rgb_float`):
        `prepare`, then `restore_crops`, then `finish`."""
        opts = options or self.options
        self.check(opts)
        rgb, grey = as_rgb_float(image)
        if opts.profile == "official":
            out_rgb, faces, timings = self._restore_photo_official(rgb, grey, opts)
            return self._output(image, rgb, out_rgb, faces, timings, opts)
        prepared = self.prepare(rgb, opts)
        return self.finish(image, rgb, grey, prepared, self._run_network(prepared, opts), opts)

    def _run_network(self, prepared: Prepared, opts: RestoreOptions) -> np.ndarray:
        t0 = time.perf_counter()
        restored = self.restore_crops(prepared.crops, opts) if len(prepared.crops) else prepared.crops
        prepared.timings["restore"] = time.perf_counter() - t0
        return restored

    def _restore_photo(self, rgb: np.ndarray, grey: bool,
                       opts: RestoreOptions) -> tuple[np.ndarray, list[FaceResult], dict[str, float]]:
        """prepare → network → paste on H×W×3 float32 `rgb`, without boxes or the Picture layout: (H'×W'×3
        float32, faces, timings). For subclasses that build their own output (`face.colorize.Colorizer`);
        `_restore_aligned` is the same call (`opts.aligned` decides)."""
        prepared = self.prepare(rgb, opts)
        restored = self._run_network(prepared, opts)
        out_rgb, faces, timings = self._paste(rgb, grey, prepared, restored, opts)
        return out_rgb, faces, timings

    _restore_aligned = _restore_photo

    def prepare(self, rgb: np.ndarray, options: RestoreOptions | None = None) -> Prepared:
        """The CPU half before the network: detect and align the faces of H×W×3 float32 `rgb` (or, with
        `aligned`, resize the whole crop to 512). The cluster engine runs it apart from the model."""
        opts = options or self.options
        if opts.profile != "default":
            raise ValueError("prepare/finish run the default profile; restore() runs the official one")
        self.check(opts)
        t0 = time.perf_counter()
        if opts.aligned:
            crops = cv2.resize(rgb, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LINEAR)[None]
            return Prepared([], [], crops, {"detect": 0.0, "align": time.perf_counter() - t0})
        detected = self.detect(rgb, opts)
        t1 = time.perf_counter()
        affines = [estimate_affine(face.landmarks5) for face in detected]
        crops = np.stack([warp_face(rgb, m) for m in affines]) if affines else np.zeros((0, 512, 512, 3), np.float32)
        return Prepared(detected, affines, crops, {"detect": t1 - t0, "align": time.perf_counter() - t1})

    def finish(self, image: Picture | np.ndarray, rgb: np.ndarray, grey: bool, prepared: Prepared,
               restored: np.ndarray, options: RestoreOptions | None = None) -> RestoreResult:
        """The CPU half after the network: grey faces back to grey, paste into `rgb` (`as_rgb_float(image)`,
        grey its flag), boxes, and the output in `image`'s layout. restored: N×512×512×3 float32 in [0, 1]."""
        opts = options or self.options
        self.check(opts)
        out_rgb, faces, timings = self._paste(rgb, grey, prepared, restored, opts)
        return self._output(image, rgb, out_rgb, faces, timings, opts)

    @staticmethod
    def _output(image: Picture | np.ndarray, rgb: np.ndarray, out_rgb: np.ndarray, faces: list[FaceResult],
                timings: dict[str, float], opts: RestoreOptions) -> RestoreResult:
        """Boxes (when asked) and the result in `image`'s layout."""
        if opts.draw_boxes:
            out_rgb = draw_boxes(out_rgb, [f.box for f in faces], out_rgb.shape[1] / rgb.shape[1])
        if isinstance(image, Picture):
            return RestoreResult(from_rgb_float(image, out_rgb), faces, timings)
        return RestoreResult(np.clip(out_rgb, 0.0, 1.0).astype(np.float32), faces, timings)

    def _paste(self, rgb: np.ndarray, grey: bool, prepared: Prepared, restored: np.ndarray,
               opts: RestoreOptions) -> tuple[np.ndarray, list[FaceResult], dict[str, float]]:
        timings = dict(prepared.timings)
        t0 = time.perf_counter()
        if opts.aligned:
            out_rgb, faces = self._finish_aligned(rgb, grey, prepared.crops[0], restored[0], opts)
        else:
            out_rgb, faces = self._finish_photo(rgb, grey, prepared, restored, opts)
        timings["paste"] = time.perf_counter() - t0
        log.debug("%d face(s); timings %s", len(faces), timings)
        return out_rgb, faces, timings

    def _finish_photo(self, rgb: np.ndarray, grey: bool, prepared: Prepared, restored: np.ndarray,
                      opts: RestoreOptions) -> tuple[np.ndarray, list[FaceResult]]:
        crops, affines = prepared.crops, prepared.affines
        if grey and len(crops):
            restored = _to_grey(restored, crops, rgb)
        masks = None
        if opts.paste_mask == "parse" and len(restored):
            masks = [m.astype(np.float32) for m in self.parse_masks(to_uint8(restored))]
        canvas = self._upsample_rgb(rgb, opts.upscale) if opts.bg_upsampler is not None else None
        faces, inverses = list(restored), [invert_affine(m) for m in affines]
        if opts.face_upsample and faces:
            s = opts.upscale
            faces = [self._upsample_rgb(face, s) for face in faces]
            inverses = [_from_enlarged_crop(inv, s) for inv in inverses]
            if masks is not None:
                masks = [cv2.resize(m, (FACE_SIZE * s, FACE_SIZE * s), interpolation=cv2.INTER_LINEAR) for m in masks]
        out = paste_back(rgb, faces, inverses, opts.upscale, masks=masks, canvas=canvas)
        results = [
            FaceResult(face.box, face.score, face.landmarks5, crop_side_in_image(m), opts.w,
                       to_uint8(crop), to_uint8(rest), m, face.detector)
            for face, m, crop, rest in zip(prepared.faces, affines, crops, restored, strict=True)
        ]
        return out, results

    def parse_masks(self, faces_rgb_u8: np.ndarray) -> list[np.ndarray]:
        """512² float64 paste masks (`parsing.parse_mask`, the official mask) of N×512×512×3 uint8 RGB faces, all
        parsed in one call."""
        labels = self.parser(np.ascontiguousarray(faces_rgb_u8))
        if len(labels) != len(faces_rgb_u8):
            raise ValueError(f"the parser returned {len(labels)} label maps for {len(faces_rgb_u8)} faces")
        return [parse_mask(label, np.float64) for label in labels]

    def _upsample_rgb(self, rgb: np.ndarray, upscale: int) -> np.ndarray:
        """H×W×3 float32 RGB in [0, 1] → (H·s)×(W·s)×3 float32 through the 8-bit upsampler."""
        h, w = rgb.shape[:2]
        out = self.upsampler.enhance(to_uint8(rgb), outscale=upscale)
        if out.shape[:2] != (h * upscale, w * upscale):
            raise ValueError(f"the upsampler returned {out.shape[1]}×{out.shape[0]}, expected "
                             f"{w * upscale}×{h * upscale}")
        return out.astype(np.float32) / 255.0

    def _enhance_bgr(self, bgr: np.ndarray, outscale: int) -> np.ndarray:
        """The upsampler on uint8 BGR (the official RealESRGANer converts BGR to RGB itself)."""
        return np.ascontiguousarray(self.upsampler.enhance(np.ascontiguousarray(bgr[:, :, ::-1]), outscale)[:, :, ::-1])

    def _restore_photo_official(self, rgb: np.ndarray, grey: bool,
                                opts: RestoreOptions) -> tuple[np.ndarray, list[FaceResult], dict[str, float]]:
        """The official script's whole-photo branch (see `official.py`) on the 8-bit BGR photo; the result
        is float32 RGB, (H·f·s)×(W·f·s) where f enlarges a short side below 512 to 512 (1 otherwise)."""
        s = opts.upscale
        t0 = time.perf_counter()
        original = np.ascontiguousarray(to_uint8(rgb)[:, :, ::-1])
        photo = official.official_read_resize(original)
        f = photo.shape[1] / original.shape[1]
        long_side = max(photo.shape[:2]) * official.DETECT_SHORT_SIDE / min(photo.shape[:2])
        if long_side > official.MAX_DETECT_LONG_SIDE:
            # The official resize has no cap: a 1:100 panorama would run RetinaFace at 640×64000 (many GB).
            raise ValueError(f"the photo is too elongated for the official detection resize (its long side would "
                             f"be {long_side:.0f} px > {official.MAX_DETECT_LONG_SIDE}); use --profile default")
        det_faces, landmarks = self.detector.official_landmarks_5(photo, resize=official.DETECT_SHORT_SIDE,
                                                                 eye_dist_threshold=official.EYE_DIST_THRESHOLD,
                                                                 only_center_face=opts.faces == "center")
        rows = list(range(len(landmarks)))
        if opts.faces == "largest" and rows:
            rows = [max(rows, key=lambda i: (det_faces[i][2] - det_faces[i][0]) * (det_faces[i][3] - det_faces[i][1]))]
        t1 = time.perf_counter()
        affines = [official.official_affine(landmarks[i]) for i in rows]
        crops = np.stack([official.official_crop(photo, m) for m in affines]) if rows else np.zeros((0, 512, 512, 3),
                                                                                                     np.uint8)
        t2 = time.perf_counter()
        crops_rgb = crops[..., ::-1].astype(np.float32) / 255.0
        restored = self.restore_crops(crops_rgb, opts) if rows else crops_rgb
        if grey and rows:
            restored = _to_grey(restored, crops_rgb, rgb)
        restored_bgr = np.ascontiguousarray(to_uint8(restored)[..., ::-1])
        t3 = time.perf_counter()
        upsampled = None
        if opts.bg_upsampler is not None:  # the official script enlarges the photo as read, before read_image
            upsampled = self._enhance_bgr(original, s)
        background = official.official_background(photo, s, upsampled)
        faces = list(restored_bgr)
        face_upsampled = opts.face_upsample and bool(rows)
        if face_upsampled:
            faces = [self._enhance_bgr(face, s) for face in faces]
        t4 = time.perf_counter()
        masks = None
        if opts.paste_mask == "parse" and rows:
            parse_in = np.stack([official.parse_input(face) for face in faces])[..., ::-1]
            masks = self.parse_masks(parse_in)
        t5 = time.perf_counter()
        out_bgr = official.paste_faces(background, faces, [official.official_inverse_affine(m, s) for m in affines],
                                       s, masks, face_upsampled)
        t6 = time.perf_counter()
        results = []
        for i, m in zip(rows, affines, strict=True):
            # Boxes, landmarks and the affine in input pixels, as in the default profile (pixel centres map
            # as in the enlarging resize; f = 1 for photos with a short side of 512 or more).
            box = tuple(float(v) / f for v in det_faces[i][:4])
            to_photo = np.array([[f, 0.0, (f - 1) / 2], [0.0, f, (f - 1) / 2], [0.0, 0.0, 1.0]])
            points = (np.asarray(landmarks[i], np.float64) + 0.5) / f - 0.5
            results.append(FaceResult(box, float(det_faces[i][4]), points,
                                      crop_side_in_image(m) / f, opts.w, crops[len(results)][..., ::-1].copy(),
                                      to_uint8(restored[len(results)]), m @ to_photo, "retinaface"))
        timings = dict(detect=t1 - t0, align=t2 - t1, restore=t3 - t2, upsample=t4 - t3, parse=t5 - t4,
                       paste=t6 - t5)
        log.debug("%d face(s), official profile; timings %s", len(rows), timings)
        return out_bgr[:, :, ::-1].astype(np.float32) / 255.0, results, timings

    def _finish_aligned(self, rgb: np.ndarray, grey: bool, crop: np.ndarray, restored: np.ndarray,
                        opts: RestoreOptions) -> tuple[np.ndarray, list[FaceResult]]:
        h, w = rgb.shape[:2]
        if grey:
            restored = _to_grey(restored[None], crop[None], rgb)[0]
        out_size = (w * opts.upscale, h * opts.upscale)
        shrink = out_size[0] * out_size[1] < FACE_SIZE * FACE_SIZE
        out = cv2.resize(restored, out_size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4)
        out = np.clip(out, 0.0, 1.0)  # Lanczos overshoots
        affine = np.array([[FACE_SIZE / w, 0.0, 0.0], [0.0, FACE_SIZE / h, 0.0]])
        affine[:, 2] = (FACE_SIZE / np.array([w, h]) - 1) / 2  # pixel centres, as cv2.resize maps them
        landmarks = transform_points(template(), invert_affine(affine))
        face = FaceResult((0.0, 0.0, float(w), float(h)), 1.0, landmarks, float(max(w, h)), opts.w,
                          to_uint8(crop), to_uint8(restored), affine, "aligned")
        return out, [face]
