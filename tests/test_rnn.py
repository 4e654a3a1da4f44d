"""Stacked, bidirectional, residual layers and dropout on `scan.run`."""

import jax
import jax.numpy as jnp
import numpy as np

from s2s_jax.nn import cells, rnn

B, T, I, H = 3, 7, 5, 6
LENGTHS = jnp.array([7, 4, 1])


def setup(name, seed=0):
    cell = cells.get_cell(name)
    kp, kx = jax.random.split(jax.random.key(seed))
    return cell, cell.init(kp, I, H), jax.random.normal(kx, (B, T, I))


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
