"""Command line: `codeformer restore|colorize|inpaint|evaluate|convert|download|export-onnx|serve|train|codes|
prepare-faces`.

This module only parses arguments and calls the library. Each subcommand has an `_add_<name>` function that
declares its arguments and a `_run_<name>` function that calls the library and returns an exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys

from codeformer.face.edit_commands import add_colorize, add_inpaint
from codeformer.train.commands import add_codes, add_prepare_faces, add_train


def _add_download(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="list or fetch the released weight files (verified, cached)")
    p.add_argument("names", nargs="*", metavar="NAME", help="weight files to fetch, e.g. codeformer.pth")
    p.add_argument("--all", action="store_true", help="fetch every file in the table")
    p.add_argument("--list", action="store_true", help="list the table: name, size, licence, cached or not")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_download)


def _run_download(args: argparse.Namespace) -> int:
    from codeformer import weights

    if args.list:
        for w in weights.WEIGHTS:
            size = f"{w.size / 1e6:.1f} MB" if w.size is not None else "size ?"
            where = str(weights.cache_path(w.name)) if weights.is_cached(w.name) else "not cached"
            print(f"{w.name:32} {size:>10}  {w.licence:36}  {where}")
        if not args.names and not args.all:
            return 0
    names = [w.name for w in weights.WEIGHTS] if args.all else args.names
    if not names:
        print("codeformer download: give NAME..., --all or --list", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        try:
            path = weights.resolve(name, progress=not args.no_progress)
        except weights.WeightsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{name}: {path}")
        print(f"  {weights.describe(name)}")
    return 1 if failed else 0


def _add_restore(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("restore", help="restore the faces of photos (files, folders, or - for stdin→stdout)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, or - (stdin → stdout)")
    p.add_argument("-o", "--output", metavar="OUTDIR", help="output folder (required unless the input is -)")
    p.add_argument("-w", "--fidelity", type=_fidelity_arg, default=0.5, help="fidelity w in [0, 1]: 0 most "
                   "restored, 1 closest to the input (default 0.5; 0.7 suits whole photos); auto: per face from "
                   "its measured size, blur and noise (docs/evaluation.md)")
    p.add_argument("-s", "--upscale", type=int, default=1, help="integer output scale (default 1: same size)")
    p.add_argument("--faces", choices=("all", "largest", "center"), default="all", help="which faces to restore")
    p.add_argument("--min-face", type=float, default=32.0, metavar="PX", help="smallest face box side (px)")
    p.add_argument("--aligned", action="store_true", help="inputs are aligned face crops: no detection")
    _add_detector_arg(p)
    p.add_argument("--save-faces", action="store_true", help="also write each aligned crop and its restoration")
    p.add_argument("--compare", action="store_true", help="also write input | output side by side")
    p.add_argument("--draw-boxes", action="store_true", help="draw a green box around each restored face")
    p.add_argument("--batch-size", type=int, default=4, metavar="N", help="faces per model call (default 4)")
    p.add_argument("--ext", metavar="EXT", help="output format by extension (png, jpg, webp, tif, ...)")
    p.add_argument("--recursive", action="store_true", help="walk subfolders of folder inputs")
    p.add_argument("--weights", metavar="PATH", help="codeformer.pth (default: $CODEFORMER_WEIGHTS or the cache)")
    _add_device_arg(p)
    _add_runtime_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--report", choices=("json", "html"), help="per-face quality/identity report: OUT.report.json "
                   "beside each output; html adds OUTDIR/report.html (contact sheet)")
    p.add_argument("--w-sweep", type=_sweep_arg, metavar="W,W,...", help="also write OUTDIR/sweep/NAME_NN.png: "
                   "each face restored with every w listed, e.g. 0,0.25,0.5,0.75,1")
    _add_photo_parts_args(p)
    _add_video_args(p)
    _add_engine_args(p)
    p.set_defaults(func=_run_restore)


def _add_photo_parts_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("whole-photo profile, paste mask and upsampler (docs/restore.md)")
    g.add_argument("--profile", choices=("default", "official"), default="default", help="default: ours; "
                   "official: the official inference_codeformer.py conventions (RetinaFace, ParseNet mask, its "
                   "warps, offsets and rounding; ±1 grey level of the official output)")
    g.add_argument("--mask", choices=("square", "parse"), help="paste mask: the feathered square, or face and "
                   "hair from ParseNet within it (default: square for --profile default, parse for official)")
    g.add_argument("--bg-upsampler", choices=("realesrgan",), help="enlarge the background with Real-ESRGAN x2 "
                   "(tiled) instead of resizing it")
    g.add_argument("--bg-tile", type=int, default=400, metavar="N", help="Real-ESRGAN tile size in px; memory "
                   "is bounded by the tile, not the photo (default 400, the official value; 0: no tiling)")
    g.add_argument("--face-upsample", action="store_true", help="enlarge each restored face with Real-ESRGAN "
                   "before pasting (with -s > 1)")
    g.add_argument("--retinaface-weights", metavar="PATH", help="detection_Resnet50_Final.pth (default: the cache)")
    g.add_argument("--parsenet-weights", metavar="PATH", help="parsing_parsenet.pth (default: "
                   "$CODEFORMER_PARSENET or the cache)")
    g.add_argument("--realesrgan-weights", metavar="PATH", help="RealESRGAN_x2plus.pth (default: the cache)")


def _photo_part_files(args: argparse.Namespace, opts: object) -> dict[str, object]:
    """Weight files of the detector, parser and upsampler that `opts` needs, resolved (found or downloaded)
    before anything is loaded, so a missing one stops the run before any work. Raises WeightsError."""
    from codeformer import weights

    need_detector = opts.profile == "official" or getattr(args, "detector", None) == "retinaface"
    wanted = []  # (role, table name, --flag, explicit path, env var)
    if need_detector:
        wanted.append(("detector", "detection_Resnet50_Final.pth", "--retinaface-weights", args.retinaface_weights,
                       None))
    if opts.paste_mask == "parse":
        wanted.append(("parser", "parsing_parsenet.pth", "--parsenet-weights", args.parsenet_weights,
                       "CODEFORMER_PARSENET"))
    if opts.needs_upsampler:
        wanted.append(("upsampler", "RealESRGAN_x2plus.pth", "--realesrgan-weights", args.realesrgan_weights, None))
    paths = {}
    for role, name, flag, path, env_var in wanted:
        try:
            paths[role] = weights.resolve(name, path=path, env_var=env_var, progress=not args.no_progress)
        except weights.WeightsError as exc:  # the table's hint names --weights, which is codeformer.pth's flag
            raise weights.WeightsError(str(exc).replace("pass --weights PATH", f"pass {flag} PATH")) from None
    return paths


def _photo_parts(args: argparse.Namespace, paths: dict[str, object], device: str) -> dict[str, object]:
    """Load the parts whose files `_photo_part_files` found onto `device`, as Restorer keyword arguments."""
    from functools import partial

    parts: dict[str, object] = {}
    if "detector" in paths:
        from codeformer.face.retinaface import load_retinaface

        parts["detector"] = load_retinaface(paths["detector"], device=device)
    if "parser" in paths:
        from codeformer.face.parsing import load_parsenet, parse

        parts["parser"] = partial(parse, load_parsenet(paths["parser"], device=device))
    if "upsampler" in paths:
        from codeformer.upsampler import load_realesrgan

        parts["upsampler"] = load_realesrgan(paths["upsampler"], device=device, tile=args.bg_tile)
    return parts


def _photo_parts_problem(args: argparse.Namespace) -> str | None:
    """Why the profile/mask/upsampler flags cannot go with the other arguments (None when fine)."""
    special = [flag for flag, on in (("--profile official", args.profile == "official"), ("--mask", args.mask),
                                     ("--bg-upsampler", args.bg_upsampler), ("--face-upsample", args.face_upsample))
               if on]
    if not special:
        return None
    if _is_video_run(args):
        return f"{', '.join(special)}: for photos only, not videos"
    if args.fidelity == "auto" or args.w_sweep:
        return f"{', '.join(special)}: not with -w auto or --w-sweep"
    if getattr(args, "engine", "local") != "local":
        return f"{', '.join(special)}: with the local engine only"
    if args.bg_tile < 0:
        return f"--bg-tile must be >= 0, got {args.bg_tile}"
    if args.profile == "official" and args.detector not in (None, "retinaface"):
        return f"--profile official detects with RetinaFace, not --detector {args.detector}"
    return None


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("archives on a Ray cluster (pip install 'codeformer[cluster]'; docs/cluster.md)")
    g.add_argument("--engine", choices=("local", "ray"), default="local", help="local: this process (default); "
                   "ray: a Ray Data pipeline, resuming from OUTDIR's manifest. With ray, INPUT may also be a list "
                   "file (.txt) or a URI (s3://, gs://, file://)")
    g.add_argument("--address", metavar="ADDR", help="Ray cluster to join (default: $RAY_ADDRESS, else a Ray "
                   "started on this machine)")
    g.add_argument("--workers", type=int, default=1, metavar="N", help="model actors (default 1)")
    g.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="G", help="GPUs per model actor "
                   "(default 0: CPU; use with --device cuda)")
    g.add_argument("--cpus-per-worker", type=float, default=1.0, metavar="C", help="CPUs per model actor "
                   "(default 1)")


def _add_detector_arg(p: argparse.ArgumentParser) -> None:
    from codeformer.face.detection import DETECTORS

    p.add_argument("--detector", choices=(*DETECTORS, "retinaface"), help="face detector (default "
                   f"{DETECTORS[0]}: dlib HOG + MMOD with upright landmarks; hog: faster, misses blurred, small and "
                   "tilted faces; cnn: dlib MMOD alone, slow; retinaface: RetinaFace R50, the official detector, "
                   "which --profile official always uses); see docs/detection.md")


def _detector(name: str | None) -> object:
    from codeformer.face import detection

    if name == "retinaface":
        from codeformer.face.retinaface import load_retinaface

        return load_retinaface()
    return detection.make_detector(name or detection.DETECTORS[0])


def _fidelity_arg(text: str) -> float | str:
    """-w value: a number or "auto" (RestoreOptions checks the range, [0, 1])."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"w must be a number in [0, 1] or auto, got {text!r}") from None


