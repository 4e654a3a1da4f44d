"""Encoded pairs as one flat token array with an offsets index (fairseq's binarized format): a
corpus of any size opens in milliseconds as a memory map, and a batch is gathered and padded
with a few vectorised numpy operations from its rows alone.

Pair `i` holds `tokens[offsets[i] : offsets[i] + src_len[i]]` (its source ids), then
`tgt_len[i]` target ids (without `</s>`, which `gather` appends). In memory for a small corpus
(`from_examples`), memory-mapped from a folder for a prepared one (`save`, `open`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from s2s_jax.data.vocab import EOS, PAD
from s2s_jax.errors import DataError

FORMAT = 1


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
        ids = self.tokens[start : start + s + t].tolist()
        return ids[:s], ids[s:]

    def gather(self, rows: np.ndarray, *, src_pad: int, tgt_pad: int, n_rows: int):
        """Pairs `rows` padded to `[n_rows, src_pad]` and `[n_rows, tgt_pad]`, as a `Batch`:
        rows past `len(rows)` are empty (lengths 0, all `<pad>`); each target ends in `</s>`."""
        from s2s_jax.data.batching import Batch  # batching builds on this module

        rows = np.asarray(rows, np.int64)
        k = len(rows)
        src_len = np.zeros(n_rows, np.int32)
        tgt_len = np.zeros(n_rows, np.int32)
        src_len[:k], tgt_len[:k] = self.src_len[rows], self.tgt_len[rows] + 1
        starts = np.zeros(n_rows, np.int64)
        starts[:k] = self.offsets[rows]
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
        return TokenStore(self.tokens, self.offsets[rows], self.src_len[rows], self.tgt_len[rows])

    def save(self, folder: str | Path, name: str) -> None:
        """`name.tokens`, `name.offsets.npy`, `name.src_len.npy`, `name.tgt_len.npy` and
        `name.json` (format, dtype, counts) in `folder`."""
        flat = self.tokens[np.concatenate([
            np.arange(o, o + s + t) for o, s, t in zip(self.offsets, self.src_len, self.tgt_len)
        ]).astype(np.int64)] if len(self) else self.tokens  # fmt: skip
        chunk = (self.src_len, self.tgt_len, flat)
        write_chunks(folder, name, [chunk], self.tokens.dtype)

    @classmethod
    def open(cls, folder: str | Path, name: str) -> TokenStore:
        """A saved store, memory-mapped: nothing is read until a batch needs it."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / f"{name}.json").read_text())
            if meta.get("format") != FORMAT:
                raise DataError(
                    f"{folder / name}.json is format {meta.get('format')}; this version reads "
                    f"format {FORMAT}: prepare the data again"
                )
            tokens = (
                np.memmap(folder / f"{name}.tokens", meta["dtype"], "r", shape=(meta["tokens"],))
                if meta["tokens"]
                else np.zeros(0, meta["dtype"])
            )
            arrays = [np.load(folder / f"{name}.{f}.npy", mmap_mode="r") for f in
                      ("offsets", "src_len", "tgt_len")]  # fmt: skip
        except (OSError, ValueError, KeyError) as e:
            raise DataError(f"{folder}: cannot open its {name} token store ({e})") from None
        return cls(tokens, *arrays)


def write_chunks(folder: str | Path, name: str, chunks, dtype) -> dict:
    """Writes a store chunk by chunk, each `(src_len int[n], tgt_len int[n], ids[sum])` with
    the ids of its pairs laid end to end (source, then target): memory flat in the corpus size.
    Returns its `name.json` (format, dtype, pairs, tokens)."""
    folder, dtype = Path(folder), np.dtype(dtype)
    src_lens, tgt_lens, total = [], [], 0
    with open(folder / f"{name}.tokens", "wb") as f:
        for src_len, tgt_len, ids in chunks:
            np.asarray(ids, dtype).tofile(f)
            src_lens.append(np.asarray(src_len, np.int32))
            tgt_lens.append(np.asarray(tgt_len, np.int32))
            total += len(ids)
    src_len = np.concatenate(src_lens) if src_lens else np.zeros(0, np.int32)
    tgt_len = np.concatenate(tgt_lens) if tgt_lens else np.zeros(0, np.int32)
    sizes = src_len.astype(np.int64) + tgt_len
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)[: len(sizes)]
    for field, array in (("offsets", offsets), ("src_len", src_len), ("tgt_len", tgt_len)):
        np.save(folder / f"{name}.{field}.npy", array)
    meta = {"format": FORMAT, "dtype": dtype.name, "pairs": len(sizes), "tokens": total}
    (folder / f"{name}.json").write_text(json.dumps(meta) + "\n")
    return meta
