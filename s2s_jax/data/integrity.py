"""Digests that let stored data prove it is what was written: a file's SHA-256, and for a large
file the SHA-256 of each fixed-size chunk, computed as it is written (`ChunkDigests`) and
checked the first time a read needs the chunk (`ChunkCheck`). Opening a corpus of any size
then costs nothing more, and no damaged byte ever reaches a batch.
"""

from __future__ import annotations

import hashlib
import os
import threading

import numpy as np

from s2s_jax.errors import DataError

CHUNK_BYTES = 1 << 22  # 4 MiB: ~3 ms of SHA-256 here, a few hundred digests at 1 GB
READ_BLOCK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, read a block at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


class ChunkDigests:
    """The SHA-256 of each `chunk_bytes` of a byte stream fed in order (`update`), the last
    chunk possibly shorter."""

    def __init__(self, chunk_bytes: int | None = None):
        self.chunk_bytes = chunk_bytes or CHUNK_BYTES
        self.digests: list[str] = []
        self._current = hashlib.sha256()
        self._filled = 0  # bytes in the current chunk

    def update(self, data) -> None:
        view = memoryview(data).cast("B")
        while len(view):
            take = min(len(view), self.chunk_bytes - self._filled)
            self._current.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self.chunk_bytes:
                self._close_chunk()

    def finish(self) -> list[str]:
        """The digests, the last partial chunk's included."""
        if self._filled:
            self._close_chunk()
        return self.digests

    def _close_chunk(self) -> None:
        self.digests.append(self._current.hexdigest())
        self._current, self._filled = hashlib.sha256(), 0


class ChunkCheck:
    """Checks a memory-mapped 1-D array of token ids, chunk by chunk, against the digests
    `ChunkDigests` took of its bytes: each chunk once, the first time `check` is asked for an
    element in it (thread-safe: a prefetch thread asks). A chunk also holds only ids below
    `id_limit`. A mismatch raises `DataError` naming the file and its bytes."""

    def __init__(
        self, array: np.ndarray, digests: list[str], chunk_bytes: int, *, id_limit: int, path
    ):
        self.array, self.digests, self.chunk_bytes = array, list(digests), chunk_bytes
        self.id_limit, self.path = id_limit, os.fspath(path)
        self._bytes = array.view(np.uint8) if len(array) else np.zeros(0, np.uint8)
        self._checked = np.zeros(len(self.digests), bool)
        self._left = len(self.digests)
        self._lock = threading.Lock()
        expected = -(-self._bytes.nbytes // chunk_bytes)  # ceil
        if len(self.digests) != expected:
            raise DataError(
                f"{self.path}: {self._bytes.nbytes:,} bytes make {expected} chunks, but its "
                f"digests name {len(self.digests)}: the data was changed after it was "
                "written; prepare it again"
            )

    def check(self, starts: np.ndarray, ends: np.ndarray) -> None:
        """Checks the chunks that hold elements `[starts[r], ends[r])` of each row `r`."""
        if not self._left:
            return  # all checked: the common case after the first few batches
        size = self.array.itemsize
        starts, ends = np.asarray(starts, np.int64), np.asarray(ends, np.int64)
        nonempty = ends > starts
        first = starts[nonempty] * size // self.chunk_bytes
        last = (ends[nonempty] * size - 1) // self.chunk_bytes
        if len(first) and int((last - first).max()) > 1:  # rows longer than a chunk
            needed = np.unique(np.concatenate([np.arange(f, l + 1) for f, l in zip(first, last)]))
        else:  # vectorised: a batch costs microseconds while chunks remain unchecked
            needed = np.unique(np.concatenate([first, last]))
        past = needed >= len(self.digests)
        if past.any():
            self._check_chunk(int(needed[past][0]))  # raises: a read past the end
        for chunk in needed[~self._checked[needed]].tolist():
            self._check_chunk(chunk)

    def check_all(self) -> None:
        """Every chunk (`s2s prepare --verify`)."""
        for chunk in range(len(self.digests)):
            self._check_chunk(chunk)

    def _check_chunk(self, chunk: int) -> None:
        if chunk >= len(self.digests):
            raise DataError(f"{self.path}: a read past its end (chunk {chunk}): damaged index")
        if self._checked[chunk]:
            return
        with self._lock:
            if self._checked[chunk]:
                return
            begin = chunk * self.chunk_bytes
            data = self._bytes[begin : begin + self.chunk_bytes]
            if hashlib.sha256(data).hexdigest() != self.digests[chunk]:
                raise DataError(
                    f"{self.path}: bytes {begin:,} to {begin + len(data):,} differ from what "
                    f"was written (SHA-256 of chunk {chunk + 1} of {len(self.digests)}): the "
                    "file was changed or damaged; prepare the data again"
                )
            ids = data.view(self.array.dtype)
            if len(ids) and int(ids.max()) >= self.id_limit:
                raise DataError(
                    f"{self.path}: id {int(ids.max())} in chunk {chunk + 1}, past the "
                    f"vocabularies' {self.id_limit} ids; prepare the data again"
                )
            self._checked[chunk] = True
            self._left -= 1
