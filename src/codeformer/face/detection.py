"""Face detection: the `FaceDetector` interface, the offline dlib detectors, and face filters and selection.

Every detector returns `Face` records in the coordinates of the image it was given. The five landmarks follow
the order of the FFHQ-512 template (`align.TEMPLATE_512`): the eye with the smaller x first, then the other eye,
the nose tip, and the two mouth corners in the same left-to-right order.

Three detectors, chosen by name with `make_detector` (`--detector`):
- `hybrid` (`HybridDetector`, the default): HOG proposals down to a low score, each refitted on an upright copy
  of the face, the unsure ones confirmed by dlib's MMOD CNN on that small copy (see the class).
- `hog` (`DlibDetector`): dlib's HOG face detector on a copy resized so that its short side is 640 px (as the
  official pipeline does), dlib's 68-point landmarks reduced to the five FFHQ points.
- `cnn` (`MmodDetector`): dlib's MMOD CNN on the same copy, same landmarks.
Their accuracy and speed are measured by `benchmarks/detection.py` (docs/detection.md). The model files ship
with the `face-recognition-models` package (`codeformer.dlib_models`); they load on first use, not at import.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np

from codeformer.dlib_models import DlibFaceModels, landmarks68_to_5
from codeformer.face.align import TEMPLATE_512, similarity_least_squares, transform_points

log = logging.getLogger(__name__)

DETECT_SHORT_SIDE = 640  # the official pipeline detects on a copy with this short side
DETECT_MAX_LONG_SIDE = 4096  # ours also caps the long side, so a 100:1 panorama cannot become 64000 px wide
MIN_EYE_DISTANCE = 5.0  # px in the input image; the official pipeline skips faces below this
HOG_MIN_WINDOW = 80  # px: the smallest face dlib's HOG detector finds without upsampling
# Largest distance of a landmark from its template point after the best similarity fit, as a fraction of the
# template's eye distance. Measured on the sample photos: true faces 0.05–0.14, HOG false boxes 0.12–0.30
# (the 0.25-score false box on the mirrored astronaut is 0.295).
MAX_TEMPLATE_RESIDUAL = 0.25

Selection = Literal["all", "largest", "center"]
SELECTIONS: tuple[str, ...] = ("all", "largest", "center")


@dataclass(frozen=True)
class Face:
    """One detected face, in input-image pixel coordinates.

    box: (x0, y0, x1, y1) floats. score: the detector's confidence (for HOG an SVM margin; higher is surer).
    landmarks5: (5, 2) float64 array of (x, y): left eye, right eye, nose tip, left and right mouth corner, where
    "left" is the smaller x in the image (the template's order). detector: which model found it ("hog", "cnn",
    ...); scores of different detectors are on different scales.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks5: np.ndarray = field(repr=False)
    detector: str = "unknown"

    @property
    def size(self) -> float:
        """The box's longer side in pixels."""
        x0, y0, x1, y1 = self.box
        return max(x1 - x0, y1 - y0)

    @property
    def eye_distance(self) -> float:
        """Distance between the two eye centres in pixels."""
        return float(np.linalg.norm(self.landmarks5[1] - self.landmarks5[0]))


class FaceDetector(Protocol):
    """Anything that finds faces. `min_face` is a hint (px in the input) so a detector can look small enough."""

    def detect(self, rgb: np.ndarray, min_face: float = 0.0) -> list[Face]:
        """Find faces in an H×W×3 uint8 RGB image; returns them in that image's pixel coordinates."""
        ...


def resize_short_side(img: np.ndarray, short_side: int,
                      max_long_side: int | None = None) -> tuple[np.ndarray, float]:
    """Resize so the short side is `short_side` (INTER_AREA shrinking, INTER_LINEAR enlarging), or less when
    the long side would exceed `max_long_side`.

    Returns (resized copy, scale) where resized coordinates = input coordinates × scale.
    """
    h, w = img.shape[:2]
    scale = short_side / min(h, w)
    if max_long_side is not None:
        scale = min(scale, max_long_side / max(h, w))
    if scale == 1.0:
        return img.copy(), 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(img, size, interpolation=interpolation), scale


