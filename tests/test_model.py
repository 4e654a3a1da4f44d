"""The encoder-decoder: teacher forcing vs stepping, padding invariance, scoring, configs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from s2s_jax.errors import ConfigError
from s2s_jax.nn import attention, model, rnn
from s2s_jax.nn.cells import get_cell

SRC = jnp.array([[4, 5, 6, 7, 8], [9, 4, 0, 0, 0], [5, 0, 0, 0, 0]])
SRC_LEN = jnp.array([5, 2, 1])
TGT = jnp.array([[4, 5, 6, 2], [7, 2, 0, 0], [2, 0, 0, 0]])
TGT_LEN = jnp.array([4, 2, 1])

VARIANTS = {
    "cho2014": dict(cell="gru", context="both", enc_hidden=12, dec_hidden=16),
    "sutskever": dict(cell="lstm", enc_layers=2, dec_layers=2, reverse_source=True, residual=True),
    "bahdanau": dict(cell="gru", bidirectional=True, attention="bahdanau", context="init"),
    "conditional": dict(
        cell="lstm", bidirectional=True, attention="bahdanau", conditional=True, dec_layers=2
    ),
    "luong_dot": dict(
        cell="lstm",
        attention="luong_dot",
        enc_hidden=8,
        dec_hidden=16,
        bidirectional=True,
        context="input",
    ),
    "luong_general_tied": dict(
        cell="rnn", attention="luong_general", tie_embeddings=True, enc_hidden=16, dec_hidden=16
    ),
    # Luong's attention without input feeding: teacher forcing runs the decoder layers first
    "unfed_lstm": dict(cell="lstm", attention="luong_general", input_feeding=False),
    "parallel_mingru": dict(  # a linear decoder: no sequential matmul in training
        cell="gru",
        dec_cell="mingru",
        bidirectional=True,
        attention="luong_general",
        input_feeding=False,
        dec_layers=2,
        residual=True,
    ),
    "parallel_sru": dict(
        cell="sru",
        attention="luong_dot",
        input_feeding=False,
        enc_hidden=8,
        dec_hidden=16,
        bidirectional=True,
        context="both",
    ),
    "fixed_context_minlstm": dict(cell="minlstm", context="both", dec_layers=2),
}


def make(name, **extra):
    base = dict(
        src_vocab=10,
        tgt_vocab=9,
        src_embed=8,
        tgt_embed=8,
        enc_hidden=12,
        dec_hidden=12,
        attn_dim=8,
    )
    cfg = model.Seq2SeqConfig(**{**base, **VARIANTS[name], **extra})
    return cfg, model.init(cfg, key=jax.random.key(0))


@pytest.mark.parametrize("name", VARIANTS)
def test_forward_equals_stepwise_decoding(name):
    cfg, params = make(name)
    logits = jax.jit(functools.partial(model.forward, cfg=cfg))(params, SRC, SRC_LEN, TGT)
    enc = model.encode(params, SRC, SRC_LEN, cfg=cfg)
    state = model.init_decoder_state(params, enc, cfg=cfg)
    y_prev = jnp.full((3,), model.BOS)
    for t in range(TGT.shape[1]):
        state, step_logits = model.decode_step(params, enc, state, y_prev, cfg=cfg)
        np.testing.assert_allclose(logits[:, t], step_logits, rtol=1e-5, atol=1e-5)
        y_prev = TGT[:, t]


def reference_step(params, enc, state, y_prev, cfg):
    """One decoder step written the textbook way: the first layer's whole input vector
    `[emb, ctx or feed]` through one matmul, readout inside the step."""
    cell = get_cell(cfg.decoder_cell)
    emb = params["tgt_embed"][y_prev]
    attend = lambda q: attention.attend(
        params["attention"], cfg.attention, q, enc.keys, enc.annotations, enc.mask
    )[0]
    if cfg.conditional:
        x = emb
    elif cfg.attention == "bahdanau":
        ctx = attend(state.carries[-1].h)
        x = jnp.concatenate([emb, ctx], axis=-1)
    elif cfg.luong:
        x = jnp.concatenate([emb, state.feed], axis=-1) if cfg.input_feeding else emb
    else:
        ctx = enc.context
        x = jnp.concatenate([emb, ctx], axis=-1) if cfg.context != "init" else emb
    carries = []
    for layer, (p, carry) in enumerate(zip(params["decoder"], state.carries)):
        carry, h = cell.step(p, carry, x @ p["w_ih"] + p["b_ih"][None])
        if layer == 0 and cfg.conditional:  # s'_t = cell(s_{t-1}, emb); s_t = cell(s'_t, ctx)
            ctx = attend(h)
            pc = params["conditional"]
            carry, h = cell.step(pc, carry, ctx @ pc["w_ih"] + pc["b_ih"][None])
        x = h + x if cfg.residual and layer > 0 else h
        carries.append(carry)
    if cfg.luong:
        ctx = attend(x)
    features = jnp.concatenate([x, ctx, emb], axis=-1)
    readout = jnp.tanh(features @ params["readout"]["w"] + params["readout"]["b"][None])
    out = params["output"]
    w = out["w"] if "w" in out else params["tgt_embed"].T
    feed = readout if cfg.luong and cfg.input_feeding else state.feed
    return model.DecoderState(tuple(carries), feed), readout @ w + out["b"][None]


@pytest.mark.parametrize("name", VARIANTS)
def test_decode_step_equals_textbook_step(name):
    cfg, params = make(name)
    enc = model.encode(params, SRC, SRC_LEN, cfg=cfg)
    state = want_state = model.init_decoder_state(params, enc, cfg=cfg)
    y_prev = jnp.full((3,), model.BOS)
    for t in range(TGT.shape[1]):
        state, logits = model.decode_step(params, enc, state, y_prev, cfg=cfg)
        want_state, want = reference_step(params, enc, want_state, y_prev, cfg)
        np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
        y_prev = TGT[:, t]


@pytest.mark.parametrize("name", VARIANTS)
def test_fused_gradients_equal_plain_autodiff(name):
    """`fused=True` (hand-written backward passes) against plain `lax.scan` autodiff; every
    other variant with `remat=True` (the scans store only their carries)."""
    cfg, params = make(name)
    remat = list(VARIANTS).index(name) % 2 == 1

    def loss(p, cfg):
        logits = model.forward(p, SRC, SRC_LEN, TGT, cfg=cfg, key=jax.random.key(3))
        return jnp.sum(model.token_log_probs(logits, TGT, TGT_LEN))

    got = jax.jit(jax.value_and_grad(loss), static_argnums=1)(
        params, cfg.replace(dropout=0.1, remat=remat)
    )
    want = jax.jit(jax.value_and_grad(loss), static_argnums=1)(
        params, cfg.replace(dropout=0.1, fused=False)
    )
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), got, want)


@pytest.mark.parametrize("name", VARIANTS)
def test_padding_and_batch_do_not_change_results(name):
    """Each pair alone, unpadded, scores and encodes as it does padded in the batch."""
    cfg, params = make(name)
    enc = model.encode(params, SRC, SRC_LEN, cfg=cfg)
    logits = model.forward(params, SRC, SRC_LEN, TGT, cfg=cfg)
    scores = model.log_prob(params, SRC, SRC_LEN, TGT, TGT_LEN, cfg=cfg)
    for b in range(3):
        s, t = int(SRC_LEN[b]), int(TGT_LEN[b])
        src, tgt = SRC[b : b + 1, :s], TGT[b : b + 1, :t]
        alone = model.encode(params, src, SRC_LEN[b : b + 1], cfg=cfg)
        np.testing.assert_allclose(enc.annotations[b, :s], alone.annotations[0], atol=1e-5)
        np.testing.assert_array_equal(enc.annotations[b, s:], 0.0)
        np.testing.assert_allclose(enc.context[b], alone.context[0], atol=1e-5)
        alone_logits = model.forward(params, src, SRC_LEN[b : b + 1], tgt, cfg=cfg)
        np.testing.assert_allclose(logits[b, :t], alone_logits[0], atol=1e-5)
        alone_score = model.log_prob(
            params, src, SRC_LEN[b : b + 1], tgt, TGT_LEN[b : b + 1], cfg=cfg
        )
        np.testing.assert_allclose(scores[b], alone_score[0], rtol=1e-5)


def test_log_prob_is_the_sum_of_stepwise_log_softmax():
    cfg, params = make("bahdanau")
    got = model.log_prob(params, SRC, SRC_LEN, TGT, TGT_LEN, cfg=cfg)
    logits = np.asarray(model.forward(params, SRC, SRC_LEN, TGT, cfg=cfg), np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = [sum(logp[b, t, TGT[b, t]] for t in range(TGT_LEN[b])) for b in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_reverse_source_reads_backwards_within_length():
    np.testing.assert_array_equal(
        model.reverse_within_length(SRC, SRC_LEN),
        [[8, 7, 6, 5, 4], [4, 9, 0, 0, 0], [5, 0, 0, 0, 0]],
    )


def test_tied_embeddings_share_the_matrix():
    cfg, params = make("luong_general_tied")
    assert "w" not in params["output"]
    cfg2, params2 = make("bahdanau")
    assert params2["output"]["w"].shape == (cfg2.readout_dim, cfg2.tgt_vocab)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(cell="transformer"), "cell must be"),
        (dict(context="sometimes"), "context must be one of"),
        (dict(attention="luong_dot", enc_hidden=8, dec_hidden=12), "luong_dot attention needs"),
        (dict(tie_embeddings=True, readout=5), "tie_embeddings needs"),
        (dict(dropout=1.0), "dropout"),
        (dict(attention="bahdanau", annotation_dropout=1.0), "annotation_dropout must be in"),
        (dict(annotation_dropout=0.3), "annotation_dropout acts on what attention reads"),
        (dict(src_word_dropout=-0.1), "src_word_dropout must be in"),
        (dict(tgt_word_dropout=1.0), "tgt_word_dropout must be in"),
        (dict(src_vocab=3), "4 specials"),
        (dict(attention="luong_general", conditional=True), "conditional .* needs bahdanau"),
    ],
)
def test_bad_config_is_a_clear_error(bad, match):
    with pytest.raises(ConfigError, match=match):
        model.Seq2SeqConfig(**bad)


def test_annotation_dropout_drops_what_attention_reads():
    """Against the same key without it: the kept annotations are the undropped ones scaled by
    1/(1 - rate), about `rate` of them are zero, the decoder reads them, and inference (no key)
    is untouched."""
    rate = 0.5
    cfg, params = make("bahdanau", dropout=0.2)
    dropped_cfg = cfg.replace(annotation_dropout=rate)
    key = jax.random.key(5)
    base = np.asarray(model.read_source(params, SRC, SRC_LEN, cfg=cfg, key=key).annotations)
    got = np.asarray(model.read_source(params, SRC, SRC_LEN, cfg=dropped_cfg, key=key).annotations)
    kept = got != 0
    np.testing.assert_allclose(got, np.where(kept, base / (1 - rate), 0.0), rtol=1e-6)
    real = np.asarray(SRC_LEN)[:, None] > np.arange(SRC.shape[1])  # [B, S]
    assert np.all(base[real] != 0)
    assert 0.35 < kept[real].mean() < 0.65
    train = lambda c: model.forward(params, SRC, SRC_LEN, TGT, cfg=c, key=key)
    assert not np.allclose(train(cfg), train(dropped_cfg))
    np.testing.assert_array_equal(
        model.forward(params, SRC, SRC_LEN, TGT, cfg=cfg),
        model.forward(params, SRC, SRC_LEN, TGT, cfg=dropped_cfg),
    )


def test_whole_vector_dropout_zeros_or_scales_each_vector():
    rate, x = 0.3, jax.random.normal(jax.random.key(0), (64, 50, 8)) + 5.0
    got = np.asarray(rnn.dropout(x, rate, jax.random.key(1), whole_vectors=True))
    dropped = np.all(got == 0, axis=-1)  # [64, 50]
    kept = ~dropped
    np.testing.assert_allclose(got[kept], np.asarray(x)[kept] / (1 - rate), rtol=1e-6)
    assert 0.25 < dropped.mean() < 0.35


def test_each_rows_dropout_masks_come_from_its_own_key():
    """Every dropout on: a row's training logits depend on its own key alone, whatever rows
    share its batch (a batch split over devices, processes or micro-batches draws the same
    masks); a single key gives row b `fold_in(key, b)`; equal rows with different keys draw
    different masks."""
    cfg, params = make(
        "bahdanau",
        enc_layers=2,
        dropout=0.3,
        annotation_dropout=0.2,
        src_word_dropout=0.2,
        tgt_word_dropout=0.2,
    )

    @jax.jit
    def train(src, src_len, tgt, keys):
        return model.forward(params, src, src_len, tgt, cfg=cfg, key=keys)

    base = jax.random.key(7)
    keys = jax.vmap(jax.random.fold_in, (None, 0))(base, jnp.arange(3))
    whole = np.asarray(train(SRC, SRC_LEN, TGT, keys))
    for rows in ([0], [1, 2], [2, 0]):
        rows = np.array(rows)
        part = train(SRC[rows], SRC_LEN[rows], TGT[rows], keys[rows])
        np.testing.assert_allclose(part, whole[rows], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(train(SRC, SRC_LEN, TGT, base), whole)
    same = lambda x: jnp.broadcast_to(x[:1], x.shape)  # the first row three times
    logits = np.asarray(train(same(SRC), same(SRC_LEN), same(TGT), keys))
    assert not np.allclose(logits[0], logits[1]) and not np.allclose(logits[1], logits[2])
    with pytest.raises(ValueError, match="one per row"):
        rnn.dropout(jnp.ones((3, 4)), 0.5, keys[:2])


@pytest.mark.parametrize("side", ["src", "tgt"])
def test_word_dropout_acts_through_the_embeddings_in_training_only(side):
    """A dropped token reads a zero embedding: with that side's embedding table all zeros,
    word dropout changes nothing; with the real table it changes the training logits (same
    key), and inference (no key) is untouched."""
    cfg, params = make("bahdanau", dropout=0.2)
    dropped_cfg = cfg.replace(**{f"{side}_word_dropout": 0.5})
    key = jax.random.key(3)

    def train(c, p):
        return np.asarray(model.forward(p, SRC, SRC_LEN, TGT, cfg=c, key=key))

    assert not np.allclose(train(cfg, params), train(dropped_cfg, params))
    zeroed = {**params, f"{side}_embed": jnp.zeros_like(params[f"{side}_embed"])}
    np.testing.assert_array_equal(train(cfg, zeroed), train(dropped_cfg, zeroed))
    np.testing.assert_array_equal(
        model.forward(params, SRC, SRC_LEN, TGT, cfg=cfg),
        model.forward(params, SRC, SRC_LEN, TGT, cfg=dropped_cfg),
    )


def _copy_batch(key, batch=16, length=5, vocab=9):
    lengths = jax.random.randint(key, (batch,), 1, length + 1)
    toks = jax.random.randint(jax.random.fold_in(key, 1), (batch, length), 4, vocab)
    mask = jnp.arange(length)[None] < lengths[:, None]
    src = jnp.where(mask, toks, 0)
    tgt = jnp.concatenate([src, jnp.zeros((batch, 1), jnp.int32)], axis=1)
    tgt = tgt.at[jnp.arange(batch), lengths].set(model.EOS)
    return src, lengths, tgt, lengths + 1


@pytest.mark.parametrize(
    "name,context",
    [
        ("cho2014", "init"),
        ("cho2014", "input"),
        ("cho2014", "both"),
        ("bahdanau", "init"),
        ("conditional", "init"),
        ("luong_dot", "input"),
        ("luong_general_tied", "both"),
        ("sutskever", "init"),
        ("parallel_mingru", "init"),
        ("fixed_context_minlstm", "input"),
    ],
)
@pytest.mark.optax  # optax promotes dtypes implicitly: standard promotion here
def test_every_variant_learns_a_copy_task(name, context):
    """Smoke test: 80 Adam steps on a fixed copy batch lower the loss a lot."""
    cfg, params = make(name, context=context, dropout=0.1)
    src, src_len, tgt, tgt_len = _copy_batch(jax.random.key(1))
    opt = optax.adam(3e-2)

    @jax.jit
    def step(params, opt_state, key):
        def loss_fn(p):
            logp = model.token_log_probs(
                model.forward(p, src, src_len, tgt, cfg=cfg, key=key), tgt, tgt_len
            )
            return -jnp.sum(logp) / jnp.sum(tgt_len).astype(jnp.float32)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = opt.init(params)
    losses = []
    for i in range(80):
        params, opt_state, loss = step(params, opt_state, jax.random.key(i))
        losses.append(float(loss))
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses


def test_the_maths_is_tested_under_strict_dtype_promotion():
    """conftest's fixture is in force here: an implicit int32 + float32 is an error."""
    with pytest.raises(jax.dtypes.TypePromotionError):
        jnp.ones(2, jnp.int32) + jnp.ones(2, jnp.float32)
