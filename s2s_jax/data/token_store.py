"""Encoded pairs as one flat token array with an offsets index (fairseq's binarized format): a
corpus of any size opens in milliseconds as a memory map, and a batch is gathered and padded
with a few vectorised numpy operations from its rows alone.

Pair `i` holds `tokens[offsets[i] : offsets[i] + src_len[i]]` (its source ids), then
`tgt_len[i]` target ids (without `</s>`, which `gather` appends). In memory for a small corpus
(`from_examples`), memory-mapped from a folder for a prepared one (`save`, `open`).

A saved store proves itself: its `NAME.json` holds the SHA-256 of each 4 MiB chunk of the token
file (`data.integrity`), each checked the first time a batch reads from it; `open` checks the
counts, the index arrays' types and shapes, and that the offsets follow from the lengths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from s2s_jax.data.integrity import ChunkCheck, ChunkDigests
from s2s_jax.data.vocab import EOS, PAD
from s2s_jax.errors import DataError

FORMAT = 2
INDEX = {"offsets": np.int64, "src_len": np.int32, "tgt_len": np.int32}  # name.FIELD.npy


class Batch(NamedTuple):
    """A padded batch (numpy arrays)."""

    src: np.ndarray  # int32[B, S]: source ids, then PAD.
    src_len: np.ndarray  # int32[B]: source lengths (0 for an empty row).
    tgt: np.ndarray  # int32[B, T]: target ids, then EOS, then PAD.
    tgt_len: np.ndarray  # int32[B]: target lengths counting the EOS (0 for an empty row).


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned type that holds ids below `vocab_size` (uint16 below 65,536)."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


@dataclasses.dataclass(frozen=True, eq=False)
class TokenStore:
    """Encoded (source, target) pairs; `len(store)` of them."""

    tokens: np.ndarray  # uint16|uint32[total]: each pair's source ids, then its target ids
    offsets: np.ndarray  # int64[N]: where each pair's ids begin in `tokens`
    src_len: np.ndarray  # int32[N]: source lengths
    tgt_len: np.ndarray  # int32[N]: target lengths, without </s>
    check: ChunkCheck | None = None  # a saved store's: its token chunks checked as first read

    def __len__(self) -> int:
        return len(self.offsets)

    @classmethod
    def from_examples(cls, examples: Sequence[tuple[Sequence[int], Sequence[int]]], *, dtype=None):
        """In memory, from `(src_ids, tgt_ids)` pairs (targets without `</s>`)."""
        src_len = np.array([len(s) for s, _ in examples], np.int32)
        tgt_len = np.array([len(t) for _, t in examples], np.int32)
        sizes = src_len.astype(np.int64) + tgt_len
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        flat = [i for s, t in examples for part in (s, t) for i in part]
        top = max(flat, default=0) + 1
        tokens = np.array(flat, dtype or token_dtype(top))
        return cls(tokens, offsets[: len(examples)], src_len, tgt_len)

    def lengths(self) -> np.ndarray:
        """int32[N]: what orders the batches, the longer side of each pair (with `</s>`)."""
        return np.maximum(self.src_len, self.tgt_len + 1)

    def example(self, i: int) -> tuple[list[int], list[int]]:
        """Pair `i` as `(src_ids, tgt_ids)` lists (targets without `</s>`)."""
        start, s, t = int(self.offsets[i]), int(self.src_len[i]), int(self.tgt_len[i])
        if self.check is not None:
            self.check.check(np.array([start]), np.array([start + s + t]))
        ids = self.tokens[start : start + s + t].tolist()
        return ids[:s], ids[s:]

    def gather(self, rows: np.ndarray, *, src_pad: int, tgt_pad: int, n_rows: int):
        """Pairs `rows` padded to `[n_rows, src_pad]` and `[n_rows, tgt_pad]`, as a `Batch`:
        rows past `len(rows)` are empty (lengths 0, all `<pad>`); each target ends in `</s>`."""
        rows = np.asarray(rows, np.int64)
        k = len(rows)
        src_len = np.zeros(n_rows, np.int32)
        tgt_len = np.zeros(n_rows, np.int32)
        src_len[:k], tgt_len[:k] = self.src_len[rows], self.tgt_len[rows] + 1
        starts = np.zeros(n_rows, np.int64)
        starts[:k] = self.offsets[rows]
        if self.check is not None:  # before a byte of them is read
            self.check.check(starts[:k], starts[:k] + src_len[:k] + tgt_len[:k] - 1)
        src = self._read(starts, src_len, src_pad)
        tgt_starts = starts + src_len
        tgt_ids = np.maximum(tgt_len - 1, 0)
        tgt = self._read(tgt_starts, tgt_ids, tgt_pad)
        ends = np.arange(tgt_pad)[None, :] == tgt_ids[:, None]
        tgt[ends & (tgt_len[:, None] > 0)] = EOS
        return Batch(src, src_len, tgt, tgt_len)

    def _read(self, starts: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
        """int32[len(starts), width]: `lengths[r]` ids from `starts[r]`, then `<pad>`."""
        cols = np.arange(width)[None, :]
        inside = cols < lengths[:, None]
        where = np.where(inside, starts[:, None] + cols, 0)
        if not len(self.tokens):
            return np.full(where.shape, PAD, np.int32)
        return np.where(inside, self.tokens[where], PAD).astype(np.int32)

    def select(self, rows: np.ndarray) -> TokenStore:
        """The pairs `rows`, in that order (their index arrays copied; the tokens shared)."""
        index = self.offsets[rows], self.src_len[rows], self.tgt_len[rows]
        return TokenStore(self.tokens, *index, check=self.check)

    def save(self, folder: str | Path, name: str) -> None:
        """`name.tokens`, `name.offsets.npy`, `name.src_len.npy`, `name.tgt_len.npy` and
        `name.json` (format, dtype, counts) in `folder`."""
        flat = self.tokens[np.concatenate([
            np.arange(o, o + s + t) for o, s, t in zip(self.offsets, self.src_len, self.tgt_len)
        ]).astype(np.int64)] if len(self) else self.tokens  # fmt: skip
        chunk = (self.src_len, self.tgt_len, flat)
        write_chunks(folder, name, [chunk], self.tokens.dtype)

    @classmethod
    def open(cls, folder: str | Path, name: str, *, id_limit: int | None = None) -> TokenStore:
        """A saved store, memory-mapped: nothing of its tokens is read until a batch needs
        them, and each chunk is checked against its digest then (ids below `id_limit` too).
        Checked here, being cheap: the counts, the index arrays' types and shapes, the offsets
        against the lengths, the token file's size.

        Raises:
          DataError: a file missing, unreadable or not as `NAME.json` describes it (named).
        """
        folder = Path(folder)
        meta_path, tokens_path = folder / f"{name}.json", folder / f"{name}.tokens"
        meta = _read_meta(meta_path)
        dtype, n_tokens, pairs = np.dtype(meta["dtype"]), meta["tokens"], meta["pairs"]
        try:
            size = tokens_path.stat().st_size
        except OSError as e:
            raise DataError(f"{tokens_path}: cannot read it ({e.strerror})") from None
        if size != n_tokens * dtype.itemsize:
            raise DataError(
                f"{tokens_path} holds {size:,} bytes, but {meta_path.name} says {n_tokens:,} "
                f"{dtype.name} ids ({n_tokens * dtype.itemsize:,} bytes)"
            )
        tokens = (
            np.memmap(tokens_path, dtype, "r", shape=(n_tokens,))
            if n_tokens
            else np.zeros(0, dtype)
        )
        index = {}
        for field, want in INDEX.items():
            path = folder / f"{name}.{field}.npy"
            try:
                array = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise DataError(f"{path}: cannot read it as an array ({e})") from None
            if array.dtype != want or array.shape != (pairs,):
                raise DataError(
                    f"{path} holds {array.dtype.name}{list(array.shape)}, not "
                    f"{np.dtype(want).name}[{pairs}] as {meta_path.name} says"
                )
            index[field] = array
        _check_index(**index, n_tokens=n_tokens, where=folder / name)
        limit = id_limit if id_limit is not None else np.iinfo(dtype).max + 1
        check = ChunkCheck(tokens, meta["sha256"], meta["chunk_bytes"], id_limit=limit,
                           path=tokens_path)  # fmt: skip
        return cls(tokens, index["offsets"], index["src_len"], index["tgt_len"], check=check)


def _read_meta(path: Path) -> dict:
    """A saved store's `NAME.json`, of this version's format, every field of the right type."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read it ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise DataError(
            f"{path} is format {found}; this version reads format {FORMAT}: prepare the data again"
        )
    fields = {"dtype": str, "pairs": int, "tokens": int, "chunk_bytes": int, "sha256": list}
    for field, kind in fields.items():
        if not isinstance(meta.get(field), kind) or isinstance(meta.get(field), bool):
            raise DataError(f"{path}: its {field!r} is missing or not a {kind.__name__}")
    if meta["dtype"] not in ("uint16", "uint32") or min(meta["pairs"], meta["tokens"]) < 0:
        raise DataError(
            f"{path}: dtype {meta['dtype']!r}, {meta['pairs']} pairs, {meta['tokens']} tokens: "
            "not a store this version wrote"
        )
    if meta["chunk_bytes"] <= 0 or meta["chunk_bytes"] % 4:
        raise DataError(f"{path}: chunk_bytes {meta['chunk_bytes']}, not a multiple of 4 bytes")
    return meta


