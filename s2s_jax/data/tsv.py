"""Parallel text as TSV: one pair a line, `source<TAB>target`, UTF-8."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from s2s_jax.errors import DataError


def read_tsv(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Reads `source<TAB>target` pairs.

    Blank lines are skipped; surrounding whitespace of each field is stripped; a UTF-8 byte order
    mark is tolerated.

    Args:
      path: the file.

    Returns:
      The pairs, in file order.

    Raises:
      DataError: missing or non-UTF-8 file, or a line without exactly one tab or with an empty
        side (the message gives `PATH:LINENO`).
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().split("\n")  # Universal newlines: \r\n and \r are \n here.
    except FileNotFoundError:
        raise DataError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a directory; give a .tsv file") from None
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not UTF-8 ({e.reason} at byte {e.start}); convert it to UTF-8"
        ) from None
    pairs = []
    for lineno, line in enumerate(lines, start=1):
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
        if not src or not tgt:
            side = "source" if not src else "target"
            raise DataError(f"{path}:{lineno}: empty {side}; give text on both sides of the tab")
        pairs.append((src, tgt))
    return pairs


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
