"""Checkpoints of training states (orbax), verified on restore, and the JSON files beside them.

Generic: stores any pytree `state` whose leaves are jax or numpy arrays or python scalars,
e.g. `{"params": ..., "opt_state": ..., "step": int32[], "key": uint32[2], "data_pos": int32[2]}`.

Layout of a `Checkpoints` directory:

    DIR/latest/<step>/     the latest `max_to_keep` states
    DIR/best/<step>/       the state with the best metric, the metric stored inside it
    DIR/digests/<step>.json  a SHA-256 per leaf of the state saved as <step>
    DIR/damaged/           damaged steps moved aside by a writer (never read again)

orbax writes each step as `<step>.orbax-checkpoint-tmp` and renames it only once complete, so a
crash mid-save leaves no step directory that `restore` would pick; the next writer deletes the
leftover. The digest is written before the step, so every step this code finalised has one:
`restore` recomputes it from the restored arrays and treats a difference as damage (orbax
stores no checksum of its own). A damaged or unreadable step is skipped for the newest older
one that verifies, and the `log` callback says so.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from s2s_jax.errors import CheckpointError, WriteError
from s2s_jax.files import write_atomically
from s2s_jax.training.parallel import on_any_process

_ITEM = "default"  # orbax's name for the item of a single-item CheckpointManager
_TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax's mark of a step directory not yet finalised
_METRIC = "metric"  # key of the metric in the metrics JSON orbax stores with each best step
_IMPROVED = "improved_at"  # the step of the last strict improvement (ties do not count)
_DIGESTS, _DAMAGED = "digests", "damaged"
_OS_TROUBLE = re.compile(
    r"No space left on device|Disk quota exceeded|Read-only file system"
    r"|Permission denied"
)


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


class _DropOrbaxRecords(logging.Filter):
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
        if not any(isinstance(f, _DropOrbaxRecords) for f in logger.filters):
            logger.addFilter(_DropOrbaxRecords())


_quiet_orbax()


def _ignore_late_tensorstore_callbacks() -> None:
    """After a failed read, tensorstore threads still complete the other reads and call back
    into the event loop orbax has closed; Python would print a traceback for each ("Event loop
    is closed", or the other reads' tensorstore errors) although the restore itself raised a
    clean error. This hook drops those and passes everything else to the previous hook."""
    previous = sys.unraisablehook
    if getattr(previous, "_s2s_filter", False):
        return

    def hook(unraisable):
        exc = unraisable.exc_value
        if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
            return
        if any(mark in str(exc) for mark in _TENSORSTORE_MARKS):
            return  # another read of the same failed restore
        previous(unraisable)

    hook._s2s_filter = True
    sys.unraisablehook = hook


_ignore_late_tensorstore_callbacks()


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
        raise CheckpointError(f"{path}: missing or not valid JSON ({_brief(e)})") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    return obj


def _brief(e: BaseException) -> str:
    """The first line of an exception's message, cut to fit one line of output."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else ""
    cause = _OS_TROUBLE.search(str(e))
    if cause:  # tensorstore buries it at the end of a long message
        return cause.group(0)
    if not text or text.startswith("<bound method"):  # some tensorstore errors print so
        return f"{type(e).__name__} while reading the data"
    return text if len(text) <= 300 else text[:297] + "..."


def _key_name(entry: Any) -> str:
    """A pytree key entry as orbax names it on disk: dict key, sequence index or field."""
    for attr in ("key", "idx", "name"):  # DictKey/FlattenedIndexKey, SequenceKey, GetAttrKey
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _local(leaf: Any) -> Any:
    """One local copy of a replicated global array (the leaf itself otherwise)."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        return leaf.addressable_data(0)
    return leaf


def digest(state: Any) -> dict[str, str]:
    """SHA-256 of every leaf (dtype, shape and bytes), keyed by its path."""
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    host = jax.device_get([_local(leaf) for _, leaf in flat])  # one transfer for the tree
    out = {}
    for (keypath, _), leaf in zip(flat, host):
        value = np.ascontiguousarray(np.asarray(leaf))
        h = hashlib.sha256(f"{value.dtype.str}{value.shape}".encode())
        h.update(value.tobytes())
        out["/".join(_key_name(k) for k in keypath)] = h.hexdigest()
    return out


def _describe(shape: tuple[int, ...], dtype: Any) -> str:
    dtype_text = f" {np.dtype(dtype).name}" if dtype is not None else ""
    return f"shape {tuple(shape)}{dtype_text}"


def _first_mismatch(target: Any, stored: Any, *, partial: bool = False) -> str | None:
    """Compares a target pytree with a checkpoint's tree metadata (with `partial`, only the
    target's leaves must be there).

    Returns:
        A phrase naming the first leaf whose path, shape or dtype differs, or None.
    """
    want = {
        tuple(_key_name(k) for k in keypath): (tuple(np.shape(leaf)), getattr(leaf, "dtype", None))
        # Python scalars have no dtype: the stored one is restored.
        for keypath, leaf in jax.tree_util.tree_flatten_with_path(target)[0]
    }
    have = {
        tuple(str(k) for k in path): (tuple(meta.shape), meta.dtype)
        for path, meta in ocp.tree.to_flat_dict(stored).items()
        if hasattr(meta, "shape")
    }
    for path, (shape, dtype) in want.items():
        name = "/".join(path)
        if path not in have:
            return f"leaf '{name}' ({_describe(shape, dtype)}) is missing from the checkpoint"
        got_shape, got_dtype = have[path]
        if shape != got_shape or (dtype is not None and np.dtype(dtype) != np.dtype(got_dtype)):
            return (
                f"leaf '{name}' has {_describe(got_shape, got_dtype)} in the checkpoint"
                f" but {_describe(shape, dtype)} is expected"
            )
    for path, (shape, dtype) in have.items():
        if path not in want and not partial:
            name = "/".join(path)
            return f"the checkpoint has a leaf '{name}' ({_describe(shape, dtype)}) not expected"
    return None


class _Damaged(Exception):
    """One step cannot be read back as it was saved."""


class Checkpoints:
    """Saved training states in `directory`: the latest `max_to_keep`, plus the best one.

    Saves are synchronous: when `save` returns, the step is on disk, finalised and has its
    digest; when it raises, training should stop (the earlier steps are intact). `restore`
    verifies what it reads and falls back to the newest intact step, naming what it skipped.

    In a multi-process run, every process calls `save` and `close`: orbax coordinates the
    writes, process 0 writes the digests, and the best metric lives in orbax's metrics file
    inside the best step directory, so there is no bookkeeping file of our own.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        max_to_keep: int = 2,
        best_mode: str = "max",
        writer: bool = False,
        require_digests: bool = False,
        log: Callable[[str], None] | None = None,
    ):
        """Opens the checkpoint directory; it is created on the first save, not before.

        Args:
            directory: where the checkpoints live (a relative path is taken from the current
                directory, once, here).
            max_to_keep: how many of the latest states to keep (>= 1).
            best_mode: "max" if a larger metric is better, "min" if a smaller one is.
            writer: this process trains here (it holds the workdir lock): damaged steps are
                moved aside and unfinished saves deleted. A reader changes nothing on disk.
                `save` makes any instance a writer.
            require_digests: every step must have its digest (the directory was written by
                this version); otherwise steps without one (older versions) load unverified.
            log: where one-line notices go (a damaged step skipped or moved aside).
        """
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep must be at least 1, got {max_to_keep}")
        self._dir = Path(os.path.abspath(directory))  # orbax requires absolute paths
        self._mode, self._max_to_keep = best_mode, max_to_keep
        self._require_digests = require_digests
        self._log = log or (lambda message: None)
        self._latest = self._manager("latest", max_to_keep=max_to_keep)
        self._best, self._best_damage, self._best_metric = None, None, None
        self._open_best()
        self._writing = False
        self.restored: tuple[str, int] | None = None  # (which, step) of the last restore
        if writer:
            self._start_writing()

    def _manager(self, name: str, **options: Any) -> ocp.CheckpointManager:
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
        registry.add(_ITEM, ocp.args.StandardSave)
        registry.add(_ITEM, ocp.args.StandardRestore)
        registry.add(_ITEM, ocp.args.PyTreeRestore)  # partial restores
        return ocp.CheckpointManager(self._dir / name, options=options, handler_registry=registry)

    def _open_best(self) -> None:
        """Opens best/ (reading its metric); a damaged one is noted, not fatal."""
        try:
            # Only improvements and ties are saved there; orbax keeps the later of a tie.
            self._best = self._manager(
                "best", max_to_keep=1, best_fn=lambda m: m[_METRIC], best_mode=self._mode
            )
            step = self._best.best_step()
            metrics = (self._best.metrics(step) if step is not None else None) or {}
            self._best_metric = float(metrics[_METRIC]) if _METRIC in metrics else None
            self._improved_at = int(metrics.get(_IMPROVED, step)) if step is not None else None
            self._best_damage = None
        except Exception as e:  # orbax raises many types on unreadable metadata
            if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EMFILE, errno.ENFILE):
                raise CheckpointError(f"cannot read {self._dir / 'best'}: {_brief(e)}") from e
            self._best, self._best_metric, self._improved_at = None, None, None
            self._best_damage = (
                f"the best checkpoint in {self._dir / 'best'} is damaged ({_brief(e)})"
            )

    # ------------------------------------------------------------------------------ saving

    def _start_writing(self) -> None:
        """What only a writer does, once: removes unfinished saves, moves a damaged best aside."""
        self._writing = True
        if jax.process_index() == 0:  # other processes wait at orbax's barrier in `save`
            for name in ("latest", "best"):
                for tmp in (self._dir / name).glob(f"*{_TMP_SUFFIX}*"):
                    shutil.rmtree(tmp, ignore_errors=True)
        if self._best_damage is not None:
            self._move_aside("best", None, self._best_damage)
            self._open_best()

    def _is_better(self, metric: float) -> bool:
        if math.isnan(metric):
            return False
        if self._best_metric is None:
            return True
        if self._mode == "max":  # a tie counts: the later of two equal states is kept
            return metric >= self._best_metric
        return metric <= self._best_metric

    def save(self, step: int, state: Any, *, metric: float | None = None) -> bool:
        """Saves `state` as `step`, and also as the best state if `metric` beats the best.

        A step not after the newest saved one (e.g. the same step again right after
        resuming) is not saved again. Returns once the files are written and finalised:
        whether anything was saved.

        Args:
            step: the training step the state belongs to.
            state: a pytree of jax/numpy arrays and python scalars.
            metric: the validation metric of this state (compared per `best_mode`), or None.

        Raises:
            WriteError: writing failed (e.g. the disk is full); the step is not saved and the
                steps saved before it are intact.
        """
        step = int(step)
        if not self._writing:
            self._start_writing()
        latest = self._latest.latest_step()
        best = self.best_step()
        better = (
            metric is not None and self._is_better(float(metric)) and (best is None or step > best)
        )
        new = latest is None or step > latest
        if not (new or better):
            return False
        sums = digest(state) if jax.process_index() == 0 else None
        try:
            # Each digest is written before its step, so every finished step has one.
            if new:
                self._write_digest("latest", step, sums)
                self._latest.save(step, args=ocp.args.StandardSave(state))
            if better:
                self._write_digest("best", step, sums)
                improved = self._best_metric is None or float(metric) != self._best_metric
                improved_at = step if improved else self._improved_at
                metrics = {_METRIC: float(metric), _IMPROVED: improved_at}
                if self._best.save(step, args=ocp.args.StandardSave(state), metrics=metrics):
                    self._best_metric, self._improved_at = float(metric), improved_at
        except Exception as e:  # orbax and tensorstore raise many types on failed writes
            raise WriteError(
                f"saving step {step} in {self._dir} failed: {_brief(e)}; the steps saved "
                f"before it are intact ({self._latest.latest_step() or 'none yet'} the newest)"
            ) from e
        self._remove_stale_digests()
        return True

    def _digest_file(self, which: str, step: int) -> Path:
        return self._dir / _DIGESTS / f"{which}-{step}.json"

    def _write_digest(self, which: str, step: int, sums: dict | None) -> None:
        if sums is not None:  # process 0
            save_json(self._digest_file(which, step), sums)

    def _remove_stale_digests(self) -> None:
        if jax.process_index() != 0:
            return
        for which, manager in (("latest", self._latest), ("best", self._best)):
            kept = set(manager.all_steps())
            for path in (self._dir / _DIGESTS).glob(f"{which}-*.json"):
                step = path.stem.partition("-")[2]
                if step.isdigit() and int(step) not in kept:
                    path.unlink(missing_ok=True)

    def _move_aside(self, which: str, step: int | None, why: str) -> None:
        """Moves a damaged step (or all of best/) to DIR/damaged/, so that it is never read
        again and its step number can be saved anew."""
        if jax.process_index() == 0:
            source = self._dir / which / (str(step) if step is not None else "")
            stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
            target = self._dir / _DAMAGED / f"{which}-{step if step is not None else 'all'}-{stamp}"
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.exists():
                os.replace(source, target)
            self._log(f"{why}: moved it to {target}")
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"s2s_move_aside_{which}_{step}")
        if which == "latest":
            self._latest.reload()
        else:
            if self._best is not None:
                self._best.close()
            self._open_best()

    def verify_best(self, target: Any) -> None:
        """Reads the best step back once (a writer, when it resumes): a damaged one is moved
        aside, and tracking the best starts again, instead of a damaged step blocking better
        ones for good."""
        step = self.best_step()
        if step is None:
            return
        try:
            self._restore_step("best", step, target, partial=False)
        except _Damaged as e:
            self._move_aside("best", step, f"{e}; tracking the best starts again")

    # ----------------------------------------------------------------------------- reading

    def latest_step(self) -> int | None:
        """The step of the newest saved state, or None."""
        return self._latest.latest_step()

    def latest_steps(self) -> list[int]:
        """The steps of the saved latest states, oldest first."""
        return sorted(self._latest.all_steps())

    def best_step(self) -> int | None:
        """The step of the state with the best metric, or None."""
        return self._best.best_step() if self._best is not None else None

    def best_metric(self) -> float | None:
        """The best metric saved so far, by this run or earlier ones, or None."""
        return self._best_metric

    def improved_at(self) -> int | None:
        """The step at which the best metric was last strictly improved (a later step with an
        equal metric becomes the best step, but is no improvement: early stopping counts
        from here), or None."""
        return self._improved_at

    def restore(
        self, target: Any, *, which: str = "latest", step: int | None = None, partial: bool = False
    ) -> Any:
        """Restores a saved state onto `target`, verified against its digest.

        Without `step`, the newest step of `which` that reads back intact: a damaged one is
        skipped with a notice (and moved aside by a writer); "best" falls back to the latest
        steps when there is no usable best one.

        Args:
            target: a pytree with the expected structure, shapes and dtypes, whose leaves are
                arrays, `jax.ShapeDtypeStruct`s or python scalars. Leaves with a sharding are
                restored onto it, so a state saved on N devices restores on M; the others get
                the saved sharding if its devices exist, else the first local device.
            which: "latest" or "best".
            step: a step among `which`'s saved ones (no fallback then).
            partial: `target` is a dict holding some top-level entries of the saved tree
                (e.g. `{"params": ...}`): only those are read and verified.

        Returns:
            The restored pytree, with the structure of `target`.

        Raises:
            CheckpointError: no checkpoint or no such step, a checkpoint of another model
                configuration, or no intact checkpoint.
        """
        if which not in ("latest", "best"):
            raise ValueError(f"which must be 'latest' or 'best', got {which!r}")
        if step is not None:
            manager = self._latest if which == "latest" else self._best
            if manager is None or step not in manager.all_steps():
                steps = sorted(manager.all_steps()) if manager is not None else []
                raise CheckpointError(
                    f"no {which} checkpoint of step {step} in {self._dir}: choose one of {steps}"
                )
            try:
                state = self._restore_step(which, step, target, partial)
                self.restored = (which, step)
                return state
            except _Damaged as e:
                raise CheckpointError(str(e)) from None
        candidates = [("latest", s) for s in sorted(self._latest.all_steps(), reverse=True)]
        if which == "best":
            if self._best_damage is not None:
                self._log(f"{self._best_damage}; using the latest checkpoints instead")
            elif self.best_step() is not None:
                candidates.insert(0, ("best", self.best_step()))
        if not candidates:
            raise CheckpointError(
                f"no checkpoint in {self._dir}: train first (s2s train --workdir ...)"
            )
        damaged = []  # (which, step, why)
        for name, s in candidates:
            try:
                state = self._restore_step(name, s, target, partial)
            except _Damaged as e:
                damaged.append((name, s, str(e)))
                self._log(f"{e}; trying an older one")
                continue
            if damaged:
                self._log(f"using {name} step {s}, the newest intact checkpoint in {self._dir}")
            self.restored = (name, s)
            for which_, step_, _ in damaged:
                if self._writing:  # a reader leaves the files alone (training may be writing)
                    self._move_aside(which_, step_, f"damaged {which_} step {step_}")
            return state
        # Nothing is moved aside then: the user decides what to do with the files.
        raise CheckpointError(
            f"no intact checkpoint in {self._dir}: "
            f"{'; '.join(why for _, _, why in damaged)}; move that directory "
            "away to train from scratch"
        )

    def _restore_step(self, which: str, step: int, target: Any, partial: bool) -> Any:
        """One step, read and verified; `_Damaged` if it is not intact on every process."""
        path = self._dir / which / str(step)
        try:
            state, problem = self._read_step(which, step, target, partial), None
        except _Damaged as e:
            state, problem = None, e
        if on_any_process(problem is not None):  # every process falls back alike
            raise problem or _Damaged(f"checkpoint at {path} is damaged on another process")
        return state

    def _read_step(self, which: str, step: int, target: Any, partial: bool) -> Any:
        manager = self._latest if which == "latest" else self._best
        path = self._dir / which / str(step)
        try:
            stored = manager.item_metadata(step).tree  # no `.tree` if the item dir is gone
        except Exception as e:  # orbax raises many types on unreadable metadata
            raise _Damaged(f"checkpoint at {path} is damaged: {_brief(e)}") from e
        mismatch = _first_mismatch(target, stored, partial=partial)
        if mismatch is not None:
            raise CheckpointError(
                f"checkpoint at {path} holds a different model configuration: {mismatch};"
                " use a fresh --workdir, or the configuration this workdir was trained with"
            )
        fallback = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        if partial:
            restore_args = jax.tree.map(
                lambda x: ocp.ArrayRestoreArgs(sharding=getattr(x, "sharding", None) or fallback),
                target,
            )
            args = ocp.args.PyTreeRestore(
                item=target, restore_args=restore_args, partial_restore=True
            )
        else:
            args = ocp.args.StandardRestore(target, fallback_sharding=fallback)
        try:
            state = manager.restore(step, args=args)
        except Exception as e:  # tensorstore and orbax raise many types on unreadable data
            raise _Damaged(f"checkpoint at {path} is damaged: {_brief(e)}") from e
        self._verify(which, path, step, state)
        return state

    def _verify(self, which: str, path: Path, step: int, state: Any) -> None:
        digest_file = self._digest_file(which, step)
        if not digest_file.exists():
            older = [
                int(p.stem.partition("-")[2])
                for p in digest_file.parent.glob(f"{which}-*")
                if p.stem.partition("-")[2].isdigit()
            ]
            if self._require_digests or (older and min(older) < step):
                raise _Damaged(f"checkpoint at {path} cannot be verified: {digest_file} is missing")
            self._log(
                f"checkpoint at {path} has no checksum (saved by an earlier version of "
                "s2s-jax): loaded unverified"
            )
            return
        try:
            want = load_json(digest_file)
        except CheckpointError as e:
            raise _Damaged(f"checkpoint at {path} cannot be verified: {e}") from None
        for name, value in digest(state).items():
            if want.get(name) != value:
                raise _Damaged(
                    f"checkpoint at {path} is damaged: leaf '{name}' differs from "
                    "what was saved (checksum mismatch)"
                )

    def close(self) -> None:
        """Releases orbax's threads and handles."""
        self._latest.close()
        if self._best is not None:
            self._best.close()
