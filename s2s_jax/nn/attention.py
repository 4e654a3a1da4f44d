"""Attention over encoder annotations: additive (Bahdanau 2015), Luong dot and general.

Split in two so that the per-source work is done once and not at every decoder step:
`precompute(params, kind, annotations)` projects the annotations into keys, and
`attend(params, kind, query, keys, annotations, mask)` scores one decoder query against them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from s2s_jax.nn.affine import affine

Array = jax.Array

KINDS = ("none", "bahdanau", "luong_dot", "luong_general")


def init(key, kind: str, query_dim: int, value_dim: int, attn_dim: int) -> dict:
    """Parameters of one attention `kind` ({} for "luong_dot" and "none")."""
    k1, k2, k3 = jax.random.split(key, 3)
    normal = lambda k, shape: jax.random.normal(k, shape, jnp.float32) / jnp.sqrt(shape[0])
    if kind == "bahdanau":
        return {
            "w_query": normal(k1, (query_dim, attn_dim)),
            "w_key": normal(k2, (value_dim, attn_dim)),
            "b": jnp.zeros((attn_dim,), jnp.float32),
            "v": normal(k3, (attn_dim,)),
        }
    if kind == "luong_general":
        return {"w": normal(k1, (value_dim, query_dim))}
    if kind in ("luong_dot", "none"):
        return {}
    raise ValueError(f"unknown attention {kind!r}: choose one of {KINDS}")


def precompute(params: dict, kind: str, annotations: Array) -> Array:
    """Keys from `annotations: float32[B, S, E]`: `float32[B, S, A]` (A = attn_dim for
    bahdanau, the query size for luong_general, E for luong_dot)."""
    if kind == "bahdanau":
        return affine(annotations, params["w_key"], params["b"])
    if kind == "luong_general":
        return annotations @ params["w"]
    return annotations


def scores(params: dict, kind: str, query: Array, keys: Array) -> Array:
    """Unnormalised alignment scores `float32[B, S]` of `query: float32[B, Q]`."""
    if kind == "bahdanau":
        hidden = jnp.tanh(keys + (query @ params["w_query"])[:, None, :])
        return hidden @ params["v"]
    return jnp.einsum("bsa,ba->bs", keys, query)


def attend(
    params: dict, kind: str, query: Array, keys: Array, annotations: Array, mask: Array
) -> tuple[Array, Array]:
    """One attention read.

    Args:
      query: float32[B, Q], the decoder state asking.
      keys: float32[B, S, A] from `precompute`.
      annotations: float32[B, S, E], the values.
      mask: bool[B, S], True at real source positions.

    Returns:
      context float32[B, E] (the annotations' dtype) and weights float32[B, S], always
      float32 (zero at padding; a row with no real position gets all-zero weights and a zero
      context instead of NaN).
    """
    logits = scores(params, kind, query, keys).astype(jnp.float32)  # normalised in float32
    logits = jnp.where(mask, logits, -jnp.inf)
    top = jnp.max(logits, axis=-1, keepdims=True)
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    unnorm = jnp.where(mask, jnp.exp(logits - top), 0.0)
    total = jnp.sum(unnorm, axis=-1, keepdims=True)
    weights = unnorm / jnp.where(total > 0, total, 1.0)
    context = jnp.einsum("bs,bse->be", weights.astype(annotations.dtype), annotations)
    return context, weights
