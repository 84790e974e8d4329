"""Seconds per RetinaFace-R50 detection of a photo, on CPU threads of your choice.

    .venv/bin/python benchmarks/retinaface.py [--threads 1 2] [--repeat 5] [--photo examples/astronaut.png]
                                              [--weights detection_Resnet50_Final.pth]

Without --weights it uses the parity kit's filled weights (the time does not depend on the values). The photo is
detected as our pipeline does it (`detect`: resized to a 640-px short side) and as the official helper does it
(`official_landmarks_5`, resize=640); `forward` is the network alone on the 640-px copy. Prints the median of
`--repeat` runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import torch

from codeformer.face.detection import resize_short_side
from codeformer.face.retinaface import RetinaFaceDetector, load_retinaface, retinaface_from_state_dict

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT.parent / "shared" / "parity"


def filled_detector() -> RetinaFaceDetector:
    spec = importlib.util.spec_from_file_location("fill_weights", KIT / "fill_weights.py")
    fill = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fill)
    sd = fill.fill_state_dict(str(KIT / "pipeline" / "keys_retinaface_r50.json"))
    return RetinaFaceDetector(retinaface_from_state_dict(sd, "filled weights"))


def median_seconds(run: Callable[[], object], repeat: int) -> float:
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--photo", type=Path, default=ROOT / "examples" / "astronaut.png")
    ap.add_argument("--weights", type=Path, default=None)
    args = ap.parse_args()
    detector = load_retinaface(args.weights) if args.weights else filled_detector()
    bgr = cv2.imread(str(args.photo), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"{args.photo}: cannot read this image")
    rgb = bgr[:, :, ::-1].copy()
    small, _ = resize_short_side(bgr, 640)
    print(f"photo {args.photo.name} {bgr.shape[1]}×{bgr.shape[0]}, detector input {small.shape[1]}×{small.shape[0]}")
    print("| threads | forward s | detect s | official_landmarks_5 s | faces |")
    print("|---|---|---|---|---|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        forward = median_seconds(lambda: detector.forward_raw(small), args.repeat)
        detect = median_seconds(lambda: detector.detect(rgb), args.repeat)
        official = median_seconds(lambda: detector.official_landmarks_5(bgr), args.repeat)
        print(f"| {threads} | {forward:.3f} | {detect:.3f} | {official:.3f} | {len(detector.detect(rgb))} |")


if __name__ == "__main__":
    main()
