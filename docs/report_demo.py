"""Make the report page shown in docs/evaluation.md (and optionally its screenshot).

    python docs/report_demo.py --weights codeformer.pth --out /tmp/report_demo [--note TEXT] [--screenshot PNG]

Composes one photo from the sample pictures in examples/ (the astronaut, Grace Hopper, and a small, blurred,
noisy mirrored copy of the astronaut), restores it with `-w auto`, a w sweep and the HTML report, and, with
--screenshot, renders the page with headless chromium. With the parity kit's synthetic weights pass a --note
saying so: the restored crops are then not restorations.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from codeformer.checkpoint import load_codeformer
from codeformer.data.images import Picture, read_image, write_image
from codeformer.face.batch import OutputOptions
from codeformer.face.pipeline import RestoreOptions, Restorer
from codeformer.face.review import ReviewOptions, run_reviewed_batch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def demo_photo() -> np.ndarray:
    """640×1200 RGB uint8: three faces of decreasing quality."""
    astro = read_image(EXAMPLES / "astronaut.png").pixels[:, :, :3]
    grace = read_image(EXAMPLES / "grace_hopper.jpg").pixels[:, :, :3]
    canvas = np.full((640, 1200, 3), 90, np.uint8)
    canvas[0:512, 0:512] = astro
    canvas[0:469, 520:920] = cv2.resize(grace, (400, 469), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(cv2.resize(astro[:, ::-1], (240, 240), interpolation=cv2.INTER_AREA), (0, 0), 1.6)
    noise = np.random.default_rng(0).normal(0, 6, small.shape)
    canvas[390:630, 940:1180] = np.clip(small + noise, 0, 255).astype(np.uint8)
    return canvas


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="a codeformer.pth (official layout)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--note", help="banner text on the page")
    parser.add_argument("--screenshot", help="write a PNG of the page with headless chromium")
    args = parser.parse_args()
    out = Path(args.out)
    inputs = out / "input"
    inputs.mkdir(parents=True, exist_ok=True)
    write_image(inputs / "group.png", Picture(demo_photo()))
    restorer = Restorer(load_codeformer(args.weights), options=RestoreOptions(min_face=24))
    review = ReviewOptions(report="html", auto_w=True, sweep=(0.0, 0.5, 1.0), note=args.note)
    report, summary = run_reviewed_batch(restorer, [str(inputs)], restorer.options, OutputOptions(out / "restored"),
                                         review, progress=False)
    print(report.summary(), summary, sep="\n")
    if args.screenshot:
        page = (out / "restored" / "report.html").resolve()
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--window-size=1280,1500", f"--screenshot={Path(args.screenshot).resolve()}",
                        page.as_uri()], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
