"""The model's parameter pytree: fresh parameters for a config, their compute dtype, their
vocabulary order, their count."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from s2s_jax.nn import attention, rnn
from s2s_jax.nn.cells import get_cell
from s2s_jax.nn.model_config import Seq2SeqConfig

Array = jax.Array


def _dense(key, n_in: int, n_out: int) -> dict:
    w = jax.random.normal(key, (n_in, n_out), jnp.float32) / jnp.sqrt(n_in)
    return {"w": w, "b": jnp.zeros((n_out,), jnp.float32)}


def init(cfg: Seq2SeqConfig, *, key) -> dict:
    """Fresh parameters for `cfg`: a nested dict of float32 arrays."""
    cell, dec_cell = get_cell(cfg.cell), get_cell(cfg.decoder_cell)
    keys = iter(jax.random.split(key, 16))
    params = {
        "src_embed": jax.random.normal(next(keys), (cfg.src_vocab, cfg.src_embed)) * 0.1,
        "tgt_embed": jax.random.normal(next(keys), (cfg.tgt_vocab, cfg.tgt_embed)) * 0.1,
        "encoder": rnn.init_stack(
            next(keys),
            cell,
            cfg.src_embed,
            cfg.enc_hidden,
            layers=cfg.enc_layers,
            bidirectional=cfg.bidirectional,
        ),
        "decoder": [
            layer["fwd"]
            for layer in rnn.init_stack(
                next(keys), dec_cell, cfg.dec_in, cfg.dec_hidden, layers=cfg.dec_layers
            )
        ],
        "attention": attention.init(
            next(keys),
            cfg.attention,
            cfg.dec_hidden,
            cfg.enc_out,
            cfg.attn_dim if cfg.attention == "bahdanau" else cfg.dec_hidden,
        ),
        "readout": _dense(next(keys), cfg.readout_in, cfg.readout_dim),
        "output": _dense(next(keys), cfg.readout_dim, cfg.tgt_vocab),
    }
    if cfg.tie_embeddings:
        del params["output"]["w"]
    if cfg.context in ("init", "both"):
        n_states = len(dec_cell.initial_carry(1, 1))  # the LSTM's and the SRU's: h and c
        params["bridge"] = [
            [_dense(next(keys), cfg.enc_out, cfg.dec_hidden) for _ in range(n_states)]
            for _ in range(cfg.dec_layers)
        ]
    if cfg.conditional:  # the second cell of the first layer: it reads the context
        params["conditional"] = dec_cell.init(next(keys), cfg.enc_out, cfg.dec_hidden)
    return params


def compute_params(params: dict, *, cfg: Seq2SeqConfig) -> dict:
    """The parameters in the dtype the model computes in: bfloat16 copies under mixed
    precision (the cast is differentiable: gradients arrive in float32), else `params`."""
    if cfg.dtype == "float32":
        return params
    dtype = jnp.dtype(cfg.dtype)
    cast = lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
    return jax.tree.map(cast, params)


def reindex_vocab(params: dict, *, src_order: Array | None = None, tgt_order=None) -> dict:
    """The same model reading and writing tokens numbered otherwise: new id i is old id
    `order[i]` (`int32[V]`, a permutation) on the source and/or target side. Exact: only the
    rows of the embeddings and the columns of the output layer move."""
    params = dict(params)
    if src_order is not None:
        params["src_embed"] = params["src_embed"][src_order]
    if tgt_order is not None:
        params["tgt_embed"] = params["tgt_embed"][tgt_order]
        out = dict(params["output"], b=params["output"]["b"][tgt_order])
        if "w" in out:  # untied
            out["w"] = out["w"][:, tgt_order]
        params["output"] = out
    return params


def param_count(params: Any) -> int:
    return sum(x.size for x in jax.tree.leaves(params))
