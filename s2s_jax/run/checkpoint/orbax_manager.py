"""orbax as the checkpoint store uses it: one synchronous `CheckpointManager` per directory
(latest/, best/) that has no side effect when opened, and orbax's own logging kept quiet
(every failure that matters is raised as one `CheckpointError` line instead)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

ITEM = "default"  # orbax's name for the item of a single-item CheckpointManager
TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax's mark of a step directory not yet finalised


def manager(directory: Path, **options: Any) -> ocp.CheckpointManager:
    """A manager of the steps in `directory` (absolute); `options` as orbax's
    `CheckpointManagerOptions` (max_to_keep, best_fn, best_mode)."""
    options = ocp.CheckpointManagerOptions(
        # Opening must have no side effect: a reader (e.g. `s2s translate` during
        # training) must neither create directories nor delete a save in progress.
        create=False,
        cleanup_tmp_directories=False,
        enable_async_checkpointing=False,
        **options,
    )
    # Registered up front so that metadata is readable before any save or restore.
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    registry.add(ITEM, ocp.args.StandardSave)
    registry.add(ITEM, ocp.args.StandardRestore)
    registry.add(ITEM, ocp.args.PyTreeRestore)  # partial restores
    return ocp.CheckpointManager(directory, options=options, handler_registry=registry)


_TENSORSTORE_MARKS = ("OCDBT", '"zarr" driver', "tensorstore")


def _from_orbax(record: logging.LogRecord) -> bool:
    """Whether a log record comes from orbax, or carries an exception raised inside orbax or
    tensorstore (whose errors, raised from C, name their OCDBT or zarr files instead)."""
    if "orbax" in record.pathname:
        return True
    error = record.exc_info[1] if record.exc_info else None
    tb = record.exc_info[2] if record.exc_info else None
    while tb is not None:
        if "orbax" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return error is not None and any(mark in str(error) for mark in _TENSORSTORE_MARKS)


class DropOrbaxRecords(logging.Filter):
    """Drops orbax's log records below CRITICAL: a dozen INFO lines per save, and on a failed
    save or restore dozens of ERROR tracebacks from its threads (and asyncio's "exception was
    never retrieved" about its tasks). Every failure that matters raises a `CheckpointError`
    that names it in one line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.CRITICAL or not _from_orbax(record)


def _quiet_orbax() -> None:
    # Filters (added once) rather than global verbosities: other absl and asyncio users keep
    # their logs.
    for name in ("absl", "asyncio"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropOrbaxRecords) for f in logger.filters):
            logger.addFilter(DropOrbaxRecords())


_quiet_orbax()


def _ignore_leftovers_of_failed_restores() -> None:
    """Drops what a failed restore leaves behind, and passes everything else to the previous
    hook.

    orbax reads the leaves concurrently (`asyncio.gather`) in an event loop of its own, which
    it closes as soon as one read fails, with the other reads still pending. Two kinds of
    unraisable exceptions follow, long after the restore itself raised a clean error:
      * tensorstore threads complete those reads and call back into the closed loop ("Event
        loop is closed"), or report the other reads' own tensorstore errors;
      * the garbage collector closes the pending reads' coroutines, and orbax's
        `except BaseException` around each read turns the GeneratorExit into a new exception:
        "Exception ignored in: <coroutine object _read_array_index_and_device_put>", with a
        60-line TensorStore spec, once per pending read.
    Everything the hook reads is bound here, not looked up in this module's globals, so that it
    still works when the garbage collector runs at interpreter exit.
    """
    previous = sys.unraisablehook
    if getattr(previous, "_s2s_filter", False):
        return
    orbax_dir = os.path.dirname(ocp.__file__) + os.sep
    marks = _TENSORSTORE_MARKS

    def hook(unraisable, previous=previous, orbax_dir=orbax_dir, marks=marks):
        try:
            exc, obj = unraisable.exc_value, unraisable.object
            if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
                return
            if any(mark in str(exc) for mark in marks):
                return  # another read of the same failed restore
            code = getattr(obj, "cr_code", None)  # a coroutine being closed
            if code is not None and code.co_filename.startswith(orbax_dir):
                return  # a read left pending by a failed restore
        except Exception:  # deciding must never hide the exception: let the previous hook say it
            pass
        previous(unraisable)

    hook._s2s_filter = True
    sys.unraisablehook = hook


_ignore_leftovers_of_failed_restores()
