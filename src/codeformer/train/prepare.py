"""Turn a folder of ordinary photos into aligned face crops for training (`codeformer prepare-faces`).

Each photo is read (EXIF orientation applied), its faces are detected (dlib HOG + 68→5 landmarks by default),
implausible or small faces are dropped, and each kept face is warped onto the FFHQ-512 template (scaled to
`size`) and written as `<stem>_<k>.png` (8-bit RGB). Unreadable photos are skipped and counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.dataset import list_images
from ..data.images import ImageReadError, ImageWriteError, Picture, read_image, rgb_float, write_image
from ..face.align import estimate_affine, warp_face
from ..face.detection import FaceDetector, Selection, filter_faces, select_faces

log = logging.getLogger(__name__)


@dataclass
class PrepareReport:
    """Counts of a prepare-faces run; `failed` lists (file, reason) of photos that could not be read/written."""

    photos: int = 0
    crops: int = 0
    no_face: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.photos} photos: {self.crops} face crops, {self.no_face} without a usable face, "
                f"{len(self.failed)} unreadable")


def align_faces(rgb_u8: np.ndarray, detector: FaceDetector, size: int = 512, min_face: float = 64.0,
                faces: Selection = "all") -> list[np.ndarray]:
    """H×W×3 uint8 RGB photo → aligned size×size×3 uint8 RGB crops, one per kept face (detector order)."""
    found = select_faces(filter_faces(detector.detect(rgb_u8, min_face=min_face), min_face), faces, rgb_u8.shape)
    return [warp_face(rgb_u8, estimate_affine(f.landmarks5, size), size) for f in found]


def prepare_faces(src: str | Path, dst: str | Path, detector: FaceDetector, size: int = 512,
                  min_face: float = 64.0, faces: Selection = "all") -> PrepareReport:
    """Write the aligned crops of every photo under `src` (recursive) into `dst`; returns the counts."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    report = PrepareReport()
    for path in list_images(src):
        report.photos += 1
        try:
            rgb = np.rint(rgb_float(read_image(path)) * 255.0).astype(np.uint8)
        except ImageReadError as e:
            report.failed.append((str(path), str(e)))
            log.warning("skipping %s", e)
            continue
        crops = align_faces(rgb, detector, size, min_face, faces)
        if not crops:
            report.no_face += 1
            log.info("%s: no usable face", path)
        for k, crop in enumerate(crops):
            try:
                write_image(dst / f"{path.stem}_{k}.png", Picture(crop))
            except ImageWriteError as e:
                report.failed.append((str(path), str(e)))
                continue
            report.crops += 1
    return report
