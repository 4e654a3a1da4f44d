"""Test settings: float32 everywhere; fake CPU devices only where a test asks (subprocesses)."""

import jax
import pytest

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(params=[False, True], ids=["eager", "jit"])
def maybe_jit(request):
    """Runs a function eagerly or under `jax.jit` (static keyword arguments allowed)."""

    def wrap(fn, **static):
        if not request.param:
            return lambda *a, **kw: fn(*a, **static, **kw)
        return jax.jit(lambda *a, **kw: fn(*a, **static, **kw))

    return wrap
