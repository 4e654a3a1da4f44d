"""RNN cells as pairs of pure functions: tanh RNN (book eq. 10.8), GRU (Cho 2014), LSTM, and
the linear cells SRU, minGRU and minLSTM (`linear_cells`), which also run in parallel over time.

Every cell is a `Cell` of four functions:

* `init(key, in_dim, hidden) -> params`
* `project(params, x) -> x_proj`: the input matmul `x @ w_ih + b_ih`. Elementwise in time, so
  `scan.run` may apply it to all steps at once outside the scan or inside each step.
* `step(params, carry, x_proj_t) -> (carry, h_t)`: the recurrence, given projected inputs.
* `initial_carry(batch, hidden) -> carry` (zeros).

A linear cell also has `linear` (a `linear_cells.LinearForm`): its state update is
`c_t = a_t * c_{t-1} + b_t` with `a_t, b_t` functions of `x_proj_t` alone, so `scan.run` runs it
over a whole sequence at once ("parallel", `scan.linear`); its `step` is the same update, one
step at a time (decoding, and the other implementations).

Gate order and bias placement follow PyTorch's `nn.LSTM` (i, f, g, o) and `nn.GRU` (r, z, n,
with `b_hn` inside the reset product), so weights convert one to one (see `interop.py`).
Weights are stored as `[in, out]` (the transpose of torch's `[out, in]`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from s2s_jax.nn import linear_cells
from s2s_jax.nn.affine import affine
from s2s_jax.nn.linear_cells import LinearForm

Array = jax.Array


class HiddenCarry(NamedTuple):
    """Carry of the tanh RNN and the GRU."""

    h: Array  # float32[B, H]


class LSTMCarry(NamedTuple):
    """Carry of the LSTM."""

    h: Array  # float32[B, H] (bfloat16 under mixed precision)
    c: Array  # float32[B, H], always: the cell state sums over many steps


class SRUCarry(NamedTuple):
    """Carry of the SRU: its output is not its state."""

    h: Array  # float32[B, H] (bfloat16 under mixed precision)
    c: Array  # float32[B, H], always, as the LSTM's


class Cell(NamedTuple):
    """An RNN cell as pure functions; see the module docstring."""

    name: str
    gates: int  # how many H-wide blocks the stacked weights have
    init: Callable
    project: Callable
    step: Callable
    initial_carry: Callable
    linear: LinearForm | None = None  # the parallel form of a linear cell


def _init_stacked(key, in_dim: int, hidden: int, gates: int) -> dict:
    """Uniform(-1/sqrt(H), 1/sqrt(H)) like torch's RNN layers, weights as [in, gates*H]."""
    k = iter(jax.random.split(key, 4))
    bound = 1.0 / jnp.sqrt(hidden)
    u = lambda shape: jax.random.uniform(next(k), shape, jnp.float32, -bound, bound)
    return {
        "w_ih": u((in_dim, gates * hidden)),
        "w_hh": u((hidden, gates * hidden)),
        "b_ih": u((gates * hidden,)),
        "b_hh": u((gates * hidden,)),
    }


def project(params: dict, x: Array) -> Array:
    """Input projection `float32[..., I] -> float32[..., G*H]`, shared by all cells."""
    return affine(x, params["w_ih"], params["b_ih"])


def _hidden_carry(batch: int, hidden: int, dtype=jnp.float32) -> HiddenCarry:
    return HiddenCarry(jnp.zeros((batch, hidden), dtype))


def _lstm_carry(batch: int, hidden: int, dtype=jnp.float32) -> LSTMCarry:
    return LSTMCarry(jnp.zeros((batch, hidden), dtype), jnp.zeros((batch, hidden), jnp.float32))


def rnn_step(params: dict, carry: HiddenCarry, xp: Array) -> tuple[HiddenCarry, Array]:
    """h_t = tanh(U x_t + b + W h_{t-1}) (eq. 10.8). `xp: float32[B, H]` is `U x_t + b_ih`."""
    h = jnp.tanh(xp + affine(carry.h, params["w_hh"], params["b_hh"]))
    return HiddenCarry(h), h


