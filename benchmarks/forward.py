"""Seconds per 512² face for our CodeFormer and the peer port (spandrel-extra-arches), same weights, same input.

Run by hand, in the benchmark environment (the peer declares torchvision as a dependency, which does not import
beside the CPU torch build, so it is installed there with --no-deps; a stand-in module covers its one import):

    make bench-env
    .venv-bench/bin/python benchmarks/forward.py [--repeats 3] [--threads 2]

Weights: the parity kit's filled weights (../shared/parity), which have the released file's exact layout; the
input is the kit's face crop. Every configuration runs in a fresh subprocess so peak RSS is its own.
Outputs of our fast mode are compared with our fp32 output: code agreement, max abs difference, PSNR.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PARITY = ROOT.parent / "shared" / "parity"


def stub_torchvision() -> None:
    """The peer package imports torchvision for two unrelated architectures; give it an empty stand-in."""
    tv = types.ModuleType("torchvision")
    tr = types.ModuleType("torchvision.transforms")
    fn = types.ModuleType("torchvision.transforms.functional")
    fn.InterpolationMode = type("InterpolationMode", (), {})
    fn.rotate = fn.normalize = lambda *a, **k: None
    tv.transforms, tr.functional = tr, fn
    sys.modules.update({"torchvision": tv, "torchvision.transforms": tr, "torchvision.transforms.functional": fn})


def make_weights(folder: Path) -> Path:
    spec = importlib.util.spec_from_file_location("fill_weights", PARITY / "fill_weights.py")
    fill = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fill)
    path = folder / "codeformer_synth.pth"
    torch.save({"params_ema": fill.fill_state_dict(str(PARITY / "keys_codeformer.json"))}, path)
    return path


def load_input(batch: int) -> torch.Tensor:
    with np.load(PARITY / "reference.npz") as z:
        u8 = np.stack([z["input_rgb_u8"], z["input2_rgb_u8"]] * ((batch + 1) // 2))[:batch]
    x = torch.from_numpy((u8.astype(np.float64) / 255.0).astype(np.float32)).permute(0, 3, 1, 2)
    return ((x - 0.5) / 0.5).contiguous()


def build(impl: str, weights: Path, precision: str):
    """Return restore(x, w) -> out for one implementation."""
    if impl == "peer":
        stub_torchvision()
        from spandrel_extra_arches.architectures.CodeFormer import CodeFormerArch

        sd = torch.load(weights, map_location="cpu", weights_only=True)["params_ema"]
        net = CodeFormerArch().load(sd).model.eval()

        def run(x, w):
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
                return net(x, weight=w)[0].float()
        return run
    from codeformer.checkpoint import load_codeformer
    from codeformer.runtime import TorchRunner

    runner = TorchRunner(load_codeformer(weights), "cpu", precision)
    return lambda x, w: runner.restore(x, w)


def child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    run = build(args.impl, Path(args.weights), args.precision)
    x = load_input(args.batch)
    out = run(x, args.w)  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        out = run(x, args.w)
        times.append(time.perf_counter() - t0)
    if args.save:
        torch.save(out, args.save)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"s_per_face": min(times) / args.batch, "rss_mb": rss_mb}))


def compare(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    diff = (a - b).abs()
    mse = float(((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2).pow(2).mean())
    return {"max_abs": float(diff.max()), "psnr": 10 * math.log10(1 / mse) if mse > 0 else math.inf}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--impl"), ap.add_argument("--weights"), ap.add_argument("--precision")
    ap.add_argument("--w", type=float), ap.add_argument("--batch", type=int), ap.add_argument("--save")
    args = ap.parse_args()
    if args.child:
        return child(args)

    tmp = Path(tempfile.mkdtemp(prefix="cf-bench-"))
    weights = make_weights(tmp)
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        for w in (0.0, 0.5):
            for precision in ("fp32", "bf16"):
                for impl in ("peer", "ours"):
                    save = tmp / f"{impl}_{precision}_{w}_{batch}.pt"
                    cmd = [sys.executable, __file__, "--child", "--impl", impl, "--weights", str(weights),
                           "--precision", precision, "--w", str(w), "--batch", str(batch),
                           "--repeats", str(args.repeats), "--threads", str(args.threads), "--save", str(save)]
                    res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                    rows.append({"impl": impl, "precision": precision, "w": w, "batch": batch, **res,
                                 "out": save})
                    print(f"  measured {impl} {precision} w={w} batch={batch}: {res['s_per_face']:.2f} s/face",
                          file=sys.stderr)

    print(f"\nCodeFormer forward, 512² faces, CPU, {args.threads} threads, torch {torch.__version__}, "
          f"best of {args.repeats}\n")
    print("| impl | precision | w | batch | s / face | speed-up vs peer fp32 | peak RSS MB "
          "| vs our fp32: max abs | PSNR dB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        base = next(b for b in rows if b["impl"] == "peer" and b["precision"] == "fp32" and b["w"] == r["w"]
                    and b["batch"] == r["batch"])
        ours32 = next(b for b in rows if b["impl"] == "ours" and b["precision"] == "fp32" and b["w"] == r["w"]
                      and b["batch"] == r["batch"])
        cmp = compare(torch.load(r["out"], weights_only=True), torch.load(ours32["out"], weights_only=True))
        print(f"| {r['impl']} | {r['precision']} | {r['w']} | {r['batch']} | {r['s_per_face']:.2f} | "
              f"{base['s_per_face'] / r['s_per_face']:.2f}× | {r['rss_mb']:.0f} | {cmp['max_abs']:.2e} | "
              f"{cmp['psnr']:.1f} |")
    print("\nours bf16: generator and fusion in bf16, encoder and transformer in fp32 (codes as fp32); "
          "peer bf16: the whole network under autocast. Per-part figures: benchmarks/bf16_parts.py")


if __name__ == "__main__":
    main()
