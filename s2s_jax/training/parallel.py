"""Data parallelism: one step body, run under plain `jit`, `jax.shard_map` or `jax.pmap`.

The body `body(state, batch, *, axis_name) -> (state, metrics)` (`step.train_step`) sees one
device's rows of the global batch. It sums the gradients and the token counts over the mesh
axis "data" itself (`lax.psum`) and divides by the GLOBAL token count, so any split of the
batch gives the update of the whole batch on one device (up to float summation order); a
mean of per-device means would weight short and long shards wrongly. Dropout draws each row's
masks from the row's index in the global batch (`step.global_rows`: the device's index on the
axis times its rows, plus the row), so the split does not change the masks either.

One layout in every mode, so that checkpoints depend on neither the mode nor the device count:
  * state: every leaf replicated on every device, `NamedSharding(mesh, P())` (mode "none": on
    the first local device);
  * batch, global `B` rows: shard_map takes `[B, ...]` split by rows, `P("data")`; pmap takes
    it reshaped to `[n_devices, B / n_devices, ...]`, the leading axis split;
  * metrics: replicated scalars (the body reduced them).
pmap receives the state with `in_axes=None` and returns it with `out_axes=None` (no leading
device axis to add or strip), and drops the mapped axis of the batch inside the body.

Multi-host (`run.mesh.initialize_distributed` first): every process runs the same program on
the same global batches; `shard_batch` keeps the process's own rows
`[p * B / P, (p + 1) * B / P)` and assembles the global array from the processes' shares. The
mesh (`run.mesh.data_mesh`) lists devices grouped by process, as pmap does, so those rows land
on the process's own devices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P

from s2s_jax.errors import ConfigError
from s2s_jax.run.mesh import AXIS, MODES, data_mesh


def resolve_mode(mode: str) -> str:
    """ "auto" is shard_map with more than one device, else none."""
    if mode not in MODES:
        raise ConfigError(f"parallel must be one of {MODES}, not {mode!r}")
    if mode == "auto":
        return "shard_map" if jax.device_count() > 1 else "none"
    return mode


def _first_local(x: Any) -> Any:
    """The copy of a replicated array held by this process's first device."""
    if not isinstance(x, jax.Array):
        return x
    if not x.sharding.is_fully_replicated:
        raise ValueError(f"expected a replicated array, got sharding {x.sharding}")
    return x.addressable_data(0)


