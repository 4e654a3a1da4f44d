"""What a prepared store's self-checks cost as it grows: opening it (the counts, the offsets
against the lengths), the SHA-256 of its index files (what `s2s train` checks at open), the
first batch (its token chunks checked before they are read) against the same batch unchecked,
every chunk of the token file (the background thread's work over the first epoch), and
batches once every chunk is checked.

    python experiments/data_scale/integrity.py --dir /tmp/integrity --sizes 1000000 10000000

A synthetic store per size (5-50 ids a side, uint16), written with `write_chunks` as
`s2s prepare` writes one; times are medians of `--repeats` in this process (the files in the
page cache: the second open onwards).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from s2s_jax.data.integrity import file_sha256
from s2s_jax.data.token_store import TokenStore, write_chunks

BATCH = 64
CHUNK_PAIRS = 1 << 20


def build(folder: Path, pairs: int) -> None:
    """`pairs` random pairs, written a million at a time."""
    rng = np.random.default_rng(0)

    def chunks():
        for begin in range(0, pairs, CHUNK_PAIRS):
            n = min(CHUNK_PAIRS, pairs - begin)
            src_len, tgt_len = rng.integers(5, 51, n), rng.integers(5, 51, n)
            yield src_len, tgt_len, rng.integers(4, 8000, int(src_len.sum() + tgt_len.sum()))

    folder.mkdir(parents=True, exist_ok=True)
    write_chunks(folder, "train", chunks(), np.uint16)


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(folder: Path, repeats: int) -> dict:
    store = TokenStore.open(folder, "train")
    rows = np.random.default_rng(1).choice(len(store), BATCH, replace=False)
    gather = dict(src_pad=56, tgt_pad=56, n_rows=BATCH)
    plain = dataclasses.replace(store, check=None)
    index = [folder / f"train.{f}" for f in ("json", "offsets.npy", "src_len.npy", "tgt_len.npy")]
    fresh = lambda: TokenStore.open(folder, "train")  # noqa: E731
    done = fresh()
    done.check.check_all()
    first = []
    for _ in range(repeats):  # each on a fresh store: no chunk checked yet
        checked = fresh()
        started = time.perf_counter()
        checked.gather(rows, **gather)
        first.append(time.perf_counter() - started)
    return {
        "pairs": len(store),
        "token_bytes": store.tokens.nbytes,
        "open_s": timed(fresh, repeats),
        "index_sha256_s": timed(lambda: [file_sha256(p) for p in index], repeats),
        "first_batch_checked_s": statistics.median(first),
        "first_batch_unchecked_s": timed(lambda: plain.gather(rows, **gather), repeats),
        "every_chunk_s": timed(lambda: fresh().check.check_all(), repeats),
        "batches_per_s_chunks_left": 1 / timed(lambda: store.gather(rows, **gather), 50),
        "batches_per_s_all_checked": 1 / timed(lambda: done.gather(rows, **gather), 50),
        "batches_per_s_unchecked": 1 / timed(lambda: plain.gather(rows, **gather), 50),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, required=True, help="where the stores are written")
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    for pairs in args.sizes:
        folder = args.dir / str(pairs)
        if not (folder / "train.json").exists():
            build(folder, pairs)
        record = measure(folder, args.repeats) | {"machine": platform.processor() or "cpu"}
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
