"""Photos per second of a folder run: the local engine vs Ray Data with 1 and 2 model workers (and GPUs).

Builds an archive of N one-face photos (the two sample photos, mirrored and resized), restores it with the
full-size network and dlib's detector, and prints a Markdown table. Each run starts from an empty output folder.
The Ray rows include starting the actors (loading the model in each) but not starting Ray itself, which a cluster
has already done.

    # this machine (CPU): local, then Ray with 1 and 2 workers
    .venv/bin/python benchmarks/cluster.py --photos 8
    # a GPU node (never in CI): local on cuda, then Ray with 1..G workers, one GPU each
    .venv/bin/python benchmarks/cluster.py --photos 64 --device cuda --gpus 1 --workers 1,2

--weights defaults to the parity kit's filled weights (../shared/parity, the released file's exact layout; the
time does not depend on the values). Nothing here is a restoration to look at.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import torch

from codeformer.backends import ModelSpec
from codeformer.cluster import ClusterOptions, restore_archive
from codeformer.data.images import Picture, read_image, write_image
from codeformer.face.batch import OutputOptions, run_batch
from codeformer.face.pipeline import RestoreOptions, Restorer

ROOT = Path(__file__).resolve().parents[1]
PARITY = ROOT.parent / "shared" / "parity"


def make_weights(folder: Path) -> Path:
    """The parity kit's filled weights saved as a release-layout .pth."""
    spec = importlib.util.spec_from_file_location("fill_weights", PARITY / "fill_weights.py")
    fill = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fill)
    path = folder / "codeformer.pth"
    torch.save({"params_ema": fill.fill_state_dict(str(PARITY / "keys_codeformer.json"))}, path)
    return path


def make_archive(folder: Path, n: int) -> None:
    """n one-face photos: the two samples, alternately mirrored, at 90-110 % of their size."""
    samples = [read_image(ROOT / "examples" / name).pixels[:, :, :3] for name in ("grace_hopper.jpg",
                                                                                    "astronaut.png")]
    folder.mkdir(parents=True)
    for i in range(n):
        rgb = samples[i % 2][:, ::-1] if (i // 2) % 2 else samples[i % 2]
        scale = 0.9 + 0.2 * (i % 5) / 4
        rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        write_image(folder / f"photo{i:03d}.jpg", Picture(rgb.copy()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=8, help="photos in the archive (default 8)")
    ap.add_argument("--weights", help="codeformer.pth (default: the parity kit's filled weights)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--gpus", type=float, default=0.0, help="GPUs per Ray worker (default 0)")
    ap.add_argument("--workers", default="1,2", help="Ray worker counts to try (default 1,2)")
    ap.add_argument("--cpus-per-worker", type=float, help="CPUs per model actor (default: 1, or less so that the "
                    "workers leave one CPU to decode and write: 0.5 each for 2 workers on 2 cores)")
    ap.add_argument("--batch-size", type=int, default=4, help="faces per model call (default 4)")
    args = ap.parse_args()

    import ray

    tmp = Path(tempfile.mkdtemp(prefix="cluster-bench-"))
    try:
        weights = Path(args.weights) if args.weights else make_weights(tmp)
        make_archive(tmp / "src", args.photos)
        opts = RestoreOptions(w=0.5, batch_size=args.batch_size)
        spec = ModelSpec(weights=str(weights), device=args.device)
        rows = []

        t0 = time.perf_counter()
        restorer = Restorer(spec.load(), device=args.device, options=opts)
        report = run_batch(restorer, [str(tmp / "src")], opts, OutputOptions(tmp / "local"), progress=False)
        seconds = time.perf_counter() - t0
        rows.append(("local (1 process)", f"{torch.get_num_threads()} torch threads", report.images, report.faces,
                     seconds))
        del restorer

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
        try:
            for workers in (int(w) for w in args.workers.split(",")):
                cpus = args.cpus_per_worker or min(1.0, (os.cpu_count() - 1) / workers)
                cluster = ClusterOptions(workers=workers, gpus_per_worker=args.gpus, cpus_per_worker=cpus)
                t0 = time.perf_counter()
                report = restore_archive([str(tmp / "src")], spec, OutputOptions(tmp / f"ray{workers}"), opts,
                                         cluster, device=args.device, progress=False)
                seconds = time.perf_counter() - t0
                what = f"{workers} model actor(s), {cpus:g} CPU" + \
                    (f" + {args.gpus:g} GPU" if args.gpus else "") + " each"
                rows.append((f"ray, {workers} worker(s)", what, report.images, report.faces, seconds))
        finally:
            ray.shutdown()

        device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {os.cpu_count()} cores"
        print(f"{args.photos} photos, batch size {args.batch_size}, {device}, torch {torch.__version__}\n")
        print("| engine | workers | photos | faces | seconds | photos / s |")
        print("|---|---|---|---|---|---|")
        for name, what, photos, faces, secs in rows:
            print(f"| {name} | {what} | {photos} | {faces} | {secs:.1f} | {photos / secs:.3f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
