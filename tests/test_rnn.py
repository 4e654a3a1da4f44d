"""The scan runner against the Python-loop oracle; masking, reverse, stacks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.nn import cells, rnn

B, T, I, H = 3, 7, 5, 6
LENGTHS = jnp.array([7, 4, 1])


def setup(name, seed=0):
    cell = cells.get_cell(name)
    kp, kx = jax.random.split(jax.random.key(seed))
    return cell, cell.init(kp, I, H), jax.random.normal(kx, (B, T, I))


@pytest.mark.parametrize(
    "name,projection",
    [("rnn", "inside"), ("gru", "outside"), ("lstm", "inside"), ("lstm", "outside")],
)
@pytest.mark.parametrize("reverse", [False, True])
def test_scan_equals_loop_values_and_gradients(name, reverse, projection, maybe_jit):
    cell, p, xs = setup(name)

    def loss(run_fn, p, xs):
        out, carry = run_fn(cell, p, xs, LENGTHS, reverse=reverse)
        return jnp.sum(out**2) + jnp.sum(carry.h)

    scan = lambda *a, **kw: rnn.run(*a, projection=projection, unroll=2, **kw)
    got = maybe_jit(jax.value_and_grad(lambda p, xs: loss(scan, p, xs), argnums=(0, 1)))(p, xs)
    want = jax.value_and_grad(lambda p, xs: loss(rnn.run_loop, p, xs), argnums=(0, 1))(p, xs)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), got, want)


@pytest.mark.parametrize("name", ["gru", "lstm"])
@pytest.mark.parametrize("reverse", [False, True])
def test_padding_changes_nothing(name, reverse):
    """Each sequence alone, unpadded, gives the same outputs and final carry as in the batch."""
    cell, p, xs = setup(name)
    out, carry = rnn.run(cell, p, xs, LENGTHS, reverse=reverse)
    for b, n in enumerate(LENGTHS.tolist()):
        alone, alone_carry = rnn.run(cell, p, xs[b : b + 1, :n], reverse=reverse)
        np.testing.assert_allclose(out[b, :n], alone[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(out[b, n:], 0.0)
        jax.tree.map(
            lambda a, c: np.testing.assert_allclose(a[b], c[0], rtol=1e-5, atol=1e-6),
            carry,
            alone_carry,
        )


def test_reverse_reads_each_sequence_backwards():
    """reverse=True equals a forward run over each sequence reversed within its own length."""
    cell, p, xs = setup("gru", seed=3)
    out, _ = rnn.run(cell, p, xs, LENGTHS, reverse=True)
    for b, n in enumerate(LENGTHS.tolist()):
        fwd, _ = rnn.run(cell, p, xs[b : b + 1, :n][:, ::-1])
        np.testing.assert_allclose(out[b, :n], fwd[0, ::-1], rtol=1e-5, atol=1e-6)


def test_bidirectional_stack_shapes_residual_and_dropout():
    cell = cells.LSTM
    stack = rnn.init_stack(jax.random.key(0), cell, I, H, layers=3, bidirectional=True)
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    out, finals = rnn.run_stack(cell, stack, xs, LENGTHS)
    assert out.shape == (B, T, 2 * H)
    assert len(finals) == 3 and all(len(f) == 2 for f in finals)
    # the top layer's backward final state is its output at t = 0
    np.testing.assert_allclose(finals[-1][1].h, out[:, 0, H:], rtol=1e-6)
    # forward final state = output at each sequence's last real step
    last = out[jnp.arange(B), LENGTHS - 1, :H]
    np.testing.assert_allclose(finals[-1][0].h, last, rtol=1e-6)
    np.testing.assert_array_equal(out[1, 4:], 0.0)
    residual, _ = rnn.run_stack(cell, stack, xs, LENGTHS, residual=True)
    assert residual.shape == out.shape and not np.allclose(residual, out)
    dropped, _ = rnn.run_stack(cell, stack, xs, LENGTHS, dropout_rate=0.5, key=jax.random.key(2))
    again, _ = rnn.run_stack(cell, stack, xs, LENGTHS, dropout_rate=0.5, key=jax.random.key(2))
    np.testing.assert_array_equal(dropped, again)  # dropout is a function of the key
    assert not np.allclose(dropped, rnn.run_stack(cell, stack, xs, LENGTHS)[0])
