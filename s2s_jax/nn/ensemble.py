"""Ensembles: several models read the same source and, at every step, write the next token from
the mean of their probabilities,

    P(y_t | y_<t, x) = 1/M * sum_m P_m(y_t | y_<t, x),

so log P(y | x) is the sum over t of log-mean-exp of the members' log-probabilities.

The functions mirror `model.compute_params`, `model.encode`, `model.init_decoder_state`,
`model.decode_step` and `model.log_prob` with `params` a tuple of parameter pytrees and `cfg` a
tuple of
`Seq2SeqConfig`s (hashable: a static `jit` argument). Members may differ in architecture; they
share the vocabularies (the caller checks). `decode_step`'s "logits" are the ensemble's
normalised log-probabilities, which `log_softmax` leaves as they are, so the searches in
`decoding` take an ensemble wherever they take a model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from s2s_jax.nn import model, scan
from s2s_jax.nn.model import Seq2SeqConfig

Array = jax.Array
Configs = tuple[Seq2SeqConfig, ...]


def _check(params: tuple, cfg: Configs) -> None:
    if not cfg or len(params) != len(cfg):
        raise ValueError(f"an ensemble needs one config per member: {len(params)} != {len(cfg)}")


def mean_log_probs(member_log_probs: Array) -> Array:
    """`log(mean_m exp(lp[m]))` over the leading member axis: `float32[M, ...] -> [...]`."""
    m = member_log_probs.shape[0]
    return jax.nn.logsumexp(member_log_probs, axis=0) - jnp.log(jnp.float32(m))


def compute_params(params: tuple, *, cfg: Configs) -> tuple:
    """Each member's `model.compute_params`."""
    return tuple(model.compute_params(p, cfg=c) for p, c in zip(params, cfg))


def encode(params: tuple, src: Array, src_len: Array, *, cfg: Configs) -> tuple:
    """Each member's `model.Encoded` of `src: int32[B, S]`, `src_len: int32[B]`."""
    _check(params, cfg)
    return tuple(model.encode(p, src, src_len, cfg=c) for p, c in zip(params, cfg))


def init_decoder_state(params: tuple, enc: tuple, *, cfg: Configs) -> tuple:
    """Each member's `model.DecoderState` before the first step."""
    return tuple(model.init_decoder_state(p, e, cfg=c) for p, e, c in zip(params, enc, cfg))


def decode_step(
    params: tuple,
    enc: tuple,
    state: tuple,
    y_prev: Array,
    *,
    cfg: Configs,
    with_attention: bool = False,
) -> tuple:
    """One step of every member: `y_prev: int32[B]` -> (new states, the ensemble's log-probs
    float32[B, V]), and with `with_attention` the mean of the members' attention weights
    float32[B, S] (every member must have attention)."""
    states, log_probs, weights = [], [], []
    for p, e, s, c in zip(params, enc, state, cfg):
        out = model.decode_step(p, e, s, y_prev, cfg=c, with_attention=with_attention)
        states.append(out[0])
        log_probs.append(jax.nn.log_softmax(out[1], axis=-1))
        weights.extend(out[2:])
    logp = mean_log_probs(jnp.stack(log_probs))
    if with_attention:
        return tuple(states), logp, jnp.mean(jnp.stack(weights), axis=0)
    return tuple(states), logp


def log_prob(
    params: tuple, src: Array, src_len: Array, tgt: Array, tgt_len: Array, *, cfg: Configs
) -> Array:
    """The ensemble's `log P(y | x)` per sequence, float32[B]: teacher-forced, each target
    token scored by the mean of the members' probabilities. Shapes as `model.log_prob`."""
    _check(params, cfg)
    per_member = []
    for p, c in zip(params, cfg):
        logits = model.forward(p, src, src_len, tgt, cfg=c)
        logp = jax.nn.log_softmax(logits, axis=-1)
        per_member.append(jnp.take_along_axis(logp, tgt[..., None], axis=-1)[..., 0])
    picked = mean_log_probs(jnp.stack(per_member))  # float32[B, T]
    return jnp.sum(jnp.where(scan.length_mask(tgt_len, tgt.shape[1]), picked, 0.0), axis=-1)
