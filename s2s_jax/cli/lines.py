"""Line-oriented input and output for `s2s translate` and `s2s score`: inputs read as they come
(a file or standard input), answered a batch at a time, each batch written and flushed at
once, so that a line typed at a terminal is answered when it is typed and an interrupted job
keeps every line it finished; one output line (or n-best block) per input line, always."""

from __future__ import annotations

import contextlib
import gzip
import os
import select
import sys
from collections.abc import Iterator
from typing import IO

from s2s_jax.data.corpus import GZIP_MAGIC, line_list
from s2s_jax.errors import DataError


def read_lines(path: str | None) -> Iterator[tuple[int, str]]:
    """(line number from 1, text) of `path` or, without one, standard input, decoded as UTF-8
    (a line that is not names its file and number)."""
    name = path or "stdin"
    try:
        stream = open(path, "rb") if path else sys.stdin.buffer
        if path and stream.peek(2)[:2] == GZIP_MAGIC:  # read a gzipped file as its text
            stream = gzip.open(stream)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        for number, raw in enumerate(stream, 1):
            try:
                yield number, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{name}:{number}: not UTF-8 ({e.reason} at byte {e.start}); "
                    "convert the input to UTF-8"
                ) from None
    finally:
        if path:
            stream.close()


def _more_ready(path: str | None) -> bool:
    """Whether standard input has more to read right now (a file always has)."""
    if path:
        return True
    try:
        fd = sys.stdin.buffer.fileno()
    except (AttributeError, OSError, ValueError):  # not a real stream (tests): read on
        return True
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):  # no select on this stream (Windows): read on
        return True


def batches(path: str | None, size: int) -> Iterator[list[tuple[int, str]]]:
    """`read_lines` in lists of at most `size`; a list ends early when no further line is
    ready yet, so that nothing read waits for input that has not come."""
    batch = []
    for item in read_lines(path):
        batch.append(item)
        if len(batch) == size or not _more_ready(path):
            yield batch
            batch = []
    if batch:
        yield batch


@contextlib.contextmanager
def output(path: str | None) -> Iterator[IO[str]]:
    """Where answers go: `path` (written as they come, so an interrupted job keeps its
    finished lines) or standard output."""
    if path is None:
        yield sys.stdout
        return
    try:
        f = open(path, "w", encoding="utf-8")
    except OSError as e:
        raise DataError(f"cannot write {path}: {e.strerror or e}") from None
    with f:
        yield f


def write(out: IO[str], lines: list[str]) -> None:
    out.write("".join(line + "\n" for line in lines))
    out.flush()


def progress(path: str | None):
    """A line counter on stderr when it is a terminal (tqdm), else nothing."""
    from tqdm.auto import tqdm

    total = None
    if path and os.path.getsize(path) < 1 << 30:  # count the lines of a file up to 1 GB
        with open(path, "rb") as f:
            if f.peek(2)[:2] != GZIP_MAGIC:  # a gzipped file's lines are not counted
                total = sum(1 for _ in f)
    return tqdm(
        total=total, unit="line", file=sys.stderr, disable=not sys.stderr.isatty(), leave=False
    )


def report(numbers: list[int], what: str) -> None:
    """One stderr line: how many lines `what` (e.g. "were cropped") and which."""
    if numbers:
        print(f"{len(numbers)} input line(s) {what}: line(s) {line_list(numbers)}", file=sys.stderr)
