"""Parallel corpora as users bring them: one TSV file (`source<TAB>target` a line), or two
line-aligned files, line i of the one translating line i of the other (the convention of Moses,
fairseq, OpenNMT and Marian), named together as `SRC,TGT` (`train.en,train.de`). Any of them
may be gzipped (read by its first bytes, whatever its name).

A pair with an empty side is skipped, its line number kept for the report, so one blank line in
a million does not sink a job; a format error (a TSV line without its tab, files of different
lengths, text that is not UTF-8) is refused with the file and line named.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from collections.abc import Sequence

from s2s_jax.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
MANIFEST = "manifest.json"  # what makes a folder prepared data (`s2s prepare`)


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


def read_text(path: str) -> str:
    """A file's text, gunzipped if gzipped, a UTF-8 byte order mark dropped.

    Raises:
      DataError: a missing file, a folder, a damaged gzip file, or bytes that are not UTF-8
        (with the line they are on).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data[:2] == GZIP_MAGIC:
            data = gzip.decompress(data)
    except FileNotFoundError:
        raise DataError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a directory; give a file") from None
    except (OSError, EOFError) as e:  # gzip's errors: a truncated or corrupt file
        raise DataError(f"{path}: damaged gzip file ({e})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"{path}:{line}: not UTF-8 ({e.reason} at byte {e.start}); convert it to UTF-8"
        ) from None


def read_lines(path: str) -> list[str]:
    """A file's lines, without their line ends (\\n, \\r\\n or \\r)."""
    lines = read_text(path).split("\n")  # universal newlines are not applied to bytes: do it
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if lines and lines[-1] == "":
        lines.pop()  # the last line's end
    return lines


def read_corpus(spec: str | os.PathLike) -> Corpus:
    """Reads a corpus (see the module's docstring).

    Args:
      spec: a TSV file, or `SRC,TGT`.

    Raises:
      DataError: what `read_text` refuses; a TSV line without exactly one tab; two files of
        different line counts (both counts named).
    """
    files = corpus_files(spec)
    if len(files) == 1:
        return tsv_corpus(files[0])
    src_lines, tgt_lines = read_lines(files[0]), read_lines(files[1])
    if len(src_lines) != len(tgt_lines):
        raise DataError(
            f"{files[0]} has {len(src_lines)} lines but {files[1]} has {len(tgt_lines)}: "
            "line-aligned files have one line per pair"
        )
    pairs, empty = [], []
    for lineno, (src, tgt) in enumerate(zip(src_lines, tgt_lines), start=1):
        src, tgt = src.strip(), tgt.strip()
        if src and tgt:
            pairs.append((src, tgt))
        else:
            empty.append(lineno)
    return Corpus(pairs, tuple(empty), files)


def tsv_corpus(path: str) -> Corpus:
    """A TSV file's pairs, those with an empty side skipped and their lines kept."""
    pairs, empty = [], []
    for lineno, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) == 1:
            raise DataError(f"{path}:{lineno}: no tab between source and target")
        if len(fields) > 2:
            raise DataError(
                f"{path}:{lineno}: {len(fields) - 1} tabs; a line holds exactly one "
                "tab, between source and target"
            )
        src, tgt = fields[0].strip(), fields[1].strip()
        if src and tgt:
            pairs.append((src, tgt))
        else:
            empty.append(lineno)
    return Corpus(pairs, tuple(empty), (path,))


def line_list(numbers: Sequence[int], most: int = 10) -> str:
    """`3, 17, 40` or `3, 17, ... (25 in all)`: line numbers for a message."""
    shown = ", ".join(map(str, numbers[:most]))
    return shown if len(numbers) <= most else f"{shown}, ... ({len(numbers)} in all)"
