"""JAX's persistent compilation cache, which the `s2s` command turns on: a second launch loads
the compiled training step, evaluation and search instead of compiling them again.

Where it lives, in order:
  1. `JAX_COMPILATION_CACHE_DIR`, when set: JAX's own setting is left alone.
  2. `S2S_COMPILE_CACHE`: a folder, or `off` (also `0`, `none`, empty) to compile every time.
  3. `$XDG_CACHE_HOME/s2s-jax/xla`, by default `~/.cache/s2s-jax/xla`: one per user.

The cache keys on the computation, the device kind and the versions of jax and jaxlib, so one
folder serves every run, device and version; the least recently used entries go once it holds
more than `MAX_BYTES`. Library users call `enable()` themselves: importing s2s_jax changes no
JAX setting.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "S2S_COMPILE_CACHE"
JAX_ENV = "JAX_COMPILATION_CACHE_DIR"  # JAX reads it itself
OFF = ("off", "0", "none", "")
MAX_BYTES = 4 << 30
# JAX caches only what took longer than this to compile (default 1 s). Our start-up is many
# compilations of 0.1-1 s each (the search, the evaluation, every length bucket's step).
MIN_COMPILE_SECONDS = 0.1


def location(environ=os.environ) -> Path | None:
    """The folder the cache would use, or None when it is off (see the module docstring)."""
    if environ.get(JAX_ENV):
        return Path(environ[JAX_ENV])
    if ENV in environ:
        setting = environ[ENV].strip()
        return None if setting.lower() in OFF else Path(setting).expanduser()
    base = environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "s2s-jax" / "xla"


def enable(environ=os.environ) -> Path | None:
    """Points JAX's persistent compilation cache at `location()`; returns it (None: off).

    A folder that cannot be created turns the cache off rather than failing the command.
    """
    import jax

    folder = location(environ)
    if folder is None or environ.get(JAX_ENV):  # off, or configured through JAX's settings
        return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    try:
        import filelock  # noqa: F401  (JAX needs it to evict entries; a dependency of ours)

        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    except ImportError:
        pass  # unbounded, as JAX's default
    return folder
