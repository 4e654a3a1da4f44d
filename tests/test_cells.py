"""Cells against hand-written numpy equations, gradient checks, and torch on converted weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from s2s_jax.nn import cells, interop, rnn

B, I, H = 3, 5, 4


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_step(name, p, h, c, x):
    """The textbook equations, written independently of cells.py."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    gi = x @ p["w_ih"] + p["b_ih"]
    gh = h @ p["w_hh"] + p["b_hh"]
    if name == "rnn":
        return np.tanh(gi + gh), None
    if name == "gru":
        r = sigmoid(gi[:, :H] + gh[:, :H])
        z = sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
        n = np.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
        return (1 - z) * n + z * h, None
    i, f, g, o = (
        (gi + gh)[:, :H],
        (gi + gh)[:, H : 2 * H],
        (gi + gh)[:, 2 * H : 3 * H],
        (gi + gh)[:, 3 * H :],
    )
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    return sigmoid(o) * np.tanh(c), c


@pytest.mark.parametrize("name", ["rnn", "gru", "lstm"])
def test_step_matches_numpy_equations(name):
    cell = cells.get_cell(name)
    kp, kh, kc, kx = jax.random.split(jax.random.key(0), 4)
    p = cell.init(kp, I, H)
    h = jax.random.normal(kh, (B, H))
    c = jax.random.normal(kc, (B, H))
    x = jax.random.normal(kx, (B, I))
    carry = cells.LSTMCarry(h, c) if name == "lstm" else cells.HiddenCarry(h)
    new, out = cell.step(p, carry, cell.project(p, x))
    want_h, want_c = numpy_step(
        name, p, np.asarray(h, np.float64), np.asarray(c, np.float64), np.asarray(x, np.float64)
    )
    np.testing.assert_allclose(out, want_h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new.h, want_h, rtol=1e-5, atol=1e-6)
    if name == "lstm":
        np.testing.assert_allclose(new.c, want_c, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["rnn", "gru", "lstm"])
def test_step_gradients(name):
    cell = cells.get_cell(name)
    p = cell.init(jax.random.key(1), I, H)
    carry = cell.initial_carry(B, H)
    carry = jax.tree.map(lambda z: z + 0.3, carry)
    x = jax.random.normal(jax.random.key(2), (B, I))
    f = lambda p, carry, x: cell.step(p, carry, cell.project(p, x))[1]
    check_grads(f, (p, carry, x), order=2, modes=["fwd", "rev"], atol=1e-2, rtol=1e-2)


def test_unknown_cell_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown cell 'lstmm'"):
        cells.get_cell("lstmm")


torch = pytest.importorskip("torch", reason="torch (the `bench` extra) not installed")


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_layer_equals_torch_on_converted_weights(kind, bidirectional):
    torch.manual_seed(0)
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind](
        I, H, num_layers=2, batch_first=True, bidirectional=bidirectional
    )
    lengths = [6, 3, 1]
    xs = torch.randn(B, 6, I)
    packed = torch.nn.utils.rnn.pack_padded_sequence(xs, lengths, batch_first=True)
    with torch.no_grad():
        out, state = module(packed)
    want, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=6)
    want_h = (state[0] if kind == "lstm" else state).numpy()  # [layers*dirs, B, H]
    stack = interop.from_torch_rnn(
        {k: v.numpy() for k, v in module.state_dict().items()},
        num_layers=2,
        bidirectional=bidirectional,
    )
    got, finals = rnn.run_stack(
        cells.get_cell(kind), stack, jnp.asarray(xs.numpy()), jnp.asarray(lengths)
    )
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)
    got_h = np.stack([carry.h for layer in finals for carry in layer])
    np.testing.assert_allclose(got_h, want_h, rtol=1e-4, atol=1e-5)


def test_cell_equals_torch_lstm_cell():
    torch.manual_seed(1)
    module = torch.nn.LSTMCell(I, H)
    x, h, c = torch.randn(B, I), torch.randn(B, H), torch.randn(B, H)
    with torch.no_grad():
        want_h, want_c = module(x, (h, c))
    p = interop.from_torch_cell({k: v.numpy() for k, v in module.state_dict().items()})
    carry, out = cells.LSTM.step(
        p,
        cells.LSTMCarry(jnp.asarray(h.numpy()), jnp.asarray(c.numpy())),
        cells.project(p, jnp.asarray(x.numpy())),
    )
    np.testing.assert_allclose(out, want_h.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(carry.c, want_c.numpy(), rtol=1e-5, atol=1e-6)
