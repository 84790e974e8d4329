"""Restoring many files: expand inputs, restore each, write outputs and sidecars, report failures.

Used by `codeformer restore`. A run goes on past bad files: each failure is recorded with a one-line reason
naming the file, and nothing is written for it. Every output is written atomically (temp file + rename).

Output layout under OUTDIR, for an input whose path relative to its folder is REL (a file given directly: its name):
  REL with the output extension        the restored photo (same format as the input unless `ext` is given)
  REL.json                             the sidecar: each face's box, detector, score, 5 points, face size, w; the notes
  faces/REL_NN_cropped.png, _restored.png    with save_faces: the aligned 512 crop and its restoration
  compare/REL with the output extension      with compare: input | output side by side (8-bit RGB)
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from codeformer.atomic import write_text
from codeformer.data.images import (
    ImageReadError,
    ImageWriteError,
    Picture,
    encode_image,
    format_from_extension,
    is_image_path,
    read_image,
    rgb_float,
    write_image,
)
from codeformer.face.paste import upscale_image
from codeformer.face.pipeline import RestoreOptions, Restorer, RestoreResult, to_uint8

log = logging.getLogger(__name__)

# What a single bad input can raise; anything else is a bug and stops the run.
PER_FILE_ERRORS = (ImageReadError, ImageWriteError, OSError, ValueError, RuntimeError, MemoryError)


@dataclass(frozen=True)
class OutputOptions:
    """Where and what to write. ext: output extension without the dot (None: follow the input)."""

    outdir: Path
    save_faces: bool = False
    compare: bool = False
    ext: str | None = None
    recursive: bool = False


@dataclass
class BatchReport:
    """Outcome of a run: images written, faces restored, (input, one-line reason) per failure, seconds."""

    images: int = 0
    faces: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """A few lines for the end of a run: counts, time, then each failure with its reason."""
        lines = [f"{self.images} image(s) restored, {self.faces} face(s), {len(self.failures)} failure(s), "
                 f"{self.seconds:.1f} s"]
        lines += [f"  failed: {reason}" for _, reason in self.failures]
        return "\n".join(lines)


def one_line_error(source: str, exc: BaseException) -> str:
    """`exc` as one line that names `source` (image errors already start with the name)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if text.startswith(source) else f"{source}: {text}"


def _folder_entries(folder: Path, recursive: bool, skip: Path) -> list[Path]:
    """Image-named entries of `folder` (sorted), walking subfolders if `recursive`, never inside `skip`."""
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.resolve() == skip:
            continue
        if entry.is_dir() and recursive:
            found += _folder_entries(entry, recursive, skip)
        elif is_image_path(entry):
            found.append(entry)
    return found


def expand_inputs(inputs: Iterable[str], recursive: bool, outdir: Path) -> tuple[list[tuple[Path, Path]],
                                                                                  list[tuple[str, str]]]:
    """Files and folders → [(source, path relative to the output folder)], plus [(input, reason)] for inputs
    that do not exist. Folder entries keep their relative path; a folder's own outputs are never re-read."""
    jobs: list[tuple[Path, Path]] = []
    missing: list[tuple[str, str]] = []
    skip = outdir.resolve()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for entry in _folder_entries(path, recursive, skip):
                jobs.append((entry, entry.relative_to(path)))
        elif path.exists() or path.is_symlink():
            jobs.append((path, Path(path.name)))
        else:
            missing.append((item, f"{item}: no such file or folder"))
    return jobs, missing


def output_path(rel: Path, ext: str | None, outdir: Path, taken: set[Path]) -> Path:
    """The restored photo's path for input REL: its extension (or `ext`; unknown ones become .png), with `_2`,
    `_3`, ... added when another input of this run already claimed the name."""
    suffix = f".{ext.lstrip('.')}" if ext else rel.suffix
    try:
        format_from_extension(f"x{suffix}")
    except ImageWriteError:
        if ext:
            raise
        suffix = ".png"
    candidate = outdir / rel.with_suffix(suffix)
    n = 2
    while candidate in taken:
        candidate = outdir / rel.with_name(f"{rel.stem}_{n}{suffix}")
        n += 1
    taken.add(candidate)
    return candidate


