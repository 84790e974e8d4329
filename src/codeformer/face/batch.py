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
import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from codeformer.atomic import remove_stale_temporaries, write_text
from codeformer.data.images import (
    ImageReadError,
    ImageWriteError,
    Picture,
    encode_image,
    format_from_extension,
    is_image_path,
    read_image,
    rgb_float,
    special_file_kind,
    write_image,
)
from codeformer.face.paste import upscale_image
from codeformer.face.pipeline import RestoreOptions, Restorer, RestoreResult, to_uint8
from codeformer.manifest import Job, Manifest, fingerprint, photo_record, plan, run_record

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
    """Outcome of a run: images written, faces restored, (input, one-line reason) per failure, seconds, and
    inputs skipped as already done (a resumed run)."""

    images: int = 0
    faces: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    skipped: int = 0

    def summary(self) -> str:
        """A few lines for the end of a run: counts, time, then each failure with its reason."""
        done = f", {self.skipped} already done (skipped)" if self.skipped else ""
        lines = [f"{self.images} image(s) restored, {self.faces} face(s), {len(self.failures)} failure(s){done}, "
                 f"{self.seconds:.1f} s"]
        lines += [f"  failed: {reason}" for _, reason in self.failures]
        return "\n".join(lines)


def one_line_error(source: str, exc: BaseException) -> str:
    """`exc` as one line that names `source` (image errors already start with the name)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if text.startswith(source) else f"{source}: {text}"


def _folder_entries(folder: Path, recursive: bool, skip: Path, seen: set[tuple[int, int]]) -> list[Path]:
    """Image-named entries of `folder` (sorted), walking subfolders if `recursive`, never inside `skip`. `seen`
    holds the (device, inode) of every folder walked so far: each real folder is walked once, so a symlink
    loop (or two links to one folder) cannot repeat its photos."""
    st = folder.stat()
    if (st.st_dev, st.st_ino) in seen:
        return []
    seen.add((st.st_dev, st.st_ino))
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.resolve() == skip:
            continue
        if entry.is_dir() and recursive:
            found += _folder_entries(entry, recursive, skip, seen)
        elif is_image_path(entry):
            found.append(entry)
    return found


def expand_inputs(inputs: Iterable[str], recursive: bool, outdir: Path) -> tuple[list[tuple[Path, Path]],
                                                                                  list[tuple[str, str]]]:
    """Files and folders → [(source, path relative to the output folder)], plus [(input, reason)] for inputs
    that do not exist or are not regular files (a FIFO, socket or device: opening one can hang; skipped).
    Folder entries keep their relative path; a folder's own outputs are never re-read."""
    jobs: list[tuple[Path, Path]] = []
    missing: list[tuple[str, str]] = []
    skip = outdir.resolve()
    seen: set[tuple[int, int]] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = [(entry, entry.relative_to(path)) for entry in _folder_entries(path, recursive, skip, seen)]
        elif path.exists() or path.is_symlink():
            found = [(path, Path(path.name))]
        else:
            missing.append((item, f"{item}: no such file or folder"))
            continue
        for source, rel in found:
            kind = special_file_kind(source)
            if kind is None:
                jobs.append((source, rel))
            else:
                missing.append((str(source), f"{source}: not a regular file ({kind}); skipped"))
    return jobs, missing


class OutputError(ValueError):
    """The output folder cannot be used (a file, below a file, not creatable); one line naming it."""


class OutputIsInputError(OutputError):
    """A planned output is one of the run's inputs (the same file, through links or not): nothing was written."""


NAME_MAX = 255  # bytes in one file name on the usual file systems (ext4, APFS, NTFS in UTF-16 units)


def prepare_outdir(outdir: Path) -> None:
    """Create the output folder if needed; `OutputError` (one line) when it cannot be one."""
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{outdir}: cannot be the output folder: it is a file") from None
    except NotADirectoryError:
        raise OutputError(f"{outdir}: cannot be the output folder: a file is in its path") from None
    except OSError as exc:
        raise OutputError(f"{outdir}: cannot create the output folder ({exc.strerror or exc})") from None


