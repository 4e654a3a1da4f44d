"""Padding, bucketing, and the resumable batch order."""

import itertools

import numpy as np
import pytest

from s2s_jax.data import batching
from s2s_jax.data.batching import Batch, bucket_lengths, eval_batches, pad_batch, train_batches
from s2s_jax.data.vocab import EOS, UNK, Vocab
from s2s_jax.errors import DataError

BUCKETS = dict(src_buckets=(8, 16, 24), tgt_buckets=(8, 16, 24))


def _examples(n, seed=0, max_len=20):
    rng = np.random.default_rng(seed)
    return [
        (
            rng.integers(4, 30, rng.integers(1, max_len + 1)).tolist(),
            rng.integers(4, 30, rng.integers(0, max_len)).tolist(),
        )
        for _ in range(n)
    ]


def _rows(batch):
    """The (src, tgt without </s>) of each non-empty row, read back from the arrays."""
    out = []
    for s, sl, t, tl in zip(*batch):
        if tl > 0:
            assert t[tl - 1] == EOS and not t[tl:].any() and not s[sl:].any()
            out.append((s[:sl].tolist(), t[: tl - 1].tolist()))
    return out


def test_bucket_lengths():
    assert bucket_lengths(50, 4) == (16, 32, 48, 56)
    assert bucket_lengths(64, 2) == (32, 64)
    assert bucket_lengths(5, 4) == (8,)
    assert bucket_lengths(17, 1) == (24,)
    with pytest.raises(DataError):
        bucket_lengths(0, 3)
    assert bucket_lengths(32, 16, multiple=2) == tuple(range(2, 33, 2))
    assert bucket_lengths(21, 4, multiple=1) == (5, 10, 15, 21)
    assert bucket_lengths(5, 4, multiple=4) == (4, 8)  # 8 >= 5: the last bucket fits max_len
    with pytest.raises(DataError, match="multiple=0"):
        bucket_lengths(8, 2, multiple=0)


def test_finer_buckets_pad_less_and_keep_the_examples():
    rng = np.random.default_rng(0)
    examples = [
        (rng.integers(4, 9, n).tolist(), rng.integers(4, 9, m).tolist())
        for n, m in rng.integers(1, 12, (200, 2))
    ]
    widths = {}
    for multiple in (8, 2):
        buckets = bucket_lengths(12, 16, multiple=multiple)
        batches = itertools.islice(
            train_batches(
                examples, batch_size=16, seed=3, src_buckets=buckets, tgt_buckets=buckets
            ),
            13,  # one epoch
        )
        seen, widths[multiple] = [], 0
        for _, _, b in batches:
            assert b.src.shape[1] % multiple == 0 and b.tgt.shape[1] % multiple == 0
            # the narrowest allowed width that holds the batch's longest row
            assert b.src.shape[1] - multiple < b.src_len.max() <= b.src.shape[1]
            seen += _rows(b)
            widths[multiple] += b.src.shape[1] + b.tgt.shape[1]
        assert sorted(seen) == sorted(examples)
    assert widths[2] < widths[8]