class DataParallel:
    """Runs `body(state, batch, axis_name=...) -> (state, metrics)` over the devices.

    Args:
      mode: "shard_map", "pmap", "none" (plain jit on one device) or "auto".
      body: the per-device step, e.g. `functools.partial(step.train_step, model_cfg=...)`.
      batch_size: the global batch size; it must split evenly across the devices. 0: any
        number of rows that does (batches of a token budget, `TrainConfig.batch_tokens`).
      micro_batches: each device's rows are split this many ways (`TrainConfig.accumulate`):
        checked here, where the number of devices is known.
      devices: the devices to use (single-process runs only); by default all of them.

    Every mode donates the state: the state passed to `step` must not be used again.
    """

    def __init__(
        self,
        mode: str,
        body: Callable,
        *,
        batch_size: int,
        micro_batches: int = 1,
        devices: Sequence[jax.Device] | None = None,
    ):
        self.mode = resolve_mode(mode)
        self.batch_size, self.micro_batches = batch_size, micro_batches
        if self.mode == "none":
            if jax.process_count() > 1:
                raise ConfigError(
                    f"parallel=none in a run of {jax.process_count()} processes would train "
                    "one model per process: use parallel=shard_map or pmap"
                )
            self.n_devices = 1
            first = jax.local_devices()[0] if devices is None else devices[0]
            self._replicated = SingleDeviceSharding(first)
            # Shardings named: arrays on the device but not committed to it (a jit's outputs
            # from uncommitted inputs, `jnp.array`) would otherwise compile the step again.
            self._step = jax.jit(
                body,
                donate_argnums=0,
                in_shardings=self._replicated,
                out_shardings=self._replicated,
            )
            return
        if devices is not None and jax.process_count() > 1:
            raise ConfigError("a multi-process run uses every device: do not pass devices")
        self.mesh = data_mesh(devices)
        self.n_devices = self.mesh.size
        if batch_size % (self.n_devices * micro_batches):
            unit = self.n_devices * micro_batches
            raise ConfigError(
                f"batch_size {batch_size} does not split evenly across {self.n_devices} "
                f"devices"
                + (f" x {micro_batches} micro-batches" if micro_batches > 1 else "")
                + f": set batch_size to a multiple of {unit}, e.g. {-(-batch_size // unit) * unit}"
            )
        self._replicated = NamedSharding(self.mesh, P())
        self._rows = NamedSharding(self.mesh, P(AXIS))
        per_device = lambda state, batch: body(state, batch, axis_name=AXIS)
        if self.mode == "shard_map":
            # check_vma=False, as pmap does: the model's scans start from constant (device-
            # invariant) carries that vma typing would reject. The outputs declared
            # replicated, P(), are so because the body psums what depends on the batch.
            self._step = jax.jit(
                jax.shard_map(
                    per_device,
                    mesh=self.mesh,
                    in_specs=(P(), P(AXIS)),
                    out_specs=(P(), P()),
                    check_vma=False,
                ),
                donate_argnums=0,
            )
        else:
            self._step = jax.pmap(
                per_device,
                axis_name=AXIS,
                in_axes=(None, 0),
                out_axes=(None, None),
                donate_argnums=0,
                devices=None if devices is None else list(devices),
            )

    # ------------------------------------------------------------------------ placement

    def replicate(self, tree: Any) -> Any:
        """Places a pytree of (host or single-device) arrays on every device.

        Leaves already in place (e.g. restored onto `restore_target`) are kept as they are;
        the others must hold the same value on every process.
        """

        def put(x):
            if isinstance(x, jax.Array) and x.sharding == self._replicated:
                return x
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, self._replicated, lambda i: x[i])

        return jax.tree.map(put, tree)

    def restore_target(self, state: Any) -> Any:
        """The abstract replicated state: an orbax restore target for any saved layout."""
        return jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=self._replicated), state
        )

    def shard_batch(self, batch: Any, *, local: bool = False) -> Any:
        """The global numpy batch (the same on every process) -> device arrays.

        Args:
          batch: a pytree (e.g. `data.Batch`) of numpy arrays with `batch_size` rows; with
            `local`, only this process's share of them (rows `[p * B / P, (p + 1) * B / P)` of
            process `p` of `P`, as `train_batches(part=...)` reads them).

        Returns:
          shard_map: arrays `[B, ...]` split by rows over "data"; pmap: `[n_dev, B/n_dev, ...]`
          split on the leading axis; none: the arrays on the device.
        """
        if self.mode == "none":
            return jax.device_put(batch, self._replicated)
        procs, pid = jax.process_count(), jax.process_index()
        rows = {x.shape[0] for x in jax.tree.leaves(batch)}
        total = max(rows) * (procs if local else 1)  # the global batch's rows
        if (
            len(rows) != 1
            or total % (self.n_devices * self.micro_batches)
            or (self.batch_size and total != self.batch_size)
        ):
            want = self.batch_size or f"a multiple of {self.n_devices * self.micro_batches}"
            got = f"{sorted(rows)}{' on each of the processes' if local else ''}"
            raise ConfigError(f"batches must have {want} rows, got {got}")
        share, per_dev = total // procs, total // self.n_devices

        def put(x):
            mine = np.asarray(x if local else x[pid * share : (pid + 1) * share])
            shape = (total, *x.shape[1:])
            if self.mode == "pmap":
                mine = mine.reshape(-1, per_dev, *x.shape[1:])
                shape = (self.n_devices, per_dev, *x.shape[1:])
            return jax.make_array_from_process_local_data(self._rows, mine, shape)

        return jax.tree.map(put, batch)

    # ------------------------------------------------------------------------ running

    def step(self, state: Any, batch: Any) -> tuple[Any, dict]:
        """One update (donates `state`); the batch comes from `shard_batch`."""
        return self._step(state, batch)

    def fetch(self, tree: Any) -> Any:
        """Replicated device values (metrics, state.step, ...) -> numpy, in one transfer."""
        return jax.tree.map(np.asarray, jax.device_get(jax.tree.map(_first_local, tree)))

    def fetch_params(self, params: Any) -> Any:
        """A copy of the parameters on this process's first device, for decoding there.

        A copy, so it outlives the next `step` (which donates the state's buffers).
        """
        return jax.tree.map(lambda x: jax.numpy.copy(_first_local(x)), params)

    def checkpoint_view(self, state: Any) -> Any:
        """The state as a global replicated array per leaf, as orbax saves it.

        Multi-process pmap returns process-local arrays; they are re-wrapped (no copy).
        """
        if self.mode != "pmap" or jax.process_count() == 1:
            return state

        def to_global(x):
            if not x.is_fully_addressable:
                return x
            return jax.make_array_from_single_device_arrays(
                x.shape, self._replicated, [s.data for s in x.addressable_shards]
            )

        return jax.tree.map(to_global, state)
