"""Seconds per training step and peak memory, per stage, for the tiny and the full (official) configs.

Each (stage, config) runs in its own subprocess so that its peak RSS is its own. Full configs run at batch 1
with random LPIPS / VGG weights and random initial weights (same cost as the real files; nothing to download).
Stage 1 and stage 3 (fidelity) steps include the GAN term, its adaptive weight and the D step.

    python benchmarks/train_step.py                       # tiny and full, all stages
    python benchmarks/train_step.py --which tiny --steps 5 --threads 1 --device cpu
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (label, stage, config, phase step): the step number picks the stage-3 phase (1: w=1 small, 21/80001: code-only)
CASES = {
    "tiny": [("stage1", 1, "tiny-stage1", 1), ("stage2", 2, "tiny-stage2", 1), ("stage3 fidelity", 3, "tiny-stage3", 1),
             ("stage3 code-only", 3, "tiny-stage3", 21)],
    "full": [("stage1", 1, "stage1", 1), ("stage2", 2, "stage2", 1), ("stage3 fidelity", 3, "stage3", 1),
             ("stage3 code-only", 3, "stage3", 80001)],
}


def _overrides(stage: int, full: bool, faces: str, device: str, batch: int | None = None) -> list[str]:
    sets = [f"data.root={faces}", "data.num_workers=0", f"run.device={device}"]
    if full or batch is not None:
        sets.append(f"data.batch_size={batch or 1}")
    if stage in (1, 3):
        sets += ["losses.d_start=1", "losses.perceptual=1.0", "perceptual.perceptual_random_init=true"]
    if stage == 2:
        sets += ["vqgan_path=null", "random_init=true"]
    if stage == 3:
        sets += ["codeformer_path=null", "discriminator_path=null", "vqgan_path=null", "random_init=true"]
    return sets


def child(stage: int, config: str, phase_step: int, steps: int, faces: str, device_name: str,
          batch: int | None = None) -> dict:
    """Build the stage, run one warm-up step then `steps` timed steps at `phase_step` (steps 0: one timed step,
    no warm-up); return the numbers. batch: data.batch_size (None: the config's for tiny, 1 for full)."""
    import torch

    from codeformer.train.loop import batches, build_state
    from codeformer.train.runtime import DistInfo, select_device
    from codeformer.train.setup import build_dataset, load_stage_config

    full = not config.startswith("tiny")
    cfg = load_stage_config(ROOT / "configs" / f"{config}.yaml", _overrides(stage, full, faces, device_name, batch))
    device = select_device(cfg.run.device)
    st = build_state(cfg, device, DistInfo())
    data = batches(build_dataset(cfg.data, 0), cfg.data, DistInfo(), 0, 0, steps + 1)
    times = []
    for i, (_, batch) in enumerate(data):
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        t0 = time.perf_counter()
        st.parts.step(batch, phase_step, st.stepper)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i > 0 or steps == 0:
            times.append(time.perf_counter() - t0)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cuda_mb = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    params = sum(p.numel() for p in st.parts.modules["net_g"].parameters())
    return {"sec_per_step": sum(times) / len(times), "timed_steps": len(times), "peak_rss_mb": rss_mb,
            "cuda_max_alloc_mb": cuda_mb, "batch": cfg.data.batch_size, "size": cfg.data.size,
            "net_g_params_m": params / 1e6, "device": str(device), "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--which", choices=("tiny", "full", "both"), default="both")
    p.add_argument("--steps", type=int, default=5, help="timed steps for tiny configs (full: 1)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--child", nargs=4, metavar=("STAGE", "CONFIG", "PHASE_STEP", "FACES"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        stage, config, phase_step, faces = args.child
        full = not config.startswith("tiny")
        print(json.dumps(child(int(stage), config, int(phase_step), 0 if full else args.steps, faces, args.device)))
        return
    sys.path.insert(0, str(ROOT))
    from benchmarks.tiny_faces import make_tiny_faces

    kinds = ("tiny", "full") if args.which == "both" else (args.which,)
    with tempfile.TemporaryDirectory() as tmp:
        faces = str(make_tiny_faces(Path(tmp) / "faces", n_lfw=14, size=64))
        print("| config | stage | batch×size | sec/step | peak RSS MB | CUDA max alloc MB | device, threads |")
        print("|---|---|---|---|---|---|---|")
        for kind in kinds:
            for label, stage, config, phase_step in CASES[kind]:
                cmd = [sys.executable, __file__, "--child", str(stage), config, str(phase_step), faces,
                       "--steps", str(args.steps), "--threads", str(args.threads), "--device", args.device]
                res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
                                 .splitlines()[-1])
                cuda = f"{res['cuda_max_alloc_mb']:.0f}" if res["cuda_max_alloc_mb"] is not None else "–"
                print(f"| {config} | {label} | {res['batch']}×{res['size']}² | {res['sec_per_step']:.3f} "
                      f"(n={res['timed_steps']}) | {res['peak_rss_mb']:.0f} | {cuda} | {res['device']}, "
                      f"{res['threads']} |", flush=True)


if __name__ == "__main__":
    main()
