"""Where a corpus comes from: local paths, or URIs that pyarrow's filesystems read.

A source is a string: a local path (``frames/a.png``) or a URI (``s3://bucket/a.png``,
``gs://...``, ``hdfs://...``, ``file:///...``: whatever ``pyarrow.fs.FileSystem.from_uri``
takes). Local paths need nothing more than the standard library; URIs need pyarrow, which the
``[ray]`` extra brings (Ray Data depends on it). Images from URIs are fetched as bytes and decoded
in memory; videos are copied to a local temporary file for OpenCV.
"""
from __future__ import annotations

import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def is_uri(source: str | os.PathLike[str]) -> bool:
    """True for ``scheme://...`` (two letters at least, so a Windows drive is a path)."""
    return bool(_SCHEME.match(str(source)))


def _filesystem(uri: str) -> tuple[Any, str]:
    try:
        from pyarrow import fs
    except ImportError as exc:  # pragma: no cover - pyarrow comes with ray[data]
        raise ImportError(f"{uri}: reading URIs needs pyarrow; install the Ray extra: pip install -e \".[ray]\"") from exc
    return fs.FileSystem.from_uri(uri)


def _uri_prefix(uri: str, path: str) -> str:
    """What comes before pyarrow's ``path`` in ``uri``: "s3://" for s3://bucket/key (path
    "bucket/key"), "file://" for file:///tmp/x, "hdfs://host:port" for hdfs://host:port/x."""
    uri = uri.rstrip("/")
    path = path.rstrip("/")
    if not uri.endswith(path):
        raise ValueError(f"{uri}: cannot tell the URI of the files below it (pyarrow path {path!r})")
    return uri[:len(uri) - len(path)]


def list_files(root: str | os.PathLike[str], suffixes: tuple[str, ...]) -> list[str]:
    """Files below the folder ``root`` (recursively) whose suffix is in ``suffixes``, sorted.
    Hidden files and folders (a name starting with ".") are left out."""
    root_text = str(root)
    if is_uri(root_text):
        from pyarrow import fs

        filesystem, base = _filesystem(root_text)
        prefix = _uri_prefix(root_text, base)
        infos = filesystem.get_file_info(fs.FileSelector(base, recursive=True))
        found = [prefix + info.path for info in infos
                 if info.type == fs.FileType.File and posixpath.splitext(info.path)[1].lower() in suffixes
                 and not any(part.startswith(".") for part in posixpath.relpath(info.path, base).split("/"))]
        return sorted(found)
    found = []
    for folder, dirs, files in os.walk(root_text):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(folder, f) for f in files
                  if not f.startswith(".") and os.path.splitext(f)[1].lower() in suffixes]
    return sorted(found)


def read_list(path: str | os.PathLike[str]) -> list[str]:
    """Sources from a text file, one path or URI a line; blank lines and ``#`` comments are skipped.
    Relative paths are relative to the list file's folder."""
    base = Path(path).resolve().parent
    sources = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        sources.append(line if is_uri(line) or os.path.isabs(line) else str(base / line))
    return sources


def relative_names(sources: list[str], root: str | None = None) -> list[str]:
    """Each source's name relative to ``root`` (a folder the sources were listed from) or, without
    one, to the deepest folder the sources share: the outputs' relative paths. ValueError when
    two sources get the same name."""
    paths = [_path_part(s) for s in sources]
    if root is not None:
        base = _path_part(str(root)).rstrip("/") or "/"
    elif len(paths) == 1:
        base = posixpath.dirname(paths[0])
    else:
        base = posixpath.commonpath([posixpath.dirname(p) for p in paths]) if paths else ""
    names = [posixpath.relpath(p, base) if base else posixpath.basename(p) for p in paths]
    seen: dict[str, str] = {}
    for name, source in zip(names, sources):
        if name in seen:
            raise ValueError(f"{source} and {seen[name]} would both be written as {name!r}; list them from "
                             "one folder so that their relative paths differ, or rename one")
        seen[name] = source
    return names


def _path_part(source: str) -> str:
    """The path of a source in POSIX form, the scheme and authority kept as its first folders
    (so that sources of two buckets never share a folder)."""
    if is_uri(source):
        return "/" + source.split("://", 1)[1].lstrip("/")
    return Path(os.path.abspath(source)).as_posix()


def read_bytes(source: str) -> bytes:
    """The content of a local file or a URI."""
    if not is_uri(source):
        return Path(source).read_bytes()
    filesystem, path = _filesystem(source)
    with filesystem.open_input_stream(path) as stream:
        return stream.read()


@contextmanager
def local_file(source: str) -> Iterator[Path]:
    """A local path holding the source: the path itself, or a temporary copy of a URI (removed
    on exit). For readers, such as OpenCV's video capture, that need a file name."""
    if not is_uri(source):
        yield Path(source)
        return
    filesystem, path = _filesystem(source)
    suffix = posixpath.splitext(path)[1]
    handle, name = tempfile.mkstemp(prefix="hidiff-source-", suffix=suffix)
    try:
        with os.fdopen(handle, "wb") as out, filesystem.open_input_stream(path) as stream:
            shutil.copyfileobj(stream, out, 1 << 22)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)
