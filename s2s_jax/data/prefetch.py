"""Batches made ahead in a background thread, so that the training step never waits for the
host to gather and pad them (numpy releases the GIL while it copies)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

_DONE = object()


class Prefetch:
    """Iterates `source` in a daemon thread, at most `depth` items ahead of the consumer.

    An exception in `source` is raised by the `next` call that would have returned its item.
    `waited` is the time `next` spent waiting for an item (in seconds, since the last
    `take_waited`): near zero when the data keeps up with the step. `close` stops the thread.
    """

    def __init__(self, source: Iterator, depth: int = 4):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._closed = threading.Event()
        self.waited = 0.0
        self._thread = threading.Thread(target=self._fill, args=(source,), daemon=True)
        self._thread.start()

    def _fill(self, source: Iterator) -> None:
        try:
            for item in source:
                if not self._put((item, None)):
                    return
            self._put((_DONE, None))
        except BaseException as e:  # handed to the consumer, raised there
            self._put((None, e))

    def _put(self, entry) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Prefetch:
        return self

    def __next__(self):
        started = time.perf_counter()
        item, error = self._queue.get()
        self.waited += time.perf_counter() - started
        if error is not None:
            raise error
        if item is _DONE:
            raise StopIteration
        return item

    def take_waited(self) -> float:
        """The seconds waited since the last call (and resets the count)."""
        waited, self.waited = self.waited, 0.0
        return waited

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
