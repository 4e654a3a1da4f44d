"""The teacher-forced objective: the negative of `log P(y | x)` over a batch's real target
tokens, with label smoothing. Training minimises it, validation and `s2s eval` report it per
token, and `s2s score` prints its unsmoothed per-sentence form (`model.log_prob`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from s2s_jax.nn import model, scan

Array = jax.Array


def token_nll(logits: Array, tgt: Array) -> Array:
    """`-log softmax(logits)[tgt]` as float32[B, T] (every position, padding included), from
    `logits: float32[B, T, V]` and `tgt: int32[B, T]`, without materialising the
    log-probabilities of the whole vocabulary."""
    picked = jnp.take_along_axis(logits, tgt[..., None], axis=-1)[..., 0]
    return jax.nn.logsumexp(logits, axis=-1) - picked


def loss_terms(
    params, batch, key, *, model_cfg: model.Seq2SeqConfig, label_smoothing: float = 0.0
) -> tuple[Array, dict]:
    """Summed (not averaged) training loss over the batch's real target tokens.

    Args:
      batch: `(src int32[B, S], src_len int32[B], tgt int32[B, T], tgt_len int32[B])`, e.g. a
        `data.Batch`; `tgt` holds `y_1 .. y_n </s>` and `tgt_len` counts the `</s>`.
      key: the dropout keys, one per row `key[B]` or one for the batch (`model.forward`), or
        None (no dropout).
      label_smoothing: eps: each token's loss is `(1 - eps) * NLL + eps * mean over the
        vocabulary of -log p`.

    Returns:
      the summed (label-smoothed) cross-entropy, and sums of the NLL, the token count and the
      correct argmax predictions. Sums, so that data-parallel shards add up exactly.
    """
    src, src_len, tgt, tgt_len = batch
    logits = model.forward(params, src, src_len, tgt, cfg=model_cfg, key=key)
    mask = scan.length_mask(tgt_len, tgt.shape[1])
    nll = token_nll(logits, tgt)
    if label_smoothing:
        # What optax.smooth_labels gives, without its one-hot targets (f32[B, T, V], 1.6 GB at
        # B=256, T=50, V=32k).
        uniform = -jnp.mean(jax.nn.log_softmax(logits, axis=-1), axis=-1)
        loss = (1.0 - label_smoothing) * nll + label_smoothing * uniform
    else:
        loss = nll
    correct = (jnp.argmax(logits, axis=-1) == tgt) & mask
    sums = {
        "nll": jnp.sum(jnp.where(mask, nll, 0.0)),
        "tokens": jnp.sum(mask).astype(jnp.float32),
        "correct": jnp.sum(correct).astype(jnp.float32),
    }
    return jnp.sum(jnp.where(mask, loss, 0.0)), sums