def template_residual(landmarks5: np.ndarray) -> float:
    """How far five points are from a similarity of the FFHQ template: the largest point error after the
    least-squares similarity fit, in units of the template's eye distance."""
    fit = similarity_least_squares(landmarks5, TEMPLATE_512)
    error = np.linalg.norm(transform_points(landmarks5, fit) - TEMPLATE_512, axis=1)
    return float(error.max() / np.linalg.norm(TEMPLATE_512[1] - TEMPLATE_512[0]))


def landmarks_plausible(landmarks5: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    """Whether five points look like a face: eyes above nose above mouth in the face's own frame, left/right
    order kept, sane proportions, close to a similarity of the template, and every point inside the box
    enlarged by half its size on each side."""
    left_eye, right_eye, nose, mouth_l, mouth_r = landmarks5
    eye_vec = right_eye - left_eye
    eye_dist = float(np.linalg.norm(eye_vec))
    if eye_dist < 1e-6 or eye_vec[0] <= 0:
        return False
    across = eye_vec / eye_dist  # unit vector from the left eye to the right eye
    down = np.array([-across[1], across[0]])  # perpendicular, pointing from the eyes towards the mouth
    eye_mid = (left_eye + right_eye) / 2
    nose_down = float((nose - eye_mid) @ down)
    mouth_down = float(((mouth_l + mouth_r) / 2 - eye_mid) @ down)
    if not 0 < nose_down < mouth_down:
        return False
    if float((mouth_r - mouth_l) @ across) <= 0:
        return False
    if not 0.4 <= mouth_down / eye_dist <= 2.5:
        return False
    if template_residual(landmarks5) > MAX_TEMPLATE_RESIDUAL:
        return False
    x0, y0, x1, y1 = box
    mx, my = (x1 - x0) / 2, (y1 - y0) / 2
    inside_x = (landmarks5[:, 0] >= x0 - mx) & (landmarks5[:, 0] <= x1 + mx)
    inside_y = (landmarks5[:, 1] >= y0 - my) & (landmarks5[:, 1] <= y1 + my)
    return bool(np.all(inside_x & inside_y))


def filter_faces(faces: list[Face], min_face: float = 0.0, min_eye_distance: float = MIN_EYE_DISTANCE) -> list[Face]:
    """Drop faces whose box is smaller than `min_face` px, whose eyes are closer than `min_eye_distance` px, or
    whose landmarks are implausible (`landmarks_plausible`). Order is kept."""
    kept = []
    for face in faces:
        if face.size < min_face:
            log.debug("face %s dropped: size %.1f < min_face %.1f", face.box, face.size, min_face)
        elif face.eye_distance < min_eye_distance:
            log.debug("face %s dropped: eye distance %.1f px", face.box, face.eye_distance)
        elif not landmarks_plausible(face.landmarks5, face.box):
            log.debug("face %s dropped: implausible landmarks", face.box)
        else:
            kept.append(face)
    return kept


def select_faces(faces: list[Face], mode: Selection, image_shape: tuple[int, ...]) -> list[Face]:
    """Keep all faces, the largest (box area), or the one whose box centre is closest to the image centre."""
    if mode not in SELECTIONS:
        raise ValueError(f"unknown face selection {mode!r}; choose one of {', '.join(SELECTIONS)}")
    if mode == "all" or len(faces) <= 1:
        return list(faces)
    if mode == "largest":
        return [max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))]
    cy, cx = image_shape[0] / 2, image_shape[1] / 2

    def centre_distance(f: Face) -> float:
        return math.hypot((f.box[0] + f.box[2]) / 2 - cx, (f.box[1] + f.box[3]) / 2 - cy)

    return [min(faces, key=centre_distance)]


