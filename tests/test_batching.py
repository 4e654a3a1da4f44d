"""Padding, bucketing, and the resumable batch order."""

import itertools

import numpy as np
import pytest

from s2s_jax.data import batching
from s2s_jax.data.batching import Batch, bucket_lengths, eval_batches, pad_batch, train_batches
from s2s_jax.data.token_store import TokenStore
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


def test_token_store_batches_are_pad_batch_of_the_planned_rows(tmp_path):
    """The flat store gathers, batch for batch, what `pad_batch` builds from the lists (the
    plain reference), in memory and memory-mapped from disk; it keeps each pair as given."""
    ex = _examples(203) + [([5], [])]  # an empty target: only </s>
    kw = dict(batch_size=16, seed=3, **BUCKETS)
    store = TokenStore.from_examples(ex)
    store.save(tmp_path, "train")
    opened = TokenStore.open(tmp_path, "train")
    assert isinstance(opened.tokens, np.memmap) and opened.tokens.dtype == np.uint16
    assert [opened.example(i) for i in range(len(ex))] == ex
    lengths = np.array([max(len(s), len(t) + 1) for s, t in ex])
    for epoch in (0, 1):
        order = batching.epoch_order(lengths, batch_size=16, seed=3, epoch=epoch)
        start = epoch * len(order)
        got = itertools.islice(train_batches(opened, start_index=start, **kw), len(order))
        for index, (rows, (e, i, batch)) in enumerate(zip(order, got)):
            want = pad_batch([ex[j] for j in rows], batch_size=16, **BUCKETS)
            assert (e, i) == (epoch, index)
            for x, y in zip(batch, want):
                np.testing.assert_array_equal(x, y)


def test_each_part_is_its_share_of_the_global_batch():
    """Process p of P reads rows [p B/P, (p+1) B/P) of each global batch, padded to the whole
    batch's shape: the parts side by side are the single-process batch."""
    ex = _examples(150)
    kw = dict(batch_size=16, seed=5, **BUCKETS)
    whole = list(itertools.islice(train_batches(ex, **kw), 12))
    parts = [list(itertools.islice(train_batches(ex, part=(p, 4), **kw), 12)) for p in range(4)]
    for k, (_, _, batch) in enumerate(whole):
        shares = [parts[p][k][2] for p in range(4)]
        assert all(s.src.shape == (4, batch.src.shape[1]) for s in shares)
        for field, x in enumerate(batch):
            np.testing.assert_array_equal(np.concatenate([s[field] for s in shares]), x)
    with pytest.raises(DataError, match="3 equal parts"):
        next(train_batches(ex, part=(0, 3), **kw))


def test_token_store_widens_its_ids_for_large_vocabularies(tmp_path):
    ex = [([70_000, 4], [65_536]), ([5], [6, 7])]
    store = TokenStore.from_examples(ex)
    assert store.tokens.dtype == np.uint32
    store.save(tmp_path, "big")
    assert [TokenStore.open(tmp_path, "big").example(i) for i in range(2)] == ex
    (tmp_path / "big.json").write_text('{"format": 99}')
    with pytest.raises(DataError, match="format 99"):
        TokenStore.open(tmp_path, "big")


def test_token_batches_fill_their_budget_with_few_shapes():
    """`batch_tokens`: every pair once an epoch; a batch's padded tokens (rows x its wider side)
    within the budget, its rows a multiple of the unit, one row count per width; resumable."""
    ex = _examples(700, max_len=23)
    kw = dict(batch_size=0, seed=2, batch_tokens=160, row_unit=2, **BUCKETS)
    store = TokenStore.from_examples(ex)
    epoch0 = batching.token_epoch_order(
        store, batch_tokens=160, row_unit=2, src_buckets=BUCKETS["src_buckets"],
        tgt_buckets=BUCKETS["tgt_buckets"], seed=2, epoch=0,
    )  # fmt: skip
    batches = list(itertools.islice(train_batches(ex, **kw), len(epoch0)))
    assert [e for e, _, _ in batches] == [0] * len(epoch0)
    assert sorted(r for _, _, b in batches for r in _rows(b)) == sorted(ex)
    rows_of_width = {}
    for _, _, b in batches:
        width = max(b.src.shape[1], b.tgt.shape[1])
        assert b.src.shape[0] * width <= 160 and b.src.shape[0] % 2 == 0
        assert rows_of_width.setdefault(width, b.src.shape[0]) == b.src.shape[0]
    assert rows_of_width == {8: 20, 16: 10, 24: 6}
    real = sum(int((b.tgt_len > 0).sum()) for _, _, b in batches)
    assert real / sum(b.src.shape[0] for _, _, b in batches) > 0.9  # few empty rows
    full = list(itertools.islice(train_batches(ex, **kw), len(epoch0) + 20))
    resumed = itertools.islice(train_batches(ex, start_epoch=0, start_index=len(epoch0) - 3,
                                             **kw), 23)  # fmt: skip
    for (e1, i1, b1), (e2, i2, b2) in zip(full[len(epoch0) - 3 :], resumed, strict=True):
        assert (e1, i1) == (e2, i2)
        for x, y in zip(b1, b2):
            np.testing.assert_array_equal(x, y)
    with pytest.raises(DataError, match="raise it to at least 48"):
        next(train_batches(ex, **{**kw, "batch_tokens": 40}))
