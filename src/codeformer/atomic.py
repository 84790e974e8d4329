"""Atomic file writes: write beside the target, fsync, rename over it; and the sweeping of stale temporaries.

A reader (or a crash, or Ctrl-C) sees either the old file or the complete new one, never a partial file; on any
failure the temporary file is removed and the old file is left as it was. Only SIGKILL (or a power cut) can leave
a temporary behind; its name, ``.NAME.tmp-PID-RANDOM[SUFFIX]``, says which process wrote it, so a later run can
recognise it and remove it with `remove_stale_temporaries` once that process is gone.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# .NAME.tmp-PID-RANDOM with an optional short suffix (".part", ".mp4": some writers pick the format by it)
_TEMP_NAME = re.compile(r"^\..+\.tmp-(\d+)-[0-9a-f]{12}(\.[A-Za-z0-9]{1,8})?$", re.DOTALL)
_NAME_BYTES = 150  # a file name holds at most 255 bytes; leave room for the marks


def temp_path(path: str | os.PathLike[str], suffix: str = "") -> Path:
    """A fresh temporary path beside `path`: ``.NAME.tmp-PID-RANDOM`` + `suffix`, NAME cut to 150 bytes (not
    characters: a long non-ASCII name stays under the 255-byte limit; undecodable bytes survive the cut)."""
    path = Path(path)
    short = os.fsdecode(os.fsencode(path.name)[:_NAME_BYTES])
    return path.with_name(f".{short}.tmp-{os.getpid()}-{secrets.token_hex(6)}{suffix}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # another user's live process, or we cannot tell: keep its file
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike[str], before: float, recursive: bool = False) -> list[Path]:
    """Delete the temporaries (named by `temp_path`) in `folder` whose writer is no longer running and which were
    last modified before `before` (a `time.time()` value, e.g. when this run started): what a killed run left.
    A live writer's file is never touched. Symlinked folders are not followed. Returns the removed paths."""
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    walk = os.walk(folder) if recursive else [(str(folder), [], os.listdir(folder))]
    for root, _, names in walk:
        for name in names:
            match = _TEMP_NAME.match(name)
            if match is None or _pid_alive(int(match.group(1))):
                continue
            path = Path(root) / name
            try:
                if path.lstat().st_mtime < before and not path.is_dir():
                    path.unlink()
                    removed.append(path)
            except OSError:  # vanished meanwhile, or not ours to delete
                continue
    return removed


@contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a fresh temporary path in `path`'s folder (`temp_path`, ending in `suffix`); when the block ends
    without an error, the file written there is fsynced and renamed over `path`. The folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path, suffix)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
