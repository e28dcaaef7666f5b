"""Writing files so that a reader never sees a half-written one."""

import contextlib
import json
import os
import tempfile


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; renames it to `path` if the block succeeds.

    On any error the temporary file is removed and `path` is left as it was.
    """
    directory = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]
    handle, temp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    os.close(handle)
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
