"""dlib's offline model files and the raw use of its face models, shared by `codeformer.face` (detection) and
`codeformer.metrics` (identity, landmark distance) so neither package imports the other for them.

The files ship with the `face-recognition-models` package; `find_dlib_model` locates them without importing it
(its import fails on current setuptools). `DlibFaceModels` loads dlib's HOG detector, the MMOD CNN detector and the
68-point shape predictor on first use and returns their raw outputs; filtering and the pipeline's conventions
live in `codeformer.face.detection`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

SHAPE_PREDICTOR_68 = "shape_predictor_68_face_landmarks.dat"
MMOD_DETECTOR = "mmod_human_face_detector.dat"

__all__ = ["MMOD_DETECTOR", "SHAPE_PREDICTOR_68", "DlibFaceModels", "find_dlib_model", "landmarks68_to_5"]


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


def landmarks68_to_5(points68: np.ndarray) -> np.ndarray:
    """Reduce dlib's (68, 2) landmarks to the FFHQ five: eye centres (means of 36–41 and 42–47), nose tip 30,
    mouth corners 48 and 54. Returns (5, 2) float64 in template order."""
    return np.stack(
        [points68[36:42].mean(0), points68[42:48].mean(0), points68[30], points68[48], points68[54]]
    ).astype(np.float64)


class DlibFaceModels:
    """dlib's HOG detector, MMOD CNN detector and 68-point predictor, each loaded on first use.

    Boxes are (left, top, right, bottom) in dlib's inclusive pixel convention of the image given; points are
    (68, 2) float64 (x, y) in that image's pixels.
    """

    def __init__(self, predictor_path: Path | None = None, mmod_path: Path | None = None):
        self.predictor_path = predictor_path
        self.mmod_path = mmod_path
        self._dlib: Any = None
        self._hog: Any = None
        self._mmod: Any = None
        self._predictor: Any = None

    @property
    def dlib(self) -> Any:
        if self._dlib is None:
            import dlib  # imported here: dlib is heavy and only these models need it

            self._dlib = dlib
        return self._dlib

    def hog(self, rgb: np.ndarray, upsample: int, threshold: float) -> list[tuple[tuple[int, int, int, int], float]]:
        """HOG faces in H×W×3 uint8 `rgb`: [(box, SVM score)], scores above `threshold`."""
        if self._hog is None:
            self._hog = self.dlib.get_frontal_face_detector()
        rects, scores, _ = self._hog.run(rgb, upsample, threshold)
        return [((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores, strict=True)]

    def mmod(self, rgb: np.ndarray, upsample: int) -> list[tuple[tuple[int, int, int, int], float]]:
        """MMOD CNN faces in H×W×3 uint8 `rgb`: [(box, confidence)] (dlib's own threshold, confidence > 0)."""
        if self._mmod is None:
            self._mmod = self.dlib.cnn_face_detection_model_v1(str(self.mmod_path or find_dlib_model(MMOD_DETECTOR)))
        found = self._mmod(rgb, upsample)
        return [((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), float(d.confidence)) for d in found]

    def landmarks68(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """dlib's 68 points (68, 2) float64 of the face in `box` (left, top, right, bottom) of H×W×3 uint8 `rgb`."""
        if self._predictor is None:
            self._predictor = self.dlib.shape_predictor(str(self.predictor_path or find_dlib_model()))
        rect = self.dlib.rectangle(*(round(v) for v in box))
        shape = self._predictor(rgb, rect)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
