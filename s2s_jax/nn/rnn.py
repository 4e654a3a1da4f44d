"""Stacked, optionally bidirectional RNN layers on `scan.run` (the encoder; fig. 10.11), and
dropout between them (each row's mask from its own key).

Public arrays are batch-major (`float32[B, T, I]`); lengths mask padding as in `scan.run`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from s2s_jax.nn import scan
from s2s_jax.nn.cells import Cell

Array = jax.Array


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


def row_keys(key, rows: int):
    """One PRNG key per batch row, `key[rows]`: `key` itself when it already holds one per row,
    else `fold_in(key, b)` for row b (a single key; raw `uint32[2]` data is wrapped).

    Dropout draws each row's masks from that row's key alone, so a row's masks do not depend
    on the rows beside it: training passes keys made from the rows' indices in the global
    batch, and any split of the batch (devices, processes, micro-batches) draws the same ones.
    """
    if key is None:
        return None
    if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    if key.ndim == 0:
        return jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(rows))
    if key.shape != (rows,):
        raise ValueError(f"expected one key or {rows} (one per row), got keys of shape {key.shape}")
    return key


def fold_in_rows(keys, data: int):
    """`fold_in(keys[b], data)` for every row's key `key[B]` (None stays None)."""
    return None if keys is None else jax.vmap(jax.random.fold_in, (0, None))(keys, data)


def split_rows(keys, num: int = 2) -> tuple:
    """`split(keys[b], num)` for every row's key: `num` arrays `key[B]`."""
    both = jax.vmap(lambda k: jax.random.split(k, num))(keys)  # key[B, num]
    return tuple(both[:, i] for i in range(num))


def dropout(x: Array, rate: float, key, *, whole_vectors: bool = False) -> Array:
    """Inverted dropout of `x: [B, ...]`; identity when `key` is None or `rate` is 0.

    `key`: one PRNG key per row, `key[B]`, or a single key (`row_keys`); row b's mask is drawn
    from its own key, so it is the same whatever batch the row is in. `whole_vectors`: one draw
    per vector of the last axis (a dropped token's embedding is all zeros)."""
    if key is None or rate == 0.0:
        return x
    keys = row_keys(key, x.shape[0])
    shape = x.shape[1:-1] + (1,) if whole_vectors else x.shape[1:]
    keep = jax.vmap(lambda k: jax.random.bernoulli(k, 1.0 - rate, shape))(keys)
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
    remat: bool = False,
    impl: str = "autodiff",
) -> tuple[Array, list[tuple]]:
    """Runs a stack of (bi)directional layers.

    Args:
      stack: from `init_stack`; bidirectional layers have a "bwd" entry.
      xs: float32[B, T, I]; lengths: int32[B].
      residual: add each layer's input to its output from the second layer on (same width).
      dropout_rate, key: dropout on the input of every layer after the first (training only:
        pass `key=None` at inference); `key`: one per row, `key[B]`, or one (`row_keys`).
      unroll, projection, remat, impl: for every layer's `scan.run`.

    Returns:
      outputs float32[B, T, D*H] of the top layer (D = 2 if bidirectional, forward half first)
      and, per layer, the tuple of final carries (forward[, backward]).
    """
    finals = []
    h = xs
    for layer, params in enumerate(stack):
        layer_in = h
        if layer > 0 and key is not None:
            key, sub = split_rows(row_keys(key, xs.shape[0]))
            layer_in = dropout(layer_in, dropout_rate, sub)
        kw = dict(unroll=unroll, projection=projection, remat=remat, impl=impl)
        out, fwd = scan.run(cell, params["fwd"], layer_in, lengths, **kw)
        carries = (fwd,)
        if "bwd" in params:
            out_b, bwd = scan.run(cell, params["bwd"], layer_in, lengths, reverse=True, **kw)
            out = jnp.concatenate([out, out_b], axis=-1)
            carries = (fwd, bwd)
        if residual and layer > 0:
            out = out + h
        finals.append(carries)
        h = out
    return h, finals
