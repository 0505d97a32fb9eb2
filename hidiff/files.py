"""Writing files so that nothing half-written is ever left behind: the project's one way to write
a file that others read (weights, checkpoints, manifests, engine plans, reports, images).

:func:`atomic_path` hands out a temporary name in the target's folder; what is written there
becomes the target only if the block ends without an exception, and only once it is on disk: the
file is fsynced, renamed over the target, and the folder fsynced so that the rename survives a
power cut too. A failure removes the temporary file and leaves the old target (or none) in place.
:func:`write_atomic` does this for bytes or text; :func:`replace_durably` is the final step alone,
for files staged elsewhere in the same folder.

Every package imports this module (``hidiff`` never imports the others), and it imports nothing
of the model, so it is cheap to import.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Bytes of the target's name kept in a temporary name: with the random part and the suffix the
# name stays under the 255 bytes that common file systems allow, however long the target's is.
_NAME_BYTES = 200


def plain_file_mode() -> int:
    """The permissions ``open(path, "w")`` gives a new file under the current umask (0644 under
    the usual 022), for temporary files that ``tempfile.mkstemp`` made 0600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync(path: Path, folder: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if folder else 0))
    try:
        os.fsync(fd)
    except OSError:
        if not folder:
            raise
        # Some file systems (and Windows) cannot fsync a folder; the rename itself has happened.
    finally:
        os.close(fd)


def replace_durably(temporary: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """fsync ``temporary``, rename it over ``path`` (same folder, so the rename is atomic), then
    fsync the folder. Returns ``path``."""
    path = Path(path)
    _fsync(Path(temporary))
    os.replace(temporary, path)
    _fsync(path.parent, folder=True)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """``with atomic_path(target) as tmp: write tmp``: ``tmp`` becomes ``target`` when the block
    succeeds (see the module docstring). ``suffix`` ends the temporary name, for writers that pick
    the format from it (``cv2.imwrite``: pass the target's suffix). Creates missing folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = os.fsencode(path.name)[:_NAME_BYTES].decode(errors="ignore")
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{stem}.", suffix=suffix)
    os.close(handle)
    temporary = Path(name)
    try:
        os.chmod(temporary, plain_file_mode())
        yield temporary
        replace_durably(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` (str is UTF-8 encoded) to ``path`` through :func:`atomic_path`. Returns the path."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as temporary:
        temporary.write_bytes(payload)
    return Path(path)