def hog_upsample_for(min_face_detect_px: float, max_upsample: int = 2) -> int:
    """How many times dlib's HOG must upsample to see faces of `min_face_detect_px` (its window is ~80 px and
    each upsample halves it), capped at `max_upsample` because each step costs about 4× the time."""
    if min_face_detect_px >= HOG_MIN_WINDOW:
        return 0
    needed = math.ceil(math.log2(HOG_MIN_WINDOW / max(min_face_detect_px, 1e-3)))
    return min(needed, max_upsample)


def as_rgb_u8(rgb: np.ndarray) -> np.ndarray:
    """H×W, H×W×1, H×W×3 or H×W×4 uint8 → contiguous H×W×3 uint8 RGB."""
    if rgb.ndim == 2:
        rgb = rgb[:, :, None]
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    return np.ascontiguousarray(rgb[:, :, :3])


def dlib_face(models: DlibFaceModels, img: np.ndarray, box: tuple[int, int, int, int], score: float, scale: float,
              detector: str) -> Face:
    """A `Face` from a dlib box (inclusive left, top, right, bottom) found in `img`, a copy of the input scaled
    by `scale`: 68-point landmarks fitted in `img`, reduced to five, and everything mapped to input pixels."""
    points = models.landmarks68(img, box)
    left, top, right, bottom = box
    out_box = tuple(float(v) / scale for v in (left, top, right + 1, bottom + 1))
    landmarks = (landmarks68_to_5(points) + 0.5) / scale - 0.5  # pixel centres map as in cv2.resize
    return Face(box=out_box, score=score, landmarks5=landmarks, detector=detector)


class DlibDetector:
    """dlib HOG detector with 68-point landmarks reduced to the FFHQ five; fully offline (`--detector hog`).

    Runs on a copy with a 640 px short side. threshold: minimum HOG score (dlib's own default is 0). upsample:
    HOG upsampling count, or None to choose from the `min_face` hint (0–2). The models load on first use.
    """

    def __init__(self, threshold: float = 0.0, upsample: int | None = None, predictor_path: Path | None = None,
                 models: DlibFaceModels | None = None):
        self.threshold = threshold
        self.upsample = upsample
        self.models = models or DlibFaceModels(predictor_path=predictor_path)

    def detect(self, rgb: np.ndarray, min_face: float = 0.0) -> list[Face]:
        """Faces in an H×W×3 (or H×W grey) uint8 image, filtered by score, landmark sanity and eye distance;
        boxes and landmarks in the input's pixel coordinates, best score first."""
        small, scale = resize_short_side(as_rgb_u8(rgb), DETECT_SHORT_SIDE, DETECT_MAX_LONG_SIDE)
        upsample = self.upsample if self.upsample is not None else hog_upsample_for(min_face * scale)
        faces = [dlib_face(self.models, small, box, score, scale, "hog")
                 for box, score in self.models.hog(small, upsample, self.threshold)]
        faces.sort(key=lambda f: -f.score)
        return filter_faces(faces)


class MmodDetector:
    """dlib's MMOD CNN face detector with 68-point landmarks reduced to the FFHQ five (`--detector cnn`).

    Runs on a copy with a 640 px short side, like `DlibDetector`. upsample: count, or None to choose from the
    `min_face` hint, capped at `max_upsample` (default 0: each step costs about 4× the time and MMOD is already
    ~20× HOG, so faces under ~80 px on that copy are missed).
    """

    def __init__(self, upsample: int | None = None, max_upsample: int = 0, models: DlibFaceModels | None = None):
        self.upsample = upsample
        self.max_upsample = max_upsample
        self.models = models or DlibFaceModels()

    def detect(self, rgb: np.ndarray, min_face: float = 0.0) -> list[Face]:
        """Faces in an H×W×3 (or H×W grey) uint8 image, filtered by landmark sanity and eye distance; input
        pixel coordinates, best score first."""
        small, scale = resize_short_side(as_rgb_u8(rgb), DETECT_SHORT_SIDE, DETECT_MAX_LONG_SIDE)
        upsample = self.upsample if self.upsample is not None else hog_upsample_for(min_face * scale,
                                                                                    self.max_upsample)
        faces = [dlib_face(self.models, small, box, score, scale, "cnn")
                 for box, score in self.models.mmod(small, upsample)]
        faces.sort(key=lambda f: -f.score)
        return filter_faces(faces)


