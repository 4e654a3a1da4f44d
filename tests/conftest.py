"""Test settings: float32 everywhere; strict dtype and rank promotion in the tests of the maths
layer; fake CPU devices only where a test asks (subprocesses)."""

import jax
import pytest

jax.config.update("jax_default_matmul_precision", "highest")

# The maths layer (s2s_jax/nn) runs under strict dtype promotion and rank promotion "raise" in
# its tests: no silent int/float or float32/float64 mixing, no accidental broadcast between
# arrays of different ranks (biases are added with `nn.affine`). Not globally: optax's own
# updates promote implicitly.
STRICT_PROMOTION = {
    "test_attention",
    "test_cells",
    "test_decoding",
    "test_family",
    "test_model",
    "test_rnn",
    "test_scan",
}


@pytest.fixture(autouse=True)
def strict_promotion_in_the_maths(request):
    module = request.node.module.__name__.rpartition(".")[2]
    if module in STRICT_PROMOTION and not request.node.get_closest_marker("optax"):
        with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
            yield
    else:
        yield


@pytest.fixture(params=[False, True], ids=["eager", "jit"])
def maybe_jit(request):
    """Runs a function eagerly or under `jax.jit` (static keyword arguments allowed)."""

    def wrap(fn, **static):
        if not request.param:
            return lambda *a, **kw: fn(*a, **static, **kw)
        return jax.jit(lambda *a, **kw: fn(*a, **static, **kw))

    return wrap
