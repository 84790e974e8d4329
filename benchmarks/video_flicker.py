"""Flicker and landmark jitter with and without One-Euro smoothing, on a clip with the real dlib detector.

The clip: the two sample faces moving smoothly (sine paths of 30 px, and of 3 px: nearly still) over a texture,
640×360, 25 fps. The detector's own
landmark noise is the only jitter. For each setting the clip is restored with `restore_video`, and the table gives
per track: landmark jitter (mean absolute second difference of the five points along the track, px; the true
paths are smooth, so this is nearly all noise) and the flicker measure from the report (output change / input
change in the face box; `codeformer.video_stats`).

    .venv/bin/python benchmarks/video_flicker.py [--frames 48] [--weights PATH/codeformer.pth]

Without --weights the model is a stand-in that blends a fixed texture, drawn in the aligned crop's coordinates,
into each face: like a real restoration, its detail is anchored to the alignment, so landmark jitter shows as
flicker. With --weights it is the CodeFormer network (slow on CPU: about 5 s per face per frame).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from codeformer.data.images import read_image
from codeformer.face.detection import DlibDetector, Face, filter_faces
from codeformer.face.pipeline import RestoreOptions, Restorer
from codeformer.face.tracking import Tracker, TrackerParams
from codeformer.video import VideoOptions, restore_video

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SIZE = (640, 360)


class AnchoredTexture:
    """Blends a fixed random texture (cells×cells over the 512 crop, bilinear) into each crop, half and half."""

    def __init__(self, cells: int = 32) -> None:
        g = torch.Generator().manual_seed(0)
        small = torch.rand(1, 3, cells, cells, generator=g) * 2 - 1
        self.texture = torch.nn.functional.interpolate(small, size=(512, 512), mode="bilinear", align_corners=False)

    def restore(self, x: torch.Tensor, w: float) -> torch.Tensor:
        return 0.5 * x + 0.5 * self.texture


class NoisyDetector:
    """dlib's detections with extra Gaussian landmark noise of `sigma` px (seeded: frame k of a run always gets
    the same noise), to see the measure respond to a known jitter."""

    def __init__(self, sigma: float) -> None:
        self.detector, self.sigma, self.calls = DlibDetector(), sigma, 0

    def detect(self, rgb: np.ndarray, min_face: float = 0.0) -> list:
        rng = np.random.default_rng(self.calls)
        self.calls += 1
        faces = self.detector.detect(rgb, min_face)
        return [Face(f.box, f.score, f.landmarks5 + rng.normal(0.0, self.sigma, (5, 2))) for f in faces]


def make_clip(path: Path, frames: int, amplitude: float = 30.0) -> list[np.ndarray]:
    """Write the clip (H.264, no audio) with faces moving on sine paths of `amplitude` px; return its frames
    as written (H×W×3 uint8)."""
    rng = np.random.default_rng(0)
    w, h = SIZE
    bg = cv2.resize(rng.integers(40, 200, (h // 16, w // 16, 3)).astype(np.uint8), SIZE, interpolation=cv2.INTER_CUBIC)
    astro = read_image(EXAMPLES / "astronaut.png").pixels[:, :, :3]
    grace = read_image(EXAMPLES / "grace_hopper.jpg").pixels[:, :, :3]
    patches = [cv2.resize(np.ascontiguousarray(astro[0:320, 90:410]), (200, 200), interpolation=cv2.INTER_AREA),
               cv2.resize(np.ascontiguousarray(grace[30:430, 60:460]), (200, 200), interpolation=cv2.INTER_AREA)]
    out = []
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": "16"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            frame = bg.copy()
            for k, patch in enumerate(patches):
                x = 40 + 340 * k + int(round(amplitude * np.sin(i / 12 + 2 * k)))
                y = 80 + int(round(amplitude * 2 / 3 * np.cos(i / 15 + k)))
                frame[y:y + 200, x:x + 200] = patch
            out.append(frame)
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            container.mux(stream.encode(vf))
        container.mux(stream.encode(None))
    return out


def landmark_jitter(clip: Path, smooth: bool, min_face: float, sigma: float) -> dict[int, float]:
    """Mean |second difference| of each track's landmarks (px), detections from the decoded clip."""
    detector, tracker = NoisyDetector(sigma), Tracker(TrackerParams(smooth=smooth))
    paths: dict[int, list[np.ndarray]] = {}
    with av.open(str(clip)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            faces = filter_faces(detector.detect(frame.to_ndarray(format="rgb24"), min_face), min_face=min_face)
            for face in tracker.update(faces, i / 25):
                paths.setdefault(face.track_id, []).append(face.landmarks5)
    return {k: float(np.abs(np.diff(np.stack(v), n=2, axis=0)).mean()) for k, v in paths.items() if len(v) > 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--weights", help="codeformer.pth for the real network (default: the anchored texture)")
    parser.add_argument("--min-face", type=float, default=48.0, help="px; 48 keeps HOG from upsampling here")
    parser.add_argument("--cells", type=int, default=32, help="stand-in texture cells across the crop (detail)")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 1.5],
                        help="extra landmark noise (px) added to dlib's, one run each")
    parser.add_argument("--amplitudes", type=float, nargs="+", default=[30.0, 3.0], help="motion, px")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.weights:
        from codeformer.checkpoint import load_codeformer

        model, name = load_codeformer(args.weights), f"CodeFormer ({Path(args.weights).name})"
    else:
        model, name = AnchoredTexture(args.cells), f"anchored-texture stand-in ({args.cells}×{args.cells} cells)"
    print(f"\n{SIZE[0]}×{SIZE[1]}, {args.frames} frames, dlib detector, model: {name}\n")
    print("| motion | extra noise | track | frames (filled) | landmark jitter px, smoothed | not smoothed "
          "| flicker, smoothed | not smoothed |")
    print("|---|---|---|---|---|---|---|---|")
    for amplitude, sigma in [(a, n) for a in args.amplitudes for n in args.noise]:
        rows = {}
        with tempfile.TemporaryDirectory() as tmp:
            clip = Path(tmp) / "clip.mp4"
            make_clip(clip, args.frames, amplitude)
            for smooth in (True, False):
                restorer = Restorer(model, NoisyDetector(sigma), options=RestoreOptions(w=0.7, min_face=args.min_face))
                video = VideoOptions(tracking=TrackerParams(smooth=smooth), progress=False)
                report = restore_video(restorer, clip, Path(tmp) / f"out_{smooth}.mp4", video=video)
                rows[smooth] = (report, landmark_jitter(clip, smooth, args.min_face, sigma))
        (rs, js), (rr, jr) = rows[True], rows[False]
        for k, t in rs.tracks.items():
            raw = rr.tracks.get(k, {"flicker": None})
            print(f"| {amplitude:g} px | {sigma:g} px | {k} | {t['frames']} ({t['filled']}) | "
                  f"{js.get(k, float('nan')):.3f} | {jr.get(k, float('nan')):.3f} | {t['flicker']:.3f} | "
                  f"{raw['flicker']:.3f} |")
        print(f"| {amplitude:g} px | {sigma:g} px | all | {rs.frames} frames | | | {rs.flicker:.3f} | "
              f"{rr.flicker:.3f} |")

if __name__ == "__main__":
    main()
