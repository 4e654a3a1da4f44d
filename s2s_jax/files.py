"""Writing a file atomically, for every file the workdir keeps beside its checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

from s2s_jax.errors import WriteError


def write_atomically(path: str | os.PathLike, data: str | bytes) -> None:
    """Writes `data` (text as UTF-8, or bytes) to a temporary file beside `path`, syncs it, and
    renames it over `path`: a reader sees the old file or the new one, never a part.

    Raises:
      WriteError: the file cannot be written (e.g. the disk is full); `path` is unchanged and
        no temporary file is left, whatever interrupts the write (a signal included).
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise WriteError(f"cannot write {path}: {e.strerror or e}") from None
        raise