def _name_problem(out: Path, rel: Path, options: OutputOptions, sidecars: tuple[str, ...]) -> str | None:
    """Why the files written for OUT cannot all be named (a name over NAME_MAX bytes), or None: checked up
    front, so a photo is never written whose sidecar then fails."""
    names = [out.name + s for s in ("", *sidecars)]
    if options.save_faces:
        names.append(f"{rel.stem}_00_restored.png")
    longest = max(names, key=lambda n: len(os.fsencode(n)))
    if len(os.fsencode(longest)) > NAME_MAX:
        return f"name too long for its outputs ({longest!r} is {len(os.fsencode(longest))} bytes, the limit " \
               f"is {NAME_MAX}); rename the file"
    return None


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _beside(out: Path, options: OutputOptions) -> list[Path]:
    """The files written for one input besides OUT whose names are known before restoring: sidecars, compare/."""
    paths = [out.with_name(out.name + ".json"), out.with_name(out.name + ".report.json")]
    if options.compare:
        paths.append(options.outdir / "compare" / out.relative_to(options.outdir))
    return paths


def refuse_overwriting_inputs(jobs: list[tuple[Path, Path]], outs: list[Path], options: OutputOptions) -> None:
    """Raise `OutputIsInputError` (one line) if any file this run may write is one of its inputs: compared by
    (device, inode) after following links, so a symlink or a hard link to an input counts as the input.
    Called before any work: the user's originals are never written over. faces/ and sweep/ (named per face,
    REL_NN...) are listed once each, not once per input."""
    inputs = {fid: source for source, _ in jobs if (fid := _file_id(source)) is not None}
    if not inputs:
        return

    def check(planned: Path) -> None:
        hit = inputs.get(_file_id(planned)) if planned.exists() else None
        if hit is not None:
            raise OutputIsInputError(f"{planned}: this output would overwrite the input {hit}; choose another -o "
                                     "folder")

    for out in outs:
        for planned in (out, *_beside(out, options)):
            check(planned)
    stems: dict[Path, set[str]] = {}
    for _, rel in jobs:
        stems.setdefault(rel.parent, set()).add(rel.stem + "_")
    for sub in ("faces", "sweep"):
        root = options.outdir / sub
        for folder, _, names in os.walk(root) if root.is_dir() else ():
            mine = stems.get(Path(folder).relative_to(root), set())
            for name in names:
                if any(name.startswith(prefix) for prefix in mine):
                    check(Path(folder) / name)


def sweep_temporaries(planned: list[tuple[Path, Path, Path]], options: OutputOptions) -> None:
    """Remove what a killed earlier run left (`atomic.remove_stale_temporaries`) in the folders this run writes
    to, and only those: `-o ~` must not walk a whole home folder."""
    started = time.time()
    folders = {options.outdir}
    for _, rel, out in planned:
        folders.add(out.parent)
        folders.update(options.outdir / sub / rel.parent for sub in ("faces", "compare", "sweep"))
    for folder in sorted(folders):
        remove_stale_temporaries(folder, started)


def plan_outputs(jobs: list[tuple[Path, Path]], options: OutputOptions, sidecars: tuple[str, ...] = (".json",)
                 ) -> tuple[list[tuple[Path, Path, Path]], list[tuple[str, str]]]:
    """[(source, rel, out)] for the jobs, and [(source, reason)] for those without a usable output name (`sidecars`:
    the suffixes added to OUT's name for the files written beside it); raises `OutputIsInputError` when an
    output would overwrite an input."""
    taken: set[Path] = set()
    planned, failures = [], []
    for source, rel in jobs:
        try:
            out = output_path(rel, options.ext, options.outdir, taken)
        except ImageWriteError as exc:
            failures.append((str(source), one_line_error(str(source), exc)))
            continue
        problem = _name_problem(out, rel, options, sidecars)
        if problem is None:
            planned.append((source, rel, out))
        else:
            failures.append((str(source), f"{source}: {problem}"))
    refuse_overwriting_inputs([(s, r) for s, r, _ in planned], [o for _, _, o in planned], options)
    return planned, failures


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


