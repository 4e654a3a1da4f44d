"""Parallel corpora as users bring them: one TSV file (`source<TAB>target` a line), or two
line-aligned files, line i of the one translating line i of the other (the convention of Moses,
fairseq, OpenNMT and Marian), named together as `SRC,TGT` (`train.en,train.de`). Any of them
may be gzipped (read by its first bytes, whatever its name).

A pair with an empty side is skipped, its line number kept for the report, so one blank line in
a million does not sink a job; a format error (a TSV line without its tab, files of different
lengths, text that is not UTF-8) is refused with the file and line named.
"""

from __future__ import annotations

import codecs
import dataclasses
import gzip
import itertools
import os
from collections.abc import Iterator, Sequence

from s2s_jax.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
MANIFEST = "manifest.json"  # what makes a folder prepared data (`s2s prepare`)
BLOCK = 1 << 24  # bytes read at a time: a file is read in memory flat in its size
CHUNK_PAIRS = 20_000  # pairs `corpus_chunks` yields at a time


def is_prepared(spec: str | os.PathLike) -> bool:
    """Whether a training corpus is a folder that `s2s prepare` wrote (complete)."""
    return os.path.isfile(os.path.join(spec, MANIFEST))


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Pairs read from a corpus.

    Attributes:
      pairs: (source, target), in line order, blank lines and empty sides left out.
      empty: the 1-based line numbers of the pairs skipped for an empty side (a line blank on
        both sides is a separator, not counted, in a TSV file; in two files it is counted).
      files: the file or the two files read.
    """

    pairs: list[tuple[str, str]]
    empty: tuple[int, ...]
    files: tuple[str, ...]


def corpus_files(spec: str | os.PathLike) -> tuple[str, ...]:
    """The files a corpus names: `(tsv,)`, or `(src, tgt)` for `SRC,TGT`.

    A name holding a comma is one TSV file when a file of that name exists.
    """
    spec = os.fspath(spec)
    if "," not in spec or os.path.exists(spec):
        return (spec,)
    files = tuple(spec.split(","))
    if len(files) != 2 or not all(files):
        raise DataError(
            f"{spec!r}: name one TSV file, or two line-aligned files as SRC,TGT "
            "(e.g. train.en,train.de)"
        )
    return files


def line_blocks(path: str) -> Iterator[list[str]]:
    """A file's lines without their ends (\\n, \\r\\n), a block of them at a time, read in
    `BLOCK` bytes: gunzipped if gzipped, a UTF-8 byte order mark dropped.

    Raises:
      DataError: a missing file, a folder, a damaged gzip file, or bytes that are not UTF-8
        (with the line they are on).
    """
    try:
        raw = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise DataError(
            f"{path} is a folder without {MANIFEST}, so not prepared data (a prepare that did "
            "not finish leaves none): give a corpus file, or a folder s2s prepare wrote"
        ) from None
    with raw:
        stream = gzip.GzipFile(fileobj=raw) if raw.peek(2)[:2] == GZIP_MAGIC else raw
        offset, lines_before, rest = 0, 0, b""
        while True:
            try:
                block = stream.read(BLOCK)
            except (OSError, EOFError) as e:  # gzip's errors: a truncated or corrupt file
                raise DataError(f"{path}: damaged gzip file ({e})") from None
            data = rest + block
            # Whole lines only: a "\n" byte is never inside a UTF-8 character.
            cut = data.rfind(b"\n") + 1 if block else len(data)
            data, rest = data[:cut], data[cut:]
            if offset == 0 and data.startswith(codecs.BOM_UTF8):  # the first line, whole
                data, offset, cut = data[3:], 3, cut - 3
            lines = _decode(path, data, offset, lines_before).split("\n")
            if lines[-1] == "":
                lines.pop()  # the last line's end (or an empty block)
            lines = [line[:-1] if line.endswith("\r") else line for line in lines]
            offset, lines_before = offset + cut, lines_before + len(lines)
            if lines:
                yield lines
            if not block:
                return


def _decode(path: str, data: bytes, offset: int, lines_before: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = lines_before + data.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"{path}:{line}: not UTF-8 ({e.reason} at byte {offset + e.start}); convert it to UTF-8"
        ) from None


def read_lines(path: str) -> list[str]:
    """A file's lines, without their line ends (see `line_blocks`)."""
    return [line for block in line_blocks(path) for line in block]


def corpus_chunks(spec: str | os.PathLike, size: int = CHUNK_PAIRS) -> Iterator[Corpus]:
    """A corpus read `size` pairs at a time (see the module's docstring), in memory flat in
    its size: each chunk a `Corpus` of its pairs and of the empty lines met since the last.

    Raises:
      DataError: what `line_blocks` refuses; a TSV line without exactly one tab; two files of
        different line counts (both counts named): each in place of the chunk that holds it.
    """
    return _chunks(corpus_files(spec), size)


def _chunks(files: tuple[str, ...], size: int) -> Iterator[Corpus]:
    pairs, empty = [], []
    for lineno, src, tgt in _numbered_pairs(files):
        src, tgt = src.strip(), tgt.strip()
        if src and tgt:
            pairs.append((src, tgt))
            if len(pairs) == size:
                yield Corpus(pairs, tuple(empty), files)
                pairs, empty = [], []
        elif src or tgt or len(files) == 2:  # a blank TSV line separates, and is not counted
            empty.append(lineno)
    if pairs or empty:
        yield Corpus(pairs, tuple(empty), files)


def _numbered_pairs(files: tuple[str, ...]) -> Iterator[tuple[int, str, str]]:
    """`(line number, source, target)` of each line, unstripped."""
    lines = [itertools.chain.from_iterable(line_blocks(f)) for f in files]
    if len(files) == 1:
        for lineno, line in enumerate(lines[0], start=1):
            fields = line.split("\t")
            if len(fields) == 2:
                yield lineno, *fields
            elif line.strip() and len(fields) == 1:
                raise DataError(f"{files[0]}:{lineno}: no tab between source and target")
            elif line.strip():
                raise DataError(
                    f"{files[0]}:{lineno}: {len(fields) - 1} tabs; a line holds exactly one "
                    "tab, between source and target"
                )
        return
    lineno = 0
    for lineno, (src, tgt) in enumerate(itertools.zip_longest(*lines), start=1):
        if src is None or tgt is None:
            counts = [lineno - 1] * 2
            longer = 0 if tgt is None else 1
            counts[longer] += 1 + sum(1 for _ in lines[longer])
            raise DataError(
                f"{files[0]} has {counts[0]} lines but {files[1]} has {counts[1]}: "
                "line-aligned files have one line per pair"
            )
        yield lineno, src, tgt


def read_corpus(spec: str | os.PathLike) -> Corpus:
    """Reads a corpus whole (see the module's docstring and `corpus_chunks`).

    Args:
      spec: a TSV file, or `SRC,TGT`.
    """
    return _whole(corpus_files(spec))


def tsv_corpus(path: str) -> Corpus:
    """A TSV file's pairs, those with an empty side skipped and their lines kept."""
    return _whole((path,))


def _whole(files: tuple[str, ...]) -> Corpus:
    pairs, empty = [], []
    for chunk in _chunks(files, CHUNK_PAIRS):
        pairs += chunk.pairs
        empty += chunk.empty
    return Corpus(pairs, tuple(empty), files)


def line_list(numbers: Sequence[int], most: int = 10) -> str:
    """`3, 17, 40` or `3, 17, ... (25 in all)`: line numbers for a message."""
    shown = ", ".join(map(str, numbers[:most]))
    return shown if len(numbers) <= most else f"{shown}, ... ({len(numbers)} in all)"
