"""The `codeformer colorize` and `codeformer inpaint` subcommands (argument declarations and runners for cli.py).

Both run the released variant networks through the photo pipeline and the restore command's batch runner
(`face.batch.run_batch`: folders, per-file failures, atomic writes, sidecars, --save-faces / --compare).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

WEIGHT_FILES = {"colorize": ("codeformer_colorization.pth", "CODEFORMER_COLORIZATION_WEIGHTS"),
                "inpaint": ("codeformer_inpainting.pth", "CODEFORMER_INPAINTING_WEIGHTS")}


def _add_common(p: argparse.ArgumentParser, command: str) -> None:
    name, env = WEIGHT_FILES[command]
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder (inputs are never "
                   "overwritten)")
    p.add_argument("--aligned", action="store_true", help="inputs are aligned face crops (512×512 as the official "
                   "script needs; other sizes are resized for the model and back, with a note): no detection")
    p.add_argument("--faces", choices=("all", "largest", "center"), default="all", help="which faces to process")
    p.add_argument("--min-face", type=float, default=32.0, metavar="PX", help="smallest face box side (px)")
    p.add_argument("--save-faces", action="store_true", help="also write each aligned crop and its result")
    p.add_argument("--compare", action="store_true", help="also write input | output side by side")
    p.add_argument("--batch-size", type=int, default=4, metavar="N", help="faces per model call (default 4)")
    p.add_argument("--ext", metavar="EXT", help="output format by extension (png, jpg, webp, tif, ...)")
    p.add_argument("--recursive", action="store_true", help="walk subfolders of folder inputs")
    p.add_argument("--weights", metavar="PATH", help=f"{name} (default: ${env} or the cache)")
    p.add_argument("--device", default="auto", metavar="DEVICE", help="where the model runs: auto (default: cuda, "
                   "then mps, then cpu), cpu, cuda, cuda:N or mps")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_colorize(sub: argparse._SubParsersAction) -> None:
    """Declare `codeformer colorize INPUT... -o OUTDIR [--from-colour] ...`."""
    p = sub.add_parser("colorize", help="colour the faces of grey photos (colorization model, w = 0 with AdaIN)")
    _add_common(p, "colorize")
    p.add_argument("--from-colour", action="store_true", help="feed colour inputs as they are (the official "
                   "script's behaviour, for faded colour photos) instead of colorizing their grey version")
    p.set_defaults(func=run_edit, command_kind="colorize")


def add_inpaint(sub: argparse._SubParsersAction) -> None:
    """Declare `codeformer inpaint INPUT... -o OUTDIR [--mask FILE] ...`."""
    p = sub.add_parser("inpaint", help="fill the white-painted holes of faces (inpainting model, w = 1, no AdaIN)")
    _add_common(p, "inpaint")
    p.add_argument("--mask", metavar="FILE", help="black/white image of the input's size, white = hole (default: "
                   "the input's pure-white pixels); for one input file")
    p.set_defaults(func=run_edit, command_kind="inpaint")


class _WithMask:
    """An Inpainter bound to one mask, with the `restore(image, options)` call the batch runner makes."""

    def __init__(self, inpainter: object, mask: object, name: str) -> None:
        self.inpainter, self.mask, self.name = inpainter, mask, name

    def restore(self, image: object, options: object = None) -> object:
        return self.inpainter.restore(image, options, mask=self.mask, mask_name=self.name)


def _argument_problem(args: argparse.Namespace) -> str | None:
    """Why these arguments cannot run (None when fine); checked before anything is loaded."""
    from codeformer.data.images import ImageWriteError, format_from_extension
    from codeformer.runtime import pick_device

    try:
        args.device = str(pick_device(args.device))  # "auto" resolved once, before anything is loaded
    except ValueError as exc:
        return f"--device {args.device}: {exc}"
    if args.ext:
        try:
            format_from_extension(f"x.{args.ext.lstrip('.')}")
        except ImageWriteError as exc:
            return f"--ext {exc.problem}"
    if getattr(args, "mask", None) and (len(args.inputs) != 1 or Path(args.inputs[0]).is_dir()):
        return "--mask FILE goes with exactly one input image (not a folder)"
    return None


def run_edit(args: argparse.Namespace) -> int:
    """Check the arguments, resolve and load the weights, run the batch; returns an exit code."""
    from codeformer import weights
    from codeformer.checkpoint import CheckpointError, load_codeformer
    from codeformer.data.images import ImageReadError, read_image
    from codeformer.face.batch import OutputError, OutputOptions, one_line_error, run_batch
    from codeformer.face.colorize import Colorizer
    from codeformer.face.inpaint import Inpainter, MaskError, check_mask, read_mask
    from codeformer.face.pipeline import RestoreOptions
    from codeformer.runtime import TorchRunner

    kind = args.command_kind
    problem = _argument_problem(args)
    if problem:
        print(f"codeformer {kind}: {problem}", file=sys.stderr)
        return 2
    try:
        opts = RestoreOptions(w=0.0 if kind == "colorize" else 1.0, faces=args.faces, min_face=args.min_face,
                              aligned=args.aligned, batch_size=args.batch_size, adain=kind == "colorize")
        mask = read_mask(args.mask) if getattr(args, "mask", None) else None
        if mask is not None:  # size check now, before the weights are loaded
            check_mask(mask, read_image(args.inputs[0]).pixels.shape, args.mask)
    except (ValueError, ImageReadError, MaskError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2 if not isinstance(exc, (ImageReadError, MaskError)) else 1
    name, env = WEIGHT_FILES[kind]
    try:
        path = weights.resolve(name, path=args.weights, env_var=env, progress=not args.no_progress)
        network = load_codeformer(path)
        model = TorchRunner(network, args.device)
    except (weights.WeightsError, CheckpointError, OSError, RuntimeError) as exc:
        print(f"error: {one_line_error(str(args.weights or name), exc)}", file=sys.stderr)
        return 1
    if 256 in getattr(network, "connect_list", ()):
        print(f"note: {path} has a fusion block at 256 like the restoration model codeformer.pth; the released "
              f"{name} has none (is this the right file?)", file=sys.stderr)
    print(weights.describe(name), file=sys.stderr)
    if kind == "colorize":
        editor: object = Colorizer(model, device=args.device, options=opts, from_colour=args.from_colour)
    else:
        editor = Inpainter(model, device=args.device, options=opts)
        if mask is not None:
            editor = _WithMask(editor, mask, args.mask)
    output = OutputOptions(Path(args.output), save_faces=args.save_faces, compare=args.compare, ext=args.ext,
                           recursive=args.recursive)
    try:
        report = run_batch(editor, args.inputs, opts, output, progress=not args.no_progress)
    except OutputError as exc:  # -o unusable, or an output would be an input: refused before any work
        print(f"codeformer {kind}: {exc}", file=sys.stderr)
        return 2
    print(report.summary(), file=sys.stderr)
    return 1 if report.failures or report.images == 0 else 0
