"""`hoisted.scan` against `lax.scan` autodiff and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from s2s_jax.nn import hoisted


def step(p, data, keep, carry, x):
    """A masked recurrence using `u` twice per step, plus a vector and an unused matrix."""
    h = jnp.tanh(x @ p["w"] + carry @ p["u"] + p["b"] + data["c"])
    h = jnp.where(keep, h, carry)
    return h, jnp.sum(h * (h @ p["u"]), axis=-1)


def setup():
    k = iter(jax.random.split(jax.random.key(0), 6))
    params = {
        "w": jax.random.normal(next(k), (3, 4)),
        "u": jax.random.normal(next(k), (4, 4)) * 0.5,
        "b": jax.random.normal(next(k), (4,)),
        "unused": jnp.ones((2, 2)),
    }
    data = {"c": jax.random.normal(next(k), (5, 4))}
    xs = jax.random.normal(next(k), (6, 5, 3))  # [T, B, I]
    carry0 = jax.random.normal(next(k), (5, 4))
    keep = jnp.array([True, True, False, True, True])[:, None]
    return params, data, keep, carry0, xs


def loss_of(scan):
    def loss(params, data, carry0, xs):
        carry, ys = scan(params, data, carry0, xs)
        return jnp.sum(carry**2) + jnp.sum(jnp.sin(ys))

    return loss


def test_values_and_gradients_equal_lax_scan():
    params, data, keep, carry0, xs = setup()
    plain = loss_of(lambda p, d, c, x: jax.lax.scan(lambda c, x: step(p, d, keep, c, x), c, x))
    ours = loss_of(lambda p, d, c, x: hoisted.scan(step, p, d, keep, c, x))
    want = jax.jit(jax.value_and_grad(plain, argnums=(0, 1, 2, 3)))(params, data, carry0, xs)
    got = jax.jit(jax.value_and_grad(ours, argnums=(0, 1, 2, 3)))(params, data, carry0, xs)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), got, want)
    np.testing.assert_array_equal(got[1][0]["unused"], 0.0)


def test_gradients_against_finite_differences():
    params, data, keep, carry0, xs = setup()
    ours = loss_of(lambda p, d, c, x: hoisted.scan(step, p, d, keep, c, x, unroll=2))
    check_grads(ours, (params, data, carry0, xs), order=1, modes=["rev"])


def test_a_matrix_used_otherwise_than_u_at_w_is_a_clear_error():
    params, data, keep, carry0, xs = setup()
    bad = lambda p, d, k, c, x: (c @ p["u"].T, jnp.sum(c, axis=-1))
    with pytest.raises(AttributeError, match="only as `u @ w`"):
        jax.grad(lambda p: jnp.sum(hoisted.scan(bad, p, data, keep, carry0, xs)[1]))(params)
