"""The fused layer (hand-written backward pass) against the plain scan runner `rnn.run`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from s2s_jax.nn import cells, fused, rnn

B, T, I, H = 3, 7, 5, 6
LENGTHS = jnp.array([7, 4, 1])


def setup(name, seed=0):
    cell = cells.get_cell(name)
    kp, kx, kc = jax.random.split(jax.random.key(seed), 3)
    carry0 = jax.tree.map(lambda z: jax.random.normal(kc, z.shape), cell.initial_carry(B, H))
    return cell, cell.init(kp, I, H), jax.random.normal(kx, (B, T, I)), carry0


def loss(run_fn, cell, p, xs, carry0, lengths, **kw):
    """Weights every output and both carry parts differently, so no gradient path hides."""
    out, carry = run_fn(cell, p, xs, lengths, initial_carry=carry0, **kw)
    weights = jnp.cos(jnp.arange(out.size, dtype=jnp.float32)).reshape(out.shape)
    return jnp.sum(out * weights) + sum(jnp.sum(c * (k + 1.5)) for k, c in enumerate(carry))


@pytest.mark.parametrize("name", ["lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("projection", ["inside", "outside"])
def test_values_and_gradients_equal_rnn_run(name, reverse, projection, maybe_jit):
    cell, p, xs, carry0 = setup(name)
    full = projection == "outside" and not reverse  # one case without padding, three with
    lengths = None if full else LENGTHS
    kw = dict(reverse=reverse, projection=projection)
    grad = lambda fn: jax.value_and_grad(
        lambda p, xs, c0: loss(fn, cell, p, xs, c0, lengths, **kw), argnums=(0, 1, 2)
    )
    got = maybe_jit(grad(fused.run))(p, xs, carry0)
    want = jax.jit(grad(rnn.run))(p, xs, carry0)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), got, want)


@pytest.mark.parametrize("name", ["lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
def test_outputs_and_final_carry_equal_rnn_run(name, reverse):
    """Padded steps emit zeros; the final carry is each sequence's after its last real step."""
    cell, p, xs, carry0 = setup(name, seed=1)
    out, carry = jax.jit(
        lambda p, xs: fused.run(
            cell, p, xs, LENGTHS, initial_carry=carry0, reverse=reverse, unroll=2
        )
    )(p, xs)
    want_out, want_carry = rnn.run(cell, p, xs, LENGTHS, initial_carry=carry0, reverse=reverse)
    np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[1, 4:], 0.0)
    assert type(carry) is type(want_carry)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    jax.tree.map(close, carry, want_carry)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_check_grads_against_finite_differences(name):
    cell, p, xs, carry0 = setup(name, seed=2)
    f = lambda p, xs, c0: loss(fused.run, cell, p, xs, c0, LENGTHS, reverse=True)
    check_grads(f, (p, xs, carry0), order=1, modes=["rev"], atol=2e-2, rtol=2e-2)


def test_gradient_of_a_stacked_bidirectional_use():
    """Two fused layers, one reversed, composed: gradients still match the plain runner."""
    cell, p, xs, _ = setup("lstm", seed=3)
    p2 = cell.init(jax.random.key(9), H, H)

    def net(run_fn, p, p2, xs):
        h, _ = run_fn(cell, p, xs, LENGTHS)
        out, _ = run_fn(cell, p2, h, LENGTHS, reverse=True)
        return jnp.sum(jnp.tanh(out) ** 2)

    got = jax.jit(jax.grad(lambda *a: net(fused.run, *a), argnums=(0, 1, 2)))(p, p2, xs)
    want = jax.jit(jax.grad(lambda *a: net(rnn.run, *a), argnums=(0, 1, 2)))(p, p2, xs)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), got, want)


def test_unsupported_cell_falls_back_to_rnn_run():
    cell, p, xs, _ = setup("rnn")
    got = jax.jit(jax.grad(lambda p: jnp.sum(fused.run(cell, p, xs, LENGTHS)[0] ** 2)))(p)
    want = jax.jit(jax.grad(lambda p: jnp.sum(rnn.run(cell, p, xs, LENGTHS)[0] ** 2)))(p)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, want)


def test_bad_projection_is_a_clear_error():
    cell, p, xs, _ = setup("lstm")
    with pytest.raises(ValueError, match="projection"):
        fused.run(cell, p, xs, projection="middle")
