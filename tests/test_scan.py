"""`scan.run`: every implementation against the Python-loop oracle and finite differences, for
cells and for a general step function; masking, reverse, remat; clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from s2s_jax.nn import cells, scan
from s2s_jax.nn.scan import hoisted

B, T, I, H = 3, 7, 5, 6
LENGTHS = jnp.array([7, 4, 1])
CASES = [  # (cell, impl): every implementation with every cell it runs
    (cell, impl)
    for cell in ("rnn", "gru", "lstm")
    for impl in ("autodiff", "fused", "hoisted")
    if not (impl == "fused" and cell == "rnn")
]


def close(got, want, tol=1e-5):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=tol, atol=tol), got, want)


def setup(name, seed=0):
    cell = cells.get_cell(name)
    kp, kx, kc = jax.random.split(jax.random.key(seed), 3)
    carry0 = jax.tree.map(lambda z: jax.random.normal(kc, z.shape), cell.initial_carry(B, H))
    return cell, cell.init(kp, I, H), jax.random.normal(kx, (B, T, I)), carry0


def cell_loss(cell, lengths, **kw):
    """Weights every output and each carry part differently, so no gradient path hides."""

    def loss(p, xs, carry0):
        out, carry = scan.run(cell, p, xs, lengths, initial_carry=carry0, **kw)
        weights = jnp.cos(jnp.arange(out.size, dtype=jnp.float32)).reshape(out.shape)
        return jnp.sum(out * weights) + sum(jnp.sum(c * (k + 1.5)) for k, c in enumerate(carry))

    return loss


@pytest.mark.parametrize("name,impl", CASES)
@pytest.mark.parametrize("remat", [False, True])
def test_cells_values_and_gradients_equal_the_loop(name, impl, remat):
    """Reverse and projection vary with the case, so each is crossed with every impl."""
    cell, p, xs, carry0 = setup(name)
    reverse, projection = remat, "inside" if impl != "hoisted" else "outside"
    lengths = None if (impl, remat) == ("autodiff", False) else LENGTHS  # one case unpadded
    kw = dict(reverse=reverse, projection=projection)
    grad = lambda impl, **more: jax.jit(
        jax.value_and_grad(cell_loss(cell, lengths, impl=impl, **kw, **more), argnums=(0, 1, 2))
    )
    got = grad(impl, remat=remat, unroll=2)(p, xs, carry0)
    close(got, grad("loop")(p, xs, carry0))


@pytest.mark.parametrize("impl", ["autodiff", "fused"])
@pytest.mark.parametrize("reverse", [False, True])
def test_padding_changes_nothing(impl, reverse):
    """Each sequence alone, unpadded, gives the same outputs and final carry as in the batch;
    padded steps emit zeros."""
    cell, p, xs, _ = setup("lstm", seed=1)
    run = jax.jit(lambda p, xs, lengths: scan.run(cell, p, xs, lengths, reverse=reverse, impl=impl))
    out, carry = run(p, xs, LENGTHS)
    for b, n in enumerate(LENGTHS.tolist()):
        alone, alone_carry = run(p, xs[b : b + 1, :n], None)
        close(out[b, :n], alone[0])
        np.testing.assert_array_equal(out[b, n:], 0.0)
        assert type(carry) is type(alone_carry)
        jax.tree.map(lambda a, c: close(a[b], c[0]), carry, alone_carry)


def test_reverse_reads_each_sequence_backwards():
    """reverse=True equals a forward run over each sequence reversed within its own length."""
    cell, p, xs, _ = setup("gru", seed=3)
    out, _ = scan.run(cell, p, xs, LENGTHS, reverse=True)
    for b, n in enumerate(LENGTHS.tolist()):
        fwd, _ = scan.run(cell, p, xs[b : b + 1, :n][:, ::-1])
        close(out[b, :n], fwd[0, ::-1])


@pytest.mark.parametrize("name,impl,remat", [("lstm", "fused", True), ("gru", "fused", False)])
def test_fused_gradients_against_finite_differences(name, impl, remat):
    cell, p, xs, carry0 = setup(name, seed=2)
    f = cell_loss(cell, LENGTHS, reverse=True, impl=impl, remat=remat)
    check_grads(f, (p, xs, carry0), order=1, modes=["rev"], atol=2e-2, rtol=2e-2)


def test_gradient_of_a_stacked_bidirectional_use():
    """Two fused layers, one reversed, composed: gradients still match plain autodiff."""
    cell, p, xs, _ = setup("lstm", seed=3)
    p2 = cell.init(jax.random.key(9), H, H)

    def net(impl, p, p2, xs):
        h, _ = scan.run(cell, p, xs, LENGTHS, impl=impl)
        out, _ = scan.run(cell, p2, h, LENGTHS, reverse=True, impl=impl)
        return jnp.sum(jnp.tanh(out) ** 2)

    grad = lambda impl: jax.jit(jax.grad(lambda *a: net(impl, *a), argnums=(0, 1, 2)))
    close(grad("fused")(p, p2, xs), grad("autodiff")(p, p2, xs))


# ----------------------------------------------------------------------------------------------
# A general step function (as the attention decoder's): data, consts, products written any way.


def step(p, data, consts, carry, x):
    """Uses `u` twice per step, plus a vector, a matrix written as `w @ u`, and an unused one."""
    h = jnp.tanh(x @ p["w"] + jnp.dot(carry, p["u"]) + p["b"][None] + data["c"])
    h = jnp.where(consts, h, carry)
    side = jnp.sum(jnp.einsum("hk,bh->bk", p["v"], h), axis=-1)
    return h, jnp.sum(h * (h @ p["u"]), axis=-1) + side


def setup_step():
    k = iter(jax.random.split(jax.random.key(0), 7))
    params = {
        "w": jax.random.normal(next(k), (3, 4)),
        "u": jax.random.normal(next(k), (4, 4)) * 0.5,
        "v": jax.random.normal(next(k), (4, 5)),
        "b": jax.random.normal(next(k), (4,)),
        "unused": jnp.ones((2, 2)),
    }
    data = {"c": jax.random.normal(next(k), (5, 4))}
    xs = jax.random.normal(next(k), (5, 6, 3))  # [B, T, I]
    carry0 = jax.random.normal(next(k), (5, 4))
    keep = jnp.array([True, True, False, True, True])[:, None]
    return params, data, keep, carry0, xs


def step_loss(the_step, consts, lengths=None, **kw):
    def loss(params, data, carry0, xs):
        ys, carry = scan.run(
            the_step, params, xs, lengths, initial_carry=carry0, data=data, consts=consts, **kw
        )
        return jnp.sum(carry**2) + jnp.sum(jnp.sin(ys))

    return loss


@pytest.mark.parametrize("remat", [False, True])
def test_a_step_function_equals_the_loop_under_every_implementation(remat):
    params, data, keep, carry0, xs = setup_step()
    lengths = jnp.array([6, 2, 0, 5, 1])
    grad = lambda **kw: jax.jit(
        jax.value_and_grad(step_loss(step, keep, lengths, **kw), argnums=(0, 1, 2, 3))
    )
    want = grad(impl="loop")(params, data, carry0, xs)
    for impl in ("autodiff", "hoisted"):
        got = grad(impl=impl, remat=remat)(params, data, carry0, xs)
        close(got, want)
    np.testing.assert_array_equal(want[1][0]["unused"], 0.0)


def test_hoisted_gradients_against_finite_differences():
    params, data, keep, carry0, xs = setup_step()
    f = step_loss(step, keep, impl="hoisted", unroll=2, reverse=True)
    check_grads(f, (params, data, carry0, xs), order=1, modes=["rev"])


def test_hoisted_finds_the_products_however_they_are_written():
    """`x @ w`, `jnp.dot`, `einsum` with the weight first are hoisted; a matrix also used
    another way (here transposed) gets per-step gradients, and stays correct."""
    params, data, keep, carry0, xs = setup_step()
    xs_tm = jnp.swapaxes(xs, 0, 1)
    found = hoisted.hoisted_leaves(step, params, data, keep, carry0, xs_tm)
    assert found == ["['u']", "['v']", "['w']"]

    def transposed(p, data, consts, carry, x):
        h, y = step(p, data, consts, carry, x)
        return h, y + jnp.sum(h @ p["u"].T, axis=-1)

    assert "['u']" not in hoisted.hoisted_leaves(transposed, params, data, keep, carry0, xs_tm)
    grad = lambda impl: jax.jit(jax.grad(step_loss(transposed, keep, impl=impl)))
    close(grad("hoisted")(params, data, carry0, xs), grad("autodiff")(params, data, carry0, xs))


def test_bad_arguments_are_clear_errors():
    cell, p, xs, _ = setup("rnn")
    with pytest.raises(ValueError, match="fused.*lstm and gru cells only.*'rnn'"):
        scan.run(cell, p, xs, impl="fused")
    with pytest.raises(ValueError, match="impl must be one of"):
        scan.run(cell, p, xs, impl="cudnn")
    with pytest.raises(ValueError, match="projection"):
        scan.run(cell, p, xs, projection="middle")
    params, data, keep, carry0, xs = setup_step()
    with pytest.raises(ValueError, match="initial_carry"):
        scan.run(step, params, xs, data=data, consts=keep)
    with pytest.raises(ValueError, match="not a step function"):
        scan.run(step, params, xs, initial_carry=carry0, data=data, consts=keep, impl="fused")
