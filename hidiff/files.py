"""Writing files so that nothing half-written is ever left behind."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` (str is UTF-8 encoded) to ``path`` through a temporary file in the same
    folder and ``os.replace``: a reader never sees half a file, and a failure leaves the old file
    (or none) in place. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
        # mkstemp creates the file 0600; give it the permissions a plain open() would.
        os.chmod(temporary, plain_file_mode())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def plain_file_mode() -> int:
    """The permissions ``open(path, "w")`` gives a new file under the current umask (0644 under
    the usual 022), for temporary files that ``tempfile.mkstemp`` made 0600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
