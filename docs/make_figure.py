"""Make docs/pipeline.png: the real pipeline stages on a sample photo (no restoration shown).

    .venv/bin/python docs/make_figure.py

Panels: the input with the detected box and 5 landmarks, the aligned 512 crop the network sees, and the soft
paste-back mask. The released weights cannot be downloaded where this was made, so no restored face is shown.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from codeformer.data.images import Picture, read_image, rgb_float, write_image
from codeformer.face.align import estimate_affine, invert_affine, warp_face
from codeformer.face.detection import DlibDetector
from codeformer.face.paste import paste_back

ROOT = Path(__file__).resolve().parents[1]
H = 360  # panel height


def fit(img: np.ndarray) -> np.ndarray:
    return cv2.resize(img, (round(img.shape[1] * H / img.shape[0]), H), interpolation=cv2.INTER_AREA)


def caption(img: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((28, img.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([bar, img])


def main() -> None:
    rgb = rgb_float(read_image(ROOT / "examples" / "grace_hopper.jpg"))
    u8 = (rgb * 255).round().astype(np.uint8)
    face = DlibDetector().detect(u8)[0]
    matrix = estimate_affine(face.landmarks5)
    crop = warp_face(u8, matrix)
    mask = paste_back(np.zeros_like(rgb), [np.ones((512, 512, 3), np.float32)], [invert_affine(matrix)])

    marked = u8.copy()
    x0, y0, x1, y1 = (round(v) for v in face.box)
    cv2.rectangle(marked, (x0, y0), (x1, y1), (0, 200, 0), 2)
    for x, y in face.landmarks5:
        cv2.circle(marked, (round(x), round(y)), 4, (255, 40, 40), -1)
    overlay = (u8 * (0.35 + 0.65 * mask)).astype(np.uint8)

    panels = [caption(fit(marked), f"detected face, score {face.score:.2f}, 5 landmarks"),
              caption(fit(crop), "aligned 512 crop (network input)"),
              caption(fit(overlay), "soft paste-back mask")]
    gap = np.full((H + 28, 8, 3), 255, np.uint8)
    row = np.hstack([p for pair in zip(panels, [gap] * 3, strict=True) for p in pair][:-1])
    note = np.full((30, row.shape[1], 3), 255, np.uint8)
    cv2.putText(note, "Real pipeline stages on examples/grace_hopper.jpg. No restoration shown: the released "
                "weights cannot be downloaded where this was made.", (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (90, 0, 0), 1, cv2.LINE_AA)
    write_image(ROOT / "docs" / "pipeline.png", Picture(np.vstack([row, note])))


if __name__ == "__main__":
    main()
