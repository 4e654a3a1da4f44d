"""`lax.scan` whose weight gradients are hoisted out of the reverse loop, for any step function.

Reverse-mode autodiff of `lax.scan` computes, at every reverse step, `u_t^T dg_t` for each
weight `w` used in a product `g_t = u_t @ w`: a small matmul that contracts over the batch only,
plus a read-modify-write of a weight-sized accumulator in the loop carry. `scan` below instead
records each step's `u_t` in the forward pass and emits each step's `dg_t` from the reverse
pass, then computes every weight gradient after the loop as one matmul over all T*B rows, which
runs near the machine's matmul peak (the cuDNN recipe, here for any recurrence: the attention
decoder of `model.forward` uses it).

How the products are found: the step is traced to a jaxpr and run by a small interpreter. A
2-D parameter leaf is *hoisted* when every use of it in the step is one operand of a `dot_general`
(however it was written: `u @ w`, `jnp.dot`, `jnp.einsum`, `w @ u`) whose other operand is not a
parameter. Any other leaf (biases; a matrix also transposed, sliced or used elementwise) gets the
ordinary per-step gradient (vectors are not hoisted: their `u` is often as large as an
attention's `tanh` features), so every step is differentiated correctly and only the speed depends
on how it is written; `hoisted_leaves` says which leaves are hoisted. In the backward pass, which
re-runs the step under `jax.vjp` for the elementwise work, each product is replayed from the
value saved in the forward pass (no recomputed matmul) plus a zero whose cotangent is `dg_t`;
with `remat` only the carries are saved and the products are recomputed instead.

The step must not close over traced arrays (pass them in `data`). Reverse mode only: `jax.jvp`
through `scan` is not defined (a `jax.custom_vjp`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.extend.core import Literal

Array = jax.Array


# ----------------------------------------------------------------------------------------------
# The step as a jaxpr, and which of its parameter leaves are hoisted.


class _Product(NamedTuple):
    eqn: int  # index of the `dot_general` in the step's jaxpr
    leaf: int  # the hoisted parameter leaf it multiplies
    weight_is_lhs: bool


class _Program(NamedTuple):
    closed: Any  # the step's ClosedJaxpr over flat (params, data, consts, carry, x_t) leaves
    out_tree: Any  # (carry, y_t)
    products: tuple[_Product, ...]
    hoisted: frozenset[int]  # parameter leaves whose gradient is computed after the loop


def _trace(step: Callable, params, data, consts, carry, x_t) -> _Program:
    args = (params, data, consts, carry, x_t)
    flat, tree = jax.tree.flatten(args)
    n_params = len(jax.tree.leaves(params))

    def flat_step(*leaves):
        return step(*jax.tree.unflatten(tree, leaves))

    avals = [jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)) for a in flat]
    closed, out_shape = jax.make_jaxpr(flat_step, return_shape=True)(*avals)
    jaxpr = closed.jaxpr
    leaf_of = {v: i for i, v in enumerate(jaxpr.invars[:n_params])}
    uses: dict[int, list] = {i: [] for i in range(n_params)}
    for index, eqn in enumerate(jaxpr.eqns):
        for position, v in enumerate(eqn.invars):
            if not isinstance(v, Literal) and v in leaf_of:
                uses[leaf_of[v]].append((index, position))
    for v in jaxpr.outvars:
        if not isinstance(v, Literal) and v in leaf_of:
            uses[leaf_of[v]].append((None, None))

    def is_product(index, position):
        if index is None:
            return False
        eqn = jaxpr.eqns[index]
        if eqn.primitive.name != "dot_general":
            return False
        other = eqn.invars[1 - position]
        (_, _), (lhs_batch, rhs_batch) = eqn.params["dimension_numbers"]
        no_batch = not (lhs_batch if position == 0 else rhs_batch)
        return no_batch and (isinstance(other, Literal) or other not in leaf_of)

    hoisted = frozenset(
        i for i, u in uses.items() if avals[i].ndim == 2 and u and all(is_product(*x) for x in u)
    )
    products = tuple(
        _Product(index, i, position == 0) for i in sorted(hoisted) for index, position in uses[i]
    )
    products = tuple(sorted(products))  # in the order the step computes them
    return _Program(closed, jax.tree.structure(out_shape), products, hoisted)


def hoisted_leaves(step: Callable, params, data, consts, carry0, xs) -> list[str]:
    """The paths of the parameter leaves whose gradients `scan` hoists out of the loop (the
    others get per-step gradients): a check that a step is written so that it runs fast."""
    x_t = jax.tree.map(lambda a: a[0], xs)
    program = _trace(step, params, data, consts, carry0, x_t)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    return [paths[i] for i in sorted(program.hoisted)]


def _run(program: _Program, flat_args: list, product: Callable) -> Any:
    """Evaluates the step's jaxpr on `flat_args`, computing product k as `product(k, eqn, u,
    w)` (u: the operand that is not the hoisted leaf). Returns the step's (carry, y_t)."""
    jaxpr = program.closed.jaxpr
    env = dict(zip(jaxpr.constvars, program.closed.consts))
    env.update(zip(jaxpr.invars, flat_args))
    read = lambda v: v.val if isinstance(v, Literal) else env[v]
    by_eqn = {p.eqn: (k, p) for k, p in enumerate(program.products)}
    for index, eqn in enumerate(jaxpr.eqns):
        invals = [read(v) for v in eqn.invars]
        if index in by_eqn:
            k, p = by_eqn[index]
            w, u = (invals[0], invals[1]) if p.weight_is_lhs else (invals[1], invals[0])
            outs = [product(k, eqn, u, w)]
        else:
            params = eqn.primitive.get_bind_params(eqn.params)
            subfuns, params = params if isinstance(params, tuple) else ((), params)
            outs = eqn.primitive.bind(*subfuns, *invals, **params)
            outs = outs if eqn.primitive.multiple_results else [outs]
        env.update(zip(eqn.outvars, outs))
    return jax.tree.unflatten(program.out_tree, [read(v) for v in jaxpr.outvars])


def _multiply(eqn, u: Array, w: Array, weight_is_lhs: bool) -> Array:
    """The product `eqn` computes, with `u` and `w` in their places."""
    lhs, rhs = (w, u) if weight_is_lhs else (u, w)
    return eqn.primitive.bind(lhs, rhs, **eqn.params)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _replay(u: Array, w: Array, g: Array, eqn, weight_is_lhs: bool) -> Array:
    """The product of `u` and `w`, already computed in the forward pass as `g`; differentiates
    as the product with respect to `u` (the weight's gradient is hoisted)."""
    del u, w
    return g


@_replay.defjvp
def _replay_jvp(eqn, weight_is_lhs, primals, tangents):
    u, w, g = primals
    return g, _multiply(eqn, tangents[0], w, weight_is_lhs)


def sum_of_outer_products(us: Array, dgs: Array) -> Array:
    """`sum_t us[t]^T dgs[t]`: a weight gradient as one matmul over all T*B rows.
    `us: float32[T, B, K]`, `dgs: float32[T, B, G]` -> `float32[K, G]` (float32 for bfloat16
    operands too: the sum runs over all T*B rows).

    On CPU the transposed `us` is materialised first: XLA:CPU's dot with a transposed left
    operand ran at 135 GFLOP/s, the copy plus a plain dot at 171 (K=768, G=2048, T*B=3200)."""
    us, dgs = us.reshape(-1, us.shape[-1]), dgs.reshape(-1, dgs.shape[-1])
    if jax.default_backend() == "cpu":
        us_t = jax.lax.optimization_barrier(us.T)
    else:
        us_t = us.T
    return jnp.matmul(us_t, dgs, preferred_element_type=jnp.float32)  # bfloat16 operands too


def _weight_gradient(eqn, weight_is_lhs: bool, w: Array, us: Array, dgs: Array) -> Array:
    """The gradient of `w` summed over all steps of one product, as one contraction over the
    time axis of `us: [T, ...]` and `dgs: [T, ...]`."""
    (contract_lhs, contract_rhs), _ = eqn.params["dimension_numbers"]
    if (
        not weight_is_lhs
        and w.ndim == 2
        and contract_rhs == (0,)
        and contract_lhs == (us.ndim - 2,)
    ):
        return sum_of_outer_products(us, dgs).astype(w.dtype)  # `u @ w`: the common case
    per_step = lambda w_: jax.vmap(lambda u: _multiply(eqn, u, w_, weight_is_lhs))(us)
    return jax.vjp(per_step, w)[1](dgs)[0]


# ----------------------------------------------------------------------------------------------
# The scan and its backward pass.


def scan(
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
    """`lax.scan(lambda c, x: step(params, data, consts, c, x), carry0, xs)` with the gradients
    of the hoisted parameter leaves (see the module docstring) computed after the reverse loop.

    Args:
      step: `(params, data, consts, carry, x_t) -> (carry, y_t)`, pure.
      params: pytree of parameters; the step's matrix products with them are hoisted.
      data: pytree of other differentiable inputs read at every step (e.g. annotations).
      consts: pytree of non-differentiable inputs (masks).
      carry0, xs: as for `lax.scan`; xs leaves have a leading time axis.
      reverse, unroll: as for `lax.scan`.
      remat: save only the carries; the backward pass recomputes each step's products.

    Returns:
      (final carry, ys stacked on a leading time axis).
    """
    return _scan(step, reverse, unroll, remat, params, data, consts, carry0, xs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _scan(step, reverse, unroll, remat, params, data, consts, carry0, xs):
    return jax.lax.scan(
        lambda c, x: step(params, data, consts, c, x), carry0, xs, reverse=reverse, unroll=unroll
    )


def _program(step, params, data, consts, carry0, xs) -> _Program:
    return _trace(step, params, data, consts, carry0, jax.tree.map(lambda a: a[0], xs))


def _scan_fwd(step, reverse, unroll, remat, params, data, consts, carry0, xs):
    program = _program(step, params, data, consts, carry0, xs)
    fixed = jax.tree.leaves((params, data, consts))

    def body(carry, x_t):
        us, gs = [], []

        def product(k, eqn, u, w):  # computes and records every product
            g = _multiply(eqn, u, w, program.products[k].weight_is_lhs)
            us.append(u)
            gs.append(g)
            return g

        new, y = _run(program, fixed + jax.tree.leaves((carry, x_t)), product)
        saved = (carry,) if remat else (carry, tuple(us), tuple(gs))
        return new, (y, saved)

    carry, (ys, saved) = jax.lax.scan(body, carry0, xs, reverse=reverse, unroll=unroll)
    return (carry, ys), (params, data, consts, xs, saved)


def _scan_bwd(step, reverse, unroll, remat, residuals, cotangents):
    params, data, consts, xs, saved = residuals
    carries = saved[0]
    program = _program(step, params, data, consts, jax.tree.map(lambda a: a[0], carries), xs)
    leaves, treedef = jax.tree.flatten(params)
    others = [i for i in range(len(leaves)) if i not in program.hoisted]  # per-step gradients
    other_leaves = [leaves[i] for i in others]
    dcarry_last, dys = cotangents
    product_avals = [program.closed.jaxpr.eqns[p.eqn].outvars[0].aval for p in program.products]
    # The per-step gradients are summed in float32 (whatever the leaves' dtype) and cast back
    # after the loop.
    add = lambda acc, new: jax.tree.map(lambda a, n: a + n.astype(a.dtype), acc, new)
    wide = lambda x: jnp.zeros(x.shape, jnp.promote_types(x.dtype, jnp.float32))

    def body(acc, inp):
        dcarry, dothers, ddata = acc
        carry, x_t, dy = inp[:3]

        def replayed(others_, data_, carry_, x_, zeros):
            leaves_ = list(leaves)
            for i, leaf in zip(others, others_):
                leaves_[i] = leaf
            us = []

            def product(k, eqn, u, w):  # `u` times `w` (a constant here), plus a zero for dg_t
                us.append(u)
                lhs = program.products[k].weight_is_lhs
                g = _multiply(eqn, u, w, lhs) if remat else inp[3][k]
                return (g if remat else _replay(u, w, g, eqn, lhs)) + zeros[k]

            flat = leaves_ + jax.tree.leaves((data_, consts, carry_, x_))
            return _run(program, flat, product), tuple(us)

        zeros = tuple(jnp.zeros(a.shape, a.dtype) for a in product_avals)
        _, vjp, us = jax.vjp(replayed, other_leaves, data, carry, x_t, zeros, has_aux=True)
        dothers_t, ddata_t, dcarry_prev, dx, dgs = vjp((dcarry, dy))
        emitted = (dx, dgs, us) if remat else (dx, dgs)
        return (dcarry_prev, add(dothers, dothers_t), add(ddata, ddata_t)), emitted

    per_step = (carries, xs, dys) if remat else (carries, xs, dys, saved[2])
    (dcarry0, dothers, ddata), emitted = jax.lax.scan(
        body,
        (dcarry_last, jax.tree.map(wide, other_leaves), jax.tree.map(wide, data)),
        per_step,
        reverse=not reverse,
        unroll=unroll,
    )
    narrow = lambda acc, like: jax.tree.map(lambda a, x: a.astype(x.dtype), acc, like)
    dothers, ddata = narrow(dothers, other_leaves), narrow(ddata, data)
    dxs, dgs = emitted[:2]
    us = emitted[2] if remat else saved[1]
    # The hoisted weight gradients: one contraction per product, over all steps at once.
    dleaves = [jnp.zeros_like(leaf) for leaf in leaves]
    for i, d in zip(others, dothers):
        dleaves[i] = d
    for k, p in enumerate(program.products):
        eqn = program.closed.jaxpr.eqns[p.eqn]
        dw = _weight_gradient(eqn, p.weight_is_lhs, leaves[p.leaf], us[k], dgs[k])
        dleaves[p.leaf] = dleaves[p.leaf] + dw
    return jax.tree.unflatten(treedef, dleaves), ddata, None, dcarry0, dxs


_scan.defvjp(_scan_fwd, _scan_bwd)