def _fixed_w(fidelity: float | str) -> float:
    """The w for RestoreOptions: the number given, or 0.5 as a placeholder under -w auto (w is chosen per face)."""
    return 0.5 if fidelity == "auto" else float(fidelity)


def _sweep_arg(text: str) -> tuple[float, ...]:
    from codeformer.face.review import parse_sweep

    try:
        return parse_sweep(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _run_review(args: argparse.Namespace, restorer: object, opts: object, output: object) -> int:
    """restore with --report / -w auto / --w-sweep: the batch run plus reports (codeformer.face.review)."""
    from codeformer.face.review import ReviewOptions, run_reviewed_batch

    review = ReviewOptions(report=args.report, auto_w=args.fidelity == "auto", sweep=args.w_sweep or ())
    report, flags = run_reviewed_batch(restorer, args.inputs, opts, output, review, progress=not args.no_progress)
    print(report.summary(), file=sys.stderr)
    if flags:
        print(flags, file=sys.stderr)
    return 1 if report.failures or report.images == 0 else 0


def _add_video_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("videos (.mp4 .mov .mkv .avi .webm .m4v; -o is the output file, or a folder)")
    g.add_argument("--codec", default="libx264", help="video encoder (default libx264; e.g. libx265, libvpx-vp9)")
    g.add_argument("--crf", type=int, default=18, help="encoder constant quality (default 18; lower is better)")
    g.add_argument("--no-smooth", action="store_true", help="do not smooth the landmarks along each face track")
    g.add_argument("--resume", action="store_true", help="continue an interrupted run: a video after its last "
                   "finished segment; photos skip what OUTDIR's manifest records as done with the same input and "
                   "options")
    g.add_argument("--window", type=int, default=8, metavar="N", help="frames restored together (default 8)")
    g.add_argument("--segment-frames", type=int, default=240, metavar="N",
                   help="frames per resumable segment (default 240)")


def _is_video_run(args: argparse.Namespace) -> bool:
    from codeformer.video_io import is_video_path

    return any(is_video_path(name) for name in args.inputs)


def _video_args_problem(args: argparse.Namespace) -> str | None:
    """Why these arguments cannot restore the video inputs (None when fine, or when there are no videos)."""
    from codeformer.video_io import is_video_path

    if not _is_video_run(args):
        return None
    if not all(is_video_path(name) for name in args.inputs):
        return "give videos and photos in separate runs"
    if _video_output_is_file(args.output) and len(args.inputs) > 1:
        return "-o FILE takes one video; give a folder for several"
    photo_only = [flag for flag, on in (("--aligned", args.aligned), ("--save-faces", args.save_faces),
                                        ("--compare", args.compare), ("--draw-boxes", args.draw_boxes),
                                        ("--report", args.report), ("--w-sweep", args.w_sweep),
                                        ("-w auto", args.fidelity == "auto"), ("--ext", args.ext)) if on]
    return f"{', '.join(photo_only)}: for photos only, not videos" if photo_only else None


def _video_output_is_file(output: str) -> bool:
    """-o names the output video itself (a video extension, and not an existing folder such as `clips.mp4/`)."""
    from pathlib import Path

    from codeformer.video_io import is_video_path

    return is_video_path(output) and not Path(output).is_dir()


def _run_restore_video(args: argparse.Namespace, restorer: object, opts: object, model_info: dict) -> int:
    """restore with video inputs: one streaming run per video (codeformer.video)."""
    from pathlib import Path

    from codeformer.face.tracking import TrackerParams
    from codeformer.video import VideoOptions, restore_video
    from codeformer.video_io import EncodeSettings, VideoError

    try:
        video = VideoOptions(encode=EncodeSettings(codec=args.codec, crf=args.crf), window=args.window,
                             segment_frames=args.segment_frames, tracking=TrackerParams(smooth=not args.no_smooth),
                             resume=args.resume, progress=not args.no_progress)
    except ValueError as exc:
        print(f"codeformer restore: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for name in args.inputs:
        target = Path(args.output) if _video_output_is_file(args.output) else Path(args.output) / Path(name).name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"error: {target.parent}: cannot create the output folder "
                  f"({'a file is in its path' if isinstance(exc, (FileExistsError, NotADirectoryError)) else exc})",
                  file=sys.stderr)
            return 1
        try:
            report = restore_video(restorer, name, target, opts, video, model_info=model_info)
        except (VideoError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(report.summary(), file=sys.stderr)
        failed += report.missing_frames > 0  # a truncated input: the output exists, but the run failed
    return 1 if failed else 0


def _add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=_device_arg, default="auto", metavar="DEVICE", help="where the model runs: "
                   "auto (default: cuda, else mps, else cpu), cpu, cuda, cuda:N or mps")


def _device_arg(text: str) -> str:
    if text in ("auto", "cpu", "cuda", "mps") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")


def _resolve_device(name: str, command: str) -> object | None:
    """The torch device for --device NAME ("auto" resolved), or None after printing why it is not available."""
    from codeformer.runtime import pick_device

    try:
        return pick_device(name)
    except ValueError as exc:
        print(f"codeformer {command}: --device {name}: {exc}", file=sys.stderr)
        return None


def _say_device(device: object, args: argparse.Namespace) -> None:
    """One stderr line: the device the run uses (auto resolved), and the runtime settings."""
    from codeformer.runtime import describe_device

    runtime = getattr(args, "runtime", "torch")
    extra = f", {args.precision}{', compiled' if args.compile else ''}" if runtime == "torch" else ", onnxruntime"
    print(f"device: {describe_device(device)}{extra}", file=sys.stderr)


def _say_memory_notes(restorer: object) -> None:
    for note in restorer.batch_limit.notes:
        print(f"note: {note}", file=sys.stderr)


def _run_restore(args: argparse.Namespace) -> int:
    from pathlib import Path

    from codeformer import weights
    from codeformer.data.images import ImageReadError, ImageWriteError
    from codeformer.face.batch import OutputError, OutputOptions, one_line_error, restore_bytes, run_batch
    from codeformer.face.pipeline import RestoreOptions, Restorer

    stream = args.inputs == ["-"]
    if "-" in args.inputs and not stream:
        print("codeformer restore: - (stdin) cannot be combined with other inputs", file=sys.stderr)
        return 2
    if not stream and not args.output:
        print("codeformer restore: -o OUTDIR is required (unless the input is -)", file=sys.stderr)
        return 2
    if stream and (sys.stdin is None or sys.stdout is None):  # started with `<&-` or `>&-`
        print(f"codeformer restore: - needs an open {'stdin' if sys.stdin is None else 'stdout'}", file=sys.stderr)
        return 2
    if stream and (args.report or args.w_sweep):
        print("codeformer restore: --report and --w-sweep need file inputs and -o OUTDIR", file=sys.stderr)
        return 2
    video_problem = _video_args_problem(args)
    if video_problem:
        print(f"codeformer restore: {video_problem}", file=sys.stderr)
        return 2
    parts_problem = _photo_parts_problem(args)
    if parts_problem:
        print(f"codeformer restore: {parts_problem}", file=sys.stderr)
        return 2
    try:
        opts = RestoreOptions(w=_fixed_w(args.fidelity), upscale=args.upscale, faces=args.faces, min_face=args.min_face,
                              aligned=args.aligned, batch_size=args.batch_size, draw_boxes=args.draw_boxes,
                              profile=args.profile, mask=args.mask, bg_upsampler=args.bg_upsampler,
                              face_upsample=args.face_upsample)
    except ValueError as exc:
        print(f"codeformer restore: {exc}", file=sys.stderr)
        return 2
    if args.ext:
        from codeformer.data.images import format_from_extension

        try:
            format_from_extension(f"x.{args.ext.lstrip('.')}")
        except ImageWriteError as exc:
            print(f"codeformer restore: --ext {exc.problem}", file=sys.stderr)
            return 2
    if args.engine == "ray":
        if args.device == "auto":  # the model actors' device follows their GPU share, not the driver's hardware
            args.device = "cuda" if args.gpus_per_worker > 0 else "cpu"
        problem = _ray_device_problem(args)
        if problem:
            print(f"codeformer restore: {problem}", file=sys.stderr)
            return 2
        device = None
    else:
        device = _resolve_device(args.device, "restore")
    if args.engine == "local" and device is None:
        return 2
    if args.onnx and args.runtime != "onnx":
        print("codeformer restore: --onnx needs --runtime onnx", file=sys.stderr)
        return 2
    resume_problem = _resume_problem(args, stream)
    if resume_problem:
        print(f"codeformer restore: {resume_problem}", file=sys.stderr)
        return 2
    if args.engine == "ray":
        return _run_restore_ray(args, opts)
    try:
        part_files = _photo_part_files(args, opts)
    except weights.WeightsError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    try:
        from codeformer.backends import load_face_model

        model, model_info = load_face_model(args.runtime, args.weights, args.onnx, str(device),
                                            progress=not args.no_progress, precision=args.precision,
                                            compile=args.compile)
    except (weights.WeightsError, OSError, ValueError, RuntimeError, KeyError) as exc:
        print(f"error: {one_line_error(str(args.weights or 'codeformer.pth'), exc)}", file=sys.stderr)
        return 1
    try:
        parts = _photo_parts(args, part_files, str(device))
    except (weights.WeightsError, OSError, ValueError, RuntimeError, KeyError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(weights.describe("codeformer.pth"), file=sys.stderr)
    _say_device(device, args)
    detector = parts.pop("detector", None) or _detector(args.detector)
    restorer = Restorer(model, detector=detector, device=device, options=opts, **parts)
    if _is_video_run(args):
        code = _run_restore_video(args, restorer, opts, model_info)
        _say_memory_notes(restorer)
        return code
    if stream and args.fidelity == "auto":
        from codeformer.face.autow import AutoWRestorer

        restorer = AutoWRestorer(restorer)
    if stream:
        try:
            data, _ = restore_bytes(restorer, sys.stdin.buffer.read(), opts, ext=args.ext)
        except (ImageReadError, ImageWriteError, ValueError, RuntimeError) as exc:
            print(f"error: {one_line_error('<stdin>', exc)}", file=sys.stderr)
            return 1
        return _write_stdout(data)
    output = OutputOptions(Path(args.output), save_faces=args.save_faces, compare=args.compare, ext=args.ext,
                           recursive=args.recursive)
    try:
        if args.report or args.w_sweep or args.fidelity == "auto":
            return _run_review(args, restorer, opts, output)
        resume = None
        if args.resume:
            from codeformer.backends import ModelSpec
            from codeformer.face.batch import run_options

            spec = ModelSpec(args.runtime, args.weights, args.onnx, str(device), args.precision)
            resume = run_options(opts, output, spec.identity(progress=not args.no_progress))
        report = run_batch(restorer, args.inputs, opts, output, progress=not args.no_progress, resume=resume)
    except OutputError as exc:
        print(f"codeformer restore: {exc}", file=sys.stderr)
        return 2
    print(report.summary(), file=sys.stderr)
    _say_memory_notes(restorer)
    return 1 if report.failures or report.images + report.skipped == 0 else 0


def _resume_problem(args: argparse.Namespace, stream: bool) -> str | None:
    """Why --resume or --engine ray cannot serve these arguments (None when fine)."""
    resumable = args.resume or args.engine == "ray"
    review = [flag for flag, on in (("--report", args.report), ("--w-sweep", args.w_sweep),
                                    ("-w auto", args.fidelity == "auto")) if on]
    if args.engine == "ray" and (stream or _is_video_run(args)):
        return "--engine ray restores photos (files, folders, list files), not stdin or videos"
    if resumable and review and not _is_video_run(args):
        return f"{', '.join(review)}: not available with --resume or --engine ray"
    if args.engine != "ray" and args.address:
        return "--address needs --engine ray"
    return None


def _ray_device_problem(args: argparse.Namespace) -> str | None:
    """The model actors' device must match their GPU share (the driver itself may have no GPU)."""
    if args.device == "mps":
        return "--engine ray runs the model on cpu or cuda"
    if args.device == "cuda" and args.gpus_per_worker <= 0:
        return "--device cuda with --engine ray needs --gpus-per-worker (e.g. 1)"
    if args.device == "cpu" and args.gpus_per_worker > 0:
        return "--gpus-per-worker needs --device cuda"
    return None


def _run_restore_ray(args: argparse.Namespace, opts: object) -> int:
    """restore --engine ray: the archive pipeline of codeformer.cluster (Ray is an optional extra)."""
    import importlib.util
    from pathlib import Path

    from codeformer import weights
    from codeformer.backends import ModelSpec
    from codeformer.face.batch import OutputOptions

    if importlib.util.find_spec("ray") is None:
        print("codeformer restore: --engine ray needs Ray: pip install 'codeformer[cluster]'", file=sys.stderr)
        return 1
    import codeformer.cluster as cluster

    try:
        options = cluster.ClusterOptions(address=args.address, workers=args.workers,
                                         gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker)
    except ValueError as exc:
        print(f"codeformer restore: {exc}", file=sys.stderr)
        return 2
    output = OutputOptions(Path(args.output), save_faces=args.save_faces, compare=args.compare, ext=args.ext,
                           recursive=args.recursive)
    spec = ModelSpec(args.runtime, args.weights, args.onnx, args.device, args.precision)
    try:
        spec.check(progress=not args.no_progress)
    except (weights.WeightsError, OSError, ValueError, RuntimeError, KeyError) as exc:
        from codeformer.face.batch import one_line_error

        print(f"error: {one_line_error(str(args.weights or 'codeformer.pth'), exc)}", file=sys.stderr)
        return 1
    print(weights.describe("codeformer.pth"), file=sys.stderr)
    try:
        report = cluster.restore_archive(args.inputs, spec, output, opts, options, device=args.device,
                                         progress=not args.no_progress)
    except (weights.WeightsError, OSError, ValueError, RuntimeError) as exc:  # the cluster lacks CPUs, Ray stopped
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(report.summary(), file=sys.stderr)
    return 1 if report.failures or report.images + report.skipped == 0 else 0


def _write_stdout(data: bytes) -> int:
    """Write the encoded output to stdout; a closed pipe (`| head -c 10`) or a full disk is one line and exit 1,
    never a traceback or a silent partial write reported as success."""
    import os

    try:
        view = memoryview(data)
        while view:  # a large write to a pipe can return short without raising; the next one raises
            written = sys.stdout.buffer.write(view)
            if not written:
                raise OSError(0, "nothing could be written")
            view = view[written:]
        sys.stdout.buffer.flush()
        return 0
    except OSError as exc:
        reason = "the reader closed the pipe early" if isinstance(exc, BrokenPipeError) else exc.strerror or exc
        print(f"error: <stdout>: output not fully written ({reason})", file=sys.stderr)
        try:  # the unwritten buffer would fail again at exit: point stdout at /dev/null (Python's SIGPIPE advice)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is not a real file (a test's stand-in)
            pass
        return 1


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="rewrite a checkpoint as .safetensors (or .pth), loaded safely")
    p.add_argument("src", help="input checkpoint (.pth with params_ema/params, or .safetensors)")
    p.add_argument("dst", help="output file; the format follows its extension")
    p.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from codeformer.checkpoint import CheckpointError, convert

    try:
        n = convert(args.src, args.dst)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.dst}: {n} tensors written")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="metrics of restored images (PSNR, SSIM, LPIPS, identity, FID, ...)")
    p.add_argument("--restored", required=True, metavar="DIR", help="restored images")
    p.add_argument("--reference", metavar="DIR", help="ground-truth images, paired by file stem")
    p.add_argument("--lq", metavar="DIR", help="low-quality inputs, paired by file stem (identity kept)")
    p.add_argument("-o", "--output", metavar="OUTDIR", help="where metrics.json and metrics.md go (default: "
                   "the --restored folder)")
    p.add_argument("--crop-border", type=int, default=0, metavar="PX", help="pixels cut from each side before "
                   "PSNR/SSIM (default 0)")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    p.add_argument("--no-identity", action="store_true", help="skip identity and landmark metrics")
    p.add_argument("--no-fid", action="store_true", help="skip FID")
    p.add_argument("--vgg-weights", metavar="PATH", help="vgg16-397923af.pth for LPIPS (default: the cache)")
    p.add_argument("--lpips-weights", metavar="PATH", help="LPIPS v0.1 vgg.pth heads (default: the cache)")
    p.add_argument("--fid-weights", metavar="PATH", help="pt_inception-2015-12-05-6726825d.pth (default: the cache)")
    _add_device_arg(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from codeformer.metrics.runner import build_metrics, run_evaluation, summary_line
    from codeformer.runtime import describe_device

    device = _resolve_device(args.device, "evaluate")
    if device is None:
        return 2
    print(f"device: {describe_device(device)} (LPIPS, FID)", file=sys.stderr)
    metrics, used = build_metrics(lpips=not args.no_lpips, identity=not args.no_identity, fid=not args.no_fid,
                                  vgg_path=args.vgg_weights, lpips_path=args.lpips_weights,
                                  fid_path=args.fid_weights, progress=not args.no_progress, device=str(device))
    for name, why in metrics.skipped.items():
        print(f"{name} skipped: {why}", file=sys.stderr)
    reference = Path(args.reference) if args.reference else None
    lq = Path(args.lq) if args.lq else None
    try:
        evaluation, json_path, md_path = run_evaluation(
            Path(args.restored), reference, lq, Path(args.output or args.restored), args.crop_border, metrics,
            used, progress=not args.no_progress)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for item in evaluation.missing + evaluation.errors:
        print(f"  {item}", file=sys.stderr)
    print(summary_line(evaluation), file=sys.stderr)
    print(f"{json_path}\n{md_path}")
    return 1 if evaluation.errors or not evaluation.images else 0


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runtime", choices=("torch", "onnx"), default="torch", help="run the model with PyTorch "
                   "(default) or onnxruntime")
    p.add_argument("--onnx", metavar="PATH", help="with --runtime onnx: the graph from `codeformer export-onnx` "
                   "(default: exported once from the weights into the cache)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32", help="torch runtime: fp32 "
                   "(default, the official outputs), bf16 (2.2-2.4x faster measured on an AMX CPU) or fp16; only the "
                   "decoder runs in the reduced type, the codes are still chosen in fp32; not measured on GPUs yet")
    p.add_argument("--compile", action="store_true", help="torch runtime: run the network through torch.compile "
                   "(the first batch takes tens of seconds longer; not measured on GPUs yet)")


