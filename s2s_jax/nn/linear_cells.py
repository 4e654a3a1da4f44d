"""Cells whose recurrence is elementwise linear in the state, `c_t = a_t * c_{t-1} + b_t`, with
`a_t` and `b_t` functions of the input alone: they train in parallel over time
(`scan.linear`) and decode step by step like the others (`cells.SRU`, `MINGRU`, `MINLSTM`).

Each cell's weights are one input projection `xp = x @ w_ih + b_ih` (`cells.project`, `G` blocks
of `H` columns, no recurrent weights); a `LinearForm` says what the recurrence does with it:

* `coefficients(xp: float32[..., G*H]) -> (a, b)`, each `float32[..., H]`;
* `log_coefficients(xp) -> (log a, log b)` where `b > 0` always (None where `b` may be negative);
* `output(xp, c) -> h`: the cell's output from its state and its projected input.

All three are elementwise in time, so one function serves a single step (`[B, ...]`) and a
whole sequence (`[B, T, ...]`).

The variants, exactly:

* **SRU** (Lei et al., arXiv:1709.02755, the first version: no `v * c_{t-1}` terms in the
  gates, so nothing but the state is recurrent). Blocks `(x~, f, r, x')`:
  `f_t = σ(W_f x_t + b_f)`, `r_t = σ(W_r x_t + b_r)`, `c_t = f_t c_{t-1} + (1 - f_t) (W x_t + b)`,
  `h_t = r_t tanh(c_t) + (1 - r_t) (W' x_t + b')`. The highway term is always a learned
  projection `W' x_t + b'` (the paper's identity `x_t` only fits when the input width is `H`):
  a cell's step sees only `x @ w_ih + b_ih` (the decoder splits that matmul over the embedding
  and the attention context), so the highway must be part of it.
* **minGRU** (Feng et al. 2024, "Were RNNs All We Needed?", the log-space version the paper
  trains). Blocks `(z, h~)`: `z_t = σ(k_t)`, `h_t = (1 - z_t) h_{t-1} + z_t g(h~_t)` with
  `g(x) = x + 0.5 if x >= 0 else σ(x)`, which keeps the candidate positive (so `b > 0`).
* **minLSTM** (same paper, log-space version). Blocks `(f, i, h~)`: `f' = f / (f + i)`,
  `i' = i / (f + i)`, `h_t = f'_t h_{t-1} + i'_t g(h~_t)`; computed as `f' = σ(d)`,
  `i' = σ(-d)` with `d = log f - log i = softplus(-k_i) - softplus(-k_f)`, which never divides.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class LinearForm(NamedTuple):
    """What a linear cell's recurrence does with its projected input; see the module docstring."""

    coefficients: Callable
    log_coefficients: Callable | None
    output: Callable


def init(key, in_dim: int, hidden: int, gates: int) -> dict:
    """`w_ih: float32[in, G*H]`, `b_ih: float32[G*H]`, Uniform(-1/sqrt(in), 1/sqrt(in)) like
    torch's `nn.Linear` (the paper's minGRU/minLSTM layers)."""
    kw, kb = jax.random.split(key)
    bound = 1.0 / jnp.sqrt(in_dim)
    return {
        "w_ih": jax.random.uniform(kw, (in_dim, gates * hidden), jnp.float32, -bound, bound),
        "b_ih": jax.random.uniform(kb, (gates * hidden,), jnp.float32, -bound, bound),
    }


def g(x: Array) -> Array:
    """The positive candidate of the log-space minGRU/minLSTM: x + 0.5 for x >= 0, σ(x) below
    (continuous, increasing, > 0)."""
    return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(x))


def log_g(x: Array) -> Array:
    """`log g(x)`; the relu keeps the branch that `where` discards finite (no NaN gradients)."""
    return jnp.where(x >= 0, jnp.log(jax.nn.relu(x) + 0.5), -jax.nn.softplus(-x))


def _sru_coefficients(xp: Array) -> tuple[Array, Array]:
    x_c, k_f, _, _ = jnp.split(xp, 4, axis=-1)
    return jax.nn.sigmoid(k_f), jax.nn.sigmoid(-k_f) * x_c


def _sru_output(xp: Array, c: Array) -> Array:
    _, _, k_r, x_hw = jnp.split(xp, 4, axis=-1)
    r = jax.nn.sigmoid(k_r)
    return r * jnp.tanh(c) + (1.0 - r) * x_hw


def _mingru_coefficients(xp: Array) -> tuple[Array, Array]:
    k, x_h = jnp.split(xp, 2, axis=-1)
    return jax.nn.sigmoid(-k), jax.nn.sigmoid(k) * g(x_h)  # 1 - σ(k) = σ(-k)


def _mingru_log_coefficients(xp: Array) -> tuple[Array, Array]:
    k, x_h = jnp.split(xp, 2, axis=-1)
    return -jax.nn.softplus(k), -jax.nn.softplus(-k) + log_g(x_h)


def _minlstm_gates(xp: Array) -> tuple[Array, Array]:
    """`d = log f - log i` (f' = σ(d), i' = σ(-d)) and the candidate's pre-activation."""
    k_f, k_i, x_h = jnp.split(xp, 3, axis=-1)
    return jax.nn.softplus(-k_i) - jax.nn.softplus(-k_f), x_h


def _minlstm_coefficients(xp: Array) -> tuple[Array, Array]:
    d, x_h = _minlstm_gates(xp)
    return jax.nn.sigmoid(d), jax.nn.sigmoid(-d) * g(x_h)


def _minlstm_log_coefficients(xp: Array) -> tuple[Array, Array]:
    d, x_h = _minlstm_gates(xp)
    return -jax.nn.softplus(-d), -jax.nn.softplus(d) + log_g(x_h)


def _state_is_output(xp: Array, c: Array) -> Array:
    del xp
    return c


SRU = LinearForm(_sru_coefficients, None, _sru_output)
MINGRU = LinearForm(_mingru_coefficients, _mingru_log_coefficients, _state_is_output)
MINLSTM = LinearForm(_minlstm_coefficients, _minlstm_log_coefficients, _state_is_output)
