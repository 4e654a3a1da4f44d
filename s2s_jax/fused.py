"""A faster RNN layer: `rnn.run` with a hand-written backward pass (`jax.custom_vjp`), cuDNN-style.

Autodiff of `lax.scan` computes, at every reverse step, the weight gradients `h_{t-1}^T dg_t`
and `x_t^T dg_t` as small matmuls (contraction over B only) and accumulates them in the carry.
Here the reverse scan runs only the `dh` (and `dc`) recurrence and emits the gate gradients
`dg: [T, B, G*H]`; the weight gradients, bias gradients and input gradients are then three large
matmuls over all T*B rows at once, which run near the machine's matmul peak.

The forward pass under differentiation saves the gate activations (LSTM: i, f, g, o and the
previous carry; GRU: r, z, n, the hidden-side candidate `W_hn h + b_hn` and the previous h),
so the backward pass recomputes nothing but `tanh(c_t)`. Without differentiation `run` is a plain
scan that saves nothing.

`run` has `rnn.run`'s signature and semantics (masking by lengths: a padded step keeps the
carry and emits zeros; `reverse=True` respects each sequence's length), and is checked against
it by the tests. Cells other than "lstm" and "gru" fall back to `rnn.run`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from s2s_jax import hoisted, rnn
from s2s_jax.cells import Cell, HiddenCarry, LSTMCarry

Array = jax.Array

SUPPORTED = ("lstm", "gru")


# ----------------------------------------------------------------------------------------------
# Per-step forward (with optional residuals) and backward of each cell. Inputs are time-major
# slices: x_t float32[B, I], mask m_t bool[B]. `xb` is `x_t @ w_ih + b` (hoisted) or x_t (inside).


def _lstm_fwd_step(p, carry: LSTMCarry, xp: Array, keep: Array, save: bool):
    if "w_cat" in p:  # projection inside: one matmul of [x_t, h] by [w_ih; w_hh]
        gates = jnp.concatenate([xp, carry.h], axis=-1) @ p["w_cat"] + p["b"]
    else:
        gates = xp + carry.h @ p["w_hh"]
    hidden = carry.h.shape[-1]
    i = jax.nn.sigmoid(gates[:, :hidden])
    f = jax.nn.sigmoid(gates[:, hidden:2 * hidden])
    g = jnp.tanh(gates[:, 2 * hidden:3 * hidden])
    o = jax.nn.sigmoid(gates[:, 3 * hidden:])
    c = f * carry.c + i * g
    h = o * jnp.tanh(c)
    new = LSTMCarry(jnp.where(keep, h, carry.h), jnp.where(keep, c, carry.c))
    y = jnp.where(keep, h, 0.0)
    res = (jnp.concatenate([i, f, g, o], axis=-1), carry.h, carry.c) if save else ()
    return new, y, res


def _lstm_bwd_step(w_hh_t, dcarry, inputs):
    dh, dc = dcarry
    (acts, h_prev, c_prev), dy, keep = inputs
    hidden = dh.shape[-1]
    i, f, g, o = (acts[:, k * hidden:(k + 1) * hidden] for k in range(4))
    tc = jnp.tanh(f * c_prev + i * g)
    dh_t = dh + dy
    dc_t = dc + dh_t * o * (1.0 - tc * tc)
    dgates = jnp.concatenate([
        dc_t * g * i * (1.0 - i),
        dc_t * c_prev * f * (1.0 - f),
        dc_t * i * (1.0 - g * g),
        dh_t * tc * o * (1.0 - o),
    ], axis=-1)
    dgates = jnp.where(keep, dgates, 0.0)
    dh_prev = jnp.where(keep, dgates @ w_hh_t, dh)
    dc_prev = jnp.where(keep, dc_t * f, dc)
    del h_prev
    return (dh_prev, dc_prev), (dgates,)


def _gru_fwd_step(p, carry: HiddenCarry, xp: Array, keep: Array, save: bool):
    hidden = carry.h.shape[-1]
    hp = carry.h @ p["w_hh"] + p["b_hh"]
    r = jax.nn.sigmoid(xp[:, :hidden] + hp[:, :hidden])
    z = jax.nn.sigmoid(xp[:, hidden:2 * hidden] + hp[:, hidden:2 * hidden])
    hn = hp[:, 2 * hidden:]
    n = jnp.tanh(xp[:, 2 * hidden:] + r * hn)
    h = (1.0 - z) * n + z * carry.h
    new = HiddenCarry(jnp.where(keep, h, carry.h))
    y = jnp.where(keep, h, 0.0)
    res = (jnp.concatenate([r, z, n, hn], axis=-1), carry.h) if save else ()
    return new, y, res


def _gru_bwd_step(w_hh_t, dcarry, inputs):
    (dh,) = dcarry
    (acts, h_prev), dy, keep = inputs
    hidden = dh.shape[-1]
    r, z, n, hn = (acts[:, k * hidden:(k + 1) * hidden] for k in range(4))
    dh_t = dh + dy
    dn_pre = dh_t * (1.0 - z) * (1.0 - n * n)
    dz_pre = dh_t * (h_prev - n) * z * (1.0 - z)
    dr_pre = dn_pre * hn * r * (1.0 - r)
    dhid = jnp.where(keep, jnp.concatenate([dr_pre, dz_pre, dn_pre * r], axis=-1), 0.0)
    dn_pre = jnp.where(keep, dn_pre, 0.0)
    dh_prev = jnp.where(keep, dh_t * z + dhid @ w_hh_t, dh)
    return (dh_prev,), (dhid, dn_pre)


# ----------------------------------------------------------------------------------------------
# The layer: time-major inside. xs float32[T, B, I], mask bool[T, B].


def _input_bias(name: str, params: dict) -> Array:
    # The LSTM's two biases always add; the GRU's b_hn sits inside the reset product.
    return params["b_ih"] + params["b_hh"] if name == "lstm" else params["b_ih"]


def _scan_forward(name, reverse, unroll, inside, params, xs, mask, carry0, save):
    fwd_step = _lstm_fwd_step if name == "lstm" else _gru_fwd_step
    bias = _input_bias(name, params)
    if inside and name == "lstm":
        step_params = {"w_cat": jnp.concatenate([params["w_ih"], params["w_hh"]]), "b": bias}
    else:
        step_params = params
    inputs = xs if inside else xs @ params["w_ih"] + bias

    def body(carry, inp):
        x_t, m_t = inp
        xp = x_t @ params["w_ih"] + bias if inside and name != "lstm" else x_t
        new, y, res = fwd_step(step_params, carry, xp, m_t[:, None], save)
        return new, (y, res)

    carry, (ys, res) = jax.lax.scan(body, carry0, (inputs, mask), reverse=reverse, unroll=unroll)
    return ys, carry, res


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _layer(name, reverse, unroll, inside, params, xs, mask, carry0):
    ys, carry, _ = _scan_forward(name, reverse, unroll, inside, params, xs, mask, carry0, False)
    return ys, carry


def _layer_fwd(name, reverse, unroll, inside, params, xs, mask, carry0):
    ys, carry, res = _scan_forward(name, reverse, unroll, inside, params, xs, mask, carry0, True)
    return (ys, carry), (params, xs, mask, res)


def _layer_bwd(name, reverse, unroll, inside, saved, cotangents):
    del inside
    params, xs, mask, res = saved
    dys, dcarry = cotangents
    bwd_step = _lstm_bwd_step if name == "lstm" else _gru_bwd_step
    w_hh_t = params["w_hh"].T

    def body(dcarry, inp):
        return bwd_step(w_hh_t, dcarry, inp)

    dcarry0, outs = jax.lax.scan(body, tuple(dcarry), (res, dys, mask[..., None]),
                                 reverse=not reverse, unroll=unroll)
    h_prev = res[1]
    if name == "lstm":
        (dhid,) = outs
        dinp = dhid
    else:
        dhid, dn_pre = outs
        hidden = dn_pre.shape[-1]
        dinp = jnp.concatenate([dhid[..., :2 * hidden], dn_pre], axis=-1)
    # The weight gradients: one matmul each over all T*B rows.
    contract = hoisted.sum_of_outer_products
    db_ih = jnp.sum(dinp, axis=(0, 1))
    if name == "lstm":  # one matmul for both weights: [x_t, h_{t-1}]^T dg_t
        w_cat = contract(jnp.concatenate([xs, h_prev], axis=-1), dinp)
        dw_ih, dw_hh = w_cat[:xs.shape[-1]], w_cat[xs.shape[-1]:]
    else:
        dw_ih, dw_hh = contract(xs, dinp), contract(h_prev, dhid)
    grads = {
        "w_ih": dw_ih,
        "w_hh": dw_hh,
        "b_ih": db_ih,
        "b_hh": db_ih if name == "lstm" else jnp.sum(dhid, axis=(0, 1)),
    }
    grads = {k: grads[k].astype(params[k].dtype) for k in params}
    dxs = dinp @ params["w_ih"].T
    return grads, dxs, None, type(dcarry)(*dcarry0)


_layer.defvjp(_layer_fwd, _layer_bwd)


def run(
    cell: Cell,
    params: dict,
    xs: Array,
    lengths: Array | None = None,
    *,
    initial_carry: Any = None,
    reverse: bool = False,
    unroll: int = 1,
    projection: str | None = None,
) -> tuple[Array, Any]:
    """`rnn.run` with the fused backward pass; same arguments, same results.

    Args:
      cell: a `cells.Cell` ("lstm" and "gru" are fused; others fall back to `rnn.run`).
      params: the cell's parameters {"w_ih", "w_hh", "b_ih", "b_hh"}.
      xs: float32[B, T, I] inputs.
      lengths: int32[B] true lengths (None: all T steps are real).
      initial_carry: the cell's carry at t=0 (None: zeros).
      reverse: run from each sequence's last real step back to its first.
      unroll: `lax.scan`'s unroll factor (forward and backward scans).
      projection: where the forward input matmul runs, "inside" or "outside" the scan (None:
        `rnn.default_projection()`). The backward pass always does it for all steps at once.

    Returns:
      outputs float32[B, T, H] (zeros at padded steps) and the final carry.
    """
    if cell.name not in SUPPORTED:
        return rnn.run(cell, params, xs, lengths, initial_carry=initial_carry, reverse=reverse,
                       unroll=unroll, projection=projection)
    batch, steps, _ = xs.shape
    hidden = params["w_hh"].shape[0]
    if lengths is None:
        lengths = jnp.full((batch,), steps, jnp.int32)
    if initial_carry is None:
        initial_carry = cell.initial_carry(batch, hidden, xs.dtype)
    projection = projection or rnn.default_projection()
    if projection not in ("inside", "outside"):
        raise ValueError(f"projection must be 'inside' or 'outside', got {projection!r}")
    mask = jnp.swapaxes(rnn.length_mask(lengths, steps), 0, 1)
    ys, carry = _layer(cell.name, reverse, unroll, projection == "inside", params,
                       jnp.swapaxes(xs, 0, 1), mask, initial_carry)
    return jnp.swapaxes(ys, 0, 1), carry
