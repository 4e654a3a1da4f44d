"""Damaged steps: a step that cannot be read back as it was saved is skipped for the newest
intact one, and a writer moves it to DIR/damaged/ so that it is never read again and its step
number can be saved anew. A reader (e.g. `s2s translate` while training runs) leaves the files
alone."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import jax


class Damaged(Exception):
    """One step cannot be read back as it was saved."""


def move_aside(directory: Path, which: str, step: int | None, why: str, log: Callable) -> None:
    """Moves step `step` of `directory/which` (all of it when `step` is None) to
    `directory/damaged/`; every process calls it, process 0 moves."""
    if jax.process_index() == 0:
        source = directory / which / (str(step) if step is not None else "")
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        target = directory / "damaged" / f"{which}-{step if step is not None else 'all'}-{stamp}"
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.exists():
            os.replace(source, target)
        log(f"{why}: moved it to {target}")
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"s2s_move_aside_{which}_{step}")
