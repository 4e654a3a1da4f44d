"""Dynamic batching: the sentences of concurrent requests decoded together.

Each request's sentences join one queue. A single worker thread (JAX's calls block) takes the
oldest sentence, gathers the queued sentences that may share its batch (the same decoding
settings and the same padded source length), waits at most `max_wait` seconds from the oldest
one's arrival for the batch to fill up to `max_batch`, and decodes them in one call of
`Translator.hypotheses`. Decoding is batch-invariant (a sentence's output does not depend on
its batch-mates or their padding), so every request gets what it would get alone. A sampled
request is the exception: its draws depend on its rows, so it is decoded as a batch of its own,
exactly as `Translator.translate` would decode it.

The queue is bounded (`QueueFull` instead of growing without end); a request whose client has
gone is cancelled and its queued sentences freed; an error inside one batch fails only the
requests that had sentences in it.
"""

from __future__ import annotations

import bisect
import collections
import concurrent.futures
import dataclasses
import threading
import time

from s2s_jax.inference.outputs import Alignment, Hypothesis
from s2s_jax.inference.translate import Translator
from s2s_jax.serve.requests import Request, Settings


class QueueFull(Exception):
    """The queue holds as many sentences as it may: try again later."""


@dataclasses.dataclass(frozen=True)
class Result:
    """One sentence's answer: its n best hypotheses, and its alignment when asked."""

    hypotheses: list[Hypothesis]
    alignment: Alignment | None = None


@dataclasses.dataclass(eq=False)
class _Pending:
    """A request in the queue or being decoded."""

    request: Request
    future: concurrent.futures.Future
    results: list
    left: int
    cancelled: bool = False


@dataclasses.dataclass(eq=False)
class _Sentence:
    pending: _Pending
    index: int  # in its request
    group: tuple  # what it may share a batch with
    arrived: float


class Batcher:
    """Decodes the sentences of concurrent requests in shared batches (module docstring).

    Args:
      translator: the model(s) and vocabularies.
      max_batch: sentences decoded together at most.
      max_wait: seconds the oldest queued sentence waits for its batch to fill.
      max_queue: sentences queued at most (those being decoded not counted).
    """

    def __init__(self, translator: Translator, *, max_batch: int, max_wait: float, max_queue: int):
        self.translator = translator
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait, max_queue
        self._buckets = translator.train_cfg.src_buckets()
        self._queue: collections.deque[_Sentence] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._draining = False  # stopping soon: batches no longer wait to fill
        self._thread = threading.Thread(target=self._work, name="s2s-batcher", daemon=True)
        self.batches = 0  # decoded so far
        self.sentences = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Decodes what is queued, then ends the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout)

    def drain(self) -> None:
        """Decodes what is queued without waiting for batches to fill (the server is stopping:
        no more requests will come to fill them)."""
        with self._cond:
            self._draining = True
            self._cond.notify_all()

    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def submit(self, request: Request) -> concurrent.futures.Future:
        """Queues a request's sentences; the future gets one `Result` per input, in order.

        Raises:
          QueueFull: the queue cannot take them all now.
        """
        future: concurrent.futures.Future = concurrent.futures.Future()
        n = len(request.inputs)
        pending = _Pending(request, future, [None] * n, n)
        now = time.monotonic()
        with self._cond:
            if self._stopping:
                raise QueueFull("the server is stopping")
            if len(self._queue) + n > self.max_queue:
                raise QueueFull(
                    f"{len(self._queue)} sentences are queued, at most {self.max_queue}"
                )
            for i, length in enumerate(request.lengths):
                self._queue.append(_Sentence(pending, i, self._group(pending, length), now))
            self._cond.notify_all()
        return future

    def cancel(self, future: concurrent.futures.Future) -> None:
        """Drops a request's queued sentences (its client has gone); a batch already decoding
        them finishes, and its answer is dropped."""
        with self._cond:
            for s in self._queue:
                if s.pending.future is future:
                    s.pending.cancelled = True
            self._queue = collections.deque(s for s in self._queue if not s.pending.cancelled)
        future.cancel()

    def _group(self, pending: _Pending, length: int) -> tuple:
        settings = pending.request.settings
        if settings.sample is not None:  # draws depend on the rows: decoded alone, as a whole
            return (settings, id(pending))
        bucket = self._buckets[
            min(bisect.bisect_left(self._buckets, length), len(self._buckets) - 1)
        ]
        return (settings, bucket)

    # ------------------------------------------------------------------------- the worker

    def _next_batch(self) -> list[_Sentence] | None:
        """The next batch to decode (None: stopped with nothing left), as described above."""
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if not self._queue:
                return None
            first = self._queue[0]
            alone = first.pending.request.settings.sample is not None
            while not (alone or self._stopping or self._draining):
                ready = sum(s.group == first.group for s in self._queue) >= self.max_batch
                left = first.arrived + self.max_wait - time.monotonic()
                if ready or left <= 0 or first.pending.cancelled:
                    break
                self._cond.wait(left)
            if first.pending.cancelled:  # cancelled while waiting: its sentences are gone
                return []
            limit = len(self._queue) if alone else self.max_batch
            batch = [s for s in self._queue if s.group == first.group][:limit]
            taken = set(map(id, batch))
            self._queue = collections.deque(s for s in self._queue if id(s) not in taken)
            return batch

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            if batch:
                self._decode(batch)

    def _decode(self, batch: list[_Sentence]) -> None:
        settings: Settings = batch[0].pending.request.settings
        texts = [s.pending.request.inputs[s.index] for s in batch]
        try:
            hyps = self.translator.hypotheses(texts, **settings.search())
            aligned = [None] * len(texts)
            if settings.align:
                aligned = self.translator.align(
                    texts,
                    beam=settings.beam,
                    alpha=settings.alpha,
                    min_len=settings.min_len,
                    no_repeat_ngram=settings.no_repeat_ngram,
                )
        except Exception as e:  # noqa: BLE001 (any failure fails this batch's requests only)
            self._fail({id(s.pending): s.pending for s in batch}.values(), e)
            return
        self.batches += 1
        self.sentences += len(batch)
        for s, h, a in zip(batch, hyps, aligned):
            pending = s.pending
            pending.results[s.index] = Result(h, a)
            pending.left -= 1
            if pending.left == 0 and not pending.cancelled:
                _resolve(pending.future, pending.results)

    def _fail(self, pendings, error: Exception) -> None:
        with self._cond:  # their other sentences are not decoded in vain
            for pending in pendings:
                pending.cancelled = True
            self._queue = collections.deque(s for s in self._queue if not s.pending.cancelled)
        for pending in pendings:
            if not pending.future.done():
                pending.future.set_exception(error)


def _resolve(future: concurrent.futures.Future, value) -> None:
    if not future.done():  # not cancelled meanwhile
        try:
            future.set_result(value)
        except concurrent.futures.InvalidStateError:  # cancelled in between
            pass
