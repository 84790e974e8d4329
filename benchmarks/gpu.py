"""One GPU benchmark run, one Markdown table: the network per batch size and precision (eager and compiled, and
the peer port), whole photos, a 10 s video, and training steps per stage. `benchmarks/gpu.sh` runs it after the
parity tests; it can also run alone:

    python benchmarks/gpu.py [--device cuda] [--budget-s 330] [--out FILE]
    python benchmarks/gpu.py --tiny --device cpu            # the whole script in a minute on a CPU (dry run)

Weights: the parity kit's synthetic weights (../shared/parity, release layout; speed does not depend on the
values; nothing made with them is a restoration). The peer is spandrel-extra-arches' CodeFormer port on the same
state dict, when installed. Sections run in order of importance and each checks the time budget first, so the
table always comes out; what did not run says so. --tiny swaps in a narrow network and tiny training configs so
that every code path runs on a CPU quickly (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PARITY = ROOT.parent / "shared" / "parity"
FACES_JSON = Path(__file__).with_name("gpu_faces.json")
EXAMPLES = ROOT / "examples"

from codeformer.checkpoint import codeformer_from_state_dict  # noqa: E402
from codeformer.models.codeformer import CodeFormer  # noqa: E402
from codeformer.runtime import TorchRunner, describe_device, pick_device  # noqa: E402

TINY_512 = dict(dim_embd=32, n_head=4, n_layers=1, codebook_size=16, latent_size=256, connect_list=(32, 64),
                img_size=512, nf=32, ch_mult=(1, 1, 1, 1, 1, 1), res_blocks=1, attn_resolutions=(16,), emb_dim=32)


class Clock:
    """The run's time budget."""

    def __init__(self, budget_s: float) -> None:
        self.start, self.budget_s = time.perf_counter(), budget_s

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, quick: bool = False) -> float:
    """Median seconds of `fn()` after 2 warm-up calls, over at least 3 runs and 1 s (quick: 1 run, no warm-up)."""
    warmup, min_runs, min_s = (0, 1, 0.0) if quick else (2, 3, 1.0)
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    while len(times) < min_runs or sum(times) < min_s:
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
        if len(times) >= 50:
            break
    return statistics.median(times)


def state_dict(tiny: bool) -> dict[str, torch.Tensor]:
    """The parity kit's filled weights (release layout), or a seeded narrow network's for --tiny."""
    if tiny:
        torch.manual_seed(0)
        return CodeFormer(**TINY_512).state_dict()
    spec = importlib.util.spec_from_file_location("fill_weights", PARITY / "fill_weights.py")
    fill = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fill)
    meta = json.loads((PARITY / "reference.json").read_text())
    return fill.fill_state_dict(str(PARITY / "keys_codeformer.json"), seed=meta["fill_seed"])


def build(sd: dict[str, torch.Tensor]) -> CodeFormer:
    """The network of `sd`: the release layout, or --tiny's narrow one (told apart by its embedding width)."""
    if sd["position_emb"].shape[1] != TINY_512["dim_embd"]:
        return codeformer_from_state_dict(sd)
    model = CodeFormer(**TINY_512)
    model.load_state_dict(sd)
    return model.eval()


