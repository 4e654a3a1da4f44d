"""The persistent compilation cache of the `s2s` command: where it lives, and that a second
launch loads what the first compiled (seen in JAX's own compile log), through the real command."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from s2s_jax import compile_cache

S2S = shutil.which("s2s", path=str(Path(sys.executable).parent)) or shutil.which("s2s")

TINY = [
    "--task",
    "copy",
    "--steps",
    "4",
    "--no-progress",
    "--set",
    "cell=gru",
    "--set",
    "src_embed=8",
    "--set",
    "tgt_embed=8",
    "--set",
    "enc_hidden=12",
    "--set",
    "dec_hidden=12",
    "--set",
    "attn_dim=8",
    "--set",
    "batch_size=8",
    "--set",
    "eval_every=4",
    "--set",
    "eval_examples=8",
    "--set",
    "buckets=1",
    "--set",
    "warmup_steps=2",
]


def test_where_the_cache_lives(tmp_path):
    home = Path.home() / ".cache" / "s2s-jax" / "xla"
    assert compile_cache.location({}) == home
    assert compile_cache.location({"XDG_CACHE_HOME": "/c"}) == Path("/c/s2s-jax/xla")
    assert compile_cache.location({compile_cache.ENV: "~/x"}) == Path.home() / "x"
    for off in ("off", "OFF", "0", "none", ""):
        assert compile_cache.location({compile_cache.ENV: off}) is None
    # JAX's own setting wins, and enable() leaves JAX's configuration alone then.
    jax_set = {compile_cache.JAX_ENV: str(tmp_path / "j"), compile_cache.ENV: "off"}
    assert compile_cache.location(jax_set) == tmp_path / "j"
    assert compile_cache.enable({compile_cache.ENV: "off"}) is None


def _s2s(*args, cache, cwd):
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_LOG_COMPILES="1")
    env[compile_cache.ENV] = cache
    env.pop(compile_cache.JAX_ENV, None)
    proc = subprocess.run(
        [S2S, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    hits = re.findall(r"Persistent compilation cache hit for '(\w+)'", proc.stderr)
    return proc.stdout, hits


@pytest.mark.skipif(S2S is None, reason="the s2s command is not installed")
def test_a_second_launch_loads_what_the_first_compiled(tmp_path):
    cache = str(tmp_path / "cache")
    out_a, hits_a = _s2s("train", "--workdir", "a", *TINY, cache=cache, cwd=tmp_path)
    assert hits_a == []  # a new cache: everything compiled, and written
    assert any((tmp_path / "cache").iterdir())

    # Another run of the same model: its initialisation, training step and evaluation's search
    # come from the cache,
    # and it computes the same numbers.
    out_b, hits_b = _s2s("train", "--workdir", "b", *TINY, cache=cache, cwd=tmp_path)
    assert json.loads(out_b) == json.loads(out_a)
    assert {"jit_init_state", "jit_train_step", "jit_greedy"} <= set(hits_b), hits_b

    # Translating: the second launch loads the search the first compiled; with the cache off,
    # the same translation, compiled, and nothing written.
    out_c, _ = _s2s("translate", "--workdir", "b", "abc", cache=cache, cwd=tmp_path)
    out_d, hits_d = _s2s("translate", "--workdir", "b", "abc", cache=cache, cwd=tmp_path)
    assert out_d == out_c and "jit_greedy" in hits_d, hits_d
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    out_e, hits_e = _s2s("translate", "--workdir", "b", "abc", cache="off", cwd=tmp_path)
    assert out_e == out_c and hits_e == []
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == entries
