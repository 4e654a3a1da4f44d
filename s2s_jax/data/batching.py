"""Encoded pairs -> fixed-shape padded batches, in a resumable seeded order.

Shapes come from a few length buckets, so the jitted train step compiles only a few times.
Every batch has exactly `batch_size` rows; rows that hold no example (a short last batch) have
`src_len == tgt_len == 0` and only padding. A real row always has `tgt_len >= 1` (its `</s>`).

Training order is a pure function of `(seed, epoch)`: the batch at position `(epoch, index)` is
the same whether or not the run was interrupted, so a checkpoint stores the position of the next
batch and `train_batches(start_epoch=..., start_index=...)` resumes exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from s2s_jax.data.token_store import Batch, TokenStore
from s2s_jax.data.vocab import EOS, PAD, Vocab
from s2s_jax.errors import DataError

Example = tuple[list[int], list[int]]  # (source ids, target ids without </s>)

# Lengths are multiples of 8 unless told otherwise: friendly to accelerator tiling, and few
# shapes. Short sequences (words, G2P) waste less with 2: a step costs in proportion to its length.
BUCKET_MULTIPLE = 8
SORT_CHUNK_BATCHES = 100  # Length-sort within windows of this many batches.


def encode_pairs(
    pairs: Sequence[tuple[str, str]],
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    *,
    max_src_len: int,
    max_tgt_len: int,
) -> tuple[list[Example], int]:
    """Encodes text pairs and drops those too long for the model.

    Args:
      pairs: (source, target) texts.
      src_vocab: source vocabulary.
      tgt_vocab: target vocabulary.
      max_src_len: longest source kept, in tokens.
      max_tgt_len: longest target kept, in tokens, counting the `</s>` added by `pad_batch`.

    Returns:
      The kept examples `(src_ids, tgt_ids)` (targets without `</s>`), in input order, and the
      number of pairs dropped (the caller reports it).
    """
    kept, dropped = [], 0
    for src, tgt in pairs:
        s, t = src_vocab.encode(src), tgt_vocab.encode(tgt)
        if len(s) > max_src_len or len(t) + 1 > max_tgt_len:
            dropped += 1
        else:
            kept.append((s, t))
    return kept, dropped


def _round_up(n: int, multiple: int = BUCKET_MULTIPLE) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def bucket_lengths(
    max_len: int, n_buckets: int = 4, multiple: int = BUCKET_MULTIPLE
) -> tuple[int, ...]:
    """Padded lengths: up to `n_buckets` multiples of `multiple`, evenly spaced, the last
    >= `max_len`.

    Examples: `bucket_lengths(50, 4) == (16, 32, 48, 56)`,
    `bucket_lengths(32, 16, multiple=2) == (2, 4, ..., 32)`.
    """
    if max_len < 1 or n_buckets < 1 or multiple < 1:
        raise DataError(
            f"bucket_lengths(max_len={max_len}, n_buckets={n_buckets}, multiple={multiple}): "
            "all must be >= 1"
        )
    top = _round_up(max_len, multiple)
    return tuple(
        sorted({_round_up(top * i // n_buckets, multiple) for i in range(1, n_buckets + 1)})
    )


def _fit(length: int, buckets: Sequence[int], what: str) -> int:
    for b in buckets:  # Buckets are sorted ascending.
        if length <= b:
            return b
    raise DataError(
        f"{what} of length {length} exceeds the largest bucket {buckets[-1]}; "
        "filter with encode_pairs(max_*_len=...) or raise the maximum length"
    )


def pad_batch(
    examples: Sequence[Example],
    *,
    batch_size: int,
    src_buckets: Sequence[int],
    tgt_buckets: Sequence[int],
) -> Batch:
    """Pads examples into a `Batch` of `batch_size` rows.

    The time dimensions are the smallest buckets that fit the longest source and the longest
    target plus its `</s>`. Missing rows are empty (lengths 0, all `<pad>`).

    Args:
      examples: at most `batch_size` (src_ids, tgt_ids) pairs, targets without `</s>`.
      batch_size: B.
      src_buckets: allowed S, ascending.
      tgt_buckets: allowed T, ascending.

    Returns:
      Batch with `src: int32[B, S]`, `src_len: int32[B]`, `tgt: int32[B, T]`, `tgt_len: int32[B]`.
    """
    if len(examples) > batch_size:
        raise ValueError(f"{len(examples)} examples do not fit a batch of {batch_size}")
    src_len = np.zeros(batch_size, np.int32)
    tgt_len = np.zeros(batch_size, np.int32)
    for i, (s, t) in enumerate(examples):
        src_len[i], tgt_len[i] = len(s), len(t) + 1
    s_pad = _fit(int(src_len.max(initial=0)), src_buckets, "a source")
    t_pad = _fit(int(tgt_len.max(initial=0)), tgt_buckets, "a target (with </s>)")
    src = np.full((batch_size, s_pad), PAD, np.int32)
    tgt = np.full((batch_size, t_pad), PAD, np.int32)
    for i, (s, t) in enumerate(examples):
        src[i, : len(s)] = s
        tgt[i, : len(t)] = t
        tgt[i, len(t)] = EOS
    return Batch(src, src_len, tgt, tgt_len)


def num_batches(n_examples: int, batch_size: int) -> int:
    """Batches per epoch: every example once, the last batch possibly short."""
    return -(-n_examples // batch_size)


def epoch_order(lengths: np.ndarray, *, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The example indices of each batch of one epoch (a pure function of its arguments).

    Shuffles, sorts each window of `SORT_CHUNK_BATCHES` batches by length so a batch holds
    examples of similar length (little padding), then shuffles the order of the batches.

    Args:
      lengths: int[N], a length per example (e.g. max of source and target length).
      batch_size: B.
      seed: the run's data seed.
      epoch: epoch number (>= 0).

    Returns:
      `num_batches(N, B)` index arrays; all but possibly one have B entries.
    """
    rng = np.random.default_rng([seed, epoch])
    small = np.int32 if len(lengths) < 2**31 else np.int64  # half the memory, same order
    perm = rng.permutation(len(lengths)).astype(small)
    window = batch_size * SORT_CHUNK_BATCHES
    batches = []
    for start in range(0, len(perm), window):
        chunk = perm[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def _check(examples: Sequence[Example] | TokenStore, batch_size: int) -> None:
    if batch_size < 1:
        raise DataError(f"batch_size={batch_size}; use >= 1")
    if not len(examples):
        raise DataError(
            "no examples to batch; check the data files, or raise the maximum "
            "lengths if filtering removed them all"
        )


def token_epoch_order(
    store: TokenStore,
    *,
    batch_tokens: int,
    row_unit: int,
    src_buckets: Sequence[int],
    tgt_buckets: Sequence[int],
    seed: int,
    epoch: int,
) -> list[tuple[np.ndarray, int]]:
    """Batches of as many pairs as fit `batch_tokens` padded tokens (fairseq's `--max-tokens`):
    `(rows, n_rows)` of each batch of one epoch, a pure function of its arguments.

    A pair's width is the larger of its padded source and target lengths (the buckets that fit
    them). A batch of width `w` is padded to `n_rows = batch_tokens // w` rows, rounded down to
    a multiple of `row_unit` (devices x micro-batches), so each width has one shape: few
    compilations. Pairs are shuffled, sorted by width within windows, cut into batches, and
    the batches shuffled (as `epoch_order`).
    """
    width = np.maximum(
        _fit_all(store.src_len, src_buckets, "a source"),
        _fit_all(store.tgt_len + 1, tgt_buckets, "a target (with </s>)"),
    )
    cap = batch_tokens // width // row_unit * row_unit
    if cap.min() < 1:
        raise DataError(
            f"batch_tokens={batch_tokens} does not hold {row_unit} row(s) of the widest pairs "
            f"({int(width.max())} tokens padded): raise it to at least "
            f"{int(width.max()) * row_unit}"
        )
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(width))
    window = SORT_CHUNK_BATCHES * max(1, int(np.median(cap)))
    lengths, batches = store.lengths(), []
    for start in range(0, len(perm), window):
        chunk = perm[start : start + window]
        chunk = chunk[np.lexsort((lengths[chunk], width[chunk]))]
        caps, i = cap[chunk], 0
        while i < len(chunk):  # caps fall along the sorted chunk: the last row decides
            k = min(int(caps[i]), len(chunk) - i)
            k = min(k, int(caps[i + k - 1]))
            batches.append((chunk[i : i + k], int(caps[i + k - 1])))
            i += k
    return [batches[i] for i in rng.permutation(len(batches))]


