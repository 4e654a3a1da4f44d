"""Parallel text as TSV: one pair a line, `source<TAB>target`, UTF-8."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from s2s_jax.data.corpus import read_lines, tsv_corpus
from s2s_jax.errors import DataError


def read_tsv(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Reads `source<TAB>target` pairs, strictly: a pair with an empty side is an error (a
    corpus for training skips it instead: `s2s_jax.data.corpus.read_corpus`).

    Blank lines are skipped; surrounding whitespace of each field is stripped; a UTF-8 byte order
    mark is tolerated; a gzipped file is read as its text.

    Args:
      path: the file.

    Returns:
      The pairs, in file order.

    Raises:
      DataError: missing or non-UTF-8 file, or a line without exactly one tab or with an empty
        side (the message gives `PATH:LINENO`).
    """
    path = os.fspath(path)
    corpus = tsv_corpus(path)
    if corpus.empty:
        lineno = corpus.empty[0]
        fields = read_lines(path)[lineno - 1].split("\t")
        side = "source" if not fields[0].strip() else "target"
        raise DataError(f"{path}:{lineno}: empty {side}; give text on both sides of the tab")
    return corpus.pairs


def with_references(pairs: Sequence[tuple[str, str]]) -> tuple[list, list[list[str]]]:
    """One pair per distinct source (with its first target), in first-seen order, and all of
    that source's targets as its references: a source listed on several lines (CMUdict's
    variant pronunciations) counts as right when the output matches any of them."""
    refs: dict[str, list[str]] = {}
    for src, tgt in pairs:
        refs.setdefault(src, [])
        if tgt not in refs[src]:
            refs[src].append(tgt)
    return [(src, targets[0]) for src, targets in refs.items()], list(refs.values())


def write_tsv(path: str | os.PathLike, pairs: Iterable[tuple[str, str]]) -> None:
    """Writes pairs as `source<TAB>target` lines (UTF-8, "\\n" line ends).

    Raises:
      DataError: a field holding a tab or a line break, which `read_tsv` could not read back.
    """
    path = os.fspath(path)
    lines = []
    for i, (src, tgt) in enumerate(pairs):
        for field in (src, tgt):
            if any(c in field for c in "\t\n\r"):
                raise DataError(
                    f"pair {i} has a tab or line break inside {field!r}; "
                    "remove it before writing TSV"
                )
        lines.append(f"{src}\t{tgt}\n")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(lines)
