"""What an archive run restores: folders, image files and list files, as local paths or filesystem URIs.

An INPUT is
  a folder           its images (sorted; subfolders with `recursive`), each keeping its path relative to the folder;
  an image file      itself, named by its file name;
  a list file        (.txt, .lst or .list) one image path or URI a line; blank lines and lines starting with # are
                     skipped; a relative entry is relative to the list file's folder and keeps that relative path
                     under OUTDIR, an absolute one or a URI is named by its file name.
Each may be a local path or a URI that pyarrow opens (file://, s3://, gs://, hdfs://, abfs://) or, failing that,
fsspec (when the user has installed that filesystem). Local folders are walked exactly as the local run walks them
(`codeformer.face.batch.expand_inputs`), so both engines give every photo the same output name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from codeformer.data.images import is_image_path
from codeformer.face.batch import expand_inputs

LIST_SUFFIXES = (".txt", ".lst", ".list")


def is_uri(name: str) -> bool:
    """True for "scheme://..." (a one-letter scheme is a Windows drive, not a URI)."""
    scheme, sep, _ = name.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").replace("-", "").isalnum()


def _filesystem(uri: str) -> tuple[object, str]:
    """(pyarrow FileSystem, path inside it) for `uri`: pyarrow's own filesystems first, then fsspec's."""
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except ValueError:  # pyarrow's ArrowInvalid: a scheme it has no filesystem for
        pass
    try:
        import fsspec
    except ModuleNotFoundError:
        raise OSError(f"{uri}: no filesystem for this URI (install fsspec and its {uri.split(':')[0]} filesystem)") \
            from None
    fs, path = fsspec.core.url_to_fs(uri)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def read_bytes(source: str) -> bytes:
    """The bytes of an input given as a URI (local paths are read by `read_image` itself)."""
    fs, path = _filesystem(source)
    with fs.open_input_stream(path) as f:
        return f.read()


def _uri_of(uri: str, inner: str) -> str:
    """The URI of `inner` (a path inside the filesystem of `uri`: "bucket/key" or "/abs/path"), in `uri`'s
    scheme."""
    return f"{uri.partition('://')[0]}://{inner}"


def _uri_folder(uri: str, recursive: bool) -> list[tuple[str, Path]] | None:
    """[(entry URI, relative path)] of a URI folder, or None when `uri` is not a folder."""
    import pyarrow.fs as pafs

    fs, root = _filesystem(uri)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{uri}: no such file or folder")
    if info.type != pafs.FileType.Directory:
        return None
    found = []
    for entry in fs.get_file_info(pafs.FileSelector(root, recursive=recursive)):
        rel = PurePosixPath(entry.path).relative_to(PurePosixPath(root))
        if entry.type == pafs.FileType.File and is_image_path(entry.path) and \
                not any(part.startswith(".") for part in rel.parts):
            found.append((_uri_of(uri, entry.path), Path(*rel.parts)))
    return sorted(found, key=lambda item: item[1].as_posix())


def _list_entries(list_file: str, text: str) -> list[tuple[str, Path]]:
    """[(source, relative path)] of a list file's lines (see the module docstring)."""
    base = list_file.rsplit("/", 1)[0] if is_uri(list_file) else os.path.dirname(os.path.abspath(list_file))
    entries = []
    for line in text.splitlines():
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if is_uri(name) or os.path.isabs(name):
            entries.append((name, Path(PurePosixPath(name).name)))
            continue
        rel = PurePosixPath(name.replace(os.sep, "/"))
        source = f"{base}/{rel}" if is_uri(list_file) else os.path.join(base, *rel.parts)
        inside = ".." not in rel.parts
        entries.append((source, Path(*rel.parts) if inside else Path(rel.name)))
    return entries


def is_list_file(name: str) -> bool:
    """True for a name ending in .txt, .lst or .list (any case)."""
    return PurePosixPath(name).suffix.lower() in LIST_SUFFIXES


def expand_sources(inputs: Iterable[str], recursive: bool, outdir: Path) -> tuple[list[tuple[str, Path]],
                                                                                  list[tuple[str, str]]]:
    """Inputs → [(source path or URI, path relative to OUTDIR)] in a stable order, plus [(input, one-line
    reason)] for inputs that cannot be listed."""
    found: list[tuple[str, Path]] = []
    failures: list[tuple[str, str]] = []
    for item in inputs:
        try:
            if is_list_file(item):
                text = read_bytes(item).decode("utf-8") if is_uri(item) else Path(item).read_text(encoding="utf-8")
                found += _list_entries(item, text)
            elif is_uri(item):
                listed = _uri_folder(item, recursive)
                found += listed if listed is not None else [(item, Path(PurePosixPath(item).name))]
            else:
                local, missing = expand_inputs([item], recursive, outdir)
                found += [(str(source), rel) for source, rel in local]
                failures += missing
        except FileNotFoundError:
            failures.append((item, f"{item}: no such file or folder"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else " ".join(str(exc).split())
            failures.append((item, problem if problem.startswith(item) else f"{item}: {problem}"))
    return found, failures
