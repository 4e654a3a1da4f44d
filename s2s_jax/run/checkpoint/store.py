"""The checkpoint store: training states saved with orbax, verified on restore.

Generic: stores any pytree `state` whose leaves are jax or numpy arrays or python scalars,
e.g. `{"params": ..., "opt_state": ..., "step": int32[], "key": uint32[2], "data_pos": int32[2]}`.

Layout of a `Checkpoints` directory:

    DIR/latest/<step>/     the latest `max_to_keep` states
    DIR/best/<step>/       the state with the best metric, the metric stored inside it
    DIR/digests/           a SHA-256 per leaf of each saved step (`digests`)
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
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from s2s_jax.errors import CheckpointError, WriteError
from s2s_jax.run.checkpoint import orbax_manager
from s2s_jax.run.checkpoint.damage import Damaged, move_aside
from s2s_jax.run.checkpoint.digests import DigestFiles, digest, first_mismatch
from s2s_jax.run.checkpoint.json_files import brief
from s2s_jax.run.mesh import on_any_process

_METRIC = "metric"  # key of the metric in the metrics JSON orbax stores with each best step
_IMPROVED = "improved_at"  # the step of the last strict improvement (ties do not count)


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
        self._log = log or (lambda message: None)
        self._digests = DigestFiles(self._dir, required=require_digests, log=self._log)
        self._latest = self._manager("latest", max_to_keep=max_to_keep)
        self._best, self._best_damage, self._best_metric = None, None, None
        self._open_best()
        self._writing = False
        self.restored: tuple[str, int] | None = None  # (which, step) of the last restore
        if writer:
            self._start_writing()

    def _manager(self, name: str, **options: Any) -> ocp.CheckpointManager:
        return orbax_manager.manager(self._dir / name, **options)

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
                raise CheckpointError(f"cannot read {self._dir / 'best'}: {brief(e)}") from e
            self._best, self._best_metric, self._improved_at = None, None, None
            self._best_damage = (
                f"the best checkpoint in {self._dir / 'best'} is damaged ({brief(e)})"
            )

    # ------------------------------------------------------------------------------ saving

    def _start_writing(self) -> None:
        """What only a writer does, once: removes unfinished saves, moves a damaged best aside."""
        self._writing = True
        if jax.process_index() == 0:  # other processes wait at orbax's barrier in `save`
            for name in ("latest", "best"):
                for tmp in (self._dir / name).glob(f"*{orbax_manager.TMP_SUFFIX}*"):
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
                self._digests.write("latest", step, sums)
                self._latest.save(step, args=ocp.args.StandardSave(state))
            if better:
                self._digests.write("best", step, sums)
                improved = self._best_metric is None or float(metric) != self._best_metric
                improved_at = step if improved else self._improved_at
                metrics = {_METRIC: float(metric), _IMPROVED: improved_at}
                if self._best.save(step, args=ocp.args.StandardSave(state), metrics=metrics):
                    self._best_metric, self._improved_at = float(metric), improved_at
        except Exception as e:  # orbax and tensorstore raise many types on failed writes
            raise WriteError(
                f"saving step {step} in {self._dir} failed: {brief(e)}; the steps saved "
                f"before it are intact ({self._latest.latest_step() or 'none yet'} the newest)"
            ) from e
        self._remove_stale_digests()
        return True

    def _remove_stale_digests(self) -> None:
        for which, manager in (("latest", self._latest), ("best", self._best)):
            self._digests.remove_stale(which, manager.all_steps())

    def _move_aside(self, which: str, step: int | None, why: str) -> None:
        """Moves a damaged step (or all of best/) aside, then reopens what it was in."""
        move_aside(self._dir, which, step, why, self._log)
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
        except Damaged as e:
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
            except Damaged as e:
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
            except Damaged as e:
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
        """One step, read and verified; `Damaged` if it is not intact on every process."""
        path = self._dir / which / str(step)
        try:
            state, problem = self._read_step(which, step, target, partial), None
        except Damaged as e:
            state, problem = None, e
        if on_any_process(problem is not None):  # every process falls back alike
            raise problem or Damaged(f"checkpoint at {path} is damaged on another process")
        return state

    def _read_step(self, which: str, step: int, target: Any, partial: bool) -> Any:
        manager = self._latest if which == "latest" else self._best
        path = self._dir / which / str(step)
        try:
            stored = manager.item_metadata(step).tree  # no `.tree` if the item dir is gone
        except Exception as e:  # orbax raises many types on unreadable metadata
            raise Damaged(f"checkpoint at {path} is damaged: {brief(e)}") from e
        mismatch = first_mismatch(target, stored, partial=partial)
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
            raise Damaged(f"checkpoint at {path} is damaged: {brief(e)}") from e
        self._digests.verify(which, path, step, state)
        return state

    def close(self) -> None:
        """Releases orbax's threads and handles."""
        self._latest.close()
        if self._best is not None:
            self._best.close()
