"""The `codeformer train` and `codeformer codes` subcommands (argument declarations and runners for cli.py)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

log = logging.getLogger(__name__)


def add_train(sub: argparse._SubParsersAction) -> None:
    """Declare `codeformer train --config FILE [--resume DIR] [--out DIR] [--set key=value ...]`."""
    p = sub.add_parser("train", help="train stage 1, 2 or 3 from a config (single process or under torchrun)")
    p.add_argument("--config", metavar="FILE", help="stage config YAML (configs/stage1.yaml, ...); with --resume "
                   "and no --config, the checkpoint's own config.yaml is used")
    p.add_argument("--resume", metavar="DIR", help="a checkpoint folder (…/checkpoints/step_XXXXXX) or a run "
                   "folder (its latest checkpoint)")
    p.add_argument("--out", metavar="DIR", help="output folder (overrides run.out_dir)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set run.iterations=1000 (repeatable)")
    p.add_argument("--device", metavar="DEVICE", help="auto, cpu, cuda or mps (overrides run.device; the configs' "
                   "default is auto: cuda, else mps, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Load the config (+ overrides), train, and print where the outputs are; returns an exit code."""
    from pathlib import Path

    from ..checkpoint import CheckpointError
    from ..config import ConfigError
    from ..weights import WeightsError
    from .loop import find_checkpoint, train
    from .setup import load_stage_config

    logging.getLogger("codeformer").setLevel(logging.INFO if not args.verbose else logging.DEBUG)
    overrides = [*args.overrides, *([f"run.out_dir={args.out}"] if args.out else []),
                 *([f"run.device={args.device}"] if args.device else [])]
    try:
        if args.config is None and args.resume is None:
            print("codeformer train: give --config FILE (or --resume DIR)", file=sys.stderr)
            return 2
        source = args.config or find_checkpoint(args.resume) / "config.yaml"
        cfg = load_stage_config(source, overrides)
        out = train(cfg, resume=args.resume, progress=not args.no_progress).out
    except (ConfigError, CheckpointError, WeightsError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        print(f"done: {Path(out) / 'net_g_ema.pth'} (log {Path(out) / 'log.jsonl'}, curve "
              f"{Path(out) / 'loss_curve.png'})", file=sys.stderr)
    return 0


def add_codes(sub: argparse._SubParsersAction) -> None:
    """Declare `codeformer codes --vqgan PATH --data DIR -o FILE [--config FILE]`."""
    p = sub.add_parser("codes", help="precompute the HQ VQGAN code indices of a face folder (orig and hflip)")
    p.add_argument("--vqgan", required=True, metavar="PATH", help="VQGAN weights (net_g_ema.pth of stage 1, or "
                   "vqgan_code1024.pth)")
    p.add_argument("--data", required=True, metavar="DIR", help="folder of aligned HQ faces")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="codes file (.pth or .safetensors)")
    p.add_argument("--config", metavar="FILE", help="a stage config whose VQGAN architecture to use (default: the "
                   "released 512 VQGAN)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="faces per forward pass (default 8)")
    p.add_argument("--device", choices=("cpu", "cuda", "mps"), default="cpu", help="where the VQGAN runs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_codes)


def run_codes(args: argparse.Namespace) -> int:
    """Compute and save the codes file; returns an exit code."""
    from ..checkpoint import CheckpointError
    from ..config import ConfigError, VQGANConfig
    from .codes import compute_codes
    from .setup import load_stage_config, vqgan_config_of

    try:
        vq_cfg = vqgan_config_of(load_stage_config(args.config)) if args.config else VQGANConfig()
        report = compute_codes(args.vqgan, args.data, args.output, vq_cfg, batch_size=args.batch_size,
                               device=args.device, progress=not args.no_progress)
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report, file=sys.stderr)
    return 0


def add_prepare_faces(sub: argparse._SubParsersAction) -> None:
    """Declare `codeformer prepare-faces SRC -o DST [--size N] [--min-face PX] [--faces all|largest|center]`."""
    p = sub.add_parser("prepare-faces", help="detect and align the faces of a photo folder into training crops")
    p.add_argument("src", metavar="SRC", help="folder of photos (searched recursively)")
    p.add_argument("-o", "--output", required=True, metavar="DST", help="folder for the aligned PNG crops")
    p.add_argument("--size", type=int, default=512, help="crop side in px (default 512, the FFHQ template)")
    p.add_argument("--min-face", type=float, default=64.0, metavar="PX", help="smallest face box side (px)")
    p.add_argument("--faces", choices=("all", "largest", "center"), default="all", help="which faces per photo")
    p.set_defaults(func=run_prepare_faces)


def run_prepare_faces(args: argparse.Namespace) -> int:
    """Detect, align and write the crops; exit code 1 if no crop was written."""
    from ..face.detection import DlibDetector
    from .prepare import prepare_faces

    try:
        report = prepare_faces(args.src, args.output, DlibDetector(), size=args.size, min_face=args.min_face,
                               faces=args.faces)
    except (FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path, reason in report.failed:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(report.summary(), file=sys.stderr)
    return 0 if report.crops else 1
