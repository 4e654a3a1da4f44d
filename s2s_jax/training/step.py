"""One training step: the per-device step body that `parallel` runs, minimising the
teacher-forced loss of `nn.loss`.

A step is a pure function of (state, batch): the dropout key of the batch's global row r at
step t is `fold_in(fold_in(key, t), r)`, so a run resumed from a checkpoint takes exactly the
steps an uninterrupted one would, and every split of the batch (devices, processes,
micro-batches) draws every row's masks as one device would.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from s2s_jax.data import Batch
from s2s_jax.nn import model
from s2s_jax.nn.loss import loss_terms
from s2s_jax.run import config
from s2s_jax.training.state import TrainState, make_optimizer

Array = jax.Array


def train_step(
    state: TrainState,
    batch: Batch,
    *,
    model_cfg: model.Seq2SeqConfig,
    train_cfg: config.TrainConfig,
    axis_name: str | None = None,
) -> tuple[TrainState, dict]:
    """One optimizer update on one device's share of the batch.

    With `axis_name`, the devices' gradients are summed over that axis (`lax.psum`); each
    device's loss is divided by the global token count, so any split of the batch gives the
    update of the whole batch on one device (a mean of per-device means would not).
    Dropout draws each row's masks from the row's index in the global batch (`global_rows`),
    so with dropout too any split gives the one-device update.
    A non-finite loss, gradient or update leaves the state unchanged and sets
    `metrics["finite"]` to 0, so the last good parameters survive for the host to stop on.
    """
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    key = key if model_cfg.drops_out else None
    reduce = (lambda x: jax.lax.psum(x, axis_name)) if axis_name else (lambda x: x)
    tokens = jnp.maximum(reduce(jnp.sum(batch.tgt_len).astype(jnp.float32)), 1.0)
    rows = global_rows(batch.tgt_len.shape[0], axis_name)
    grads, sums = _gradients(state.params, batch, rows, key, tokens, model_cfg, train_cfg)
    grads, sums = reduce(grads), reduce(sums)
    updates, opt_state = make_optimizer(train_cfg).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm, param_norm = optax.tree.norm(grads), optax.tree.norm(params)
    finite = jnp.isfinite(sums["nll"]) & jnp.isfinite(grad_norm) & jnp.isfinite(param_norm)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = state._replace(
        step=state.step + 1,
        params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state),
    )
    metrics_ = {
        "loss": sums["nll"] / tokens,
        "tokens": sums["tokens"],
        "accuracy": sums["correct"] / tokens,
        "grad_norm": grad_norm,
        "param_norm": param_norm,
        "finite": finite.astype(jnp.float32),
    }
    return new_state, metrics_


def global_rows(local_rows: int, axis_name: str | None = None) -> Array:
    """int32[local_rows]: the indices in the global batch of this device's rows.

    `parallel` gives device i of the axis (its position in the mesh, or in pmap's mapped axis)
    rows `[i * local_rows, (i + 1) * local_rows)` of the global batch, in every mode and with
    any number of processes (a process's devices hold its consecutive share of the rows).
    """
    rows = jnp.arange(local_rows, dtype=jnp.int32)
    if axis_name is None:
        return rows
    return jax.lax.axis_index(axis_name).astype(jnp.int32) * local_rows + rows


def _gradients(params, batch: Batch, rows, key, tokens, model_cfg, train_cfg) -> tuple:
    """The gradient of the batch's token-summed loss over `tokens`, and the loss sums.

    `rows: int32[b]`: the global indices of the batch's rows; row r draws its dropout masks
    from `fold_in(key, r)` (`key`: the step's key, or None without dropout).
    With `train_cfg.accumulate` N > 1, the batch's rows are split into N micro-batches run one
    after another (`lax.scan`), their gradients summed: the update of the whole batch (each
    micro-batch's loss is over the whole batch's tokens) with the activations of 1/N of it.
    A row's masks are the same whichever micro-batch holds it.
    """

    def grad_fn(micro: Batch, micro_rows) -> tuple:
        keys = None
        if key is not None:
            keys = jax.vmap(jax.random.fold_in, (None, 0))(key, micro_rows)

        def loss_fn(params):
            loss, sums = loss_terms(
                params, micro, keys, model_cfg=model_cfg, label_smoothing=train_cfg.label_smoothing
            )
            return loss / tokens, sums

        return jax.grad(loss_fn, has_aux=True)(params)

    n = train_cfg.accumulate
    if n == 1:
        return grad_fn(batch, rows)
    split = lambda x: x.reshape(n, x.shape[0] // n, *x.shape[1:])
    micros, micro_rows = jax.tree.map(split, batch), split(rows)

    def add(total, micro_and_rows):
        part = grad_fn(*micro_and_rows)
        return jax.tree.map(jnp.add, total, part), None

    first = jax.tree.map(lambda x: x[0], (micros, micro_rows))
    shapes = jax.eval_shape(lambda: grad_fn(*first))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    total, _ = jax.lax.scan(add, zeros, (micros, micro_rows))
    return total