DETECTORS: tuple[str, ...] = ("hybrid", "hog", "cnn")  # the first is the default


def make_detector(name: str = DETECTORS[0]) -> FaceDetector:
    """The detector called `name` (`--detector`): hybrid (default), hog or cnn."""
    if name == "hog":
        return DlibDetector()
    if name == "cnn":
        return MmodDetector()
    if name == "hybrid":
        return HybridDetector()
    raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")


# Where dlib's HOG puts its box relative to the five points: centre and side in the 512 template's coordinates
# (the mean over the two clean sample photos, whose boxes give (242, 305) / 274 px and (266, 302) / 285 px).
HOG_BOX_CENTRE_512 = np.array([254.0, 303.0])
HOG_BOX_SIDE_512 = 280.0
UPRIGHT_BOX = 150.0  # px: face box side in the upright copy where landmarks are refitted
UPRIGHT_SIZE = 300  # px: side of that copy


def box_from_landmarks(landmarks5: np.ndarray) -> tuple[np.ndarray, float]:
    """(centre (2,), side) of the HOG-like box implied by five points (via the similarity to the template)."""
    to_template = similarity_least_squares(landmarks5, TEMPLATE_512)
    scale = float(np.sqrt(abs(np.linalg.det(to_template[:, :2]))))
    back = cv2.invertAffineTransform(to_template)
    return transform_points(HOG_BOX_CENTRE_512[None], back)[0], HOG_BOX_SIDE_512 / scale


def upright_transform(landmarks5: np.ndarray, box_side: float = UPRIGHT_BOX, size: int = UPRIGHT_SIZE) -> np.ndarray:
    """2×3 similarity from the image to a `size` square copy where the face implied by `landmarks5` stands
    upright (eyes level) with its HOG-like box `box_side` px wide, centred."""
    to_template = similarity_least_squares(landmarks5, TEMPLATE_512)
    k = box_side / HOG_BOX_SIDE_512
    shift = size / 2 - k * HOG_BOX_CENTRE_512
    return np.hstack([to_template[:, :2] * k, (to_template[:, 2] * k + shift)[:, None]])