def _check_index(offsets, src_len, tgt_len, *, n_tokens: int, where: Path) -> None:
    """The lengths are not negative and lay the pairs end to end over exactly `n_tokens` ids,
    each pair where its offset says (numpy over the whole index: milliseconds per million)."""
    for field, lengths in (("src_len", src_len), ("tgt_len", tgt_len)):
        if len(lengths) and int(lengths.min()) < 0:
            row = int(np.argmin(lengths))
            raise DataError(f"{where}.{field}.npy: pair {row} has length {int(lengths[row])}")
    sizes = src_len.astype(np.int64) + tgt_len
    ends = np.cumsum(sizes)
    if len(ends) and int(ends[-1]) != n_tokens or not len(ends) and n_tokens:
        total = int(ends[-1]) if len(ends) else 0
        raise DataError(
            f"{where}.src_len.npy and .tgt_len.npy add up to {total:,} ids, but the token "
            f"file holds {n_tokens:,}"
        )
    wrong = np.flatnonzero(offsets != ends - sizes)
    if len(wrong):
        row = int(wrong[0])
        raise DataError(
            f"{where}.offsets.npy: pair {row} starts at {int(offsets[row]):,}, not at "
            f"{int(ends[row] - sizes[row]):,} where the lengths before it end ({len(wrong):,} "
            "pairs misplaced)"
        )