def sidecar(source: str, output: str, pic: Picture, result: RestoreResult, opts: RestoreOptions,
            notes: list[str]) -> dict:
    """The JSON-able record of one restored image."""
    out_pixels = result.image.pixels if isinstance(result.image, Picture) else result.image
    return {
        "input": source,
        "output": output,
        "size": [int(pic.pixels.shape[1]), int(pic.pixels.shape[0])],
        "output_size": [int(out_pixels.shape[1]), int(out_pixels.shape[0])],
        "upscale": opts.upscale,
        "aligned": opts.aligned,
        "notes": notes,
        "faces": [
            {
                "box": [round(float(v), 2) for v in face.box],
                "score": round(float(face.score), 4),
                "detector": face.detector,
                "landmarks5": np.round(face.landmarks5, 2).tolist(),
                "face_size": round(float(face.face_size), 2),
                "w": face.w,
            }
            for face in result.faces
        ],
    }


def compare_picture(pic: Picture, result: RestoreResult, upscale: int) -> Picture:
    """Input (enlarged to the output size) | output, side by side, as 8-bit RGB."""
    after = rgb_float(result.image) if isinstance(result.image, Picture) else result.image
    before = upscale_image(rgb_float(pic), upscale)
    before = before[: after.shape[0], : after.shape[1]]
    return Picture(to_uint8(np.concatenate([before, after], axis=1)), format="PNG")


def _write_extras(rel: Path, result: RestoreResult, pic: Picture, out: Path, options: OutputOptions,
                  upscale: int) -> None:
    if options.save_faces:
        faces_dir = options.outdir / "faces" / rel.parent
        faces_dir.mkdir(parents=True, exist_ok=True)
        for i, face in enumerate(result.faces):
            write_image(faces_dir / f"{rel.stem}_{i:02d}_cropped.png", Picture(face.cropped))
            write_image(faces_dir / f"{rel.stem}_{i:02d}_restored.png", Picture(face.restored))
    if options.compare:
        target = options.outdir / "compare" / out.relative_to(options.outdir)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_image(target, compare_picture(pic, result, upscale))


def restore_file(restorer: Restorer, source: Path, rel: Path, out: Path, opts: RestoreOptions,
                 options: OutputOptions) -> int:
    """Restore one file and write its outputs; returns the number of faces. Raises on failure (nothing is
    written when reading or restoring fails)."""
    pic = read_image(source)
    result = restorer.restore(pic, opts)
    out.parent.mkdir(parents=True, exist_ok=True)
    notes = [pic.note] if pic.note else []
    write_note = write_image(out, result.image)
    if write_note:
        notes.append(write_note)
    record = sidecar(str(source), str(out), pic, result, opts, notes)
    write_text(out.with_name(out.name + ".json"), json.dumps(record, indent=2) + "\n")
    _write_extras(rel, result, pic, out, options, opts.upscale)
    return len(result.faces)


def run_batch(restorer: Restorer, inputs: Iterable[str], opts: RestoreOptions, options: OutputOptions,
              progress: bool = True) -> BatchReport:
    """Restore every image among `inputs` (files and folders) into `options.outdir`; never stops on a bad
    file. The progress bar (stderr) shows when `progress` is true."""
    start = time.perf_counter()
    report = BatchReport()
    jobs, report.failures = expand_inputs(inputs, options.recursive, options.outdir)
    options.outdir.mkdir(parents=True, exist_ok=True)
    taken: set[Path] = set()
    for source, rel in tqdm(jobs, disable=not progress, unit="img", file=sys.stderr, desc="restore"):
        try:
            out = output_path(rel, options.ext, options.outdir, taken)
            report.faces += restore_file(restorer, source, rel, out, opts, options)
            report.images += 1
        except PER_FILE_ERRORS as exc:
            reason = one_line_error(str(source), exc)
            log.warning("%s", reason)
            report.failures.append((str(source), reason))
    report.seconds = time.perf_counter() - start
    return report


def restore_bytes(restorer: Restorer, data: bytes, opts: RestoreOptions, ext: str | None = None,
                  name: str = "<stdin>") -> tuple[bytes, RestoreResult]:
    """Restore an encoded image (e.g. read from stdin); returns the encoded output (the input's format unless
    `ext`) and the result."""
    pic = read_image(data, name=name)
    result = restorer.restore(pic, opts)
    fmt = format_from_extension(f"x.{ext.lstrip('.')}") if ext else pic.format
    return encode_image(result.image, fmt), result
