"""The linear cells (SRU, minGRU, minLSTM) and the linear recurrence: the parallel form against
the step form and a float64 numpy oracle (values at lengths 1 to 4,096, gradients), padding,
reverse, initial carries; stacked bidirectional layers; the model trains and decodes them."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from s2s_jax.nn import cells, decoding, model, rnn, scan
from s2s_jax.nn.scan import linear

LINEAR = ("sru", "mingru", "minlstm")
I, H = 3, 4


def lengths_for(steps: int) -> jnp.ndarray:
    """Mixed lengths in one batch: the full length, about half, one, and one less."""
    return jnp.array([steps, (steps + 1) // 2, 1, max(steps - 1, 1)])


def close(got, want, tol=1e-5):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=tol, atol=tol), got, want)


# ----------------------------------------------------------------------------------------------
# The float64 oracle, written from the papers' equations independently of the library.


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def g(x):
    return np.where(x >= 0, x + 0.5, sigmoid(np.minimum(x, 0)))


def numpy_layer(name, p, xs, lengths, carry0, reverse):
    """`xs: [B, T, I]`; returns outputs [B, T, H] (zeros at padding) and the final (h, c)."""
    w, b = (np.asarray(p[k], np.float64) for k in ("w_ih", "b_ih"))
    xp = np.asarray(xs, np.float64) @ w + b
    h, c = (np.asarray(v, np.float64) for v in (carry0[0], carry0[-1]))
    out = np.zeros(xp.shape[:2] + (h.shape[-1],))
    steps = xp.shape[1]
    for t in reversed(range(steps)) if reverse else range(steps):
        blocks = np.split(xp[:, t], {"sru": 4, "mingru": 2, "minlstm": 3}[name], axis=-1)
        if name == "sru":  # Lei et al. 2017 (no peepholes), learned highway projection
            x_c, k_f, k_r, x_hw = blocks
            f, r = sigmoid(k_f), sigmoid(k_r)
            new_c = f * c + (1 - f) * x_c
            new_h = r * np.tanh(new_c) + (1 - r) * x_hw
        elif name == "mingru":  # Feng et al. 2024, log-space-compatible (positive candidate)
            z = sigmoid(blocks[0])
            new_c = new_h = (1 - z) * h + z * g(blocks[1])
        else:
            f, i = sigmoid(blocks[0]), sigmoid(blocks[1])
            new_c = new_h = f / (f + i) * h + i / (f + i) * g(blocks[2])
        real = (t < np.asarray(lengths))[:, None]
        h, c = np.where(real, new_h, h), np.where(real, new_c, c)
        out[:, t] = np.where(real, new_h, 0.0)
    return out, (h, c)


def setup(name, steps, seed=0):
    cell = cells.get_cell(name)
    kp, kx, kh, kc = jax.random.split(jax.random.key(seed), 4)
    p = cell.init(kp, I, H)
    xs = jax.random.normal(kx, (4, steps, I)) * 2.0
    carry0 = cell.initial_carry(4, H)
    carry0 = cells.linear_carry(
        carry0, jax.random.normal(kh, (4, H)), jax.random.normal(kc, (4, H))
    )
    return cell, p, xs, carry0


def methods(name):
    return [m for m in linear.METHODS if not (m == "log" and name == "sru")]


# ----------------------------------------------------------------------------------------------
# Values: every method, forward and reverse, against the step form and the oracle.


@pytest.mark.parametrize("steps", [1, 7, 300, 4096])
@pytest.mark.parametrize("name", LINEAR)
def test_parallel_form_equals_step_form_and_numpy(name, steps):
    """Every method up to 300 steps; at 4,096 the one `linear.choose` takes here (an
    associative scan that long takes seconds to compile: the recurrence alone is held to the
    oracle at 4,096 steps by every method, below)."""
    cell, p, xs, carry0 = setup(name, steps)
    lengths = lengths_for(steps)
    # "loop" (the Python-loop oracle) compiles one step per time step: short sequences only.
    step_impl = "loop" if steps <= 7 else "autodiff"
    forms = methods(name) if steps < 4096 else [linear.choose(steps)]

    @jax.jit
    def every_form(p, xs, carry0):
        got = {}
        for reverse in (False, True):
            kw = dict(initial_carry=carry0, reverse=reverse)
            got["step", reverse] = scan.run(cell, p, xs, lengths, impl=step_impl, **kw)
            for m in forms:
                got[m, reverse] = linear.run(
                    cell, p, xs, lengths, carry0, reverse=reverse, method=m
                )
        return got

    got = every_form(p, xs, carry0)
    for reverse in (False, True):
        want_out, (want_h, want_c) = numpy_layer(name, p, xs, lengths, carry0, reverse)
        for form in ("step", *forms):
            out, carry = got[form, reverse]
            tol = 1e-5 if steps < 4096 else 2e-5
            close(out, want_out, tol)
            close(carry[0], want_h, tol)
            close(carry[-1], want_c, tol)
            assert type(carry) is type(carry0)
            np.testing.assert_array_equal(out[2, 1:], 0.0)  # padding emits zeros


@pytest.mark.parametrize("steps", [9, 4096])
def test_the_linear_recurrence_alone(steps):
    """`linear.scan` and `scan_log` on raw coefficients against float64 numpy: every method,
    both directions, batch- and time-major (at 4,096 steps: batch-major, each associative scan
    one way), an empty sequence (its final carry is its initial one), no lengths."""
    k = jax.random.split(jax.random.key(5), 3)
    lengths = jnp.array([steps, steps // 2, 0])
    a = jax.nn.sigmoid(jax.random.normal(k[0], (3, steps, H)))
    b = jnp.exp(jax.random.normal(k[1], (3, steps, H)))
    h0 = jax.random.normal(k[2], (3, H))

    @functools.partial(jax.jit, static_argnames=("axis",))
    def every_method(a, b, h0, axis):
        got = {}
        tm = (lambda x: jnp.swapaxes(x, 0, 1)) if axis == 0 else (lambda x: x)
        for reverse in (False, True):
            kw = dict(initial=h0, reverse=reverse, axis=axis)
            got["sequential", reverse] = linear.scan(
                tm(a), tm(b), lengths, **kw, method="sequential"
            )
            # At 4,096 steps one direction each: an associative scan that long compiles slowly.
            if steps < 4096 or not reverse:
                got["log", reverse] = linear.scan_log(tm(jnp.log(a)), tm(jnp.log(b)), lengths, **kw)
            if steps < 4096 or reverse:
                got["associative", reverse] = linear.scan(tm(a), tm(b), lengths, **kw)
        as_long = jnp.full((3,), steps)
        got["full", False] = (
            linear.scan(tm(a), tm(b), None, initial=h0, axis=axis, method="associative")[0],
            tm(linear.scan(tm(a), tm(b), as_long, initial=h0, axis=axis, method="sequential")[0]),
        )
        return {key: (tm(out), last) for key, (out, last) in got.items()}

    wants = {}
    for reverse in (False, True):
        want, h = np.zeros(a.shape), np.asarray(h0, np.float64)
        for t in reversed(range(steps)) if reverse else range(steps):
            real = (t < np.asarray(lengths))[:, None]
            h = np.where(real, np.asarray(a[:, t], np.float64) * h + np.asarray(b[:, t]), h)
            want[:, t] = np.where(real, h, 0.0)
        wants[reverse] = want, h
    for axis in (1, 0) if steps < 4096 else (1,):
        got = every_method(a, b, h0, axis)
        full, as_long = got.pop(("full", False))
        close(full, as_long)  # no lengths: every step is real
        for (_, reverse), value in got.items():
            close(value, wants[reverse], 2e-5)


# ----------------------------------------------------------------------------------------------
# Gradients.


def layer_loss(cell, lengths, run):
    """Weights every output and each carry part differently, so no gradient path hides."""

    def loss(p, xs, carry0):
        out, carry = run(cell, p, xs, lengths, carry0)
        weights = jnp.cos(jnp.arange(out.size, dtype=out.dtype)).reshape(out.shape)
        return jnp.sum(out * weights) + sum(jnp.sum(c * (k + 1.5)) for k, c in enumerate(carry))

    return loss


def parallel(method, reverse):
    return lambda c, p, xs, lengths, carry0: linear.run(
        c, p, xs, lengths, carry0, reverse=reverse, method=method
    )


def stepwise(reverse):
    return lambda c, p, xs, lengths, carry0: scan.run(
        c, p, xs, lengths, initial_carry=carry0, reverse=reverse, impl="autodiff"
    )


# (method, reverse) pairs whose gradients are checked against the step form's, per cell: every
# method both ways over the three cells (every pair compiles a scan of its own); finite
# differences check the associative scans below.
GRADIENT_CASES = {
    "sru": [("sequential", True), ("associative", False)],
    "mingru": [("associative", True), ("log", False)],
    "minlstm": [("sequential", False), ("log", True)],
}


@pytest.mark.parametrize("name", LINEAR)
def test_parallel_gradients_equal_the_step_forms(name):
    steps = 40
    cell, p, xs, carry0 = setup(name, steps, seed=1)
    lengths = lengths_for(steps)

    @jax.jit
    def grads(p, xs, carry0):
        got = {}
        for m, reverse in GRADIENT_CASES[name]:
            for run in (stepwise(reverse), parallel(m, reverse)):
                loss = layer_loss(cell, lengths, run)
                got.setdefault(m, []).append(jax.value_and_grad(loss, (0, 1, 2))(p, xs, carry0))
        return got

    for step_form, parallel_form in grads(p, xs, carry0).values():
        close(parallel_form, step_form, 1e-4)


@pytest.mark.parametrize(
    "name,method,reverse", [("sru", "associative", True), ("minlstm", "log", False)]
)
def test_parallel_gradients_against_finite_differences(name, method, reverse):
    """The two associative scans (the sequential one is autodiff of `lax.scan`), in the
    direction the test above leaves out for them; in float64, so that finite differences are
    exact enough to be strict; forward and reverse mode."""
    with jax.enable_x64(True):
        cell, p, xs, carry0 = setup(name, 5, seed=2)
        as64 = lambda tree: jax.tree.map(lambda a: a.astype(jnp.float64), tree)
        p, xs, carry0 = as64(p), as64(xs), as64(carry0)
        lengths = jnp.array([5, 3, 1, 4])
        f = jax.jit(layer_loss(cell, lengths, parallel(method, reverse)))
        check_grads(f, (p, xs, carry0), order=1, modes=["fwd", "rev"], atol=1e-6, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# scan.run's dispatch, stacked bidirectional layers.


def test_scan_run_runs_linear_cells_in_parallel_and_refuses_what_does_not_fit():
    cell, p, xs, _ = setup("mingru", 6)
    jaxpr = str(jax.make_jaxpr(lambda p, xs: scan.run(cell, p, xs, impl="hoisted"))(p, xs))
    want = str(jax.make_jaxpr(lambda p, xs: scan.run(cell, p, xs, impl="parallel"))(p, xs))
    assert jaxpr == want
    with pytest.raises(ValueError, match="parallel.*linear cells.*'gru'"):
        scan.run(cells.GRU, cells.GRU.init(jax.random.key(0), I, H), xs, impl="parallel")
    with pytest.raises(ValueError, match="fused.*'sru'"):
        scan.run(cells.SRU, cells.SRU.init(jax.random.key(0), I, H), xs, impl="fused")
    with pytest.raises(ValueError, match="no log-space form"):
        linear.run(cells.SRU, cells.SRU.init(jax.random.key(0), I, H), xs, None,
                   cells.SRU.initial_carry(4, H), method="log")  # fmt: skip


@pytest.mark.parametrize("name", LINEAR)
def test_stacked_bidirectional_layers_equal_the_step_form(name):
    """rnn.run_stack, unchanged: the parallel form ("hoisted") against the step form
    ("autodiff"), residual and dropout on; the gradients too for the SRU (whose carry has two
    parts; the others' layer gradients are checked above)."""
    cell = cells.get_cell(name)
    stack = rnn.init_stack(jax.random.key(3), cell, I, H, layers=2, bidirectional=True)
    xs = jax.random.normal(jax.random.key(4), (4, 11, I))
    lengths = lengths_for(11)

    def loss(impl, stack, xs):
        out, finals = rnn.run_stack(
            cell, stack, xs, lengths, residual=True, dropout_rate=0.3, key=jax.random.key(5),
            impl=impl, remat=impl == "hoisted",
        )  # fmt: skip
        final = sum(jnp.sum(jnp.sin(c)) for layer in finals for carry in layer for c in carry)
        return jnp.sum(jnp.tanh(out) ** 2) + final

    if name == "sru":
        grad = lambda impl: jax.jit(jax.value_and_grad(functools.partial(loss, impl), (0, 1)))
        close(grad("hoisted")(stack, xs), grad("autodiff")(stack, xs), 1e-5)
    else:
        value = lambda impl: jax.jit(functools.partial(loss, impl))
        close(value("hoisted")(stack, xs), value("autodiff")(stack, xs), 1e-5)


# ----------------------------------------------------------------------------------------------
# The model: trains, decodes independently of batch and padding.

SRC = jnp.array([[4, 5, 6, 4, 5], [6, 4, 0, 0, 0], [5, 0, 0, 0, 0]])
SRC_LEN = jnp.array([5, 2, 1])


def make(name, **kw):
    base = dict(
        src_vocab=9, tgt_vocab=9, src_embed=8, tgt_embed=8, enc_hidden=8, dec_hidden=8,
        cell=name, bidirectional=True, enc_layers=2, residual=True, attention="none",
        context="both",
    )  # fmt: skip
    cfg = model.Seq2SeqConfig(**{**base, **kw})
    params = model.init(cfg, key=jax.random.key(7))
    params["output"]["w"] = params["output"]["w"] * 6.0  # sharper: greedy and beam differ
    return cfg, params


@pytest.mark.optax  # optax promotes dtypes implicitly
@pytest.mark.parametrize("name", LINEAR)
def test_the_model_learns_a_copy_batch(name):
    cfg, params = make(name, dropout=0.1)
    key = jax.random.key(1)
    lengths = jax.random.randint(key, (16,), 1, 6)
    toks = jax.random.randint(jax.random.fold_in(key, 1), (16, 5), 4, 9)
    src = jnp.where(jnp.arange(5)[None] < lengths[:, None], toks, 0)
    tgt = jnp.concatenate([src, jnp.zeros((16, 1), jnp.int32)], axis=1)
    tgt, tgt_len = tgt.at[jnp.arange(16), lengths].set(model.EOS), lengths + 1
    opt = optax.adam(3e-2)

    @jax.jit
    def step(params, opt_state, key):
        def loss_fn(p):
            logits = model.forward(p, src, lengths, tgt, cfg=cfg, key=key)
            logp = model.token_log_probs(logits, tgt, tgt_len)
            return -jnp.sum(logp) / jnp.sum(tgt_len).astype(jnp.float32)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state, losses = opt.init(params), []
    for i in range(20):
        params, opt_state, loss = step(params, opt_state, jax.random.key(i))
        losses.append(float(loss))
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("name", LINEAR)
def test_decoding_does_not_depend_on_batch_or_padding(name):
    """Greedy search (and beam search over the SRU's two-part carry): a sentence decoded alone,
    unpadded, as beside others; and teacher forcing scores what greedy decoding wrote (the
    encoder's parallel form, the decoder's steps)."""
    cfg, params = make(name)
    cap = SRC_LEN * 2 + 1
    greedy = jax.jit(functools.partial(decoding.greedy, cfg=cfg, max_len=10))
    beam = jax.jit(functools.partial(decoding.beam_search, cfg=cfg, max_len=10, beam=3))
    for search in (greedy, beam) if name == "sru" else (greedy,):
        together = search(params, SRC, SRC_LEN, cap=cap)
        for b in (1, 2):  # the padded ones (the first is as long as the batch)
            n = int(SRC_LEN[b])
            alone = search(params, SRC[b : b + 1, :n], SRC_LEN[b : b + 1], cap=cap[b : b + 1])
            np.testing.assert_array_equal(together.tokens[b], alone.tokens[0])
            np.testing.assert_allclose(together.scores[b], alone.scores[0], rtol=1e-5)
        if search is greedy:
            log_prob = jax.jit(functools.partial(model.log_prob, cfg=cfg))
            scores = log_prob(params, SRC, SRC_LEN, together.tokens, together.lengths)
            np.testing.assert_allclose(together.scores, scores, rtol=1e-5)


@pytest.mark.parametrize("name", LINEAR)
def test_mixed_precision_runs(name):
    """bfloat16 compute, the SRU's cell state in float32: finite log-probabilities close to
    float32's."""
    cfg, params = make(name, attention="luong_general", input_feeding=False, enc_layers=1)
    tgt, tgt_len = jnp.array([[4, 5, 2], [6, 2, 0], [2, 0, 0]]), jnp.array([3, 2, 1])
    log_prob = jax.jit(model.log_prob, static_argnames="cfg")
    full = log_prob(params, SRC, SRC_LEN, tgt, tgt_len, cfg=cfg)
    half = log_prob(params, SRC, SRC_LEN, tgt, tgt_len, cfg=cfg.replace(dtype="bfloat16"))
    assert np.all(np.isfinite(half))
    np.testing.assert_allclose(half, full, rtol=0.05, atol=0.05)
