"""`x @ w + b` with the bias broadcast explicitly, so that the maths runs (and is tested) under
`jax_numpy_rank_promotion="raise"`: an accidental broadcast between arrays of different ranks is
then an error, not a silent bug."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def add_bias(y: Array, b: Array) -> Array:
    """`y: float32[..., G] + b: float32[G]`."""
    return y + jnp.broadcast_to(b, y.shape)


def affine(x: Array, w: Array, b: Array) -> Array:
    """`float32[..., K] @ float32[K, G] + float32[G] -> float32[..., G]`, computed in the
    weight's dtype (bfloat16 weights under mixed precision: `x` is cast to it)."""
    return add_bias(x.astype(w.dtype) @ w, b)
