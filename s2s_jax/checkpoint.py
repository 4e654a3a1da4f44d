"""Checkpoints of training states (orbax) and the JSON files kept beside them.

Generic: stores any pytree `state` whose leaves are jax or numpy arrays or python scalars,
e.g. `{"params": ..., "opt_state": ..., "step": int32[], "key": uint32[2], "data_pos": int32[2]}`.

Layout of a `Checkpoints` directory:

    DIR/latest/<step>/   the latest `max_to_keep` states
    DIR/best/<step>/     the state with the best metric, the metric stored inside it

orbax writes each step as `<step>.orbax-checkpoint-tmp` and renames it only once complete, so a
crash mid-save leaves no step directory that `restore` would pick; the next run's first `save`
deletes the leftover.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from s2s_jax.errors import CheckpointError

_ITEM = "default"  # orbax's name for the item of a single-item CheckpointManager
_TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax's mark of a step directory not yet finalised
_METRIC = "metric"  # key of the metric in the metrics JSON orbax stores with each best step


class _DropOrbaxInfo(logging.Filter):
    """Drops orbax's INFO records (a dozen per save) from the `absl` logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or "orbax" not in record.pathname


def _quiet_orbax() -> None:
    # A filter (added once) rather than a global absl verbosity: other absl users keep INFO.
    absl_logger = logging.getLogger("absl")
    if not any(isinstance(f, _DropOrbaxInfo) for f in absl_logger.filters):
        absl_logger.addFilter(_DropOrbaxInfo())


_quiet_orbax()


def save_json(path: str | os.PathLike, obj: Any) -> None:
    """Writes `obj` as JSON atomically: to a temporary file, then renamed over `path`.

    In a multi-process run, call it on one process only (`jax.process_index() == 0`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
    text = lines[0] if lines else type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _key_name(entry: Any) -> str:
    """A pytree key entry as orbax names it on disk: dict key, sequence index or field."""
    for attr in ("key", "idx", "name"):  # DictKey/FlattenedIndexKey, SequenceKey, GetAttrKey
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _describe(shape: tuple[int, ...], dtype: Any) -> str:
    dtype_text = f" {np.dtype(dtype).name}" if dtype is not None else ""
    return f"shape {tuple(shape)}{dtype_text}"


def _first_mismatch(target: Any, stored: Any) -> str | None:
    """Compares a target pytree with a checkpoint's tree metadata.

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
        if path not in want:
            name = "/".join(path)
            return f"the checkpoint has a leaf '{name}' ({_describe(shape, dtype)}) not expected"
    return None