def write_outputs(source: str, rel: Path, out: Path, pic: Picture, result: RestoreResult, opts: RestoreOptions,
                  options: OutputOptions, stamp: Mapping[str, str] | None = None) -> None:
    """Write the restored photo, its extras (faces/, compare/), then its sidecar: last, so that a sidecar
    carrying `stamp` (a resumable run's input_sha256 and fingerprint, `codeformer.manifest`) proves the rest
    was written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    notes = [pic.note] if pic.note else []
    write_note = write_image(out, result.image)
    if write_note:
        notes.append(write_note)
    _write_extras(rel, result, pic, out, options, opts.upscale)
    record = sidecar(source, str(out), pic, result, opts, notes)
    record.update(stamp or {})
    write_text(out.with_name(out.name + ".json"), json.dumps(record, indent=2) + "\n")


def restore_file(restorer: Restorer, source: Path, rel: Path, out: Path, opts: RestoreOptions,
                 options: OutputOptions, stamp: Mapping[str, str] | None = None) -> int:
    """Restore one file and write its outputs (`write_outputs`); returns the number of faces. Raises on failure
    (nothing is written when reading or restoring fails)."""
    pic = read_image(source)
    result = restorer.restore(pic, opts)
    write_outputs(str(source), rel, out, pic, result, opts, options, stamp)
    return len(result.faces)


def run_options(opts: RestoreOptions, options: OutputOptions, model: Mapping[str, object]) -> dict[str, object]:
    """The options record of a resumable run (`codeformer.manifest.fingerprint`): the model's identity (weights
    hash, runtime, precision) and everything that changes an output. The batch size is left out: it changes
    which faces share a model call, not what is restored."""
    restore = {k: v for k, v in asdict(opts).items() if k != "batch_size"}
    return {"model": dict(model), "restore": restore, "ext": options.ext, "save_faces": options.save_faces,
            "compare": options.compare}


def run_batch(restorer: Restorer, inputs: Iterable[str], opts: RestoreOptions, options: OutputOptions,
              progress: bool = True, resume: Mapping[str, object] | None = None) -> BatchReport:
    """Restore every image among `inputs` (files and folders) into `options.outdir`; never stops on a bad
    file. The progress bar (stderr) shows when `progress` is true. Raises `OutputIsInputError` before any work
    when an output would overwrite an input; removes the temporaries a killed run left in the output folder.

    resume: the run's options record (`run_options`). With it the run keeps OUTDIR's manifest
    (`codeformer.manifest`): inputs already restored from the same bytes with the same options are skipped
    (counted in `skipped`), and each input restored or failed gets its manifest line as soon as it is done."""
    start = time.perf_counter()
    report = BatchReport()
    found, report.failures = expand_inputs(inputs, options.recursive, options.outdir)
    planned, unnamed = plan_outputs(found, options)
    report.failures += unnamed
    prepare_outdir(options.outdir)
    sweep_temporaries(planned, options)
    jobs = [Job(str(source), rel, out) for source, rel, out in planned]
    manifest, fp = None, ""
    if resume is not None:
        manifest, fp = Manifest(options.outdir), fingerprint(resume)
        checking = tqdm(jobs, disable=not progress, unit="img", file=sys.stderr, desc="check (hash)", leave=False)
        jobs, done = plan(checking, fp, options.outdir, manifest.read())
        report.skipped = len(done)
        manifest.append([run_record(fp, resume, "local")] + [job.done for job in done if job.done.get("recovered")])
    for job in tqdm(jobs, disable=not progress, unit="img", file=sys.stderr, desc="restore"):
        t0, faces, reason = time.perf_counter(), 0, ""
        stamp = {"input_sha256": job.input_sha256 or "", "fingerprint": fp} if manifest else None
        try:
            faces = restore_file(restorer, Path(job.source), job.rel, job.output, opts, options, stamp)
            report.faces += faces
            report.images += 1
        except PER_FILE_ERRORS as exc:
            reason = one_line_error(job.source, exc)
            log.warning("%s", reason)
            report.failures.append((job.source, reason))
        if manifest is not None:
            manifest.append([photo_record(job.source, job.key(options.outdir), job.input_sha256 or "", fp, faces,
                                          reason, time.perf_counter() - t0)])
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