def faces_batch(batch: int, size: int = 512) -> torch.Tensor:
    """(batch, 3, 512, 512) in [-1, 1]: the parity kit's two face crops, repeated (or the sample photos' faces
    when the kit is absent)."""
    try:
        with np.load(PARITY / "reference.npz") as z:
            u8 = np.stack([z["input_rgb_u8"], z["input2_rgb_u8"]])
    except OSError:
        from codeformer.data.images import read_image

        u8 = np.stack([read_image(EXAMPLES / "astronaut.png").pixels[:size, :size, :3]] * 2)
    u8 = np.concatenate([u8] * ((batch + 1) // 2))[:batch]
    x = torch.from_numpy(u8.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    return (x * 2 - 1).contiguous()


def compare(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(max abs, PSNR dB of the [-1, 1]-clamped images)."""
    mse = float(((out.clamp(-1, 1) - ref.clamp(-1, 1)) / 2).pow(2).mean())
    return float((out - ref).abs().max()), (10 * math.log10(1 / mse) if mse > 0 else math.inf)


def peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def forward_rows(sd: dict, device: torch.device, batches: list[int], precisions: list[str], compiled: bool,
                 clock: Clock, reserve_s: float, backend: str, refs: dict[int, torch.Tensor], quick: bool = False,
                 graphs: bool = False, w: float = 0.5) -> list[dict]:
    """Faces/s, ms/face and peak memory of `TorchRunner` for each precision and batch; each output compared with
    fp32 eager at the same batch (`refs`, filled by the eager fp32 rows)."""
    rows: list[dict] = []
    for precision in precisions:
        runner = TorchRunner(build(sd), device, precision, compile=compiled, compile_backend=backend,
                             cuda_graphs=graphs)
        for batch in batches:
            mode = "compiled + CUDA graphs" if graphs else "compiled" if compiled else "eager"
            label = {"impl": "ours", "precision": precision, "mode": mode, "batch": batch}
            if clock.left() < reserve_s:
                rows.append({**label, "skipped": "time budget"})
                continue
            x = faces_batch(batch).to(device)
            reset_peak(device)
            try:
                out = runner.restore(x, w)  # the first (compiling) call, outside the timing
                seconds = timed(lambda r=runner, x=x: r.restore(x, w), device, quick)
            except torch.OutOfMemoryError:
                rows.append({**label, "skipped": "out of memory"})
                continue
            except Exception as exc:  # a compile that fails costs its rows, not the run
                rows.append({**label, "skipped": f"failed: {one_line(exc)}"})
                continue
            if not compiled and precision == "fp32":
                refs[batch] = out.cpu()
            diff = compare(out.cpu(), refs[batch]) if batch in refs else (math.nan, math.nan)
            rows.append({**label, "s": seconds, "peak_mb": peak_mb(device), "max_abs": diff[0], "psnr": diff[1]})
    return rows


def stub_torchvision() -> None:
    """The peer package imports torchvision for unrelated architectures; give it an empty stand-in when absent."""
    if importlib.util.find_spec("torchvision") is not None:
        return
    from benchmarks.forward import stub_torchvision as stub

    stub()


def peer_rows(sd: dict, device: torch.device, batches: list[int], clock: Clock, reserve_s: float,
              quick: bool = False, w: float = 0.5) -> list[dict]:
    """The spandrel port on the same weights: fp32 and whole-network bf16 autocast, eager."""
    try:
        stub_torchvision()
        from spandrel_extra_arches.architectures.CodeFormer import CodeFormerArch
    except ImportError as exc:
        return [{"impl": "peer", "precision": "-", "mode": "eager", "batch": "-", "skipped": f"not installed ({exc})"}]
    net = CodeFormerArch().load(sd).model.eval().to(device)
    rows = []
    for precision in ("fp32", "bf16"):
        for batch in batches:
            label = {"impl": "peer", "precision": precision, "mode": "eager", "batch": batch}
            if clock.left() < reserve_s:
                rows.append({**label, "skipped": "time budget"})
                continue
            x = faces_batch(batch).to(device)

            def run(x: torch.Tensor = x, precision: str = precision) -> torch.Tensor:
                with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16,
                                                            enabled=precision == "bf16"):
                    return net(x, weight=w)[0].float()

            reset_peak(device)
            try:
                seconds = timed(run, device, quick)
            except torch.OutOfMemoryError:
                rows.append({**label, "skipped": "out of memory"})
                continue
            rows.append({**label, "s": seconds, "peak_mb": peak_mb(device), "max_abs": math.nan,
                         "psnr": math.nan})
    return rows


def two_face_photo() -> np.ndarray:
    """600×1024 RGB: the astronaut and Grace Hopper side by side (two faces)."""
    from codeformer.data.images import read_image

    astro = read_image(EXAMPLES / "astronaut.png").pixels[:, :, :3]
    grace = read_image(EXAMPLES / "grace_hopper.jpg").pixels[:, :, :3]
    canvas = np.full((600, 1024, 3), 90, np.uint8)
    canvas[44:556, 0:512] = astro
    canvas[0:600, 512:1024] = grace
    return canvas


class ScriptedDetector:
    """Faces at known places, for machines without dlib's model files: `faces_of(call index)` gives the
    (box, landmarks5) list of the n-th call (the video pipeline detects frame by frame, in order)."""

    def __init__(self, faces_of: Callable[[int], list]) -> None:
        self.faces_of, self.calls = faces_of, 0

    def detect(self, rgb: np.ndarray, min_face: float = 0.0) -> list:
        from codeformer.face.detection import Face

        found = [Face(box=tuple(box), score=1.0, landmarks5=np.asarray(lm, np.float64))
                 for box, lm in self.faces_of(self.calls)]
        self.calls += 1
        return found


def stored_faces() -> dict:
    return json.loads(FACES_JSON.read_text())


def dlib_ok() -> bool:
    try:
        from codeformer.face.detection import DlibDetector

        DlibDetector().detect(np.zeros((64, 64, 3), np.uint8))
        return True
    except (ImportError, FileNotFoundError, RuntimeError):
        return False


def make_faces_json() -> None:
    """Write gpu_faces.json with dlib (run where dlib and its model are installed): the two-face photo's faces
    and each video face patch's landmarks in patch coordinates."""
    from codeformer.face.detection import DlibDetector

    det = DlibDetector()
    def record(face: object) -> list:
        return [[round(v, 2) for v in face.box], np.round(face.landmarks5, 2).tolist()]

    photo = [record(f) for f in det.detect(two_face_photo())]
    patches = [record(det.detect(np.ascontiguousarray(patch))[0]) for patch in video_face_patches()]
    FACES_JSON.write_text(json.dumps({"two_face_photo": photo, "video_patches": patches}) + "\n")
    print(f"wrote {FACES_JSON}: {len(photo)} photo faces, {len(patches)} patches")


def photo_rows(sd: dict, device: torch.device, precisions: list[str], use_dlib: bool, clock: Clock,
               reserve_s: float, quick: bool = False) -> list[dict]:
    """Whole two-face photo: decode → detect → align → restore → paste → encode, median over runs."""
    from codeformer.data.images import Picture, encode_image, read_image
    from codeformer.face.detection import DlibDetector
    from codeformer.face.pipeline import RestoreOptions, Restorer

    data = encode_image(Picture(two_face_photo()), "PNG")
    faces = stored_faces()["two_face_photo"]
    rows = []
    for precision in precisions:
        if clock.left() < reserve_s:
            rows.append({"precision": precision, "skipped": "time budget"})
            continue
        detector = DlibDetector() if use_dlib else ScriptedDetector(lambda _: faces)
        restorer = Restorer(TorchRunner(build(sd), device, precision), detector, device,
                            RestoreOptions(w=0.5, batch_size=8))
        runs = []
        for i in range(2 if quick else 6):
            t0 = time.perf_counter()
            pic = read_image(data, name="two-face photo")
            t1 = time.perf_counter()
            result = restorer.restore(pic)
            t2 = time.perf_counter()
            encode_image(result.image, "JPEG")
            t3 = time.perf_counter()
            if i:  # the first run warms cuDNN up
                runs.append({"decode": t1 - t0, **result.timings, "encode": t3 - t2, "total": t3 - t0})
        stages = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        rows.append({"precision": precision, "faces": len(result.faces), "stages": stages,
                     "detector": "dlib" if use_dlib else "stored landmarks (no dlib model here)"})
    return rows


def video_row(sd: dict, device: torch.device, precision: str, frames: int, use_dlib: bool, clock: Clock,
              reserve_s: float) -> dict:
    """frames/s of `restore_video` on a synthetic 1280×720 clip with two panning faces (benchmarks/video.py)."""
    if clock.left() < reserve_s:
        return {"skipped": "time budget"}
    from codeformer.face.detection import DlibDetector
    from codeformer.face.pipeline import RestoreOptions, Restorer

    patches = stored_faces()["video_patches"]

    def clip_faces(i: int) -> list:  # where make_clip draws patch k in frame i
        out = []
        for k, (box, lm) in enumerate(patches):
            dx, dy = 100 + k * 420 + int(60 * np.sin(i / 40 + k)), 200 + int(40 * np.cos(i / 50 + k))
            out.append(([box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy], np.asarray(lm) + [dx, dy]))
        return out

    detector = DlibDetector() if use_dlib else ScriptedDetector(clip_faces)
    restorer = Restorer(TorchRunner(build(sd), device, precision), detector, device,
                        RestoreOptions(w=0.5, batch_size=16, min_face=64))  # 64: one HOG upsample, not two
    label = {"precision": precision, "clip_s": frames / 25,
             "detector": "dlib" if use_dlib else "scripted (no dlib model here)"}
    try:
        from benchmarks.video import make_clip
        from codeformer.video import VideoOptions, restore_video
    except ImportError as exc:  # no PyAV: the face work of the same frames, without decoding and encoding
        seconds, faces = faces_of_frames(restorer, frames)
        return {**label, "frames": frames, "seconds": seconds, "faces": faces,
                "mode": f"frames in memory, no decode/encode (PyAV not installed: {exc.name})"}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "clip.mp4"
        make_clip(src, frames, 2)
        report = restore_video(restorer, src, Path(tmp) / "out.mp4", video=VideoOptions(window=8, progress=False))
    return {**label, "frames": report.frames, "seconds": report.seconds, "faces": report.faces,
            "mode": "codeformer.video.restore_video: decode, detect, track, restore, paste, encode"}


CLIP_SIZE = (1280, 720)  # benchmarks/video.py's SIZE


def video_face_patches() -> list[np.ndarray]:
    """The first two face patches of benchmarks/video.py's clip (astronaut, Grace Hopper; uint8 RGB), made here
    because that module needs PyAV to import."""
    import cv2

    from codeformer.data.images import read_image

    astro = read_image(EXAMPLES / "astronaut.png").pixels[:, :, :3]
    grace = read_image(EXAMPLES / "grace_hopper.jpg").pixels[:, :, :3]
    return [cv2.resize(np.ascontiguousarray(astro[0:320, 90:410]), (300, 300), interpolation=cv2.INTER_AREA),
            cv2.resize(np.ascontiguousarray(grace[30:430, 60:460]), (300, 300), interpolation=cv2.INTER_AREA)]


def clip_frame(i: int, background: np.ndarray, patches: list[np.ndarray]) -> np.ndarray:
    """Frame i of benchmarks/video.py's clip (the patches panning over `background`), without PyAV."""
    frame = background.copy()
    for k, patch in enumerate(patches):
        side = patch.shape[0]
        x, y = 100 + k * 420 + int(60 * np.sin(i / 40 + k)), 200 + int(40 * np.cos(i / 50 + k))
        frame[y:y + side, x:x + side] = patch
    return frame


def faces_of_frames(restorer: object, frames: int, window: int = 8) -> tuple[float, int]:
    """Seconds and faces for the per-frame face work of the video path on frames made in memory (untimed):
    detect, align, the faces of `window` frames in one model call, paste back (float, as photos)."""
    import cv2

    from codeformer.face.align import estimate_affine, invert_affine, warp_face
    from codeformer.face.paste import paste_back

    w, h = CLIP_SIZE
    background = cv2.resize(np.random.default_rng(0).integers(40, 200, (h // 20, w // 20, 3)).astype(np.uint8),
                            CLIP_SIZE, interpolation=cv2.INTER_CUBIC)
    patches = video_face_patches()
    seconds, faces = 0.0, 0
    for first in range(0, frames, window):
        images = [clip_frame(i, background, patches) for i in range(first, min(frames, first + window))]
        t0 = time.perf_counter()
        rgbs = [im.astype(np.float32) / 255.0 for im in images]
        affines = [[estimate_affine(f.landmarks5) for f in restorer.detector.detect(im)] for im in images]
        crops = np.stack([warp_face(rgb, m) for rgb, ms in zip(rgbs, affines, strict=True) for m in ms])
        restored = restorer.restore_crops(crops)
        k = 0
        for rgb, ms in zip(rgbs, affines, strict=True):
            paste_back(rgb, list(restored[k:k + len(ms)]), [invert_affine(m) for m in ms], 1)
            k += len(ms)
        seconds += time.perf_counter() - t0
        faces += len(crops)
    return seconds, faces


def train_rows(device: torch.device, tiny: bool, clock: Clock, reserve_s: float) -> list[dict]:
    """Seconds per step of each stage (benchmarks/train_step.py's child), one process, this device."""
    from benchmarks.tiny_faces import make_tiny_faces
    from benchmarks.train_step import CASES, child

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        faces = str(make_tiny_faces(Path(tmp) / "faces", n_lfw=14, size=64))
        for label, stage, config, phase_step in CASES["tiny" if tiny else "full"]:
            if clock.left() < reserve_s:
                rows.append({"stage": label, "skipped": "time budget"})
                continue
            reset_peak(device)
            res = child(stage, config, phase_step, 2 if tiny else 5, faces, device.type,
                        batch=None if tiny else 4)
            rows.append({"stage": label, **res})
    return rows


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:160]}"


def guarded(name: str, fn: Callable[[], object], failed: Callable[[str], object]) -> object:
    """fn(), or `failed` (with the error logged) when it raises: one broken section must not lose the table."""
    try:
        return fn()
    except Exception as exc:
        print(f"{name} failed: {one_line(exc)}", file=sys.stderr)
        return failed(one_line(exc))


def fmt(v: float | None, spec: str) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def table(device: torch.device, fwd: list[dict], ref_diff: float | None, photos: list[dict], video: dict,
          train: list[dict], tiny: bool) -> str:
    lines = [f"## GPU run: {describe_device(device)}, torch {torch.__version__}"
             f"{', --tiny (numbers mean nothing)' if tiny else ''}", "",
             "Weights: the parity kit's synthetic weights (release layout); w = 0.5; 512² faces.", ""]
    if ref_diff is not None:
        lines += [f"fp32 on this device vs the official CPU reference (parity kit, w = 0.5, AdaIN): max abs "
                  f"{ref_diff:.2e}", ""]
    lines += ["### Network", "", "| impl | precision | mode | batch | faces/s | ms/face | peak GPU MB "
              "| vs our fp32 eager: max abs | PSNR dB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in fwd:
        head = f"| {r['impl']} | {r['precision']} | {r['mode']} | {r['batch']} |"
        if "skipped" in r:
            lines.append(f"{head} not run: {r['skipped']} | | | | |")
            continue
        per_face = r["s"] / r["batch"]
        lines.append(f"{head} {1 / per_face:.1f} | {1000 * per_face:.2f} | {fmt(r['peak_mb'], '.0f')} | "
                     f"{fmt(r['max_abs'], '.2e')} | {fmt(r['psnr'], '.1f')} |")
    lines += ["", "### Whole photo (two faces, 1024×600 PNG in, JPEG out), median ms per stage", "",
              "| precision | faces | decode | detect | align | restore | paste | encode | total | photos/s "
              "| limited by | detector |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in photos:
        if "skipped" in r:
            lines.append(f"| {r['precision']} | not run: {r['skipped']} |||||||||||")
            continue
        s = {k: 1000 * v for k, v in r["stages"].items()}
        limit = max(("decode", "detect", "align", "restore", "paste", "encode"), key=lambda k: s[k])
        lines.append(f"| {r['precision']} | {r['faces']} | " + " | ".join(
            f"{s[k]:.1f}" for k in ("decode", "detect", "align", "restore", "paste", "encode", "total"))
            + f" | {1000 / s['total']:.2f} | {limit} ({100 * s[limit] / s['total']:.0f} %) | {r['detector']} |")
    lines += ["", "### Video (synthetic 1280×720 clip, 25 fps, two faces)", ""]
    if "skipped" in video:
        lines.append(f"not run: {video['skipped']}")
    else:
        lines.append(f"{video['precision']}: {video['frames']} frames ({video['clip_s']:.1f} s clip, "
                     f"{video['faces']} faces) in {video['seconds']:.1f} s = {video['frames'] / video['seconds']:.1f} "
                     f"frames/s; {video['mode']}; detector: {video['detector']}")
    lines += ["", "### Training, one process on this device (random LPIPS/VGG and initial weights)", "",
              "| stage | batch×size | steps/s | s/step | peak GPU MB |", "|---|---|---|---|---|"]
    for r in train:
        if "skipped" in r:
            lines.append(f"| {r['stage']} | not run: {r['skipped']} | | | |")
            continue
        lines.append(f"| {r['stage']} | {r['batch']}×{r['size']}² | {1 / r['sec_per_step']:.2f} | "
                     f"{r['sec_per_step']:.3f} (n={r['timed_steps']}) | {fmt(r['cuda_max_alloc_mb'], '.0f')} |")
    return "\n".join(lines) + "\n"


def reference_diff(sd: dict, device: torch.device) -> float | None:
    """max |our fp32 output on `device` − the official reference| for the kit's first input, w = 0.5."""
    try:
        with np.load(PARITY / "reference.npz") as z:
            u8, ref = z["input_rgb_u8"], torch.from_numpy(z["cf_out_w05"])
    except OSError:
        return None
    x = (torch.from_numpy(u8.astype(np.float32) / 255.0).permute(2, 0, 1)[None] * 2 - 1).contiguous()
    out = TorchRunner(build(sd), device, "fp32").restore(x.to(device), 0.5)
    return float((out.cpu() - ref).abs().max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--budget-s", type=float, default=330.0, help="stop starting new rows after this (default 330)")
    ap.add_argument("--out", help="also write the table to this file")
    ap.add_argument("--tiny", action="store_true", help="dry run: narrow network, tiny configs, few frames")
    ap.add_argument("--make-faces-json", action="store_true", help="(re)write gpu_faces.json with dlib")
    args = ap.parse_args()
    if args.make_faces_json:
        return make_faces_json()
    device = pick_device(args.device)
    clock = Clock(args.budget_s)
    tiny = args.tiny
    batches = [1, 2] if tiny else [1, 8, 32, 64]
    precisions = ["fp32", "bf16", "fp16"]
    backend = "eager" if tiny else "inductor"  # --tiny checks the plumbing; inductor on a CPU takes minutes
    print(f"device: {describe_device(device)}; budget {args.budget_s:.0f} s", file=sys.stderr)
    sd = state_dict(tiny)
    use_dlib = dlib_ok()

    fwd: list[dict] = []
    photos: list[dict] = []
    video: dict = {"skipped": "not reached"}
    train: list[dict] = []
    ref = None

    def step(name: str) -> None:
        """Log progress and write the table so far (a run cut short still leaves one)."""
        print(f"[{time.perf_counter() - clock.start:6.1f} s] {name}", file=sys.stderr, flush=True)
        if args.out:
            Path(args.out).write_text(table(device, fwd, ref, photos, video, train, tiny), encoding="utf-8")

    step("reference")
    ref = None if tiny else guarded("reference", lambda: reference_diff(sd, device), lambda why: None)
    step("forward, eager")
    refs: dict[int, torch.Tensor] = {}
    fwd += forward_rows(sd, device, batches, precisions, False, clock, 120, backend, refs, tiny)
    # compiled: the batch dimension is compiled dynamic from batch 8 on; batch 1 gets its own (specialised) graph.
    # A compile can take a minute or more, hence the large reserve. bf16 first: the fast path the goal is
    # about; fp16 and fp32 after the other sections.
    compiled_order = [*batches[1:], batches[0]]
    step("forward, compiled bf16")
    fwd += forward_rows(sd, device, compiled_order, ["bf16"], True, clock, 5 if tiny else 150, backend, refs, tiny)
    step("peer")
    fwd += guarded("peer", lambda: peer_rows(sd, device, batches[:3], clock, 110, tiny),
                   lambda why: [{"impl": "peer", "precision": "-", "mode": "eager", "batch": "-", "skipped": why}])
    step("photo")
    photos = guarded("photo", lambda: photo_rows(sd, device, ["fp32", "bf16"], use_dlib, clock, 100, tiny),
                     lambda why: [{"precision": "-", "skipped": why}])
    step("video")
    video = guarded("video", lambda: video_row(sd, device, "bf16", 4 if tiny else 250, use_dlib, clock, 90),
                    lambda why: {"skipped": why})
    step("training")
    train = guarded("training", lambda: train_rows(device, tiny, clock, 75),
                    lambda why: [{"stage": "-", "skipped": why}])
    step("forward, compiled fp16 and fp32")
    fwd += forward_rows(sd, device, compiled_order, ["fp16", "fp32"], True, clock, 5 if tiny else 80, backend,
                        refs, tiny)
    if device.type == "cuda":
        step("forward, compiled with CUDA graphs")
        fwd += forward_rows(sd, device, batches[:3], ["bf16"], True, clock, 60, backend, refs, graphs=True)
    step("done")
    print(table(device, fwd, ref, photos, video, train, tiny))


if __name__ == "__main__":
    main()
