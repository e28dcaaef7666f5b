"""Writing files so that a reader never sees a half-written one."""

import contextlib
import json
import os
import secrets


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; renames it to `path` if the block succeeds.

    The temporary name keeps the extension (writers such as `model.save` check it).
    On any error the temporary file is removed and `path` is left as it was.
    """
    directory, name = os.path.split(os.path.abspath(path))
    stem, extension = os.path.splitext(name)
    temp_path = os.path.join(directory, f".{stem}.{secrets.token_hex(6)}.tmp{extension}")
    try:
        yield temp_path
        os.replace(temp_path, path)
    finally:
        if os.path.exists(temp_path):
            os.remove(temp_path)


def write_json(data, path):
    """Writes `data` as indented JSON, atomically."""
    with atomic_path(path) as temp_path, open(temp_path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
