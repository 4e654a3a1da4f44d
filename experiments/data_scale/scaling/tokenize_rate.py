"""Encoding rate on one core: the text path's `encode_pairs` (one `Vocab.encode` call a side of
each pair, as `s2s train --train FILE` encodes at every start) against the chunk encoder of
`s2s prepare` (`Vocab.encode_many`), on the same pairs with the same vocabularies; median of
five passes each, taken in turn, after one that fills the word caches.

    python experiments/data_scale/scaling/tokenize_rate.py data/scale/100000.tsv --kind word
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from s2s_jax.data import Vocab, encode_pairs
from s2s_jax.data.corpus import read_corpus
from s2s_jax.training import prepared_data


def rates(encoders, pairs, passes: int = 5) -> list[float]:
    """Pairs a second of each encoder, the median of `passes` passes taken in turn (one of
    each, then again), so that a slower spell of the machine falls on all of them alike."""
    for encode in encoders:
        encode(pairs)  # warm: the word cache, the allocator
    times = [[] for _ in encoders]
    for _ in range(passes):
        for encode, taken in zip(encoders, times):
            started = time.perf_counter()
            encode(pairs)
            taken.append(time.perf_counter() - started)
    return [len(pairs) / statistics.median(taken) for taken in times]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tsv")
    parser.add_argument("--kind", default="word", help="char, word or sentencepiece")
    parser.add_argument("--pairs", type=int, default=100_000)
    args = parser.parse_args(argv)
    pairs = read_corpus(args.tsv).pairs[: args.pairs]
    vocabs = [
        Vocab.build([p[side] for p in pairs], args.kind, max_size=8000, sp_vocab_size=8000)
        for side in (0, 1)
    ]
    prepared_data._VOCABS = tuple(vocabs)
    limits = dict(max_src_len=10**6, max_tgt_len=10**6)
    text, prepare = rates(
        [lambda ps: encode_pairs(ps, *vocabs, **limits), prepared_data._encode], pairs
    )
    record = {
        "pairs": len(pairs),
        "kind": args.kind,
        "load": os.getloadavg()[0],
        "encode_pairs_per_s": round(text),
        "prepare_encode_per_s": round(prepare),
        "ratio": round(prepare / text, 2),
    }
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