def _fit_all(lengths: np.ndarray, buckets: Sequence[int], what: str) -> np.ndarray:
    """The bucket of each length (vectorised `_fit`)."""
    buckets = np.asarray(buckets)
    where = np.searchsorted(buckets, lengths)
    if len(lengths) and where.max() == len(buckets):
        _fit(int(lengths.max()), tuple(buckets), what)  # raises, naming the length
    return buckets[where]


def train_batches(
    examples: Sequence[Example] | TokenStore,
    *,
    batch_size: int,
    seed: int,
    src_buckets: Sequence[int],
    tgt_buckets: Sequence[int],
    start_epoch: int = 0,
    start_index: int = 0,
    part: tuple[int, int] = (0, 1),
    batch_tokens: int = 0,
    row_unit: int = 1,
) -> Iterator[tuple[int, int, Batch]]:
    """Yields `(epoch, index, batch)` forever, in the order of `epoch_order`, or with
    `batch_tokens` of `token_epoch_order` (batches of as many pairs as fit that many tokens).

    To resume after consuming the batch at `(epoch, index)`, start at `(epoch, index + 1)`;
    an index at or past the end of an epoch carries into the following epochs.

    `part=(p, P)`: the batch holds only rows `[p * B / P, (p + 1) * B / P)` of each global batch
    of `B` rows (process `p` of `P` reads its share), padded to the shape the whole batch
    takes, so that every part agrees on it.
    """
    store = examples if isinstance(examples, TokenStore) else TokenStore.from_examples(examples)
    _check(store, 1 if batch_tokens else batch_size)
    p, procs = part
    if not batch_tokens and batch_size % procs:
        raise DataError(f"batch_size={batch_size} does not split into {procs} equal parts")
    lengths = store.lengths()

    def plan(epoch: int) -> list[tuple[np.ndarray, int]]:
        if batch_tokens:
            return token_epoch_order(
                store,
                batch_tokens=batch_tokens,
                row_unit=row_unit,
                src_buckets=src_buckets,
                tgt_buckets=tgt_buckets,
                seed=seed,
                epoch=epoch,
            )
        order = epoch_order(lengths, batch_size=batch_size, seed=seed, epoch=epoch)
        return [(rows, batch_size) for rows in order]

    epoch, index = start_epoch, start_index
    while True:
        batches = plan(epoch)
        if index >= len(batches):  # resumed past this epoch's end: carry on
            epoch, index = epoch + 1, index - len(batches)
            continue
        for i in range(index, len(batches)):
            rows, n_rows = batches[i]
            s_pad = _fit(int(store.src_len[rows].max()), src_buckets, "a source")
            t_pad = _fit(int(store.tgt_len[rows].max()) + 1, tgt_buckets, "a target (with </s>)")
            share = n_rows // procs
            mine = rows[p * share : (p + 1) * share]
            yield epoch, i, store.gather(mine, src_pad=s_pad, tgt_pad=t_pad, n_rows=share)
        epoch, index = epoch + 1, 0


def eval_batches(
    examples: Sequence[Example],
    *,
    batch_size: int,
    src_buckets: Sequence[int],
    tgt_buckets: Sequence[int],
) -> Iterator[Batch]:
    """Yields batches covering every example once, in input order, no shuffling.

    Row `r` of the `k`-th batch is example `k * batch_size + r`; rows past the end of the data
    (in the last batch) are empty, `tgt_len == 0`. For inputs without targets pass `[]` as the
    target.
    """
    _check(examples, batch_size)
    for start in range(0, len(examples), batch_size):
        yield pad_batch(
            examples[start : start + batch_size],
            batch_size=batch_size,
            src_buckets=src_buckets,
            tgt_buckets=tgt_buckets,
        )