def gru_step(params: dict, carry: HiddenCarry, xp: Array) -> tuple[HiddenCarry, Array]:
    """GRU as torch.nn.GRU: r, z, n gates; `xp: float32[B, 3H]`."""
    hp = affine(carry.h, params["w_hh"], params["b_hh"])
    x_r, x_z, x_n = jnp.split(xp, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(hp, 3, axis=-1)
    r = jax.nn.sigmoid(x_r + h_r)
    z = jax.nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * h_n)
    h = (1.0 - z) * n + z * carry.h
    return HiddenCarry(h), h


def lstm_step(params: dict, carry: LSTMCarry, xp: Array) -> tuple[LSTMCarry, Array]:
    """LSTM as torch.nn.LSTM: i, f, g, o gates; `xp: float32[B, 4H]`. The cell state stays
    in its own dtype (float32) when the gates are bfloat16."""
    gates = xp + affine(carry.h, params["w_hh"], params["b_hh"])
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    state = carry.c.dtype
    c = jax.nn.sigmoid(f).astype(state) * carry.c + (jax.nn.sigmoid(i) * jnp.tanh(g)).astype(state)
    h = jax.nn.sigmoid(o) * jnp.tanh(c).astype(gates.dtype)
    return LSTMCarry(h, c), h


def _cell(name: str, gates: int, step: Callable, initial_carry: Callable) -> Cell:
    def init(key, in_dim: int, hidden: int) -> dict:
        return _init_stacked(key, in_dim, hidden, gates)

    return Cell(name, gates, init, project, step, initial_carry)


def _sru_carry(batch: int, hidden: int, dtype=jnp.float32) -> SRUCarry:
    return SRUCarry(jnp.zeros((batch, hidden), dtype), jnp.zeros((batch, hidden), jnp.float32))


def linear_carry(like, h: Array | None, c: Array):
    """A carry of `like`'s type holding output `h` and state `c` (the state is a carry's last
    field; a one-field carry's state is its output, and `h` is ignored)."""
    return type(like)(c) if len(like) == 1 else type(like)(h, c)


def _linear_cell(name: str, gates: int, form: LinearForm, initial_carry: Callable) -> Cell:
    def init(key, in_dim: int, hidden: int) -> dict:
        return linear_cells.init(key, in_dim, hidden, gates)

    def step(params: dict, carry, xp: Array):
        """One step of `c_t = a_t c_{t-1} + b_t` in the state's dtype; `xp: float32[B, G*H]`.
        `params` is unused: every weight is in the input projection."""
        del params
        a, b = form.coefficients(xp)
        state = carry[-1]
        c = a.astype(state.dtype) * state + b.astype(state.dtype)
        h = form.output(xp, c.astype(xp.dtype))
        return linear_carry(carry, h, c), h

    return Cell(name, gates, init, project, step, initial_carry, form)


RNN = _cell("rnn", 1, rnn_step, _hidden_carry)
GRU = _cell("gru", 3, gru_step, _hidden_carry)
LSTM = _cell("lstm", 4, lstm_step, _lstm_carry)
SRU = _linear_cell("sru", 4, linear_cells.SRU, _sru_carry)
MINGRU = _linear_cell("mingru", 2, linear_cells.MINGRU, _hidden_carry)
MINLSTM = _linear_cell("minlstm", 3, linear_cells.MINLSTM, _hidden_carry)

CELLS: dict[str, Cell] = {c.name: c for c in (RNN, GRU, LSTM, SRU, MINGRU, MINLSTM)}


def get_cell(name: str) -> Cell:
    """The cell called `name` (one of `CELLS`: rnn, gru, lstm, sru, mingru, minlstm)."""
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"unknown cell {name!r}: choose one of {sorted(CELLS)}") from None