def test_pad_batch_picks_smallest_buckets_and_fills_rows():
    b = pad_batch([([5, 6, 7], [8, 9]), ([5] * 9, [])], batch_size=4, **BUCKETS)
    assert isinstance(b, Batch)
    assert b.src.shape == (4, 16) and b.tgt.shape == (4, 8)
    assert all(x.dtype == np.int32 for x in b)
    np.testing.assert_array_equal(b.src_len, [3, 9, 0, 0])
    np.testing.assert_array_equal(b.tgt_len, [3, 1, 0, 0])
    np.testing.assert_array_equal(b.tgt[0], [8, 9, EOS, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(b.tgt[1, :2], [EOS, 0])
    assert not b.src[2:].any() and not b.tgt[2:].any()
    # A target of 7 tokens needs 8 slots with its </s>; 8 tokens need the next bucket.
    assert pad_batch([([4], [4] * 7)], batch_size=1, **BUCKETS).tgt.shape == (1, 8)
    assert pad_batch([([4], [4] * 8)], batch_size=1, **BUCKETS).tgt.shape == (1, 16)
    with pytest.raises(DataError, match="largest bucket"):
        pad_batch([([4] * 25, [4])], batch_size=1, **BUCKETS)


def test_encode_pairs_filters_and_counts():
    v = Vocab.build(["abcd"], "char")
    pairs = [("ab", "abc"), ("abcde", "a"), ("a", "abcd"), ("z", "a")]
    kept, dropped = batching.encode_pairs(pairs, v, v, max_src_len=4, max_tgt_len=4)
    assert dropped == 2  # source of 5 > 4; target 4 + </s> > 4
    assert kept == [(v.encode("ab"), v.encode("abc")), ([UNK], v.encode("a"))]


def test_epoch_covers_every_example_once_with_small_padding():
    ex = _examples(1003)
    batches = list(
        itertools.islice(
            train_batches(ex, batch_size=16, seed=0, **BUCKETS), batching.num_batches(1003, 16)
        )
    )
    assert [(e, i) for e, i, _ in batches] == [(0, i) for i in range(63)]
    rows = [r for _, _, b in batches for r in _rows(b)]
    assert sorted(rows) == sorted(ex)
    assert sum(int((b.tgt_len == 0).sum()) for _, _, b in batches) == 63 * 16 - 1003
    # Length grouping: far fewer padded source slots than a random order would give.
    grouped = sum(b.src.size - b.src_len.sum() for _, _, b in batches)
    shuffled = sum(
        pad_batch(ex[i : i + 16], batch_size=16, **BUCKETS).src.size for i in range(0, 1003, 16)
    ) - sum(len(s) for s, _ in ex)
    assert grouped < 0.7 * shuffled


def test_order_depends_on_seed_and_epoch_only():
    lengths = np.arange(100) % 7
    a = batching.epoch_order(lengths, batch_size=8, seed=1, epoch=2)
    b = batching.epoch_order(lengths, batch_size=8, seed=1, epoch=2)
    c = batching.epoch_order(lengths, batch_size=8, seed=1, epoch=3)
    assert all((x == y).all() for x, y in zip(a, b))
    assert any(len(x) != len(y) or (x != y).any() for x, y in zip(a, c))


@pytest.mark.parametrize("stop", [0, 5, 12, 13, 30])
def test_resume_equals_uninterrupted(stop):
    ex = _examples(200)  # 13 batches of 16 per epoch
    kw = dict(batch_size=16, seed=7, **BUCKETS)
    full = list(itertools.islice(train_batches(ex, **kw), 45))
    epoch, index, _ = full[stop - 1] if stop else (0, -1, None)
    resumed = list(
        itertools.islice(
            train_batches(ex, start_epoch=epoch, start_index=index + 1, **kw), 45 - stop
        )
    )
    assert len(resumed) == len(full[stop:])
    for (e1, i1, b1), (e2, i2, b2) in zip(full[stop:], resumed):
        assert (e1, i1) == (e2, i2)
        for x, y in zip(b1, b2):
            np.testing.assert_array_equal(x, y)


def test_eval_batches_cover_each_example_once_in_order():
    ex = _examples(37)
    batches = list(eval_batches(ex, batch_size=8, **BUCKETS))
    assert len(batches) == 5 and all(b.src.shape[0] == 8 for b in batches)
    rows = [r for b in batches for r in _rows(b)]
    assert rows == ex
    np.testing.assert_array_equal(batches[-1].tgt_len[5:], 0)
    assert (batches[-1].tgt_len[:5] > 0).all()


def test_empty_data_is_an_error():
    with pytest.raises(DataError, match="no examples"):
        next(train_batches([], batch_size=4, seed=0, **BUCKETS))
    with pytest.raises(DataError, match="no examples"):
        next(eval_batches([], batch_size=4, **BUCKETS))