def warp_upright(rgb: np.ndarray, m: np.ndarray, size: int = UPRIGHT_SIZE) -> np.ndarray:
    """The `size` square copy of `rgb` through the image→copy similarity `m`; when it shrinks by more than 2×,
    the needed region is first shrunk with an area filter so the copy does not alias."""
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    inv = cv2.invertAffineTransform(m)
    corners = transform_points(np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64), inv)
    h, w = rgb.shape[:2]
    x0, y0 = (max(0, int(v) - 2) for v in corners.min(0))
    x1, y1 = min(w, int(corners[:, 0].max()) + 3), min(h, int(corners[:, 1].max()) + 3)
    if scale >= 0.5 or x1 - x0 < 2 or y1 - y0 < 2:
        return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    f = scale * 1.5
    region = cv2.resize(rgb[y0:y1, x0:x1], (max(1, round((x1 - x0) * f)), max(1, round((y1 - y0) * f))),
                        interpolation=cv2.INTER_AREA)
    fx, fy = region.shape[1] / (x1 - x0), region.shape[0] / (y1 - y0)
    # region px = (image px - origin) · f + (f - 1)/2 per axis (pixel centres, as cv2.resize maps them)
    to_region = np.array([[fx, 0, -x0 * fx + (fx - 1) / 2], [0, fy, -y0 * fy + (fy - 1) / 2]])
    back = cv2.invertAffineTransform(to_region)
    m_region = np.hstack([m[:, :2] @ back[:, :2], (m[:, :2] @ back[:, 2] + m[:, 2])[:, None]])
    return cv2.warpAffine(region, m_region, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


class HybridDetector:
    """The default detector (`--detector hybrid`): dlib's HOG finds candidates down to a low score, each is
    refitted on an upright copy of the face, and the unsure ones must be confirmed by dlib's MMOD CNN.

    1. Proposals: HOG on the 640-px copy (upsampled from the `min_face` hint, as `DlibDetector`) with threshold
       `proposal_threshold` instead of 0. Blurred faces score low but still rank near the top of an image's
       candidates; the 68-point model gives first landmarks, and candidates whose landmarks are no face
       (`landmarks_plausible`) or that overlap a better one are dropped.
    2. Upright refit: the face is warped so its eyes are level and its box is 150 px (a 300 px copy: small faces
       get more pixels, tilted ones stand up), HOG looks for it there, and the 68-point model is refitted in that
       box — twice, each time from the last landmarks — then mapped back. Landmarks stop drifting with tilt.
    3. Confirmation: a candidate scoring at least `sure_score` is kept. The others, best first, are kept only if
       MMOD finds a face in a `check_size` px upright copy of it (box half that) with confidence at least
       `check_confidence`; MMOD costs ~20× HOG per pixel, so it only ever sees these small copies. Confirmed
       faces are reported as detector "hog+cnn" with their HOG score. The checks are budgeted against the HOG
       pass: one per `check_cost_mp` megapixels HOG scanned (upsampling included), at most `max_checks`, so the
       whole detector stays within about twice HOG's time whatever the image (a 720p video frame at
       `--min-face 80` gets none). Once the budget is spent, a candidate scoring at least 0 (HOG's own
       threshold) is kept unconfirmed, as `hog` would keep it, and lower ones are dropped.
    4. The box is recomputed from the refitted landmarks (HOG's convention, `box_from_landmarks`), and boxes
       that now fall on one face are merged (best score kept).
    The thresholds were chosen on benchmark scenes of another seed than the documented run (docs/detection.md).
    """

    def __init__(self, proposal_threshold: float = -1.2, sure_score: float = 0.3, check_confidence: float = 0.7,
                 check_size: int = 160, max_checks: int = 8, check_cost_mp: float = 1.25,
                 models: DlibFaceModels | None = None):
        self.proposal_threshold = proposal_threshold
        self.check_cost_mp = check_cost_mp
        self.sure_score = sure_score
        self.check_confidence = check_confidence
        self.check_size = check_size
        self.max_checks = max_checks
        self.models = models or DlibFaceModels()

    def proposals(self, rgb: np.ndarray, min_face: float) -> Iterator[tuple[Face, int]]:
        """HOG candidates with first landmarks, input px, best score first (implausible and overlapping ones
        skipped), each with the check budget of this image (see the class docstring). Lazy: landmarks are
        fitted only for the candidates the caller asks for."""
        small, scale = resize_short_side(rgb, DETECT_SHORT_SIDE, DETECT_MAX_LONG_SIDE)
        upsample = hog_upsample_for(min_face * scale)
        found = self.models.hog(small, upsample, self.proposal_threshold)
        budget = min(self.max_checks, int(small.shape[0] * small.shape[1] * 4**upsample / 1e6 / self.check_cost_mp))
        kept: list[Face] = []
        for box, score in sorted(found, key=lambda f: -f[1]):
            face = dlib_face(self.models, small, box, score, scale, "hog")
            if landmarks_plausible(face.landmarks5, face.box) and not any(_same_face(face.box, k.box) for k in kept):
                kept.append(face)
                yield face, budget

    def refine(self, rgb: np.ndarray, landmarks: np.ndarray, rounds: int = 2) -> np.ndarray:
        """Landmarks (5, 2) in input px refitted `rounds` times on upright copies of the face (step 2 of the class
        docstring), starting from `landmarks`."""
        c, half = UPRIGHT_SIZE / 2, UPRIGHT_BOX / 2
        for _ in range(rounds):
            m = upright_transform(landmarks)
            copy = warp_upright(rgb, m)
            box, best = (c - half, c - half, c + half - 1, c + half - 1), None
            for found, score in self.models.hog(copy, 0, -0.5):
                if _near_centre(found, c, UPRIGHT_BOX) and (best is None or score > best):
                    box, best = found, score
            points = landmarks68_to_5(self.models.landmarks68(copy, box))
            # and on the mirrored copy (the shape model's errors are not symmetric): average the two fits
            mirror = np.ascontiguousarray(copy[:, ::-1])
            x0, y0, x1, y1 = box
            flipped = landmarks68_to_5(self.models.landmarks68(mirror, (UPRIGHT_SIZE - 1 - x1, y0,
                                                                        UPRIGHT_SIZE - 1 - x0, y1)))
            flipped[:, 0] = UPRIGHT_SIZE - 1 - flipped[:, 0]
            points = (points + flipped[[1, 0, 2, 4, 3]]) / 2
            landmarks = transform_points(points, cv2.invertAffineTransform(m))
        return landmarks

    def confirmed(self, rgb: np.ndarray, landmarks5: np.ndarray) -> bool:
        """Whether MMOD finds the face on a small upright copy (box half of `check_size`), where the landmarks
        put it: confident enough, centred within a quarter box and of about the expected size."""
        side = 0.5 * self.check_size
        m = upright_transform(landmarks5, side, self.check_size)
        c = self.check_size / 2
        return any(confidence >= self.check_confidence and _near_centre(box, c, side)
                   for box, confidence in self.models.mmod(warp_upright(rgb, m, self.check_size), 0))

    def detect(self, rgb: np.ndarray, min_face: float = 0.0) -> list[Face]:
        """Faces in an H×W×3 (or H×W grey) uint8 image; input pixel coordinates, best score first."""
        rgb = as_rgb_u8(rgb)
        faces, checks = [], 0
        for face, budget in self.proposals(rgb, min_face):
            detector = "hog"
            if face.score < self.sure_score and checks >= budget:
                if face.score < 0:
                    break  # best first: no later candidate can be kept
                landmarks = self.refine(rgb, face.landmarks5)
            elif face.score < self.sure_score:
                checks += 1
                landmarks = self.refine(rgb, face.landmarks5, rounds=1)  # most unsure ones go: refit once first
                if not self.confirmed(rgb, landmarks):
                    continue
                landmarks = self.refine(rgb, landmarks, rounds=1)
                detector = "hog+cnn"
            else:
                landmarks = self.refine(rgb, face.landmarks5)
            centre, side = box_from_landmarks(landmarks)
            box = tuple(float(v) for v in (centre[0] - side / 2, centre[1] - side / 2, centre[0] + side / 2,
                                           centre[1] + side / 2))
            if not any(_same_face(box, f.box) for f in faces):
                faces.append(Face(box=box, score=face.score, landmarks5=landmarks, detector=detector))
        return filter_faces(faces)


def _near_centre(box: tuple[float, float, float, float], centre: float, side: float) -> bool:
    """Whether a dlib box (inclusive) is centred within a quarter `side` of (centre, centre) and 0.6–1.6 × `side`."""
    x0, y0, x1, y1 = box
    near = max(abs((x0 + x1) / 2 - centre), abs((y0 + y1) / 2 - centre)) < 0.25 * side
    return near and 0.6 * side < x1 - x0 + 1 < 1.6 * side


def _same_face(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    """Whether two boxes are one face: centres closer than 0.4 of the larger side and sides within 2×."""
    sa, sb = max(a[2] - a[0], a[3] - a[1]), max(b[2] - b[0], b[3] - b[1])
    d = math.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2)
    return d < 0.4 * max(sa, sb) and max(sa, sb) < 2 * min(sa, sb)
