"""One `lax.scan` runner for every cell, and the stacked / bidirectional encoders built on it.

Public arrays are batch-major (`float32[B, T, I]`); the scan runs time-major inside.
Variable lengths are handled by a mask: a padded step (t >= length) leaves the carry unchanged
and emits zeros. Sequences are right-padded, so a reverse scan meets the padding first, keeps
the initial carry through it and starts each sequence at its own last token: `reverse=True`
respects each sequence's length without any gather.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from s2s_jax.nn.cells import Cell

Array = jax.Array


def length_mask(lengths: Array, max_len: int) -> Array:
    """`bool[B, T]`: True where t < lengths[b]."""
    return jnp.arange(max_len)[None, :] < lengths[:, None]


def default_projection() -> str:
    """Where the input matmul runs: per step on CPU (measured faster there: the matmul of the
    current input stays in cache), hoisted out of the scan on accelerators (one large matmul)."""
    return "inside" if jax.default_backend() == "cpu" else "outside"


def _masked_step(cell: Cell, params, project_inside: bool):
    def body(carry, inputs):
        x_t, m_t = inputs  # float32[B, I or G*H], bool[B]
        xp = cell.project(params, x_t) if project_inside else x_t
        new_carry, h = cell.step(params, carry, xp)
        keep = m_t[:, None]
        new_carry = jax.tree.map(lambda n, o: jnp.where(keep, n, o), new_carry, carry)
        return new_carry, jnp.where(keep, h, jnp.zeros_like(h))

    return body


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
    remat: bool = False,
) -> tuple[Array, Any]:
    """Runs `cell` over a batch of sequences.

    Args:
      cell: a `cells.Cell`.
      params: the cell's parameters.
      xs: float32[B, T, I] inputs.
      lengths: int32[B] true lengths (None: all T steps are real).
      initial_carry: the cell's carry at t=0 (None: zeros).
      reverse: run from each sequence's last real step back to its first.
      unroll: `lax.scan`'s unroll factor.
      projection: "inside" (input matmul per step), "outside" (one matmul for all steps before
        the scan) or None (the backend's default, see `default_projection`).
      remat: recompute each step in the backward pass instead of storing its activations
        (`jax.checkpoint` on the scan body): less memory for long sequences, more time.

    Returns:
      outputs float32[B, T, H] (zeros at padded steps) and the final carry (each sequence's
      carry after its last real step).
    """
    batch, steps, _ = xs.shape
    hidden = params["w_hh"].shape[0]
    if lengths is None:
        lengths = jnp.full((batch,), steps, jnp.int32)
    if initial_carry is None:
        initial_carry = cell.initial_carry(batch, hidden, xs.dtype)
    projection = projection or default_projection()
    if projection not in ("inside", "outside"):
        raise ValueError(f"projection must be 'inside' or 'outside', got {projection!r}")
    inside = projection == "inside"
    inputs = xs if inside else cell.project(params, xs)
    mask = length_mask(lengths, steps)
    body = _masked_step(cell, params, inside)
    if remat:
        body = jax.checkpoint(body)
    carry, ys = jax.lax.scan(
        body,
        initial_carry,
        (jnp.swapaxes(inputs, 0, 1), jnp.swapaxes(mask, 0, 1)),
        reverse=reverse,
        unroll=unroll,
    )
    return jnp.swapaxes(ys, 0, 1), carry


def run_loop(
    cell: Cell,
    params: dict,
    xs: Array,
    lengths: Array | None = None,
    *,
    initial_carry: Any = None,
    reverse: bool = False,
) -> tuple[Array, Any]:
    """`run` as a plain Python loop over time: the test oracle (slow to compile; tests only)."""
    batch, steps, _ = xs.shape
    hidden = params["w_hh"].shape[0]
    lengths = jnp.full((batch,), steps, jnp.int32) if lengths is None else lengths
    carry = cell.initial_carry(batch, hidden, xs.dtype) if initial_carry is None else initial_carry
    outputs = [None] * steps
    for t in reversed(range(steps)) if reverse else range(steps):
        new_carry, h = cell.step(params, carry, cell.project(params, xs[:, t]))
        real = (t < lengths)[:, None]
        carry = jax.tree.map(lambda n, o: jnp.where(real, n, o), new_carry, carry)
        outputs[t] = jnp.where(real, h, 0.0)
    return jnp.stack(outputs, axis=1), carry


# ----------------------------------------------------------------------------------------------
# Stacked, optionally bidirectional encoders.


def init_stack(
    key, cell: Cell, in_dim: int, hidden: int, *, layers: int = 1, bidirectional: bool = False
) -> list[dict]:
    """Parameters of a stack: a list (one per layer) of {"fwd": cell params[, "bwd": ...]}."""
    directions = ("fwd", "bwd") if bidirectional else ("fwd",)
    width = hidden * len(directions)
    stack = []
    for layer, layer_key in enumerate(jax.random.split(key, layers)):
        keys = jax.random.split(layer_key, len(directions))
        layer_in = in_dim if layer == 0 else width
        stack.append({d: cell.init(k, layer_in, hidden) for d, k in zip(directions, keys)})
    return stack


def dropout(x: Array, rate: float, key) -> Array:
    """Inverted dropout; identity when `key` is None or `rate` is 0."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def run_stack(
    cell: Cell,
    stack: Sequence[dict],
    xs: Array,
    lengths: Array | None = None,
    *,
    residual: bool = False,
    dropout_rate: float = 0.0,
    key=None,
    unroll: int = 1,
    projection: str | None = None,
    runner=None,
) -> tuple[Array, list[tuple]]:
    """Runs a stack of (bi)directional layers.

    Args:
      stack: from `init_stack`; bidirectional layers have a "bwd" entry.
      xs: float32[B, T, I]; lengths: int32[B].
      residual: add each layer's input to its output from the second layer on (same width).
      dropout_rate, key: dropout on the input of every layer after the first (training only:
        pass `key=None` at inference).
      runner: the layer implementation, `run` by default; `fused.run` has the same signature.

    Returns:
      outputs float32[B, T, D*H] of the top layer (D = 2 if bidirectional, forward half first)
      and, per layer, the tuple of final carries (forward[, backward]).
    """
    runner = runner or run
    finals = []
    h = xs
    for layer, params in enumerate(stack):
        layer_in = h
        if layer > 0 and key is not None:
            key, sub = jax.random.split(key)
            layer_in = dropout(layer_in, dropout_rate, sub)
        kw = dict(unroll=unroll, projection=projection)
        out, fwd = runner(cell, params["fwd"], layer_in, lengths, **kw)
        carries = (fwd,)
        if "bwd" in params:
            out_b, bwd = runner(cell, params["bwd"], layer_in, lengths, reverse=True, **kw)
            out = jnp.concatenate([out, out_b], axis=-1)
            carries = (fwd, bwd)
        if residual and layer > 0:
            out = out + h
        finals.append(carries)
        h = out
    return h, finals
