"""Data parallelism: one step body, run under plain `jit` (one device), `shard_map` over a
1-D device mesh with axis "data", or `pmap`. (Single-device path; multi-device modes follow.)"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from s2s_jax.errors import ConfigError

AXIS = "data"
MODES = ("auto", "shard_map", "pmap", "none")


def resolve_mode(mode: str) -> str:
    """"auto" is shard_map with more than one device, else none."""
    if mode not in MODES:
        raise ConfigError(f"parallel must be one of {MODES}, not {mode!r}")
    if mode == "auto":
        return "shard_map" if jax.device_count() > 1 else "none"
    return mode


class DataParallel:
    """Runs `body(state, batch, axis_name=...) -> (state, metrics)` over the devices."""

    def __init__(self, mode: str, body: Callable, *, batch_size: int):
        self.mode = resolve_mode(mode)
        if self.mode != "none":
            raise ConfigError(f"parallel={self.mode} is not available yet; use none")
        self._step = jax.jit(body, donate_argnums=0)

    def replicate(self, tree: Any) -> Any:
        return jax.device_put(tree)

    def restore_target(self, state: Any) -> Any:
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)

    def shard_batch(self, batch: Any) -> Any:
        return jax.tree.map(jax.numpy.asarray, batch)

    def step(self, state: Any, batch: Any) -> tuple[Any, dict]:
        return self._step(state, batch)

    def fetch(self, tree: Any) -> Any:
        return jax.tree.map(np.asarray, jax.device_get(tree))

    def fetch_params(self, params: Any) -> Any:
        return params

    def checkpoint_view(self, state: Any) -> Any:
        return state
