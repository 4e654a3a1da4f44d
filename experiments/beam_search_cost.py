"""What batched beam search costs on Multi30k's validation sentences, and what two choices gain:
decoding sentences in order of length (as `Translator` does) rather than in input order, and
ranking the beam x vocabulary candidates with `search_rules.top_k` rather than `lax.top_k`.

The model is `experiments/multi30k/attention.toml`'s shape with random weights; each sentence's
output is capped at its reference's length in pieces, so that it ends about where a trained
model's would (random weights never choose </s> by themselves). Beam 5, batches of 64, every
combination timed in one run (medians of --reps), compilation apart.

    M=path/to/multi30k/raw
    python experiments/beam_search_cost.py --data $M \
        --json experiments/results/beam_search_cost_cpu.json
"""

from __future__ import annotations

import argparse
import functools
import gzip
import io
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import sentencepiece as spm

from s2s_jax.bench.report import machine
from s2s_jax.data import pad_batch
from s2s_jax.nn import decoding, model

BEAM, ROWS, PIECES = 5, 64, 6000
BUCKETS = (8, 16, 24, 32, 48, 64, 80)


def pieces(data: Path) -> tuple[list[list[int]], list[list[int]]]:
    """The validation sources and references as sentencepiece ids (models trained on each
    side's training text, as the Multi30k runs do), shifted past the 4 specials."""
    read = lambda name: gzip.open(data / name, "rt", encoding="utf-8").read().splitlines()
    sides = []
    for lang in ("en", "de"):
        proto = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(read(f"train.{lang}.gz")),
            model_writer=proto,
            vocab_size=PIECES,
            character_coverage=1.0,
            minloglevel=2,
        )
        sp = spm.SentencePieceProcessor(model_proto=proto.getvalue())
        sides.append([[i + 4 for i in sp.encode(line)] for line in read(f"val.{lang}.gz")])
    return sides[0], sides[1]


def decode_all(search, params, src, tgt, order) -> int:
    """Every sentence in batches of ROWS taken in `order`; returns the loop's steps in all."""
    steps, pending = 0, []
    for start in range(0, len(order), ROWS):
        rows = order[start : start + ROWS]
        b = pad_batch(
            [(src[i], []) for i in rows], batch_size=ROWS, src_buckets=BUCKETS, tgt_buckets=(8,)
        )
        cap = np.ones(ROWS, np.int32)
        cap[: len(rows)] = [len(tgt[i]) + 1 for i in rows]  # the pieces and </s>
        steps += int(cap.max())
        pending.append(search(params, jnp.asarray(b.src), jnp.asarray(b.src_len), cap=cap))
    jax.block_until_ready(pending)
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="Multi30k's data/task1/raw")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    src, tgt = pieces(args.data)
    vocab = PIECES + 4
    cfg = model.Seq2SeqConfig(
        src_vocab=vocab, tgt_vocab=vocab, cell="gru", bidirectional=True, enc_hidden=256,
        dec_hidden=256, src_embed=256, tgt_embed=256, attention="bahdanau", attn_dim=256,
        tie_embeddings=True,
    )  # fmt: skip
    params = model.init(cfg, key=jax.random.key(0))
    orders = {
        "input order": list(range(len(src))),
        "length order": sorted(range(len(src)), key=lambda i: len(src[i])),
    }
    rankers = {"search_rules.top_k": decoding.top_k, "lax.top_k": jax.lax.top_k}
    searches = {}
    for name, ranker in rankers.items():
        decoding.top_k = ranker  # traced into this jit's program only
        search = jax.jit(functools.partial(decoding.beam_search, cfg=cfg, max_len=80, beam=BEAM))
        for order in orders.values():
            decode_all(search, params, src, tgt, order)  # compiles every shape
        searches[name] = search
    decoding.top_k = rankers["search_rules.top_k"]
    times = {(r, o): [] for r in searches for o in orders}
    steps = {}
    for _ in range(args.reps):  # round robin: drift hits every combination alike
        for (ranker, order), ts in times.items():
            start = time.perf_counter()
            steps[order] = decode_all(searches[ranker], params, src, tgt, orders[order])
            ts.append(time.perf_counter() - start)
    results = []
    for (ranker, order), ts in times.items():
        median = statistics.median(ts)
        results.append(
            {
                "ranker": ranker,
                "order": order,
                "median_s": median,
                "sentences_per_s": len(src) / median,
                "loop_steps": steps[order],
                "ms_per_step": 1e3 * median / steps[order],
            }
        )
        print(
            f"{ranker:>18}, {order}: {median:.2f} s, {len(src) / median:.0f} sentences/s, "
            f"{steps[order]} steps, {1e3 * median / steps[order]:.1f} ms a step"
        )
    if args.json:
        out = {"machine": machine(), "sentences": len(src), "beam": BEAM, "rows": ROWS}
        args.json.write_text(json.dumps(out | {"results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
