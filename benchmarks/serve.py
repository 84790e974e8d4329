"""Requests/s and p50/p95 latency of `codeformer serve` for 1 and 8 concurrent clients, PyTorch vs onnxruntime.

Run by hand (the main environment has everything: `make setup`):

    .venv/bin/python benchmarks/serve.py --model tiny                       # server overhead, seconds
    .venv/bin/python benchmarks/serve.py --model full --requests 2 8        # release-size network, minutes

--model full uses the parity kit's filled weights (../shared/parity; the released file's exact layout and
size, 94 M parameters) unless --weights names a real codeformer.pth; it is exported to ONNX once (about half a
minute; --onnx PATH reuses a file). --model tiny is the test suite's random TINY CodeFormer (32 px) behind the
512 px face contract (faces shrunk to 32 px and the change added back), so the table shows what the HTTP
layer, image coding, alignment and batching cost. Every request is one POST /v1/restore of a 512² aligned face
crop (no detection) with the PNG bytes back; the server runs in this process on 127.0.0.1 and batches across
clients (max_batch 8, or each of --max-batch). Both runtimes get the same number of threads (--threads).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from codeformer.checkpoint import load_codeformer
from codeformer.face.pipeline import Restorer
from codeformer.models.codeformer import CodeFormer
from codeformer.onnx_export import OnnxRestorer, export_onnx
from codeformer.serve.app import ServeConfig, create_app
from codeformer.serve.server import ServerThread

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TINY = dict(dim_embd=32, n_head=4, n_layers=2, codebook_size=16, latent_size=64, connect_list=(16, 32), img_size=32,
            nf=32, ch_mult=(1, 1, 2), res_blocks=1, attn_resolutions=(8,), emb_dim=32)  # tests/conftest.py


class Shrunk:
    """A 32 px model behind the 512 px contract: restore at 32 px, add the change back at 512 px."""

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def restore(self, x: torch.Tensor, w: float | torch.Tensor = 0.5, adain_latent: bool = True) -> torch.Tensor:
        small = F.interpolate(x, size=(32, 32), mode="area")
        delta = self.inner.restore(small, w, adain_latent=adain_latent) - small
        return x + F.interpolate(delta, size=(512, 512), mode="bilinear", align_corners=False)


def filled_weights(folder: Path) -> Path:
    spec = importlib.util.spec_from_file_location("fill_weights", SHARED / "parity" / "fill_weights.py")
    fill = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fill)
    sd = fill.fill_state_dict(str(SHARED / "parity" / "keys_codeformer.json"))
    path = folder / "codeformer_filled.pth"
    torch.save({"params_ema": sd}, path)
    return path


def build_models(args: argparse.Namespace, folder: Path) -> dict[str, object]:
    """{"torch": model, "onnx": model} with the same weights."""
    if args.model == "tiny":
        torch.manual_seed(0)
        net = CodeFormer(**TINY).eval()
        onnx_path = export_onnx(net, folder / "tiny.onnx")
        return {"torch": Shrunk(net), "onnx": Shrunk(OnnxRestorer(onnx_path, threads=args.threads))}
    net = load_codeformer(args.weights or filled_weights(folder))
    onnx_path = Path(args.onnx) if args.onnx else None
    if onnx_path is None or not onnx_path.exists():
        start = time.perf_counter()
        onnx_path = export_onnx(net, onnx_path or folder / "codeformer.onnx")
        print(f"exported {onnx_path} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return {"torch": net, "onnx": OnnxRestorer(onnx_path, threads=args.threads)}


def face_png() -> bytes:
    rgb = np.asarray(Image.open(SHARED / "data" / "astronaut.png").convert("RGB"))
    buf = io.BytesIO()
    Image.fromarray(rgb[40:232, 124:316]).resize((512, 512), Image.BICUBIC).save(buf, format="PNG")
    return buf.getvalue()


def run_load(url: str, image: bytes, clients: int, requests: int) -> tuple[float, list[float], int]:
    """(wall seconds, per-request latencies, failures) for `requests` POSTs from `clients` threads."""
    local = threading.local()
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()

    def one(i: int) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=3600)
        start = time.perf_counter()
        res = local.client.post("/v1/restore", files={"image": ("face.png", image)},
                                data={"aligned": "true", "w": ("0", "0.5", "1")[i % 3]},
                                headers={"Accept": "image/png"})
        took = time.perf_counter() - start
        with lock:
            latencies.append(took)
            failures[0] += res.status_code != 200

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(requests)))
    return time.perf_counter() - start, latencies, failures[0]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--weights", help="a real codeformer.pth for --model full (default: the filled weights)")
    parser.add_argument("--onnx", help="an exported graph of those weights to reuse (or where to write one)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for both runtimes (default 2)")
    parser.add_argument("--max-batch", type=int, nargs="+", default=[8],
                        help="server max_batch values to compare (default 8)")
    parser.add_argument("--runtimes", nargs="+", choices=("torch", "onnx"), default=["torch", "onnx"])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--requests", type=int, nargs="+", default=[24, 96],
                        help="requests per client count, same order as --clients (default 24 96)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = face_png()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(args, Path(tmp))
        for runtime in args.runtimes:
            for max_batch in args.max_batch:
                app = create_app(Restorer(models[runtime]), ServeConfig(max_pending=64, max_batch=max_batch))
                with ServerThread(app) as server:
                    run_load(server.url, image, 1, 1)  # warm-up
                    for clients, count in zip(args.clients, args.requests, strict=True):
                        wall, lat, failed = run_load(server.url, image, clients, count)
                        stats = httpx.get(server.url + "/healthz").json()["batches"]
                        rows.append((runtime, max_batch, clients, count, count / wall, statistics.median(lat),
                                     percentile(lat, 95), failed, stats["largest_batch"]))
                        print(f"{runtime} max_batch {max_batch}, {clients} clients: {count / wall:.2f} req/s",
                              file=sys.stderr)
    print(f"\nmodel {args.model}, {args.threads} threads, torch {torch.__version__}, 512² aligned face per request\n")
    print("| runtime | max_batch | clients | requests | req/s | p50 (s) | p95 (s) | failed | largest batch so far |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for runtime, max_batch, clients, count, rps, p50, p95, failed, largest in rows:
        print(f"| {runtime} | {max_batch} | {clients} | {count} | {rps:.2f} | {p50:.3f} | {p95:.3f} | {failed} | "
              f"{largest} |")


if __name__ == "__main__":
    main()
