"""Identity similarity (dlib's ResNet face embedding) and 5-point landmark distance.

The embedding is dlib's `dlib_face_recognition_resnet_model_v1.dat` (128-d, shipped with the
face-recognition-models package, so it runs offline). dlib needs face landmarks to cut its 150×150 chip: we find a
face box (dlib's HOG detector, or a given box — for an aligned 512 crop, `ALIGNED_FACE_BOX_512` scaled to it), fit
the 5-point shape predictor inside it, and let dlib cut the chip (padding 0.25) and embed it. When no box is given
and HOG finds no face, there is no score (`NoFaceFound`), never a number for a region no detector saw.
Same person: L2 distance below ~0.6 (dlib's own threshold); on the shared photos the
astronaut vs its 2× down-and-up copy is ~0.3 and astronaut vs Grace Hopper ~0.7.

Cosine similarity (1 = same direction) and L2 distance (0 = same) are both reported; dlib's threshold is stated
for the L2 distance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from codeformer.dlib_models import find_dlib_model

__all__ = ["ALIGNED_FACE_BOX_512", "IdentityEmbedder", "IdentityScore", "NoFaceFound", "cosine_similarity",
           "landmark_distance"]

RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
PREDICTOR_5 = "shape_predictor_5_face_landmarks.dat"
# dlib HOG's box (left, top, right, bottom) on the FFHQ-aligned 512 crop of astronaut.png: where the face sits in
# any crop made with our alignment template. For callers that know their image is such a crop (face.report).
ALIGNED_FACE_BOX_512 = (95, 164, 406, 475)
SAME_PERSON_L2 = 0.6  # dlib's documented decision threshold for this model


class NoFaceFound(ValueError):
    """HOG found no face in an image given without a box; `which` says which image ("first" or "second")."""

    def __init__(self, which: str) -> None:
        super().__init__(f"no face found in the {which} image")
        self.which = which


@dataclass(frozen=True)
class IdentityScore:
    """cosine: cosine similarity of the two embeddings in [-1, 1]; l2: Euclidean distance (>= 0)."""

    cosine: float
    l2: float

    @property
    def same_person(self) -> bool:
        """dlib's rule: L2 distance below 0.6."""
        return self.l2 < SAME_PERSON_L2


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two 1-D vectors; 0 if either is zero."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def landmark_distance(points: np.ndarray, reference: np.ndarray, face_size: float) -> float:
    """Mean Euclidean distance between corresponding (5, 2) landmarks, divided by `face_size` (px, > 0)."""
    p, r = np.asarray(points, np.float64), np.asarray(reference, np.float64)
    if p.shape != r.shape or p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"landmarks must be two (N, 2) arrays of the same shape, got {p.shape} and {r.shape}")
    if face_size <= 0:
        raise ValueError(f"face_size must be > 0, got {face_size}")
    return float(np.linalg.norm(p - r, axis=1).mean() / face_size)


class IdentityEmbedder:
    """dlib face embedding of RGB images. Build with `IdentityEmbedder.load()` (models from
    face-recognition-models, or given paths); the constructor only stores the dlib objects."""

    def __init__(self, recognizer: Any, predictor: Any, detector: Any, dlib_module: Any) -> None:
        self.recognizer = recognizer
        self.predictor = predictor
        self.detector = detector
        self._dlib = dlib_module

    @classmethod
    def load(cls, recognizer_path: str | Path | None = None, predictor_path: str | Path | None = None
             ) -> IdentityEmbedder:
        """Load the ResNet embedding model and the 5-point predictor (default: face-recognition-models' files)."""
        import dlib  # heavy; only the identity metric needs it here

        rec = Path(recognizer_path) if recognizer_path else find_dlib_model(RECOGNITION_MODEL)
        pred = Path(predictor_path) if predictor_path else find_dlib_model(PREDICTOR_5)
        return cls(dlib.face_recognition_model_v1(str(rec)), dlib.shape_predictor(str(pred)),
                   dlib.get_frontal_face_detector(), dlib)

    @staticmethod
    def model_files() -> dict[str, str]:
        """Names and paths of the dlib files this metric uses (for the evaluation protocol)."""
        return {name: str(find_dlib_model(name)) for name in (RECOGNITION_MODEL, PREDICTOR_5)}

    def find_box(self, rgb: np.ndarray) -> tuple[int, int, int, int] | None:
        """(left, top, right, bottom) of the best-scoring HOG face in H×W×3 uint8 `rgb` (upsampled once if the
        image is small), or None when there is none. Best score, not largest box: HOG's false boxes are large
        and weak."""
        upsample = 1 if min(rgb.shape[:2]) < 400 else 0
        rects, scores, _ = self.detector.run(rgb, upsample, 0.0)
        if not len(rects):
            return None
        best = rects[int(np.argmax(scores))]
        return best.left(), best.top(), best.right(), best.bottom()

    def embed(self, rgb: np.ndarray, box: tuple[float, float, float, float] | None = None,
              which: str = "first") -> np.ndarray:
        """128-d float64 embedding of the face in H×W×3 uint8 RGB `rgb`, inside `box` (left, top, right,
        bottom, px) or the box `find_box` picks; `NoFaceFound(which)` when there is neither."""
        img = np.ascontiguousarray(rgb[:, :, :3], dtype=np.uint8)
        box = box if box is not None else self.find_box(img)
        if box is None:
            raise NoFaceFound(which)
        left, top, right, bottom = (round(v) for v in box)
        shape = self.predictor(img, self._dlib.rectangle(left, top, right, bottom))
        return np.array(self.recognizer.compute_face_descriptor(img, shape), dtype=np.float64)

    def compare(self, a: np.ndarray, b: np.ndarray, box_a: tuple[float, float, float, float] | None = None,
                box_b: tuple[float, float, float, float] | None = None) -> IdentityScore:
        """Identity score between the faces of two uint8 RGB images (see `embed` for the boxes); `NoFaceFound`
        naming the image ("first" or "second") where no face was found."""
        ea, eb = self.embed(a, box_a, "first"), self.embed(b, box_b, "second")
        return IdentityScore(cosine=cosine_similarity(ea, eb), l2=float(math.dist(ea, eb)))
