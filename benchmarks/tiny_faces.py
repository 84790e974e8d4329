"""Write a handful of small face crops for the tiny training configs (and tests) from ../shared/data.

Two crops of the sample photos (astronaut, Grace Hopper) plus LFW faces (25×25 grey, stored as RGB); the
training dataset resizes them to the configured size. Usage: `python benchmarks/tiny_faces.py [OUT] [N_LFW]`
(default `data/tiny_faces`, 14 LFW faces).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# (left, top, right, bottom) of the face in each sample photo
PHOTO_CROPS = {"astronaut.png": (150, 10, 310, 170), "grace_hopper.jpg": (140, 70, 380, 310)}


def make_tiny_faces(out: str | Path, n_lfw: int = 14, size: int = 64, data: Path = SHARED_DATA) -> Path:
    """Write `2 + n_lfw` RGB PNG face crops of side `size` into `out`; returns `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, box in PHOTO_CROPS.items():
        crop = Image.open(data / name).convert("RGB").crop(box).resize((size, size), Image.Resampling.LANCZOS)
        crop.save(out / f"photo_{Path(name).stem}.png")
    with np.load(data / "lfw_subset.npz") as z:
        faces = z["faces"][:n_lfw]
    for i, face in enumerate(faces):
        img = Image.fromarray(face.astype(np.uint8), "L").convert("RGB")
        img.resize((size, size), Image.Resampling.BICUBIC).save(out / f"lfw_{i:03d}.png")
    return out


if __name__ == "__main__":
    target = make_tiny_faces(sys.argv[1] if len(sys.argv) > 1 else "data/tiny_faces",
                             int(sys.argv[2]) if len(sys.argv) > 2 else 14)
    print(f"wrote {len(list(target.glob('*.png')))} faces to {target}")
