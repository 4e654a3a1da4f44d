"""Greedy, sampling and beam search: exactness, scores, and batch/padding invariance."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.nn import decoding, model, search_rules

SRC = jnp.array([[4, 5, 6, 4, 5], [6, 4, 0, 0, 0], [5, 0, 0, 0, 0]])
SRC_LEN = jnp.array([5, 2, 1])


def make(**kw):
    base = dict(
        src_vocab=7,
        tgt_vocab=7,
        src_embed=8,
        tgt_embed=8,
        enc_hidden=8,
        dec_hidden=8,
        attention="bahdanau",
        attn_dim=8,
        bidirectional=True,
    )
    cfg = model.Seq2SeqConfig(**{**base, **kw})
    params = model.init(cfg, key=jax.random.key(7))
    # Sharper output distributions than at init, so that greedy and beam disagree.
    params["output"]["w"] = params["output"]["w"] * 6.0
    return cfg, params


greedy = jax.jit(decoding.greedy, static_argnames=("cfg", "max_len"))
beam_search = jax.jit(decoding.beam_search, static_argnames=("cfg", "max_len", "beam", "alpha"))
log_prob = jax.jit(model.log_prob, static_argnames=("cfg",))


def flat(beams):
    b, k, l = beams.tokens.shape
    return beams.tokens.reshape(b * k, l), beams.lengths.reshape(-1), beams.scores.reshape(-1)


def test_greedy_scores_are_log_prob_and_outputs_well_formed():
    cfg, params = make()
    out = greedy(params, SRC, SRC_LEN, cfg=cfg, max_len=6)
    np.testing.assert_allclose(
        out.scores, log_prob(params, SRC, SRC_LEN, out.tokens, out.lengths, cfg=cfg), rtol=1e-5
    )
    for toks, n in zip(np.asarray(out.tokens), np.asarray(out.lengths)):
        assert toks[n - 1] == model.EOS and (toks[n:] == model.PAD).all()
        assert (
            model.EOS not in toks[: n - 1] and model.PAD not in toks[:n] and model.BOS not in toks
        )


def test_greedy_is_argmax_at_every_step():
    cfg, params = make(attention="luong_general", cell="lstm")
    out = greedy(params, SRC, SRC_LEN, cfg=cfg, max_len=6)
    enc = model.encode(params, SRC, SRC_LEN, cfg=cfg)
    state = model.init_decoder_state(params, enc, cfg=cfg)
    y = jnp.full((3,), model.BOS)
    for t in range(int(out.lengths.max())):
        state, logits = model.decode_step(params, enc, state, y, cfg=cfg)
        logits = logits.at[:, model.PAD].set(-jnp.inf).at[:, model.BOS].set(-jnp.inf)
        if t == 5:  # the cap forces </s>
            logits = jnp.where(jnp.arange(7) == model.EOS, logits, -jnp.inf)
        y = jnp.argmax(logits, -1)
        live = t < out.lengths
        np.testing.assert_array_equal(np.where(live, out.tokens[:, t], -1), np.where(live, y, -1))


@pytest.mark.parametrize("attention", ["none", "bahdanau"])
def test_beam_one_equals_greedy(attention):
    cfg, params = make(attention=attention, context="both")
    g = greedy(params, SRC, SRC_LEN, cfg=cfg, max_len=8)
    b = beam_search(params, SRC, SRC_LEN, cfg=cfg, max_len=8, beam=1, alpha=0.0)
    np.testing.assert_array_equal(b.tokens[:, 0], g.tokens)
    np.testing.assert_array_equal(b.lengths[:, 0], g.lengths)
    np.testing.assert_allclose(b.scores[:, 0], g.scores, rtol=1e-5)


def brute_force_best(params, cfg, src, src_len, cap, alpha):
    """Scores every sequence the decoder may emit (tokens 3..6 then </s>, length <= cap)."""
    emit = [t for t in range(cfg.tgt_vocab) if t not in (model.PAD, model.BOS, model.EOS)]
    seqs = [list(p) + [model.EOS] for n in range(cap) for p in itertools.product(emit, repeat=n)]
    tgt = jnp.array([s + [0] * (cap - len(s)) for s in seqs])
    lens = jnp.array([len(s) for s in seqs])
    n = len(seqs)
    scores = log_prob(
        params, jnp.repeat(src[None], n, 0), jnp.repeat(src_len[None], n, 0), tgt, lens, cfg=cfg
    )
    norm = scores / decoding.length_penalty(lens, alpha)
    order = np.argsort(-np.asarray(norm), kind="stable")
    return [seqs[i] for i in order], np.asarray(scores)[order]


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_wide_beam_finds_the_exact_best_sequences(alpha):
    """A 3-token vocabulary (+<unk>), cap 3: a beam as wide as the search space is exact."""
    cfg, params = make(tgt_vocab=7)
    cap = 3
    beams = beam_search(params, SRC, SRC_LEN, cfg=cfg, max_len=cap, beam=16, alpha=alpha)
    for b in range(3):
        want, want_scores = brute_force_best(params, cfg, SRC[b], SRC_LEN[b], cap, alpha)
        for j in range(5):  # the n-best list, in order
            n = int(beams.lengths[b, j])
            assert list(np.asarray(beams.tokens[b, j, :n])) == want[j]
            np.testing.assert_allclose(beams.scores[b, j], want_scores[j], rtol=1e-5)


def test_beam_scores_are_log_prob_and_beat_greedy():
    cfg, params = make(cell="lstm", attention="luong_dot", context="init", bidirectional=False)
    beams = beam_search(params, SRC, SRC_LEN, cfg=cfg, max_len=10, beam=4, alpha=0.0)
    toks, lens, scores = flat(beams)
    rep = lambda x: jnp.repeat(x, 4, axis=0)
    np.testing.assert_allclose(
        scores, log_prob(params, rep(SRC), rep(SRC_LEN), toks, lens, cfg=cfg), rtol=1e-5
    )
    assert np.all(np.diff(np.asarray(beams.normalized), axis=1) <= 0)  # best first
    g = greedy(params, SRC, SRC_LEN, cfg=cfg, max_len=10)
    assert np.all(beams.scores[:, 0] >= g.scores - 1e-5)


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_results_do_not_depend_on_batch_or_padding(search):
    """The most reported seq2seq bug: outputs changing with batch size. A sentence decoded
    alone, unpadded, gives the same tokens as beside longer, padded ones."""
    cfg, params = make(cell="gru")
    cap = SRC_LEN * 2 + 1  # a per-sentence cap, independent of the padded width
    run = (
        (lambda *a, **k: greedy(*a, **k, max_len=12))
        if search == "greedy"
        else (lambda *a, **k: beam_search(*a, **k, max_len=12, beam=3))
    )
    together = run(params, SRC, SRC_LEN, cfg=cfg, cap=cap)
    for b in range(3):
        n = int(SRC_LEN[b])
        alone = run(params, SRC[b : b + 1, :n], SRC_LEN[b : b + 1], cfg=cfg, cap=cap[b : b + 1])
        np.testing.assert_array_equal(together.tokens[b], alone.tokens[0])
        np.testing.assert_allclose(together.scores[b], alone.scores[0], rtol=1e-5)


def test_cap_bounds_each_length():
    cfg, params = make()
    cap = jnp.array([2, 4, 1])
    out = greedy(params, SRC, SRC_LEN, cfg=cfg, max_len=6, cap=cap)
    assert np.all(out.lengths <= cap) and np.all(out.lengths >= 1)
    beams = beam_search(params, SRC, SRC_LEN, cfg=cfg, max_len=6, beam=3, cap=cap)
    finite = np.isfinite(beams.scores)
    assert np.all(np.where(finite, beams.lengths <= cap[:, None], True))
    assert beams.lengths[2, 0] == 1 and beams.tokens[2, 0, 0] == model.EOS


def test_sampling_scores_are_log_prob_and_temperature_sharpens():
    cfg, params = make()
    src, src_len = jnp.repeat(SRC[:1], 64, 0), jnp.repeat(SRC_LEN[:1], 64, 0)
    run = jax.jit(decoding.sample, static_argnames=("cfg", "max_len", "temperature"))
    hot = run(params, src, src_len, cfg=cfg, max_len=6, key=jax.random.key(0))
    np.testing.assert_allclose(
        hot.scores, log_prob(params, src, src_len, hot.tokens, hot.lengths, cfg=cfg), rtol=1e-5
    )
    again = run(params, src, src_len, cfg=cfg, max_len=6, key=jax.random.key(0))
    np.testing.assert_array_equal(hot.tokens, again.tokens)
    cold = run(params, src, src_len, cfg=cfg, max_len=6, key=jax.random.key(0), temperature=1e-3)
    g = greedy(params, src, src_len, cfg=cfg, max_len=6)
    np.testing.assert_array_equal(cold.tokens, g.tokens)
    assert len({tuple(r) for r in np.asarray(hot.tokens)}) > 1


def test_top_k_and_top_p_keep_only_the_most_likely_tokens():
    """top_k=1 and a tiny nucleus both leave the argmax alone: sampling is then greedy; a wider
    top-k draws only among the k most likely tokens of each step (checked against log P)."""
    cfg, params = make()
    src, src_len = jnp.repeat(SRC[:2], 32, 0), jnp.repeat(SRC_LEN[:2], 32, 0)
    run = jax.jit(decoding.sample, static_argnames=("cfg", "max_len", "top_k", "top_p"))
    g = greedy(params, src, src_len, cfg=cfg, max_len=6)
    for kw in ({"top_k": 1}, {"top_p": 1e-6}):
        out = run(params, src, src_len, cfg=cfg, max_len=6, key=jax.random.key(1), **kw)
        np.testing.assert_array_equal(out.tokens, g.tokens)
    out = run(params, src, src_len, cfg=cfg, max_len=6, key=jax.random.key(2), top_k=2)
    assert len({tuple(r) for r in np.asarray(out.tokens)}) > 2  # it does sample
    logits = model.forward(params, src, src_len, out.tokens, cfg=cfg)  # teacher-forced
    logp = jax.nn.log_softmax(logits, -1).at[..., jnp.array([model.PAD, model.BOS])].set(-jnp.inf)
    picked = jnp.take_along_axis(logp, out.tokens[..., None], -1)
    rank = np.asarray(jnp.sum(logp > picked, axis=-1))  # int[B, L]: 0 for the most likely
    for b in range(src.shape[0]):  # every drawn token is among the 2 most likely (the last
        n = int(out.lengths[b])  # step of a 6-token output is the forced </s>)
        assert rank[b, : min(n, 5)].max() <= 1


def test_min_len_holds_back_the_end_unless_the_cap_comes_first():
    cfg, params = make()
    params["output"]["b"] = params["output"]["b"].at[model.EOS].add(20.0)  # </s> at once
    for search in (greedy, beam_search):
        short = search(params, SRC, SRC_LEN, cfg=cfg, max_len=6)
        lengths = short.lengths if search is greedy else short.lengths[:, 0]
        assert (np.asarray(lengths) == 1).all()
    run = jax.jit(decoding.greedy, static_argnames=("cfg", "max_len", "min_len"))
    out = run(params, SRC, SRC_LEN, cfg=cfg, max_len=6, min_len=3)
    assert (np.asarray(out.lengths) == 4).all()  # three tokens, then </s>
    capped = run(params, SRC, SRC_LEN, cfg=cfg, max_len=6, min_len=3, cap=jnp.array([2, 6, 6]))
    assert capped.lengths.tolist() == [2, 4, 4]
    beams = jax.jit(decoding.beam_search, static_argnames=("cfg", "max_len", "beam", "min_len"))
    out = beams(params, SRC, SRC_LEN, cfg=cfg, max_len=6, beam=3, min_len=2)
    assert (np.asarray(out.lengths) >= 3).all()


@pytest.mark.parametrize("n", [1, 2])
def test_no_repeat_ngram_writes_no_n_gram_twice(n):
    """A model that prefers one token at every step repeats it; with `no_repeat_ngram=n` no
    output (greedy, every beam hypothesis, samples) holds the same n tokens twice."""
    cfg, params = make()
    params["output"]["b"] = params["output"]["b"].at[5].add(8.0)  # token 5, again and again
    params["output"]["b"] = params["output"]["b"].at[model.EOS].add(-30.0)  # no early end

    def ngrams_distinct(tokens, length):
        out = list(np.asarray(tokens)[: int(length) - 1])  # before </s>
        grams = [tuple(out[i : i + n]) for i in range(len(out) - n + 1)]
        return len(grams) == len(set(grams))

    plain = greedy(params, SRC, SRC_LEN, cfg=cfg, max_len=7)
    assert not ngrams_distinct(plain.tokens[0], plain.lengths[0])
    static = ("cfg", "max_len", "no_repeat_ngram", "beam")
    for search, kw in (
        (decoding.greedy, {}),
        (decoding.beam_search, {"beam": 3}),
        (decoding.sample, {"key": jax.random.key(0)}),
    ):
        run = jax.jit(search, static_argnames=static if "beam" in kw else static[:3])
        out = run(params, SRC, SRC_LEN, cfg=cfg, max_len=7, no_repeat_ngram=n, **kw)
        tokens = np.asarray(out.tokens).reshape(-1, 7)
        lengths = np.asarray(out.lengths).reshape(-1)
        for row, length in zip(tokens, lengths):
            assert ngrams_distinct(row, length), (search.__name__, row)


@pytest.mark.parametrize(
    "width, block", [(30020, None), (4001, None), (997, None), (1000, 64), (40, None)]
)
def test_block_top_k_equals_lax_top_k(width, block):
    """search_rules.top_k against lax.top_k: the same values and indices, ties (repeated values,
    rows of -inf with a few finite entries, all -inf) to the lower index."""
    rng = np.random.default_rng(width)
    x = rng.integers(0, 50, (6, width)).astype(np.float32)  # many ties
    x[1] = -np.inf
    x[1, rng.integers(0, width, 3)] = 2.0  # fewer finite entries than k
    x[2] = -np.inf
    x[3, :] = 7.0
    x[4] = rng.normal(size=width).astype(np.float32)
    x[5, -1] = 99.0  # the best in the last (maybe partial) block
    for k in (1, 10):
        want = jax.lax.top_k(jnp.asarray(x), k)
        got = jax.jit(lambda x: search_rules.top_k(x, k, block))(jnp.asarray(x))
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
