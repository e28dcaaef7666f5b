"""Atomic file writing (standard library only)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers never see a partial file.

    The bytes go to a temporary file in the same directory, are flushed to
    disk, and the temporary file is then renamed over ``path`` with
    :func:`os.replace` (atomic on POSIX and Windows). On any error the
    temporary file is removed and ``path`` is left as it was.

    Args:
        path: destination file; its directory must already exist.
        data: the complete file contents.

    Returns:
        The destination as a :class:`pathlib.Path`.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # os.open with mode 0o666 lets the process umask decide the final
    # permissions, as a plain open() would.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
