"""The devices a run uses: the 1-D data mesh and the multi-process set-up.

Below both training (`training.parallel` runs the step over the mesh) and inference
(`Translator` splits each batch's sentences over it), so that neither imports the other for it.
Multi-host: `initialize_distributed` first; the mesh lists devices grouped by process, as pmap
does, so each process's rows of a global batch land on its own devices.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from s2s_jax.errors import ConfigError

AXIS = "data"
MODES = ("auto", "shard_map", "pmap", "none")
# The environment variables `initialize_distributed` reads (jax itself reads only the first).
ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID = (
    "JAX_COORDINATOR_ADDRESS",
    "JAX_NUM_PROCESSES",
    "JAX_PROCESS_ID",
)


def initialize_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto_detect: bool = False,
) -> bool:
    """Joins a multi-process run, if one is configured; call it before any other jax call.

    Arguments win over the environment variables JAX_COORDINATOR_ADDRESS (host:port of process
    0), JAX_NUM_PROCESSES and JAX_PROCESS_ID. With none of them set, nothing happens unless
    `auto_detect`, which lets jax find them on Cloud TPU, Slurm, Open MPI or Kubernetes.

    Returns:
      whether `jax.distributed` is initialized (by this call or an earlier one).
    """
    if jax.distributed.is_initialized():
        return True
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR) or None
    num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    given = (coordinator, num_processes, process_id)
    if all(v is None for v in given):
        if auto_detect:
            try:
                jax.distributed.initialize()
            except ValueError as e:  # no cluster environment found
                raise ConfigError(
                    f"no cluster environment detected ({e}): give the "
                    "coordinator address, number of processes and process id"
                ) from e
        return jax.distributed.is_initialized()
    if any(v is None for v in given):
        raise ConfigError(
            "a multi-process run needs the coordinator address, the number of processes and "
            f"this process's id; got {given}: set all three (flags or {ENV_COORDINATOR}, "
            f"{ENV_NUM_PROCESSES}, {ENV_PROCESS_ID})"
        )
    jax.distributed.initialize(coordinator, num_processes, process_id)
    return True


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def on_any_process(flag: bool) -> bool:
    """Whether `flag` holds on any process; every process must call it at the same point."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh, axis "data": of `devices`, by default every device grouped by process
    (pmap's order)."""
    if devices is None:
        devices = [
            d for p in range(jax.process_count()) for d in jax.local_devices(process_index=p)
        ]
    return Mesh(np.array(devices), (AXIS,))
