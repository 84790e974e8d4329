"""Per-stage time of whole-photo restoration: decode, detect, align, restore, paste, encode.

Runs a one-face photo (examples/grace_hopper.jpg) and a composed four-face photo, each with batch size 1 and
batched (all faces in one model call), and prints a Markdown table (best of --repeat runs per stage).

    .venv/bin/python benchmarks/photo.py --weights PATH/codeformer.pth [--device cpu] [--repeat 1]

PATH may be the released file or a synthetic checkpoint of the same layout (e.g. the parity kit's filled
weights); the time does not depend on the weight values.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from codeformer.checkpoint import load_codeformer
from codeformer.data.images import Picture, encode_image, read_image
from codeformer.face.detection import DlibDetector
from codeformer.face.pipeline import RestoreOptions, Restorer
from codeformer.runtime import TorchRunner

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
STAGES = ("decode", "detect", "align", "restore", "paste", "encode")


def group_photo_png() -> bytes:
    """PNG bytes of a 700×1760 canvas with four faces: both sample photos, and both again mirrored and shrunk."""
    astro = read_image(EXAMPLES / "astronaut.png").pixels[:, :, :3]
    grace = read_image(EXAMPLES / "grace_hopper.jpg").pixels[:, :, :3]
    canvas = np.full((700, 1760, 3), 90, np.uint8)
    canvas[0:512, 0:512] = astro
    canvas[50:650, 520:1032] = grace
    canvas[300:684, 1040:1424] = cv2.resize(astro[:, ::-1], (384, 384), interpolation=cv2.INTER_AREA)
    canvas[0:375, 1430:1750] = cv2.resize(grace[:, ::-1], (320, 375), interpolation=cv2.INTER_AREA)
    return encode_image(Picture(canvas), "PNG")


def time_once(restorer: Restorer, data: bytes, opts: RestoreOptions) -> tuple[dict[str, float], int]:
    """Seconds per stage for one photo, and the number of faces."""
    t0 = time.perf_counter()
    pic = read_image(data, name="photo")
    t1 = time.perf_counter()
    result = restorer.restore(pic, opts)
    t2 = time.perf_counter()
    encode_image(result.image, pic.format)
    t3 = time.perf_counter()
    return {"decode": t1 - t0, **result.timings, "encode": t3 - t2}, len(result.faces)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="codeformer.pth (released or synthetic)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; the best time per stage is kept")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="see codeformer.runtime")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = TorchRunner(load_codeformer(args.weights), args.device, args.precision)
    restorer = Restorer(model, DlibDetector(), device=args.device)
    photos = {"grace_hopper.jpg (1 face)": (EXAMPLES / "grace_hopper.jpg").read_bytes(),
              "group 1760×700 (4 faces)": group_photo_png()}
    time_once(restorer, photos["grace_hopper.jpg (1 face)"], RestoreOptions(min_face=48))  # warm-up
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, best of {args.repeat}, seconds\n")
    print("| photo | faces | batch | " + " | ".join(STAGES) + " | total | per face |")
    print("|---|---|---|" + "---|" * (len(STAGES) + 2))
    for name, data in photos.items():
        for batch in (1, 4):
            opts = RestoreOptions(w=0.7, batch_size=batch, min_face=48)
            runs = [time_once(restorer, data, opts) for _ in range(args.repeat)]
            faces = runs[0][1]
            best = {stage: min(r[0][stage] for r in runs) for stage in STAGES}
            total = sum(best.values())
            cells = " | ".join(f"{best[s]:.3f}" for s in STAGES)
            print(f"| {name} | {faces} | {batch} | {cells} | {total:.2f} | {total / max(faces, 1):.2f} |")


if __name__ == "__main__":
    main()
