"""Face detection: the `FaceDetector` interface, the offline dlib detector, and face filters and selection.

Every detector returns `Face` records in the coordinates of the image it was given. The five landmarks follow
the order of the FFHQ-512 template (`align.TEMPLATE_512`): the eye with the smaller x first, then the other eye,
the nose tip, and the two mouth corners in the same left-to-right order.

The default `DlibDetector` runs dlib's HOG face detector on a copy resized so that its short side is 640 px (as
the official pipeline does), then reduces dlib's 68-point landmarks to the five FFHQ points. The model file
ships with the `face-recognition-models` package; it is located the first time a face is detected, not at import.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np

from codeformer.face.align import TEMPLATE_512, similarity_least_squares, transform_points

log = logging.getLogger(__name__)

DETECT_SHORT_SIDE = 640  # the official pipeline detects on a copy with this short side
DETECT_MAX_LONG_SIDE = 4096  # ours also caps the long side, so a 100:1 panorama cannot become 64000 px wide
MIN_EYE_DISTANCE = 5.0  # px in the input image; the official pipeline skips faces below this
SHAPE_PREDICTOR_68 = "shape_predictor_68_face_landmarks.dat"
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
    "left" is the smaller x in the image (the template's order).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks5: np.ndarray = field(repr=False)

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


def find_dlib_model(filename: str = SHAPE_PREDICTOR_68) -> Path:
    """Path of a model file shipped by `face-recognition-models` (located without importing the package,
    whose import fails on current setuptools)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{filename}: the face-recognition-models package is not installed (pip install face-recognition-models)"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / filename
        if path.is_file():
            return path
    raise FileNotFoundError(f"{filename}: not found in the face-recognition-models package")


def hog_upsample_for(min_face_detect_px: float, max_upsample: int = 2) -> int:
    """How many times dlib's HOG must upsample to see faces of `min_face_detect_px` (its window is ~80 px and
    each upsample halves it), capped at `max_upsample` because each step costs about 4× the time."""
    if min_face_detect_px >= HOG_MIN_WINDOW:
        return 0
    needed = math.ceil(math.log2(HOG_MIN_WINDOW / max(min_face_detect_px, 1e-3)))
    return min(needed, max_upsample)


def landmarks68_to_5(points68: np.ndarray) -> np.ndarray:
    """Reduce dlib's (68, 2) landmarks to the FFHQ five: eye centres (means of 36–41 and 42–47), nose tip 30,
    mouth corners 48 and 54. Returns (5, 2) float64 in template order."""
    return np.stack(
        [points68[36:42].mean(0), points68[42:48].mean(0), points68[30], points68[48], points68[54]]
    ).astype(np.float64)


class DlibDetector:
    """dlib HOG detector with 68-point landmarks reduced to the FFHQ five; fully offline.

    threshold: minimum HOG score (dlib's own default is 0). upsample: HOG upsampling count, or None to choose
    from the `min_face` hint (0–2). The models load on the first `detect` call.
    """

    def __init__(self, threshold: float = 0.0, upsample: int | None = None, predictor_path: Path | None = None):
        self.threshold = threshold
        self.upsample = upsample
        self.predictor_path = predictor_path
        self._detector = None
        self._predictor = None

    def _load(self) -> None:
        import dlib  # imported here: dlib is heavy and only this detector needs it

        path = self.predictor_path or find_dlib_model()
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(path))
        self._rectangle = dlib.rectangle

    def detect(self, rgb: np.ndarray, min_face: float = 0.0) -> list[Face]:
        """Faces in an H×W×3 (or H×W grey) uint8 image, filtered by score, landmark sanity and eye distance;
        boxes and landmarks in the input's pixel coordinates, best score first."""
        if self._detector is None:
            self._load()
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[:, :, None], 3, axis=2)
        small, scale = resize_short_side(np.ascontiguousarray(rgb[:, :, :3]), DETECT_SHORT_SIDE,
                                         DETECT_MAX_LONG_SIDE)
        upsample = self.upsample if self.upsample is not None else hog_upsample_for(min_face * scale)
        rects, scores, _ = self._detector.run(small, upsample, self.threshold)
        faces = []
        for rect, score in zip(rects, scores, strict=True):
            shape = self._predictor(small, rect)
            points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
            box = tuple(float(v) / scale for v in (rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1))
            landmarks = (landmarks68_to_5(points) + 0.5) / scale - 0.5  # pixel centres map as in cv2.resize
            faces.append(Face(box=box, score=float(score), landmarks5=landmarks))
        faces.sort(key=lambda f: -f.score)
        return filter_faces(faces)
