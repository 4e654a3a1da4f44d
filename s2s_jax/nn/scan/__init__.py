"""One scan API for every recurrence of the library: `run`, with the implementation a choice.

`run(recurrence, params, xs, lengths, ...)` runs either an RNN cell (`cells.Cell`) or any step
function `(params, data, consts, carry, x_t) -> (carry, y_t)` (the attention decoder) over a
batch of sequences. Every implementation gives the same values and gradients:

  "autodiff"  `lax.scan` under ordinary reverse-mode autodiff: the reference (`reference.py`);
  "loop"      a Python loop over time: the test oracle, slow to compile (`reference.py`);
  "fused"     the LSTM and GRU cells with a hand-written backward pass whose weight gradients
              are three large matmuls after the reverse loop (`fused.py`);
  "hoisted"   any step: the weight gradients of its matrix products computed after the reverse
              loop, one matmul each (`hoisted.py`);
  "parallel"  a linear cell (SRU, minGRU, minLSTM: `cell.linear`) over whole sequences: one
              input matmul for all steps, then one linear scan of the state, associative or
              sequential as measured faster for the device and length (`linear.py`).

A linear cell given "hoisted" runs "parallel": its only weights are in the input projection, so
the parallel form is that scan with its weight gradients hoisted, and the model (which asks
"hoisted" of every cell without a fused form) trains these cells in parallel. "autodiff" and
"loop" run a linear cell step by step, its `step` (the decoder's form): the references.

Public arrays are batch-major (`float32[B, T, ...]`); the scans run time-major inside. Variable
lengths are handled by a mask: a padded step (t >= length) leaves the carry unchanged and emits
zeros. Sequences are right-padded, so a reverse scan meets the padding first, keeps the initial
carry through it and starts each sequence at its own last token: `reverse=True` respects each
sequence's length without any gather.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from s2s_jax.nn import cells
from s2s_jax.nn.cells import Cell
from s2s_jax.nn.scan import fused, hoisted, linear, reference

Array = jax.Array

IMPLEMENTATIONS = ("autodiff", "loop", "fused", "hoisted", "parallel")
FUSED_CELLS = ("lstm", "gru")
_SCANS = {"autodiff": reference.autodiff, "loop": reference.loop, "hoisted": hoisted.scan}


def length_mask(lengths: Array, max_len: int) -> Array:
    """`bool[B, T]`: True where t < lengths[b]."""
    return jnp.arange(max_len)[None, :] < lengths[:, None]


def default_projection() -> str:
    """Where a cell's input matmul runs: per step on CPU (measured faster there: the matmul of
    the current input stays in cache), hoisted out of the scan on accelerators (one matmul)."""
    return "inside" if jax.default_backend() == "cpu" else "outside"


def run(
    recurrence: Cell | Callable,
    params: Any,
    xs: Any,
    lengths: Array | None = None,
    *,
    initial_carry: Any = None,
    data: Any = (),
    consts: Any = (),
    reverse: bool = False,
    unroll: int = 1,
    remat: bool = False,
    impl: str = "autodiff",
    projection: str | None = None,
) -> tuple[Any, Any]:
    """Runs a recurrence over a batch of sequences.

    Args:
      recurrence: a `cells.Cell`, or a pure step `(params, data, consts, carry, x_t) ->
        (carry, y_t)` whose carry and y_t leaves are batch-major (`[B, ...]`).
      params: the cell's or the step's parameters.
      xs: the inputs, a pytree of batch-major leaves `[B, T, ...]` (a cell: float32[B, T, I]).
      lengths: int32[B] true lengths (None: all T steps are real).
      initial_carry: the carry at t=0 (a cell: None gives zeros; a step function needs one).
      data: differentiable inputs every step reads (e.g. annotations); consts: the same,
        not differentiated (masks). A cell reads neither.
      reverse: run from each sequence's last real step back to its first.
      unroll: `lax.scan`'s unroll factor.
      remat: store less for the backward pass and recompute instead: "autodiff" and "loop"
        put each step under `jax.checkpoint`, "fused" and "hoisted" keep only the carries.
      impl: one of `IMPLEMENTATIONS` (see the module docstring).
      projection: a cell's input matmul "inside" the scan (per step), "outside" (one matmul
        for all steps before it) or None (`default_projection()`); "parallel" is always
        "outside".

    Returns:
      the outputs, batch-major (zeros at padded steps), and the final carry (each sequence's
      carry after its last real step).
    """
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"impl must be one of {IMPLEMENTATIONS}, not {impl!r}")
    batch, steps = jax.tree.leaves(xs)[0].shape[:2]
    is_cell = isinstance(recurrence, Cell)
    if is_cell:
        if initial_carry is None:
            hidden = params["b_ih"].shape[-1] // recurrence.gates
            initial_carry = recurrence.initial_carry(batch, hidden, xs.dtype)
        projection = projection or default_projection()
        if projection not in ("inside", "outside"):
            raise ValueError(f"projection must be 'inside' or 'outside', got {projection!r}")
        if recurrence.linear is not None and impl in ("hoisted", "parallel"):
            return linear.run(
                recurrence, params, xs, lengths, initial_carry, reverse=reverse, unroll=unroll,
                remat=remat,
            )  # fmt: skip
    elif initial_carry is None:
        raise ValueError("scan.run needs `initial_carry` to run a step function")
    if impl == "parallel":
        what = f"the {recurrence.name!r} cell" if is_cell else "a step function"
        linear_names = ", ".join(c.name for c in cells.CELLS.values() if c.linear)
        raise ValueError(
            f"impl='parallel' runs the linear cells ({linear_names}) only, not {what}: "
            "use impl='hoisted' or 'autodiff'"
        )
    keep = length_mask(lengths, steps) if lengths is not None else None
    if impl == "fused":
        if not is_cell or recurrence.name not in FUSED_CELLS:
            what = f"the {recurrence.name!r} cell" if is_cell else "a step function"
            raise ValueError(
                f"impl='fused' runs the {' and '.join(FUSED_CELLS)} cells only, not {what}: "
                "use impl='hoisted' (any step) or 'autodiff'"
            )
        keep = jnp.ones((batch, steps), bool) if keep is None else keep
        inside = projection == "inside"
        return fused.run(
            recurrence, params, xs, keep, initial_carry, reverse=reverse, unroll=unroll,
            inside=inside, remat=remat,
        )  # fmt: skip
    step = recurrence
    if is_cell:
        step = _cell_step(recurrence, inside=projection == "inside")
        xs = xs if projection == "inside" else recurrence.project(params, xs)
    if keep is not None:  # a float mask: a hoisted scan differentiates with respect to xs
        step, xs = _masked(step), (xs, keep.astype(jnp.float32))
    time_major = lambda tree: jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), tree)
    carry, ys = _SCANS[impl](
        step, params, data, consts, initial_carry, time_major(xs),
        reverse=reverse, unroll=unroll, remat=remat,
    )  # fmt: skip
    return time_major(ys), carry


def _cell_step(cell: Cell, inside: bool) -> Callable:
    def step(params, data, consts, carry, x_t):
        return cell.step(params, carry, cell.project(params, x_t) if inside else x_t)

    return step


def _masked(step: Callable) -> Callable:
    """`step` over `(x_t, keep_t: float32[B])`: where keep_t is 0 the carry stays, y_t is 0."""

    def masked(params, data, consts, carry, inputs):
        x_t, keep_t = inputs
        new_carry, y = step(params, data, consts, carry, x_t)
        where = lambda new, old: jnp.where(
            (keep_t > 0).reshape(keep_t.shape + (1,) * (new.ndim - 1)), new, old
        )
        return jax.tree.map(where, new_carry, carry), jax.tree.map(
            lambda a: where(a, jnp.zeros_like(a)), y
        )

    return masked
