"""How fast each candidate storage gives a training batch: the same encoded pairs (uint16 ids,
5-50 a side) written as s2s-jax's token store (a flat numpy memory map with offsets, fairseq's
design), as an Arrow IPC file (memory-mapped, `take`), and as ArrayRecord read through Grain
(its random-access source, batch-wise `__getitems__`, and its per-example dataset pipeline).
Each reader gathers batches of 256 random rows and pads them into int32 arrays, as training
needs them. Reported: the time to open, and pairs a second (median of 5 repeats).

Needs `grain`, `array-record` and `pyarrow`, which s2s-jax itself does not use:

    python -m venv /tmp/storage && /tmp/storage/bin/pip install numpy grain array-record pyarrow
    PYTHONPATH=. /tmp/storage/bin/python experiments/data_scale/storage/compare.py \
        --pairs 1000000 --out experiments/data_scale/storage/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from s2s_jax.data.token_store import TokenStore, write_chunks

B, BATCHES, REPEATS = 256, 40, 5


def synthetic(pairs: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    src_len = rng.integers(5, 51, pairs).astype(np.int32)
    tgt_len = rng.integers(5, 51, pairs).astype(np.int32)
    ids = rng.integers(4, 8000, int(src_len.sum() + tgt_len.sum())).astype(np.uint16)
    return src_len, tgt_len, ids


def pad(rows: list[np.ndarray]) -> np.ndarray:
    out = np.zeros((len(rows), max(map(len, rows))), np.int32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def timed(read, n_pairs: int, rng) -> float:
    """Pairs a second of `read(rows)` over random batches, the median of `REPEATS`."""
    rates = []
    for _ in range(REPEATS):
        batches = [np.sort(rng.choice(n_pairs, B, replace=False)) for _ in range(BATCHES)]
        started = time.perf_counter()
        for rows in batches:
            read(rows)
        rates.append(B * BATCHES / (time.perf_counter() - started))
    return statistics.median(rates)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    src_len, tgt_len, ids = synthetic(args.pairs)
    offsets = np.concatenate([[0], np.cumsum(src_len.astype(np.int64) + tgt_len)])
    rng, results = np.random.default_rng(1), {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_chunks(tmp, "train", [(src_len, tgt_len, ids)], np.uint16)
        started = time.perf_counter()
        store = TokenStore.open(tmp, "train")
        opened = time.perf_counter() - started

        def token_store(rows):
            s = int(store.src_len[rows].max())
            t = int(store.tgt_len[rows].max()) + 1
            return store.gather(rows, src_pad=s, tgt_pad=t, n_rows=B)

        rate = timed(token_store, len(store), rng)
        results["s2s-jax token store (numpy memmap)"] = (opened, rate)

        import pyarrow as pa

        pairs = [(ids[offsets[i] : offsets[i] + src_len[i]], ids[offsets[i] + src_len[i] :
                  offsets[i + 1]]) for i in range(args.pairs)]  # fmt: skip
        table = pa.table(
            {
                "src": pa.array([p[0] for p in pairs], pa.list_(pa.uint16())),
                "tgt": pa.array([p[1] for p in pairs], pa.list_(pa.uint16())),
            }
        )
        with pa.OSFile(str(tmp / "train.arrow"), "wb") as sink:
            with pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table, max_chunksize=65536)
        started = time.perf_counter()
        arrow = pa.ipc.open_file(pa.memory_map(str(tmp / "train.arrow"))).read_all()
        opened = time.perf_counter() - started

        def arrow_take(rows):
            batch = arrow.take(pa.array(rows))
            src = [np.asarray(x.values) for x in batch.column("src").chunks[0]]
            tgt = [np.asarray(x.values) for x in batch.column("tgt").chunks[0]]
            return pad(src), pad(tgt)

        results["Arrow IPC (memory-mapped, take)"] = (opened, timed(arrow_take, args.pairs, rng))

        import grain
        from array_record.python.array_record_module import ArrayRecordWriter

        writer = ArrayRecordWriter(str(tmp / "train.array_record"), "group_size:1")
        for s, t in pairs:
            writer.write(np.concatenate([[len(s)], s, t]).astype(np.uint16).tobytes())
        writer.close()
        started = time.perf_counter()
        source = grain.sources.ArrayRecordDataSource(str(tmp / "train.array_record"))
        opened = time.perf_counter() - started

        def decode(record: bytes):
            a = np.frombuffer(record, np.uint16)
            return a[1 : 1 + a[0]], a[1 + a[0] :]

        def grain_batch(rows):
            decoded = [decode(r) for r in source.__getitems__(rows.tolist())]
            return pad([d[0] for d in decoded]), pad([d[1] for d in decoded])

        results["ArrayRecord, Grain source __getitems__ (one call a batch)"] = (
            opened,
            timed(grain_batch, args.pairs, rng),
        )
        dataset = (
            grain.MapDataset.source(source)
            .seed(0)
            .shuffle()
            .map(decode)
            .batch(B, batch_fn=lambda xs: (pad([x[0] for x in xs]), pad([x[1] for x in xs])))
        )
        started, n = time.perf_counter(), 10
        for i in range(n):
            dataset[i]
        rate = B * n / (time.perf_counter() - started)
        results["ArrayRecord, Grain MapDataset (shuffle, map, batch: per example)"] = (opened, rate)
    record = {
        "pairs": args.pairs,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        "batch": B,
        "results": {
            k: {"open_s": round(o, 4), "pairs_per_s": round(r)} for k, (o, r) in results.items()
        },  # fmt: skip
    }
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    for name, (o, r) in results.items():
        print(f"{name:70s} open {o * 1000:8.1f} ms  {r:10,.0f} pairs/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
