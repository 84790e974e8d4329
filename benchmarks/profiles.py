"""How far apart the two profiles' geometry and paste conventions put a face, measured without any network.

Both profiles get the same five landmarks (dlib's, on the sample photos) and an identity "restorer", and use the
square mask, so the output differs from the input only through the crop warp, the paste warp, the offsets, the
mask arithmetic and the final rounding. Prints, per photo and scale, the PSNR of each profile's round trip against
the input (s = 1) or the input enlarged the profile's own way (s = 2), and the max / mean absolute difference
between the two profiles (8-bit levels), over the whole image and inside the face box.

    .venv/bin/python benchmarks/profiles.py
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from codeformer.data.images import Picture, read_image
from codeformer.face.detection import DlibDetector, Face
from codeformer.face.pipeline import RestoreOptions, Restorer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class Identity:
    def restore(self, x: torch.Tensor, w: float) -> torch.Tensor:
        return x.clone()


class SameLandmarks:
    """dlib's faces for the default profile and the same landmarks (float32) for the official one."""

    def __init__(self, faces: list[Face]) -> None:
        self.faces = faces

    def detect(self, rgb: np.ndarray, min_face: float = 0.0) -> list[Face]:
        return list(self.faces)

    def official_landmarks_5(self, bgr: np.ndarray, resize: int = 640, eye_dist_threshold: float = 5,
                             only_center_face: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
        boxes = np.array([[*f.box, f.score] for f in self.faces], np.float32)
        return boxes, [f.landmarks5.astype(np.float32) for f in self.faces]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def main() -> None:
    print("| photo | -s | default: PSNR vs input (dB) | official: PSNR vs input (dB) | profiles apart: max / mean "
          "(whole) | max / mean (face box) |")
    print("|---|---|---|---|---|---|")
    for name in ("astronaut.png", "grace_hopper.jpg"):
        rgb = read_image(EXAMPLES / name).pixels[:, :, :3]
        faces = DlibDetector().detect(rgb)
        restorer = Restorer(Identity(), SameLandmarks(faces))
        for s in (1, 2):
            out = {}
            for profile in ("default", "official"):
                opts = RestoreOptions(upscale=s, profile=profile, mask="square")
                out[profile] = restorer.restore(Picture(rgb), opts).image.pixels.astype(np.int16)
            size = (rgb.shape[1] * s, rgb.shape[0] * s)
            refs = {"default": cv2.resize(rgb, size, interpolation=cv2.INTER_LANCZOS4) if s > 1 else rgb,
                    "official": cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR) if s > 1 else rgb}
            diff = np.abs(out["default"] - out["official"])
            x0, y0, x1, y1 = (int(v * s) for v in faces[0].box)
            box = diff[max(y0, 0):y1, max(x0, 0):x1]
            print(f"| {name} | {s} | {psnr(out['default'], refs['default']):.1f} | "
                  f"{psnr(out['official'], refs['official']):.1f} | {diff.max()} / {diff.mean():.3f} | "
                  f"{box.max()} / {box.mean():.2f} |")


if __name__ == "__main__":
    main()
