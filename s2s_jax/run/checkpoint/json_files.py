"""The JSON files of a run directory (config, digests), written atomically, read with one-line
errors; and `brief`, the one-line form of the errors orbax and tensorstore raise."""

from __future__ import annotations

import json
import os
import re
from typing import Any

from s2s_jax.errors import CheckpointError
from s2s_jax.files import write_atomically

_OS_TROUBLE = re.compile(
    r"No space left on device|Disk quota exceeded|Read-only file system"
    r"|Permission denied"
)


def save_json(path: str | os.PathLike, obj: Any) -> None:
    """Writes `obj` as JSON atomically (`files.write_atomically`; `WriteError` if it cannot).

    In a multi-process run, call it on one process only (`jax.process_index() == 0`).
    """
    write_atomically(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def load_json(path: str | os.PathLike) -> dict:
    """Reads a JSON object written by `save_json`.

    Raises:
        CheckpointError: the file is missing, is not valid JSON, or is not a JSON object.
    """
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, ValueError) as e:  # JSONDecodeError, UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{path}: missing or not valid JSON ({brief(e)})") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    return obj


def brief(e: BaseException) -> str:
    """The first line of an exception's message, cut to fit one line of output."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else ""
    if text.startswith("Encountered error while reading") and e.__cause__ is not None:
        # orbax's wrapper of a failed read, with the reader's spec; tensorstore's own error,
        # its cause, names the leaf and what is wrong with it.
        return brief(e.__cause__)
    cause = _OS_TROUBLE.search(str(e))
    if cause:  # tensorstore buries it at the end of a long message
        return cause.group(0)
    if not text or text.startswith("<bound method"):  # some tensorstore errors print so
        return f"{type(e).__name__} while reading the data"
    return text if len(text) <= 300 else text[:297] + "..."
