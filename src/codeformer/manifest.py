"""The run manifest: what a folder run has done, so a rerun does only what is missing or changed.

One JSON object per line in OUTDIR/codeformer-manifest.jsonl, appended, never rewritten; the local run
(`codeformer restore DIR -o OUT --resume`) and the Ray engine (`--engine ray`) write the same lines:

  {"kind": "run", "fingerprint": FP, "options": {...}, "engine": "local" | "ray", "started": ISO-8601 UTC}
  {"kind": "photo", "input": SRC, "output": REL, "input_sha256": HEX, "fingerprint": FP, "faces": N,
   "status": "ok" | "failed", "error": "one line" | "", "seconds": S}

REL is the output's path relative to OUTDIR (POSIX separators). FP is the SHA-256 of the run's options
record (`fingerprint`): the weights file's SHA-256, the runtime and precision, and every option that changes
an output. The last "photo" line of an output wins. An input counts as done when that line says "ok" for the
same input path, the same input SHA-256 and the same FP, and its output file still exists.

A line is written with one `write` on an O_APPEND descriptor and fsynced; a run killed in the middle of a
write leaves at most one torn last line, which `read` skips and `append` closes with a newline first.
The restored photo's sidecar (OUT.json) carries the same input SHA-256 and FP and is written after the photo,
so an output finished just before a kill, whose manifest line never made it, is still recognised as done
(`sidecar_done`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from codeformer.weights import cached_file_sha256

log = logging.getLogger(__name__)

MANIFEST_NAME = "codeformer-manifest.jsonl"
FORMAT = 1
_CHUNK = 1 << 20


def fingerprint(options: Mapping[str, object]) -> str:
    """Hex SHA-256 of `options` as canonical JSON (sorted keys): equal options, equal fingerprint."""
    text = json.dumps({"format": FORMAT, **options}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def weights_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a weights file, hashed once per process for a given (path, size, mtime)."""
    return cached_file_sha256(path)


def file_sha256(path: str | os.PathLike[str]) -> str | None:
    """SHA-256 of a regular file's bytes, or None when it is missing, not a regular file (a FIFO would block)
    or unreadable: the restore itself then reports why."""
    try:
        with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK)) as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            h = hashlib.sha256()
            while chunk := f.read(_CHUNK):
                h.update(chunk)
            return h.hexdigest()
    except OSError:
        return None


def bytes_sha256(data: bytes) -> str:
    """SHA-256 of `data` (an input already read, e.g. from an object store)."""
    return hashlib.sha256(data).hexdigest()


def photo_record(source: str, output: str, input_sha256: str, fp: str, faces: int = 0, error: str = "",
                 seconds: float = 0.0) -> dict[str, object]:
    """A "photo" line: status "ok" without an error, else "failed" with the one-line error."""
    return {"kind": "photo", "input": source, "output": output, "input_sha256": input_sha256, "fingerprint": fp,
            "faces": faces, "status": "failed" if error else "ok", "error": error, "seconds": round(seconds, 3)}


def run_record(fp: str, options: Mapping[str, object], engine: str) -> dict[str, object]:
    """A "run" line: written once at the start of each run, the options in full for whoever reads the log."""
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {"kind": "run", "fingerprint": fp, "options": dict(options), "engine": engine, "started": started}


class Manifest:
    """The manifest file of one output folder. `read` the last line per output, `append` new lines."""

    def __init__(self, outdir: str | os.PathLike[str]) -> None:
        self.path = Path(outdir) / MANIFEST_NAME

    def read(self) -> dict[str, dict]:
        """{output REL: its last "photo" line}; lines that are not complete JSON objects (a torn last line
        after a kill) are skipped with a log message."""
        latest: dict[str, dict] = {}
        if not self.path.exists():
            return latest
        with open(self.path, "rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    line = json.loads(raw)
                except ValueError:
                    log.info("%s: line %d is incomplete (an interrupted run), skipped", self.path, number)
                    continue
                if isinstance(line, dict) and line.get("kind") == "photo" and isinstance(line.get("output"), str):
                    latest[line["output"]] = line
        return latest

    def append(self, lines: Iterable[Mapping[str, object]]) -> None:
        """Append `lines` (one JSON object each) in one write, then fsync. A torn last line left by a killed
        run is ended first, so it stays one bad line instead of spoiling the next."""
        data = b"".join(json.dumps(dict(line), ensure_ascii=False).encode() + b"\n" for line in lines)
        if not data:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data
            view = memoryview(data)
            while view:  # one write in practice; a short write (full disk, signal) continues where it stopped
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)


def sidecar_done(sidecar: Path, source: str, input_sha256: str, fp: str) -> dict | None:
    """The sidecar OUT.json (written after OUT) when it records this input, input hash and fingerprint."""
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = isinstance(record, dict) and record.get("input") == source and \
        record.get("input_sha256") == input_sha256 and record.get("fingerprint") == fp
    return record if same else None


def done_record(previous: Mapping[str, object] | None, source: str, input_sha256: str | None, fp: str,
                output: Path) -> dict | None:
    """None when input `source` (hash `input_sha256`; None: unreadable) must be restored into `output`; else the
    "photo" line that says it is done: its last manifest line when that says "ok" for the same input, hash and
    fingerprint, or else (a kill between the sidecar and the manifest line) a new line made from the sidecar.
    The output file must exist either way."""
    if input_sha256 is None or not output.is_file():
        return None
    if previous is not None and previous.get("status") == "ok" and previous.get("input") == source \
            and previous.get("input_sha256") == input_sha256 and previous.get("fingerprint") == fp:
        return dict(previous)
    record = sidecar_done(output.with_name(output.name + ".json"), source, input_sha256, fp)
    if record is None:
        return None
    faces = record.get("faces")
    line = photo_record(source, "", input_sha256, fp, len(faces) if isinstance(faces, list) else 0)
    line["recovered"] = True  # not yet in the manifest: the caller appends it
    return line


@dataclass
class Job:
    """One input of a run: source path (or URI), path relative to the output folder (REL of the input), the
    output path, the input's SHA-256 (None until hashed, or unreadable), and for a done job its "photo" line."""

    source: str
    rel: Path
    output: Path
    input_sha256: str | None = None
    done: dict | None = None

    def key(self, outdir: Path) -> str:
        """The output relative to `outdir` (POSIX): the manifest's "output"."""
        return self.output.relative_to(outdir).as_posix()


def plan(jobs: Iterable[Job], fp: str, outdir: Path, previous: Mapping[str, dict],
         hash_file: Callable[[str], str | None] = file_sha256) -> tuple[list[Job], list[Job]]:
    """Split `jobs` into (todo, done) against the manifest lines `previous` (`Manifest.read`), hashing each
    input once. Fills in `job.input_sha256`, and `job.done` for the done ones (a line with "recovered": True
    is one found from a sidecar, still to be appended)."""
    todo: list[Job] = []
    done: list[Job] = []
    for job in jobs:
        job.input_sha256 = hash_file(job.source)
        key = job.key(outdir)
        job.done = done_record(previous.get(key), job.source, job.input_sha256, fp, job.output)
        if job.done is not None:
            job.done["output"] = key
        (todo if job.done is None else done).append(job)
    return todo, done
