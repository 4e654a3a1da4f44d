"""The encoder: the source read into what the decoder attends to (`Encoded`): embeddings,
the (bidirectional, stacked) RNN layers, their final states as the context C, and the
attention's keys.

    src ─embed─▶ (reverse?) ─▶ encoder stack ─▶ Encoded(annotations, keys, context C, mask)

`read_source` is the encoder alone; `with_keys` adds the keys, which belong to the decoder's
attention; `encode` does both. `model` names them all.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from s2s_jax.nn import attention, rnn, scan
from s2s_jax.nn.cells import get_cell
from s2s_jax.nn.model_config import Seq2SeqConfig, scan_implementations
from s2s_jax.nn.params import compute_params

Array = jax.Array

# The annotations' and the words' dropouts draw from `fold_in(key, STREAM)` of their part's key
# (each row's), so switching one on leaves the other dropouts' draws as they were.
ANNOTATION_STREAM = 1
WORD_STREAM = 2


class Encoded(NamedTuple):
    """What the decoder reads of the source."""

    annotations: Array  # float32[B, S, enc_out], zeros at padding
    keys: Array  # float32[B, S, A], attention keys projected once per source
    context: Array  # float32[B, enc_out], C: final states of the top encoder layer
    mask: Array  # bool[B, S], True at real source positions


def reverse_within_length(x: Array, lengths: Array) -> Array:
    """Reverses each row's first `lengths[b]` entries, leaving the padding in place.
    `x: [B, S, ...]`, `lengths: int32[B]`."""
    t = jnp.arange(x.shape[1])[None, :]
    idx = jnp.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


def encode(params: dict, src: Array, src_len: Array, *, cfg: Seq2SeqConfig, key=None) -> Encoded:
    """Reads the source: `read_source`, then the attention's keys (`with_keys`).

    Args:
      src: int32[B, S] token ids, right-padded with 0.
      src_len: int32[B] lengths.
      key: dropout keys (training), one per row `key[B]` or one for the batch (`rnn.row_keys`);
        None at inference.
    """
    return with_keys(params, read_source(params, src, src_len, cfg=cfg, key=key), cfg=cfg)


def with_keys(params: dict, enc: Encoded, *, cfg: Seq2SeqConfig) -> Encoded:
    """`enc` with the attention's keys of its annotations (the decoder's parameters: the
    encoder alone does not know the attention)."""
    params = compute_params(params, cfg=cfg)
    keys = attention.precompute(params["attention"], cfg.attention, enc.annotations)
    return enc._replace(keys=keys)


def read_source(
    params: dict, src: Array, src_len: Array, *, cfg: Seq2SeqConfig, key=None
) -> Encoded:
    """The encoder alone (`src_embed`, `encoder`): annotations float32[B, S, enc_out], C
    float32[B, enc_out] and the mask; `keys` is None (see `with_keys`). Under mixed precision
    the annotations and C are bfloat16. `key`: as `encode`'s; row b's masks come from its key."""
    params = compute_params(params, cfg=cfg)
    cell = get_cell(cfg.cell)
    if cfg.reverse_source:
        src = reverse_within_length(src, src_len)
    x = params["src_embed"][src]
    key = rnn.row_keys(key, src.shape[0])
    if key is not None:
        word_key = rnn.fold_in_rows(key, WORD_STREAM)
        x = rnn.dropout(x, cfg.src_word_dropout, word_key, whole_vectors=True)
        key, sub = rnn.split_rows(key)
        x = rnn.dropout(x, cfg.dropout, sub)
    annotations, finals = rnn.run_stack(
        cell,
        params["encoder"],
        x,
        src_len,
        residual=cfg.residual,
        dropout_rate=cfg.dropout,
        key=key,
        unroll=cfg.unroll,
        projection=cfg.projection,
        remat=cfg.remat,
        impl=scan_implementations(cfg)[0],
    )
    if key is not None:
        annotations = rnn.dropout(
            annotations, cfg.annotation_dropout, rnn.fold_in_rows(key, ANNOTATION_STREAM)
        )
    context = jnp.concatenate([carry.h for carry in finals[-1]], axis=-1)
    return Encoded(annotations, None, context, scan.length_mask(src_len, src.shape[1]))
