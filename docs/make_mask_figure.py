"""Draw docs/inpaint_masks.png: how `codeformer inpaint` turns white paint on a photo into the region it may change.

No network runs here: the picture shows masks only (the released inpainting weights are not available to us, and
an output made with synthetic weights is not a result). Run from the repository root:

    .venv/bin/python docs/make_mask_figure.py
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from codeformer.data.images import Picture, read_image, write_image
from codeformer.face.align import FACE_SIZE, estimate_affine, invert_affine, warp_face
from codeformer.face.detection import DlibDetector
from codeformer.face.inpaint import hole_in_crop, white_mask
from codeformer.face.paste import paste_back

ROOT = Path(__file__).resolve().parents[1]
PANEL = 320


def _panel(img: np.ndarray, label: str) -> np.ndarray:
    """`img` (H×W×3 uint8) fitted into a PANEL×PANEL tile with a caption strip below."""
    h, w = img.shape[:2]
    scale = PANEL / max(h, w)
    fitted = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    tile = np.full((PANEL + 28, PANEL, 3), 255, np.uint8)
    tile[: fitted.shape[0], : fitted.shape[1]] = fitted
    cv2.putText(tile, label, (6, PANEL + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.48, (0, 0, 0), 1, cv2.LINE_AA)
    return tile


def _overlay(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    out = rgb.copy()
    out[mask] = (0.35 * out[mask] + 0.65 * np.array(colour)).astype(np.uint8)
    return out


def main() -> None:
    photo = read_image(ROOT / "examples" / "grace_hopper.jpg").pixels[:, :, :3].copy()
    h, w = photo.shape[:2]
    strokes = np.zeros((h, w), np.uint8)
    cv2.polylines(strokes, [np.array([(150, 250), (210, 300), (260, 270), (330, 330)], np.int32)], False, 1, 9)
    cv2.polylines(strokes, [np.array([(20, 560), (120, 520)], np.int32)], False, 1, 12)  # off the face
    painted = photo.copy()
    painted[strokes.astype(bool)] = 255

    hole = white_mask(painted)
    face = DlibDetector().detect(painted)[0]
    affine = estimate_affine(face.landmarks5)
    crop = warp_face(painted, affine)
    crop_hole = hole_in_crop(hole, affine)
    weight = 1.0 - paste_back(np.ones((h, w, 1), np.float32), [np.zeros((FACE_SIZE, FACE_SIZE, 1), np.float32)],
                              [invert_affine(affine)])[:, :, 0]
    may_change = hole & (weight > 0)

    tiles = [
        _panel(painted, "1 input: damage painted white"),
        _panel(_overlay(painted, hole, (255, 0, 255)), "2 hole = every pure-white pixel"),
        _panel(_overlay(crop, crop_hole, (255, 0, 255)), "3 hole in the aligned crop"),
        _panel(_overlay(painted, may_change, (0, 160, 255)), "4 may change (hole on a face)"),
    ]
    sheet = np.concatenate(tiles, axis=1)
    write_image(ROOT / "docs" / "inpaint_masks.png", Picture(sheet))
    print(f"docs/inpaint_masks.png: {sheet.shape[1]}×{sheet.shape[0]}; hole {int(hole.sum())} px, of which "
          f"{int(may_change.sum())} on the face")


if __name__ == "__main__":
    main()
