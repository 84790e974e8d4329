"""Seconds and peak memory of ParseNet (per face, batch 1 vs batch N) and the tiled Real-ESRGAN x2 upsampler.

Run by hand:

    .venv/bin/python benchmarks/parse_sr.py [--threads 2] [--faces 4] [--photo 800x600] [--tiles 400 0]

Batch 1 is the official helper's cost model (ParseNet runs once per face); batch N is ours (`parse` runs the N
faces of a photo in one forward). Real-ESRGAN runs `RealESRGAN.enhance(photo, outscale=2)` with the official
script's tile_pad 40 for each tile size given (0 = the whole photo at once). Weights are random (speed and memory
do not depend on their values). Every configuration runs in a fresh subprocess, so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch


def _photo(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([128 + 100 * np.sin(xx / (9.0 + c) + yy / 13.0) for c in range(3)], -1)
    return np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)


def run_parsenet(faces: int, batch: int) -> dict:
    from codeformer.face.parsing import parse
    from codeformer.models.parsenet import ParseNet

    net = ParseNet().eval()
    crops = [_photo(512, 512) for _ in range(faces)]
    parse(net, crops[:1])  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    parse(net, crops, batch_size=batch)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"what": f"ParseNet {faces} faces, batch {batch}", "s_per_face": wall / faces, "cpu_s_per_face": cpu / faces}


def run_realesrgan(h: int, w: int, tile: int) -> dict:
    from codeformer.models.rrdbnet import RRDBNet
    from codeformer.upsampler import RealESRGAN

    up = RealESRGAN(RRDBNet(3, 3, scale=2).eval(), tile=tile, tile_pad=40, pre_pad=0)
    photo = _photo(h, w)
    start, cpu = time.perf_counter(), time.process_time()
    out = up.enhance(photo, outscale=2)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert out.shape == (2 * h, 2 * w, 3)
    mp = h * w / 1e6
    return {"what": f"Real-ESRGAN x2 {w}x{h}, tile {tile}", "s_per_mp": wall / mp, "cpu_s_per_mp": cpu / mp}


def child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    if args.stage == "parsenet":
        row = run_parsenet(args.faces, args.batch)
    else:
        w, h = (int(v) for v in args.photo.split("x"))
        row = run_realesrgan(h, w, args.tile)
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(row))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--faces", type=int, default=4)
    p.add_argument("--photo", default="800x600", help="WxH of the Real-ESRGAN input")
    p.add_argument("--tiles", type=int, nargs="+", default=[400])
    p.add_argument("--stage", choices=["parsenet", "realesrgan"], help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--tile", type=int, default=400, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.stage:
        return child(args)
    base = [sys.executable, __file__, "--threads", str(args.threads), "--faces", str(args.faces),
            "--photo", args.photo]
    runs = [["--stage", "parsenet", "--batch", "1"], ["--stage", "parsenet", "--batch", str(args.faces)]]
    runs += [["--stage", "realesrgan", "--tile", str(t)] for t in args.tiles]
    print(f"threads {args.threads}; torch {torch.__version__}")
    print(f"{'configuration':<40} {'s/face or s/MP':>15} {'CPU s':>8} {'peak RSS MB':>12}")
    for extra in runs:
        row = json.loads(subprocess.run(base + extra, check=True, capture_output=True, text=True).stdout)
        s = row.get("s_per_face", row.get("s_per_mp"))
        c = row.get("cpu_s_per_face", row.get("cpu_s_per_mp"))
        print(f"{row['what']:<40} {s:>15.2f} {c:>8.2f} {row['peak_rss_mb']:>12.0f}", flush=True)


if __name__ == "__main__":
    main()
