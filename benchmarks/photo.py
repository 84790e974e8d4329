"""Per-stage time of whole-photo restoration: decode, detect, align, restore, paste, encode.

Runs a one-face photo (examples/grace_hopper.jpg) and a composed four-face photo, each with batch size 1 and
batched (all faces in one model call), and prints a Markdown table (best of --repeat runs per stage).

    .venv/bin/python benchmarks/photo.py --weights PATH/codeformer.pth [--device cpu] [--repeat 1]

PATH may be the released file or a synthetic checkpoint of the same layout (e.g. the parity kit's filled
weights); the time does not depend on the weight values.

`--vs-official` instead times the two-face photo of issue 11 (astronaut.png and a mirrored grace_hopper.jpg on a
1200×700 canvas) at -s 2, our `--profile official` and our default against a model of the official script's cost:
the same parts run the official way (RetinaFace once, CodeFormer one face at a time, ParseNet once per face,
Real-ESRGAN x2 background with tile 400 / pad 40). With synthetic weights RetinaFace still runs (its time counts)
but the two true faces (dlib's landmarks) replace its junk detections, so every row restores the same two faces:

    .venv/bin/python benchmarks/photo.py --vs-official --synthetic --threads 2

`--synthetic` fills every network with the parity kit's rule (../shared/parity/fill_weights.py) in a temporary
folder: timings only, the pictures mean nothing. The Real-ESRGAN background is the same computation in every row
that has it (same tiles, same network), so it is timed once and added to those rows; by default it is estimated
from one call on the largest padded tile (cost ∝ tile area), `--full-bg` times the real tiled pass instead.
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
from codeformer.face.detection import DlibDetector, make_detector
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


KIT = Path(__file__).resolve().parents[2] / "shared" / "parity"
COLUMNS = ("detect", "align", "restore", "parse", "paste")


def two_face_photo() -> np.ndarray:
    """700×1200 RGB: astronaut.png and a mirrored grace_hopper.jpg on a grey canvas (issue 11's photo)."""
    canvas = np.full((700, 1200, 3), 90, np.uint8)
    canvas[94:606, 40:552] = read_image(EXAMPLES / "astronaut.png").pixels[:, :, :3]
    canvas[50:650, 640:1152] = read_image(EXAMPLES / "grace_hopper.jpg").pixels[:, ::-1, :3]
    return canvas


def synthetic_weights(folder: Path) -> dict[str, Path]:
    """The parity kit's filled weights for the five networks, in their released file layouts."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("fill_weights", KIT / "fill_weights.py")
    fill = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fill)
    seed = json.loads((KIT / "reference.json").read_text())["fill_seed"]
    files = {"codeformer": folder / "codeformer.pth", "retinaface": folder / "det.pth",
             "parsenet": folder / "parse.pth", "realesrgan": folder / "sr.pth"}
    torch.save({"params_ema": fill.fill_state_dict(str(KIT / "keys_codeformer.json"), seed=seed)}, files["codeformer"])
    sd = fill.fill_state_dict(str(KIT / "pipeline" / "keys_retinaface_r50.json"))
    torch.save({"module." + k: v for k, v in sd.items()}, files["retinaface"])
    torch.save(fill.fill_state_dict(str(KIT / "pipeline" / "keys_parsenet.json")), files["parsenet"])
    torch.save({"params_ema": fill.fill_state_dict(str(KIT / "pipeline" / "keys_realesrgan_x2plus.json"))},
               files["realesrgan"])
    return files


class TrueFacesRetinaFace:
    """Runs RetinaFace for its cost but returns the photo's true faces (dlib's landmarks, found once up front):
    with synthetic weights RetinaFace reports junk boxes (23 on this photo), which would time the wrong work."""

    def __init__(self, retina: object, faces: list) -> None:
        self.retina, self.faces = retina, faces

    def official_landmarks_5(self, bgr: np.ndarray, resize: int = 640, eye_dist_threshold: float = 5,
                             only_center_face: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
        self.retina.official_landmarks_5(bgr, resize, eye_dist_threshold, only_center_face)
        boxes = np.array([[*f.box, f.score] for f in self.faces], np.float32)
        return boxes, [f.landmarks5.astype(np.float32) for f in self.faces]


class LinearUpsampler:
    """Stands in for Real-ESRGAN inside the timed rows (its pass is timed once, see `time_background`)."""

    def enhance(self, img: np.ndarray, outscale: float) -> np.ndarray:
        h, w = img.shape[:2]
        return cv2.resize(img, (int(w * outscale), int(h * outscale)), interpolation=cv2.INTER_LINEAR)


def padded_tiles(h: int, w: int, tile: int, pad: int) -> list[tuple[int, int]]:
    """(rows, cols) of the network input of every tile of an h×w image (even sizes), as the tiled upsampler cuts
    it: tile×tile pieces widened by `pad` on each side, clipped to the image."""
    shapes = []
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            rows = min(y0 + tile + pad, h) - max(y0 - pad, 0)
            cols = min(x0 + tile + pad, w) - max(x0 - pad, 0)
            shapes.append((rows, cols))
    return shapes


def time_background(upsampler: object, rgb: np.ndarray, full: bool) -> tuple[float, str]:
    """Seconds of the Real-ESRGAN x2 background pass over `rgb`, and how they were obtained."""
    if full:
        t0 = time.perf_counter()
        upsampler.enhance(rgb, 2)
        return time.perf_counter() - t0, "timed: the full tiled pass"
    h, w = rgb.shape[:2]
    shapes = padded_tiles(h + h % 2, w + w % 2, upsampler.tile, upsampler.tile_pad)
    largest = max(shapes, key=lambda s: s[0] * s[1])
    x = torch.rand(1, 3, *largest)
    with torch.inference_mode():
        upsampler.net(x[:, :, :64, :64])  # warm-up
        t0 = time.perf_counter()
        upsampler.net(x)
        seconds = time.perf_counter() - t0
    area = sum(r * c for r, c in shapes)
    note = (f"estimated: one {largest[1]}×{largest[0]} tile timed ({seconds:.1f} s) × the area of all "
            f"{len(shapes)} padded tiles")
    return seconds * area / (largest[0] * largest[1]), note


def vs_official(args: argparse.Namespace) -> None:
    """Our --profile official and default against the official script's cost on the two-face photo at -s 2."""
    import tempfile
    from functools import partial

    from codeformer.face.parsing import load_parsenet, parse
    from codeformer.face.retinaface import load_retinaface
    from codeformer.upsampler import load_realesrgan

    with tempfile.TemporaryDirectory() as tmp:
        if args.synthetic:
            files = synthetic_weights(Path(tmp))
        else:
            files = {"codeformer": args.weights, "retinaface": args.retinaface_weights,
                     "parsenet": args.parsenet_weights, "realesrgan": args.realesrgan_weights}
            missing = [k for k, v in files.items() if not v]
            if missing:
                raise SystemExit(f"--vs-official needs --synthetic or the weights of: {', '.join(missing)}")
        net = load_codeformer(files["codeformer"])
        retina = load_retinaface(files["retinaface"], device=args.device)
        parsenet = load_parsenet(files["parsenet"], device=args.device)
        realesrgan = load_realesrgan(files["realesrgan"], device=args.device)
    photo = two_face_photo()
    pic = Picture(photo)
    # dlib's HOG also boxes the astronaut's badge (score ~0.02, issue 11); the two best scores are the faces.
    faces = sorted(DlibDetector().detect(photo), key=lambda f: -f.score)[:2]
    if args.synthetic:
        retina = TrueFacesRetinaFace(retina, faces)
    bg_seconds, bg_note = time_background(realesrgan, photo, args.full_bg)
    fp32, bf16 = TorchRunner(net, args.device, "fp32"), TorchRunner(net, args.device, "bf16")
    up = LinearUpsampler()
    rows = [  # name, restorer, options, Real-ESRGAN background in this row
        ("official script (cost model: 1 face at a time, ParseNet per face)",
         Restorer(fp32, retina, args.device, parser=partial(parse, parsenet, batch_size=1), upsampler=up),
         RestoreOptions(w=0.7, upscale=2, profile="official", batch_size=1, bg_upsampler="realesrgan"), True),
        ("ours --profile official --bg-upsampler realesrgan",
         Restorer(fp32, retina, args.device, parser=partial(parse, parsenet), upsampler=up),
         RestoreOptions(w=0.7, upscale=2, profile="official", batch_size=4, bg_upsampler="realesrgan"), True),
        ("ours --profile official (no background upsampler)",
         Restorer(fp32, retina, args.device, parser=partial(parse, parsenet)),
         RestoreOptions(w=0.7, upscale=2, profile="official", batch_size=4), False),
        ("ours default", Restorer(fp32, make_detector(), args.device), RestoreOptions(w=0.7, upscale=2), False),
        ("ours default --precision bf16", Restorer(bf16, make_detector(), args.device),
         RestoreOptions(w=0.7, upscale=2), False),
    ]
    # Warm-up: each network once, so no row pays one-time costs (allocator, kernel selection) for the others.
    restorers = [row[1] for row in rows]
    restorers[0].restore(Picture(photo[:, :600]), rows[0][2])
    restorers[3].restore(Picture(photo[:, :600]), rows[3][2])
    restorers[4].restore(Picture(photo[:, :600]), rows[4][2])
    print(f"two-face photo 1200×700, -s 2, device {args.device}, torch threads {torch.get_num_threads()}, "
          f"best of {args.repeat}, seconds; {'synthetic weights (timings only)' if args.synthetic else ''}")
    print(f"Real-ESRGAN x2 background (tile 400, pad 40): {bg_seconds:.1f} s, {bg_note}\n")
    print("Speed-ups: against the official script with the same background (Real-ESRGAN or bilinear; the model's "
          "row without its background time is the second reference), and against the official script with "
          "--bg_upsampler realesrgan.\n")
    print("| run | faces | " + " | ".join(COLUMNS) + " | bg upsample | total | vs official, same bg | "
          "vs official + Real-ESRGAN |")
    print("|---|---|" + "---|" * (len(COLUMNS) + 4))
    reference: dict[bool, float] = {}
    for name, restorer, opts, with_bg in rows:
        runs = []
        for _ in range(args.repeat):
            result = restorer.restore(pic, opts)
            runs.append(result.timings)
        best = {c: min(r.get(c, 0.0) for r in runs) for c in COLUMNS}
        bg = bg_seconds if with_bg else 0.0
        total = sum(best.values()) + bg
        if not reference:  # the official model: with its background, and the same work without it
            reference = {True: total, False: total - bg}
        cells = " | ".join(f"{best[c]:.2f}" for c in COLUMNS)
        print(f"| {name} | {len(result.faces)} | {cells} | {bg:.1f} | {total:.1f} | "
              f"{reference[with_bg] / total:.2f}× | {reference[True] / total:.2f}× |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="codeformer.pth (released or synthetic)")
    parser.add_argument("--vs-official", action="store_true", help="the issue-11 table (see the module docstring)")
    parser.add_argument("--synthetic", action="store_true", help="with --vs-official: the parity kit's filled "
                        "weights for every network (timings only)")
    parser.add_argument("--full-bg", action="store_true", help="with --vs-official: time the full Real-ESRGAN pass")
    parser.add_argument("--retinaface-weights", help="with --vs-official: detection_Resnet50_Final.pth")
    parser.add_argument("--parsenet-weights", help="with --vs-official: parsing_parsenet.pth")
    parser.add_argument("--realesrgan-weights", help="with --vs-official: RealESRGAN_x2plus.pth")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; the best time per stage is kept")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="see codeformer.runtime")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.vs_official:
        vs_official(args)
        return
    if not args.weights:
        parser.error("--weights is required (or use --vs-official --synthetic)")
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
