"""The flax.nnx modules: the same outputs as the pure functions, the parameter pytree round trip
both ways, nnx.Optimizer making the update optax makes on the pure pytree, our encoder inside a
user's nnx model, and a trained workdir loaded into the module."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from s2s_jax import cli
from s2s_jax.data import Batch
from s2s_jax.inference.translate import Translator
from s2s_jax.nn import model
from s2s_jax.nn.flax_modules import Encoder, Seq2Seq
from s2s_jax.nn.loss import loss_terms

CFG = model.Seq2SeqConfig(
    src_vocab=13,
    tgt_vocab=11,
    cell="lstm",
    src_embed=6,
    tgt_embed=5,
    enc_hidden=7,
    dec_hidden=9,
    bidirectional=True,
    attention="bahdanau",
    attn_dim=4,
    dropout=0.3,
)


def batch():
    src_len, tgt_len = jnp.array([4, 1, 6], jnp.int32), jnp.array([3, 5, 2], jnp.int32)
    ids = jax.random.randint(jax.random.key(1), (2, 3, 6), 4, 11, jnp.int32)
    src = jnp.where(jnp.arange(6) < src_len[:, None], ids[0], 0)
    tgt = jnp.where(jnp.arange(6) < tgt_len[:, None], ids[1], 0)
    return Batch(src, src_len, tgt, tgt_len)


def same(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_modules_compute_what_the_pure_functions_compute():
    params = model.init(CFG, key=jax.random.key(0))
    b = batch()
    m = Seq2Seq(CFG, params)
    same(m.pytree(), params)  # the module's state is the parameter pytree
    expected = model.forward(params, b.src, b.src_len, b.tgt, cfg=CFG)
    np.testing.assert_array_equal(m(b.src, b.src_len, b.tgt), expected)
    # the two halves, as a user would chain them
    np.testing.assert_allclose(
        m.decoder(m.encoder(b.src, b.src_len), b.tgt), expected, rtol=1e-6, atol=1e-6
    )
    # dropout: the module's key is the next of the rngs' "dropout" stream; the same key, the
    # same masks as the pure function
    key = nnx.Rngs(dropout=7).dropout()
    train = model.forward(params, b.src, b.src_len, b.tgt, cfg=CFG, key=key)
    np.testing.assert_array_equal(m(b.src, b.src_len, b.tgt, rngs=nnx.Rngs(dropout=7)), train)
    assert not np.allclose(train, expected)  # dropout did drop
    # and back: a module built from the module's pytree is the same module
    same(Seq2Seq(CFG, m.pytree()).pytree(), params)
    # fresh: model.init with the rngs' next "params" key
    fresh = model.init(CFG, key=nnx.Rngs(params=3).params())
    same(Seq2Seq(CFG, rngs=nnx.Rngs(params=3)).pytree(), fresh)


def test_nnx_optimizer_makes_the_pure_optax_update():
    params = model.init(CFG, key=jax.random.key(0))
    b = batch()
    tx = optax.adam(1e-2)

    def pure_loss(p):
        loss, sums = loss_terms(p, b, None, model_cfg=CFG)
        return loss / sums["tokens"]

    m = Seq2Seq(CFG, params)
    optimizer = nnx.Optimizer(m, tx, wrt=nnx.Param)

    def module_loss(m):
        logits = m(b.src, b.src_len, b.tgt)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, b.tgt)
        mask = jnp.arange(b.tgt.shape[1])[None] < b.tgt_len[:, None]
        return jnp.sum(jnp.where(mask, nll, 0.0)) / jnp.sum(mask)

    @jax.jit  # compiled once: eager grads of the scans dispatch op by op
    def pure_step(params, opt_state):
        updates, opt_state = tx.update(jax.grad(pure_loss)(params), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    @nnx.jit
    def module_step(m, optimizer):
        optimizer.update(m, nnx.grad(module_loss)(m))

    opt_state = tx.init(params)
    for _ in range(3):
        params, opt_state = pure_step(params, opt_state)
        module_step(m, optimizer)
    for x, y in zip(jax.tree.leaves(m.pytree()), jax.tree.leaves(params)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


class Tagger(nnx.Module):
    """A user's model around our encoder: one label per source token (the book's fig. 10.3)."""

    def __init__(self, cfg, labels: int, rngs: nnx.Rngs):
        self.encoder = Encoder(cfg, rngs=rngs)
        self.out = nnx.Linear(cfg.enc_out, labels, rngs=rngs)

    def __call__(self, src, src_len):
        return self.out(self.encoder(src, src_len).annotations)


def test_our_encoder_trains_inside_a_users_model():
    cfg = CFG.replace(dropout=0.0)
    tagger = Tagger(cfg, labels=2, rngs=nnx.Rngs(0))
    before = tagger.encoder.pytree()
    optimizer = nnx.Optimizer(tagger, optax.adam(3e-2), wrt=nnx.Param)
    b = batch()
    labels = (b.src % 2).astype(jnp.int32)  # the parity of each token: needs the embedding
    mask = jnp.arange(6)[None] < b.src_len[:, None]

    def loss(t):
        nll = optax.softmax_cross_entropy_with_integer_labels(t(b.src, b.src_len), labels)
        return jnp.sum(jnp.where(mask, nll, 0.0)) / jnp.sum(mask)

    @nnx.jit
    def step(t, optimizer):
        value, grads = nnx.value_and_grad(loss)(t)
        optimizer.update(t, grads)
        return value

    losses = [float(step(tagger, optimizer)) for _ in range(60)]
    assert losses[-1] < 0.2 * losses[0]
    changed = jax.tree.map(lambda x, y: bool(jnp.any(x != y)), tagger.encoder.pytree(), before)
    assert all(jax.tree.leaves(changed))  # every encoder parameter was trained


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("copy")
    argv = ["train", "--workdir", str(path), "--task", "copy", "--steps", "4", "--no-progress"]
    argv += ["--set", "enc_hidden=16", "--set", "dec_hidden=16", "--set", "attention=luong_general"]
    assert cli.main(argv + ["--set", "batch_size=8", "--set", "eval_examples=8"]) == 0
    return path


def test_a_workdir_loads_into_the_module(workdir):
    t = Translator.from_workdir(workdir)
    m = Seq2Seq(t.cfg, t.params)
    src = jnp.array([t.src_vocab.encode("abcd")], jnp.int32)
    tgt = jnp.array([t.tgt_vocab.encode("abcd") + [model.EOS]], jnp.int32)
    logits = m(src, jnp.array([4]), tgt)
    log_p = jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(logits), tgt[..., None], -1))
    assert float(log_p) == pytest.approx(t.score([("abcd", "abcd")])[0], abs=1e-4)
