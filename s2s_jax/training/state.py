"""The training state and the optimizer that updates it."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from s2s_jax.nn import model
from s2s_jax.run.config import TrainConfig

Array = jax.Array


class TrainState(NamedTuple):
    """Everything a checkpoint needs to resume a run exactly."""

    step: Array  # int32[]: updates applied so far
    params: Any  # model parameters
    opt_state: Any  # optax state
    key: Array  # uint32[2]: the dropout key, raw; row r of step t: fold_in(fold_in(key, t), r)
    data_pos: Array  # int32[2]: (epoch, index) of the next training batch


def learning_rate_schedule(cfg: TrainConfig) -> optax.Schedule:
    """Linear warmup to `learning_rate`, then constant, cosine decay (to 2% at the last step)
    or inverse square root."""
    lr, warm = cfg.learning_rate, cfg.warmup_steps
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, lr, warm, max(cfg.steps, warm + 1), end_value=0.02 * lr
        )
    if cfg.schedule == "constant":
        after = optax.constant_schedule(lr)
    else:  # rsqrt, which optax does not have
        after = lambda t: lr * jnp.sqrt(max(warm, 1) / (t + max(warm, 1)))
    if not warm:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), after], [warm])


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """Gradient clipping by global norm, then Adam or AdamW on the schedule."""
    schedule = learning_rate_schedule(cfg)
    if cfg.optimizer == "adamw":
        opt = optax.adamw(schedule, weight_decay=cfg.weight_decay)
    else:
        opt = optax.adam(schedule)
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), opt) if cfg.clip_norm else opt


@functools.partial(jax.jit, static_argnums=(0, 1))  # one compilation, not one per operation
def init_state(model_cfg: model.Seq2SeqConfig, train_cfg: TrainConfig) -> TrainState:
    """A fresh state: parameters from the seed, data at its start."""
    # Two independent streams from the seed: the initial parameters, and dropout.
    init_key, dropout_key = jax.random.split(jax.random.key(train_cfg.seed))
    params = model.init(model_cfg, key=init_key)
    key = jax.random.key_data(dropout_key)  # raw uint32[2]: what a checkpoint stores
    opt_state = make_optimizer(train_cfg).init(params)
    return TrainState(jnp.int32(0), params, opt_state, key, jnp.zeros((2,), jnp.int32))


def abstract_state(model_cfg: model.Seq2SeqConfig, train_cfg: TrainConfig) -> TrainState:
    """Shapes and dtypes of `init_state`, without computing anything (a restore target)."""
    return jax.eval_shape(lambda: init_state(model_cfg, train_cfg))
