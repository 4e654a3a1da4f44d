"""The elementwise linear recurrence `h_t = a_t * h_{t-1} + b_t` over a batch of sequences, and
the whole-sequence ("parallel") form of a linear cell (`cells.Cell.linear`) built on it.

Three ways to run the same recurrence, the same values and gradients:

  "sequential"   `lax.scan` of the elementwise update: T steps of O(B*H) work;
  "associative"  `lax.associative_scan` of the pairs `(a, b)` composed as affine maps,
                 `(a1, b1) then (a2, b2) = (a1*a2, a2*b1 + b2)`: O(log T) passes over the
                 whole sequence;
  "log"          the same associative scan in log space, `(log a, log b)` composed as
                 `(A1 + A2, logaddexp(A2 + B1, B2))`, for `b >= 0` (minGRU and minLSTM with a
                 positive candidate, as Feng et al. 2024 train them). The initial carry is
                 added linearly (`h_t = exp(A_t) h_0 + exp(B_t)`), so it may have any sign.

Which is faster depends on the device and the length (`choose`, measured in
`experiments/linear_scan_crossover.md`: on a CPU, "sequential" at every length).

Padding as in `scan.run`: a padded step (t >= length) has `a = 1, b = 0`, so it leaves the carry
unchanged, and emits zeros; sequences are right-padded, so `reverse=True` meets the padding
first, keeps the initial carry through it and starts each sequence at its own last step.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from s2s_jax.nn import cells

Array = jax.Array

METHODS = ("sequential", "associative", "log")
# From this many steps on the associative scan beats the sequential one, per backend, measured
# with `experiments/linear_scan_crossover.py` (B=64, H=256, forward and forward+backward). On a
# 2-core CPU the sequential scan won at every length measured, 25 to 4,096 steps: no crossover
# (None). A backend not listed takes the associative scan from the first step: its O(log T)
# passes over the whole batch against T launches of a tiny step; not yet measured here.
CROSSOVER: dict[str, int | None] = {"cpu": None}


def choose(steps: int, backend: str | None = None) -> str:
    """The faster method, "sequential" or "associative", for `steps` steps on `backend` (None:
    JAX's default backend), by `CROSSOVER`. The log-space scan is never the faster one (1.8-6.5x
    slower than "associative" on the CPU): it is there for the paper's formulation."""
    crossover = CROSSOVER.get(backend or jax.default_backend(), 0)
    return "associative" if crossover is not None and steps >= crossover else "sequential"


def _keep(lengths: Array | None, shape: tuple, axis: int) -> Array | None:
    """`bool[B, T, 1]` (axis 1) or `bool[T, B, 1]` (axis 0): True at real steps."""
    if lengths is None:
        return None
    keep = jnp.arange(shape[axis])[None, :] < lengths[:, None]  # bool[B, T]
    keep = keep if axis == 1 else keep.T
    return keep[..., None]


def _edge(x: Array, reverse: bool, axis: int) -> Array:
    """The last step of a forward scan (each sequence's, padding having carried it), or the
    first of a reverse one: `[B, H]`."""
    return jax.lax.index_in_dim(x, 0 if reverse else x.shape[axis] - 1, axis, keepdims=False)


def scan(
    a: Array,
    b: Array,
    lengths: Array | None = None,
    *,
    initial: Array | None = None,
    reverse: bool = False,
    axis: int = 1,
    method: str = "associative",
    unroll: int = 1,
) -> tuple[Array, Array]:
    """`h_t = a_t * h_{t-1} + b_t`, elementwise.

    Args:
      a, b: float32[B, T, H] (axis=1, batch-major) or float32[T, B, H] (axis=0, time-major).
      lengths: int32[B] true lengths (None: all T steps are real).
      initial: float32[B, H], the carry before the first step (None: zeros).
      reverse: run from each sequence's last real step back to its first.
      method: "sequential" or "associative" (`scan_log` is the log-space one).
      unroll: `lax.scan`'s unroll factor ("sequential").

    Returns:
      h, shaped as `a` (zeros at padded steps), and the final carry float32[B, H] (each
      sequence's carry after its last real step; `initial` for an empty one).
    """
    if method not in ("sequential", "associative"):
        raise ValueError(f"method must be 'sequential' or 'associative', not {method!r}")
    keep = _keep(lengths, a.shape, axis)
    if keep is not None:
        a, b = jnp.where(keep, a, jnp.ones_like(a)), jnp.where(keep, b, jnp.zeros_like(b))
    h0 = jnp.zeros_like(_edge(a, reverse, axis)) if initial is None else initial
    if method == "sequential":

        def body(h, ab_t):
            h = ab_t[0] * h + ab_t[1]
            return h, h

        tm = lambda x: jnp.moveaxis(x, axis, 0)
        final, h = jax.lax.scan(body, h0, (tm(a), tm(b)), reverse=reverse, unroll=unroll)
        h = jnp.moveaxis(h, 0, axis)
    else:
        compose = lambda e1, e2: (e1[0] * e2[0], e2[0] * e1[1] + e2[1])
        big_a, big_b = jax.lax.associative_scan(compose, (a, b), reverse=reverse, axis=axis)
        h = big_a * jnp.expand_dims(h0, axis) + big_b
        final = _edge(h, reverse, axis)
    return (h if keep is None else jnp.where(keep, h, jnp.zeros_like(h))), final