def write_chunks(folder: str | Path, name: str, chunks, dtype) -> dict:
    """Writes a store chunk by chunk, each `(src_len int[n], tgt_len int[n], ids[sum])` with
    the ids of its pairs laid end to end (source, then target): memory flat in the corpus size.
    Returns its `name.json` (format, dtype, pairs, tokens, and the token file's chunk digests).

    Raises:
      OSError: a file cannot be written (a full disk), with that file's name.
    """
    folder, dtype = Path(folder), np.dtype(dtype)
    src_lens, tgt_lens, total = [], [], 0
    digests = ChunkDigests()
    with _writing(folder / f"{name}.tokens") as f:
        for src_len, tgt_len, ids in chunks:
            ids = np.ascontiguousarray(ids, dtype)
            f.write(ids.data)
            digests.update(ids.data)
            src_lens.append(np.asarray(src_len, np.int32))
            tgt_lens.append(np.asarray(tgt_len, np.int32))
            total += len(ids)
    src_len = np.concatenate(src_lens) if src_lens else np.zeros(0, np.int32)
    tgt_len = np.concatenate(tgt_lens) if tgt_lens else np.zeros(0, np.int32)
    sizes = src_len.astype(np.int64) + tgt_len
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)[: len(sizes)]
    for field, array in (("offsets", offsets), ("src_len", src_len), ("tgt_len", tgt_len)):
        with _writing(folder / f"{name}.{field}.npy") as f:
            header = np.lib.format.header_data_from_array_1_0(array)
            np.lib.format.write_array_header_1_0(f, header)
            f.write(np.ascontiguousarray(array).data)
    meta = {"format": FORMAT, "dtype": dtype.name, "pairs": len(sizes), "tokens": total}
    meta |= {"chunk_bytes": digests.chunk_bytes, "sha256": digests.finish()}
    with _writing(folder / f"{name}.json") as f:
        f.write((json.dumps(meta) + "\n").encode())
    return meta


@contextlib.contextmanager
def _writing(path: Path):
    """A file open for writing whose write errors name it (numpy's `tofile` and `np.save`
    say only "N requested and M written" when the disk is full)."""
    try:
        with open(path, "wb") as f:
            yield f
    except OSError as e:
        if e.filename is None:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise
