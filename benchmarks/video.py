"""Video restoration throughput and memory: our streaming pipeline vs the official approach, 720p, 1 and 3 faces.

The official script (spec §3.4) decodes every frame into a list first, restores each frame on its own, writes a
PNG per frame, then reads the PNGs back to encode. `official` mode does exactly that with our own code (same
detector, restorer, paste-back and encoder), so the difference measured is the design, not the components.
`stream` mode is `codeformer.video.restore_video` (bounded window, tracking and smoothing on, segments).

Each case runs in its own process, so peak RSS (ru_maxrss) is that case's alone; frames/s counts the whole run
(decode, detect, restore, paste, encode, mux) after the model is loaded. The clip is synthetic: the sample faces
panning over a texture, with an AAC tone.

    .venv/bin/python benchmarks/video.py --identity [--frames 300] [--faces 1 3]
    .venv/bin/python benchmarks/video.py --weights PATH/codeformer.pth [--device cuda]

--identity times the pipeline alone (the model returns its input); --weights uses the CodeFormer network (a
synthetic checkpoint of the released layout times the same). The table says which.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from codeformer.data.images import read_image
from codeformer.face.detection import DETECTORS, make_detector
from codeformer.face.pipeline import RestoreOptions, Restorer, to_uint8
from codeformer.video import VideoOptions, restore_video
from codeformer.video_io import EncodeSettings, SegmentWriter, decode_frames, mux_output, probe

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SIZE = (1280, 720)
FPS = 25
SAMPLE_RATE = 44100


class IdentityModel:
    """The model stand-in for --identity: returns its input."""

    def restore(self, x: torch.Tensor, w: float) -> torch.Tensor:
        return x.clone()


def face_patches(count: int) -> list[np.ndarray]:
    """`count` face patches (uint8 RGB): astronaut, Grace Hopper, mirrored astronaut."""
    astro = read_image(EXAMPLES / "astronaut.png").pixels[:, :, :3]
    grace = read_image(EXAMPLES / "grace_hopper.jpg").pixels[:, :, :3]
    patches = [cv2.resize(np.ascontiguousarray(astro[0:320, 90:410]), (300, 300), interpolation=cv2.INTER_AREA),
               cv2.resize(np.ascontiguousarray(grace[30:430, 60:460]), (300, 300), interpolation=cv2.INTER_AREA),
               cv2.resize(np.ascontiguousarray(astro[0:320, 410:90:-1]), (260, 260), interpolation=cv2.INTER_AREA)]
    return patches[:count]


def make_clip(path: Path, frames: int, faces: int) -> None:
    """A 1280×720 H.264 clip of `frames` frames at 25 fps: `faces` faces panning over a texture, an AAC tone."""
    rng = np.random.default_rng(0)
    w, h = SIZE
    bg = cv2.resize(rng.integers(40, 200, (h // 20, w // 20, 3)).astype(np.uint8), SIZE, interpolation=cv2.INTER_CUBIC)
    patches = face_patches(faces)
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=FPS, options={"crf": "18", "preset": "veryfast"})
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        a = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        for i in range(frames):
            frame = bg.copy()
            for k, patch in enumerate(patches):
                side = patch.shape[0]
                x = 100 + k * 420 + int(60 * np.sin(i / 40 + k))  # stays inside 1280 px for every k
                y = 200 + int(40 * np.cos(i / 50 + k))
                frame[y:y + side, x:x + side] = patch
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            out.mux(v.encode(vf))
        out.mux(v.encode(None))
        t = np.arange(int(frames / FPS * SAMPLE_RATE)) / SAMPLE_RATE
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        for s in range(0, tone.shape[1], 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, s:s + 1024]), format="fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = SAMPLE_RATE, s, Fraction(1, SAMPLE_RATE)
            out.mux(a.encode(af))
        out.mux(a.encode(None))


def run_official(restorer: Restorer, src: Path, dst: Path, work: Path) -> int:
    """The official approach with our components: all frames into a list, restore each, a PNG per frame,
    read the PNGs back and encode, audio copied. Returns the frame count."""
    info = probe(src)
    frames = list(decode_frames(info, []))  # every frame in RAM, as the official script does
    pngs = work / "final_results"
    pngs.mkdir(parents=True, exist_ok=True)
    for frame in frames:
        result = restorer.restore(frame.rgb)
        cv2.imwrite(str(pngs / f"{frame.index:06d}.png"), to_uint8(result.image)[:, :, ::-1])
    segment = work / "seg_00000.mp4"
    writer = SegmentWriter(segment, info, (info.width, info.height), EncodeSettings())
    for frame in frames:
        writer.write(cv2.imread(str(pngs / f"{frame.index:06d}.png"))[:, :, ::-1].copy(), frame.pts)
    writer.close()
    mux_output([segment], info, dst)
    return len(frames)


def child(args: argparse.Namespace) -> None:
    """Run one case in this process and print a JSON line: frames, seconds, peak RSS (MB)."""
    torch.set_num_threads(args.threads)
    if args.weights:
        from codeformer.checkpoint import load_codeformer

        model = load_codeformer(args.weights, device=args.device)
    else:
        model = IdentityModel()
    opts = RestoreOptions(w=0.7, batch_size=args.batch_size, min_face=args.min_face)
    restorer = Restorer(model, detector=make_detector(args.detector), device=args.device, options=opts)
    src = Path(args.clip)
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "out.mp4"
        start = time.perf_counter()
        if args.child == "stream":
            frames = restore_video(restorer, src, dst, video=VideoOptions(progress=False)).frames
        else:
            frames = run_official(restorer, src, dst, Path(tmp))
        seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"frames": frames, "seconds": seconds, "peak_mb": peak_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--identity", action="store_true", help="identity model: time the pipeline alone")
    model.add_argument("--weights", help="codeformer.pth (released or synthetic) for the real network")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--faces", type=int, nargs="+", default=[1, 3], choices=[1, 2, 3])
    parser.add_argument("--modes", nargs="+", default=["stream", "official"], choices=["stream", "official"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--batch-size", type=int, default=8, help="faces per model call")
    parser.add_argument("--min-face", type=float, default=80.0, help="smallest face (px); 80 and up: dlib HOG "
                        "runs without upsampling at 720p (32 would upsample twice, ~10x slower detection)")
    parser.add_argument("--detector", choices=DETECTORS, default=DETECTORS[0], help="face detector (default: "
                        "the restore default)")
    parser.add_argument("--child", choices=["stream", "official"], help=argparse.SUPPRESS)
    parser.add_argument("--clip", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    model_name = "identity (pipeline alone)" if args.identity else f"CodeFormer ({Path(args.weights).name})"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for faces in args.faces:
            clip = Path(tmp) / f"clip_{faces}.mp4"
            make_clip(clip, args.frames, faces)
            for mode in args.modes:
                cmd = [sys.executable, __file__, "--child", mode, "--clip", str(clip), "--device", args.device,
                       "--threads", str(args.threads), "--batch-size", str(args.batch_size),
                       "--min-face", str(args.min_face), "--detector", args.detector]
                cmd += ["--identity"] if args.identity else ["--weights", args.weights]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()
                result = json.loads(out[-1])
                rows.append((faces, mode, result))
                print(f"faces {faces} {mode}: {result}", file=sys.stderr)
    print(f"\n720p ({SIZE[0]}×{SIZE[1]}), {args.frames} frames, model: {model_name}, device {args.device}, "
          f"{args.threads} torch threads, min face {args.min_face:g} px, detector {args.detector}\n")
    print("| faces | mode | frames | seconds | frames/s | peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    for faces, mode, r in rows:
        label = "ours (streaming)" if mode == "stream" else "official approach (decode all first)"
        print(f"| {faces} | {label} | {r['frames']} | {r['seconds']:.1f} | {r['frames'] / r['seconds']:.2f} | "
              f"{r['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
