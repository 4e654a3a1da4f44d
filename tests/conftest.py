"""Test settings: float32 everywhere; strict dtype and rank promotion in the tests of the maths
layer; fake CPU devices only where a test asks (subprocesses); one compilation cache for the
test run; XLA's quick compilations."""

import atexit
import os
import shutil
import tempfile

import jax
import pytest

from s2s_jax import compile_cache

jax.config.update("jax_default_matmul_precision", "highest")
# XLA compiles the tests' programs without its costlier optimisations, here and in the `s2s`
# processes they launch: the tests check what programs compute (to float tolerances), not how
# fast they run, and compiling is most of the suite's time (about half as long this way). What
# `s2s bench` and the experiments time is compiled in full.
os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
jax.config.update("jax_disable_most_optimizations", True)

# What a user gets from the `s2s` command, in a folder of this session's own (never the user's
# cache): the tests and the commands they launch load what an earlier one compiled.
# Under pytest-xdist the workers share the controller's folder (inherited through the
# environment), and the controller removes it.
_PREFIX = "s2s-test-xla-"
_CACHE = os.environ.get(compile_cache.ENV, "")
if not (os.environ.get("PYTEST_XDIST_WORKER") and os.path.basename(_CACHE).startswith(_PREFIX)):
    _CACHE = tempfile.mkdtemp(prefix=_PREFIX)
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ.pop(compile_cache.JAX_ENV, None)
os.environ[compile_cache.ENV] = _CACHE
compile_cache.enable()

# The maths layer (s2s_jax/nn) runs under strict dtype promotion and rank promotion "raise" in
# its tests: no silent int/float or float32/float64 mixing, no accidental broadcast between
# arrays of different ranks (biases are added with `nn.affine`). Not globally: optax's own
# updates promote implicitly.
STRICT_PROMOTION = {
    "test_attention",
    "test_cells",
    "test_decoding",
    "test_family",
    "test_linear_cells",
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


def pytest_xdist_auto_num_workers(config):
    """`--numprocesses=auto`: one worker more than the cores this process may use (capped by
    `--maxprocesses`). Much of a test's time is one-threaded (XLA's compiler, imports, the
    `s2s` processes CLI tests launch, waiting on them), so a third worker on two cores fills
    those gaps."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (cores or 1) + 1