class Checkpoints:
    """Saved training states in `directory`: the latest `max_to_keep`, plus the best one.

    Saves are asynchronous: `save` returns once the arrays are copied to host memory (the
    caller may then donate or overwrite them) and the files are written in a background
    thread. `restore` and `close` wait for pending saves themselves; call `wait()` before
    reading the directory by other means (e.g. another `Checkpoints` on it) or before exiting
    without `close()`. Errors of a background save surface at the next `save`, `wait`, `close`.

    In a multi-process run, every process calls `save`, `wait` and `close`: orbax coordinates
    the writes, and the best metric lives in orbax's metrics file inside the best step
    directory, written by the primary process, so there is no bookkeeping file of our own.
    """

    def __init__(
        self, directory: str | os.PathLike, *, max_to_keep: int = 2, best_mode: str = "max"
    ):
        """Opens the checkpoint directory; it is created on the first save, not before.

        Args:
            directory: where the checkpoints live.
            max_to_keep: how many of the latest states to keep (>= 1).
            best_mode: "max" if a larger metric is better, "min" if a smaller one is.
        """
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep must be at least 1, got {max_to_keep}")
        self._dir = Path(directory)
        self._mode = best_mode

        def manager(name: str, **options: Any) -> ocp.CheckpointManager:
            options = ocp.CheckpointManagerOptions(
                # Opening must have no side effect: a reader (e.g. `s2s translate` during
                # training) must neither create directories nor delete a save in progress.
                create=False,
                cleanup_tmp_directories=False,
                **options,
            )
            # Registered up front so that metadata is readable before any save or restore.
            registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
            registry.add(_ITEM, ocp.args.StandardSave)
            registry.add(_ITEM, ocp.args.StandardRestore)
            return ocp.CheckpointManager(
                self._dir / name, options=options, handler_registry=registry
            )

        self._latest = manager("latest", max_to_keep=max_to_keep)
        try:  # opening reads the stored metrics
            # Only improvements are saved there, so keeping the best 1 keeps the newest.
            self._best = manager(
                "best", max_to_keep=1, best_fn=lambda m: m[_METRIC], best_mode=best_mode
            )
            self._best_metric = self._read_best_metric()
        except (OSError, ValueError, KeyError, TypeError) as e:
            self._latest.close()
            raise CheckpointError(
                f"best checkpoint in {self._dir / 'best'} is damaged: {_brief(e)};"
                " delete that directory to start tracking the best again"
            ) from e
        self._unfinished_removed = False

    def _read_best_metric(self) -> float | None:
        step = self._best.best_step()
        metrics = self._best.metrics(step) if step is not None else None
        return float(metrics[_METRIC]) if metrics and _METRIC in metrics else None

    def _remove_unfinished(self) -> None:
        """Deletes what crashed saves left behind; done by the writer, before its first save."""
        if jax.process_index() == 0:  # other processes wait at orbax's barrier in `save`
            for name in ("latest", "best"):
                for tmp in (self._dir / name).glob(f"*{_TMP_SUFFIX}*"):
                    shutil.rmtree(tmp, ignore_errors=True)
        self._unfinished_removed = True

    def _is_better(self, metric: float) -> bool:
        if math.isnan(metric):
            return False
        if self._best_metric is None:
            return True
        if self._mode == "max":
            return metric > self._best_metric
        return metric < self._best_metric

    def save(self, step: int, state: Any, *, metric: float | None = None) -> None:
        """Saves `state` as `step`, and also as the best state if `metric` beats the best.

        A step not after the newest saved one (e.g. the same step again right after
        resuming) is not saved again.

        Args:
            step: the training step the state belongs to.
            state: a pytree of jax/numpy arrays and python scalars.
            metric: the validation metric of this state (compared per `best_mode`), or None.

        Raises:
            CheckpointError: writing failed (this save or a previous background one).
        """
        step = int(step)
        if not self._unfinished_removed:
            self._remove_unfinished()
        try:
            self._latest.save(step, args=ocp.args.StandardSave(state))
            if metric is not None and self._is_better(float(metric)):
                metrics = {_METRIC: float(metric)}
                if self._best.save(step, args=ocp.args.StandardSave(state), metrics=metrics):
                    self._best_metric = float(metric)
        except (OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"saving step {step} in {self._dir} failed: {_brief(e)}") from e

    def latest_step(self) -> int | None:
        """The step of the newest saved state, or None."""
        return self._latest.latest_step()

    def best_step(self) -> int | None:
        """The step of the state with the best metric, or None."""
        return self._best.best_step()

    def best_metric(self) -> float | None:
        """The best metric saved so far, by this run or earlier ones, or None."""
        return self._best_metric

    def restore(self, target: Any, *, which: str = "latest", step: int | None = None) -> Any:
        """Restores a saved state onto `target` (waits for pending saves first).

        Args:
            target: a pytree with the expected structure, shapes and dtypes, whose leaves are
                arrays, `jax.ShapeDtypeStruct`s or python scalars. Leaves with a sharding are
                restored onto it, so a state saved on N devices restores on M; the others get
                the saved sharding if its devices exist, else the first local device.
            which: "latest" or "best".
            step: a step among `which`'s saved ones; by default the newest.

        Returns:
            The restored pytree, with the structure of `target`.

        Raises:
            CheckpointError: no checkpoint or no such step, a checkpoint of another model
                configuration, or a damaged checkpoint.
        """
        if which not in ("latest", "best"):
            raise ValueError(f"which must be 'latest' or 'best', got {which!r}")
        self.wait()
        manager = self._latest if which == "latest" else self._best
        if step is None:
            step = manager.latest_step()
            if step is None:
                raise CheckpointError(
                    f"no checkpoint in {self._dir}: train first (s2s train --workdir ...)"
                )
        elif step not in manager.all_steps():
            raise CheckpointError(
                f"no {which} checkpoint of step {step} in {self._dir}:"
                f" choose one of {sorted(manager.all_steps())}"
            )
        path = self._dir / which / str(step)
        try:
            stored = manager.item_metadata(step).tree  # no `.tree` if the item dir is gone
        except Exception as e:  # orbax raises many types on unreadable metadata
            raise CheckpointError(f"checkpoint at {path} is damaged: {_brief(e)}") from e
        mismatch = _first_mismatch(target, stored)
        if mismatch is not None:
            raise CheckpointError(
                f"checkpoint at {path} holds a different model configuration: {mismatch};"
                " use a fresh --workdir, or the configuration this workdir was trained with"
            )
        fallback = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        try:
            return manager.restore(
                step, args=ocp.args.StandardRestore(target, fallback_sharding=fallback)
            )
        except Exception as e:  # tensorstore and orbax raise many types on unreadable data
            raise CheckpointError(f"checkpoint at {path} is damaged: {_brief(e)}") from e

    def wait(self) -> None:
        """Blocks until pending background saves are written and finalised."""
        try:
            self._latest.wait_until_finished()
            self._best.wait_until_finished()
        except (OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"saving in {self._dir} failed: {_brief(e)}") from e

    def close(self) -> None:
        """Waits for pending saves, then releases orbax's threads and handles."""
        self.wait()
        self._latest.close()
        self._best.close()
