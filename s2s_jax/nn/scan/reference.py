"""The reference scans of a step function: `lax.scan` under ordinary autodiff, and a Python loop
over time (the test oracle).

Both take the time-major core arguments every implementation shares (see `scan.run`):
`step(params, data, consts, carry, x_t) -> (carry, y_t)`, `xs` leaves `[T, ...]`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def autodiff(
    step: Callable,
    params: Any,
    data: Any,
    consts: Any,
    carry0: Any,
    xs: Any,
    *,
    reverse: bool = False,
    unroll: int = 1,
    remat: bool = False,
) -> tuple[Any, Any]:
    """`lax.scan(step)`; `remat` puts the body under `jax.checkpoint` (each step's activations
    are recomputed in the backward pass instead of stored). Returns (final carry, ys)."""

    def body(carry, x_t):
        return step(params, data, consts, carry, x_t)

    if remat:
        body = jax.checkpoint(body)
    return jax.lax.scan(body, carry0, xs, reverse=reverse, unroll=unroll)


def loop(
    step: Callable,
    params: Any,
    data: Any,
    consts: Any,
    carry0: Any,
    xs: Any,
    *,
    reverse: bool = False,
    unroll: int = 1,
    remat: bool = False,
) -> tuple[Any, Any]:
    """The same recurrence as a plain Python loop over time: the oracle the other
    implementations are tested against (slow to compile: tests only). `unroll` and `remat`
    change nothing here and are accepted for the common signature."""
    del unroll, remat
    steps = jax.tree.leaves(xs)[0].shape[0]
    carry, ys = carry0, [None] * steps
    for t in reversed(range(steps)) if reverse else range(steps):
        carry, ys[t] = step(params, data, consts, carry, jax.tree.map(lambda a: a[t], xs))
    return carry, jax.tree.map(lambda *y: jnp.stack(y), *ys)
