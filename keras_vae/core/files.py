"""Writing files so that a reader never sees a half-written one (standard library only).

The one mechanism, used by training, export and serving alike: the bytes go to
a temporary file beside the target, are flushed and fsync'ed, and the
temporary file is renamed over the target with ``os.replace`` (atomic on
POSIX and Windows). A process killed at any moment leaves either the old file
or the new one, plus at worst a temporary file that
``remove_stale_temp_files`` recognises by its name and removes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "write_bytes_atomic", "write_text_atomic", "write_json",
           "is_temp_file", "remove_stale_temp_files"]

# ".<head>.<12 hex>.tmp<extensions>", e.g. ".model.3fa2b1c4d5e6.tmp.keras"
_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp(\..+)?$")


def _temp_name(name: str) -> str:
    """A fresh temporary name for ``name`` that keeps all its extensions.

    Writers such as ``model.save`` (``.keras``) and ``save_weights``
    (``.weights.h5``) check the extension, so ``latest.weights.h5`` becomes
    ``.latest.<hex>.tmp.weights.h5``.
    """
    head, dot, extensions = name.partition(".") if not name.startswith(".") else (name, "", "")
    return f".{head}.{secrets.token_hex(6)}.tmp{dot}{extensions}"


def is_temp_file(name: str) -> bool:
    """True when ``name`` is a temporary file that ``atomic_path`` made."""
    return bool(_TEMP_NAME.match(name))


def _fsync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success, fsync it and rename it to ``path``.

    For writers that take a file name (``model.save(temp)``, ``open(temp, "wb")``).
    On any error, including KeyboardInterrupt, the temporary file is removed and
    ``path`` is left as it was.
    """
    directory, name = os.path.split(os.path.abspath(os.fspath(path)))
    temp_path = os.path.join(directory, _temp_name(name))
    try:
        yield temp_path
        with open(temp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(temp_path, os.path.join(directory, name))
        _fsync_directory(directory)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temp_path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path. Its directory must exist.

    The file gets the permissions a plain ``open(path, "wb")`` would give (umask).
    """
    with atomic_path(path) as temp_path, open(temp_path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json(data, path: str | os.PathLike) -> Path:
    """Write ``data`` as indented, key-sorted JSON, atomically; returns the path."""
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def remove_stale_temp_files(*directories: str | os.PathLike) -> list[str]:
    """Remove temporary files left in ``directories`` by writers that were killed.

    Only names that ``atomic_path`` makes are touched. Call it only while no
    other process writes there (training holds the run directory's lock).
    Returns the removed paths.
    """
    removed = []
    for directory in directories:
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            if entry.is_file(follow_symlinks=False) and is_temp_file(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(entry.path)
                    removed.append(entry.path)
    return removed