def _add_export_onnx(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-onnx", help="export the model to ONNX with w (and the batch size) as inputs")
    p.add_argument("output", metavar="OUT.onnx", help="where to write the graph")
    p.add_argument("--weights", metavar="PATH", help="codeformer.pth (default: $CODEFORMER_WEIGHTS or the cache)")
    p.add_argument("--opset", type=int, default=17, metavar="N", help="ONNX opset (default 17)")
    p.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                   help="torch exporter (default torchscript; dynamo needs --opset 18 or more)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch size to 1")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime vs PyTorch check")
    p.add_argument("--tolerance", type=float, default=1e-3, help="largest accepted |onnxruntime - torch| "
                   "(default 1e-3; the release weights' parity kit measures ~7e-5)")
    p.set_defaults(func=_run_export_onnx)


def _run_export_onnx(args: argparse.Namespace) -> int:
    from codeformer import weights
    from codeformer.checkpoint import load_codeformer
    from codeformer.onnx_export import check_onnx, export_onnx

    try:
        path = weights.resolve("codeformer.pth", path=args.weights, env_var="CODEFORMER_WEIGHTS")
        model = load_codeformer(path)
        out = export_onnx(model, args.output, opset=args.opset, dynamic_batch=not args.static_batch,
                          exporter=args.exporter)
    except (weights.WeightsError, OSError, ValueError, RuntimeError, KeyError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(f"{out}: inputs image (B, 3, 512, 512), w (B,); output restored; opset {args.opset}")
    print(weights.describe("codeformer.pth"), file=sys.stderr)
    if args.no_check:
        return 0
    diffs = check_onnx(model, out, batch=1 if args.static_batch else 2)
    worst = max(diffs.values())
    for w, diff in diffs.items():
        print(f"  w = {w:.2f}: max |onnxruntime - torch| = {diff:.2e}")
    if worst > args.tolerance:
        print(f"error: onnxruntime differs from PyTorch by {worst:.2e} > {args.tolerance:.0e}", file=sys.stderr)
        return 1
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="local web page and HTTP API (POST /v1/restore, GET /healthz, /v1/models)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine "
                   "only; 0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=7860, help="TCP port (default 7860)")
    p.add_argument("--weights", metavar="PATH", help="codeformer.pth (default: $CODEFORMER_WEIGHTS or the cache)")
    _add_device_arg(p)
    _add_runtime_args(p)
    p.add_argument("--max-mb", type=float, default=20.0, help="largest upload in MB (default 20; larger: 413)")
    p.add_argument("--max-pending", type=int, default=16, help="restorations in progress before 503 (default 16)")
    p.add_argument("--max-memory-gb", type=float, default=8.0, help="estimated memory of the restorations in "
                   "progress (pixels × upscale²) before 503 (default 8)")
    _add_detector_arg(p)
    p.add_argument("--max-batch", type=int, metavar="N", help="faces per model call across requests (default: 1 "
                   "on CPU, where batching measured no throughput gain and a worse median latency; 8 on GPU)")
    p.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from codeformer import weights
    from codeformer.backends import load_face_model
    from codeformer.face.pipeline import Restorer

    try:
        from codeformer.serve.app import ServeConfig, create_app
        from codeformer.serve.server import run
    except ModuleNotFoundError as exc:
        print(f"codeformer serve: {exc.name} is not installed: pip install 'codeformer[serve]'", file=sys.stderr)
        return 1

    device = _resolve_device(args.device, "serve")
    if device is None:
        return 2
    if args.onnx and args.runtime != "onnx":
        print("codeformer serve: --onnx needs --runtime onnx", file=sys.stderr)
        return 2
    try:
        model, info = load_face_model(args.runtime, args.weights, args.onnx, str(device), precision=args.precision,
                                      compile=args.compile)
        max_batch = args.max_batch or (1 if device.type == "cpu" else 8)
        config = ServeConfig(max_bytes=int(args.max_mb * 2**20), max_pending=args.max_pending,
                             max_memory_bytes=int(args.max_memory_gb * 2**30), max_batch=max_batch, model_info=info)
    except (weights.WeightsError, OSError, ValueError, RuntimeError, KeyError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(weights.describe("codeformer.pth"), file=sys.stderr)
    _say_device(device, args)
    print(f"serving http://{args.host}:{args.port}/ (Ctrl-C stops)", file=sys.stderr)
    run(create_app(Restorer(model, detector=_detector(args.detector), device=device), config), host=args.host,
        port=args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codeformer", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_download(sub)
    _add_convert(sub)
    _add_restore(sub)
    add_colorize(sub)
    add_inpaint(sub)
    _add_evaluate(sub)
    _add_export_onnx(sub)
    _add_serve(sub)
    add_train(sub)
    add_codes(sub)
    add_prepare_faces(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