def scan_log(
    log_a: Array,
    log_b: Array,
    lengths: Array | None = None,
    *,
    initial: Array | None = None,
    reverse: bool = False,
    axis: int = 1,
) -> tuple[Array, Array]:
    """`scan` of `a = exp(log_a)`, `b = exp(log_b)` (so `b >= 0`), composed in log space as
    Feng et al. (2024) train minGRU and minLSTM. They take a log-cumsum-exp of `log b - cumsum
    log a`, whose terms grow with the length; composing pairs with `logaddexp` keeps every
    term bounded. Same arguments and returns as `scan`."""
    keep = _keep(lengths, log_a.shape, axis)
    if keep is not None:
        # log 0 as a finite number far below any real log b (whose exp is 0 all the same):
        # logaddexp(-inf, -inf) has a NaN forward-mode derivative.
        log_zero = jnp.full_like(log_b, jnp.finfo(log_b.dtype).min / 2)
        log_a = jnp.where(keep, log_a, jnp.zeros_like(log_a))
        log_b = jnp.where(keep, log_b, log_zero)
    compose = lambda e1, e2: (e1[0] + e2[0], jnp.logaddexp(e2[0] + e1[1], e2[1]))
    big_a, big_b = jax.lax.associative_scan(compose, (log_a, log_b), reverse=reverse, axis=axis)
    h = jnp.exp(big_b)
    if initial is not None:
        h = h + jnp.exp(big_a) * jnp.expand_dims(initial, axis)
    # Padding carried the state to the edge; an empty sequence's is its initial carry.
    final = _edge(h, reverse, axis)
    return (h if keep is None else jnp.where(keep, h, jnp.zeros_like(h))), final


def run(
    cell: cells.Cell,
    params: Any,
    xs: Array,
    lengths: Array | None,
    initial_carry: Any,
    *,
    reverse: bool = False,
    unroll: int = 1,
    remat: bool = False,
    method: str | None = None,
) -> tuple[Array, Any]:
    """A linear cell over whole sequences: the input projection of every step in one matmul,
    the elementwise coefficients, one linear scan of the state, the outputs.

    `xs: float32[B, T, I]`; `method`: one of `METHODS` (None: `choose(T)`). The state scans in
    the carry's state dtype (float32 for the SRU's cell state). Returns what `scan.run` does:
    the outputs float32[B, T, H] (zeros at padded steps) and the final carry."""
    form = cell.linear
    method = method or choose(xs.shape[1])
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if method == "log" and form.log_coefficients is None:
        raise ValueError(f"the {cell.name!r} cell has no log-space form (its b may be negative)")

    def whole(params, xs, lengths, initial_carry):
        xp = cell.project(params, xs)  # float32[B, T, G*H]: every step's input matmul at once
        state0 = initial_carry[-1]
        kw = dict(initial=state0, reverse=reverse)
        if method == "log":
            log_a, log_b = (v.astype(state0.dtype) for v in form.log_coefficients(xp))
            c, c_last = scan_log(log_a, log_b, lengths, **kw)
        else:
            a, b = (v.astype(state0.dtype) for v in form.coefficients(xp))
            c, c_last = scan(a, b, lengths, **kw, method=method, unroll=unroll)
        h = form.output(xp, c.astype(xp.dtype))
        keep = _keep(lengths, h.shape, 1)
        h = h if keep is None else jnp.where(keep, h, jnp.zeros_like(h))
        h_last = None
        if len(initial_carry) > 1:  # an output apart from the state (the SRU's highway)
            h_last = _last_output(h, lengths, initial_carry[0], reverse)
        return h, cells.linear_carry(initial_carry, h_last, c_last)

    return (jax.checkpoint(whole) if remat else whole)(params, xs, lengths, initial_carry)


def _last_output(h: Array, lengths: Array | None, h0: Array, reverse: bool) -> Array:
    """Each sequence's output at its last real step (reverse: at t = 0), `h0` for an empty
    one: `float32[B, T, H] -> float32[B, H]`."""
    if reverse or lengths is None:
        last = _edge(h, reverse, 1)
    else:
        idx = jnp.maximum(lengths - 1, 0)[:, None, None]
        last = jnp.take_along_axis(h, idx, axis=1)[:, 0]
    if lengths is None:
        return last
    return jnp.where((lengths > 0)[:, None], last, h0.astype(last.dtype))
