"""Stopping on SIGINT and SIGTERM without losing work.

SIGTERM is what Slurm, Kubernetes and `docker stop` send before SIGKILL; SIGINT is Ctrl-C.
Outside a `deferred()` block either signal raises `Interrupted` at once. Inside one (the
training loop), the first signal only sets `requested`: the loop finishes the step (and any
save) it is in, saves the state and raises `Interrupted` itself. A second signal raises at
once, abandoning what is in flight (a save cut short is never mistaken for a finished one).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A stop asked by a signal; the exit status is 128 + the signal number."""

    def __init__(self, signum: int, message: str = ""):
        name = signal.Signals(signum).name
        super().__init__(message or f"interrupted by {name}")
        self.signum = signum
        self.exit_status = 128 + signum


class StopSignals:
    """Installs the handlers while entered (main thread only; elsewhere it does nothing)."""

    def __init__(self) -> None:
        self.requested: int | None = None  # the signal asking to stop, if any
        self._depth = 0  # nested deferred() blocks
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self._depth and self.requested is None:
            self.requested = signum
            # os.write, not print: a handler that prints while the interrupted code prints
            # raises "reentrant call" inside the stream.
            os.write(
                2,
                f"{signal.Signals(signum).name} received: stopping after this step, "
                "which will be saved (send it again to stop at once)\n".encode(),
            )
            return
        raise Interrupted(signum)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[StopSignals]:
        """Within the block (blocks nest), a first signal only sets `requested`."""
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1

    def agreed(self, step: int, every: int) -> bool:
        """Whether to stop before the next step. Several processes must stop at the same step
        (or the others would wait in a collective forever): they agree every `every` steps."""
        import jax
        import numpy as np

        if jax.process_count() == 1:
            return self.requested is not None
        if step % every:
            return False
        from jax.experimental import multihost_utils

        asked = multihost_utils.process_allgather(np.int32(self.requested or 0))
        if self.requested is None and np.any(asked):
            self.requested = int(np.max(asked))
        return self.requested is not None
