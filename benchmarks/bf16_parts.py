"""Which parts of CodeFormer tolerate bfloat16 (or float16): time and accuracy against fp32 for each split.

    .venv/bin/python benchmarks/bf16_parts.py [--threads 2] [--w 0.5] [--dtype bf16|fp16] [--device cpu]

On the parity kit's filled weights and its two input faces (CPU, channels-last): encoder (+ skips) and decoder
(generator + fusion) each in fp32 or the reduced type; the transformer always runs in fp32. Prints seconds per face, the
share of codes equal to fp32, max abs difference and PSNR (outputs clamped to [-1, 1]) against fp32.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import time
from pathlib import Path

import numpy as np
import torch

from codeformer.checkpoint import codeformer_from_state_dict
from codeformer.models.fusion import adain

PARITY = Path(__file__).resolve().parents[2] / "shared" / "parity"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--w", type=float, default=0.5)
    ap.add_argument("--dtype", choices=("bf16", "fp16"), default="bf16")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    device = torch.device(args.device)
    if device.type == "cuda":  # plain fp32 for the reference and the fp32 parts
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_num_threads(args.threads)
    spec = importlib.util.spec_from_file_location("fill_weights", PARITY / "fill_weights.py")
    fill = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fill)
    model = codeformer_from_state_dict(fill.fill_state_dict(str(PARITY / "keys_codeformer.json"))).eval().to(device)
    with np.load(PARITY / "reference.npz") as z:
        u8 = np.stack([z["input_rgb_u8"], z["input2_rgb_u8"]])
    x = ((torch.from_numpy((u8 / 255.0).astype(np.float32)).permute(0, 3, 1, 2) - 0.5) / 0.5).to(device)

    def run(enc_bf16: bool, dec_bf16: bool, channels_last: bool):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        net, xx = model.to(memory_format=fmt), x.contiguous(memory_format=fmt)
        with torch.inference_mode():
            t0 = time.perf_counter()
            with torch.autocast(device.type, low, enabled=enc_bf16):
                lq_feat, skips = net.encoder.forward_with_skips(xx, net.connect_list)
            logits = net.code_logits(lq_feat)
            latent = adain(net.codes_to_latent(logits), lq_feat.float())
            with torch.autocast(device.type, low, enabled=dec_bf16):
                out = net.decode(latent, skips, args.w)
            out = out.float().cpu()  # waits for the device
            return out, logits.argmax(-1).cpu(), (time.perf_counter() - t0) / len(x)

    ref, ref_codes, t_ref = run(False, False, False)
    print(f"CodeFormer, w = {args.w}, {args.dtype}, {device}, {args.threads} threads, parity-kit synthetic weights, "
          f"2 faces\n")
    print("| encoder | decoder | s / face | speed-up vs fp32 | codes equal | max abs | PSNR dB |")
    print("|---|---|---|---|---|---|---|")
    print(f"| fp32 | fp32 | {t_ref:.2f} | 1.00× | 1.0000 | 0 | inf |")
    for enc, dec in ((False, True), (True, False), (True, True)):
        out, codes, t = run(enc, dec, True)
        mse = float(((out.clamp(-1, 1) - ref.clamp(-1, 1)) / 2).pow(2).mean())
        print(f"| {args.dtype if enc else 'fp32'} | {args.dtype if dec else 'fp32'} | {t:.2f} | {t_ref / t:.2f}× | "
              f"{float((codes == ref_codes).float().mean()):.4f} | {float((out - ref).abs().max()):.3f} | "
              f"{10 * math.log10(1 / mse):.1f} |")


if __name__ == "__main__":
    main()
