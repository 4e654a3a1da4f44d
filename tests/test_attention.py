"""Attention against an independent float64 numpy oracle, written from the papers' formulas
(Bahdanau 2015 eq. 6: e_ij = v^T tanh(W s_{i-1} + U h_j); Luong 2015: dot h_t^T h_s and
general h_t^T W_a h_s), padded positions and sources with no real position included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.nn import attention

B, S, Q, E, A = 4, 6, 5, 7, 3


def oracle(params, kind, query, annotations, mask):
    """Per sentence, per position: the score, then a softmax over the real positions only."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    query, annotations = np.asarray(query, np.float64), np.asarray(annotations, np.float64)
    contexts, weights = np.zeros((B, annotations.shape[-1])), np.zeros((B, S))
    for b in range(B):
        real = [j for j in range(S) if mask[b, j]]
        if not real:
            continue  # no real position: zero weights, zero context
        e = {}
        for j in real:
            h_j = annotations[b, j]
            if kind == "bahdanau":
                e[j] = p["v"] @ np.tanh(query[b] @ p["w_query"] + h_j @ p["w_key"] + p["b"])
            elif kind == "luong_general":
                e[j] = query[b] @ (h_j @ p["w"])
            else:  # luong_dot
                e[j] = query[b] @ h_j
        top = max(e.values())
        total = sum(np.exp(v - top) for v in e.values())
        for j in real:
            weights[b, j] = np.exp(e[j] - top) / total
            contexts[b] += weights[b, j] * annotations[b, j]
    return contexts, weights


@pytest.mark.parametrize("kind", ["bahdanau", "luong_dot", "luong_general"])
def test_attend_matches_the_numpy_oracle(kind):
    k = jax.random.split(jax.random.key(0), 4)
    query_dim = E if kind == "luong_dot" else Q
    params = attention.init(k[0], kind, query_dim, E, A)
    if kind == "bahdanau":  # a non-zero bias, so that it is tested too
        params["b"] = jax.random.normal(k[3], (A,))
    query = jax.random.normal(k[1], (B, query_dim))
    annotations = 2.0 * jax.random.normal(k[2], (B, S, E))
    lengths = np.array([6, 3, 1, 0])  # full, padded, one position, none at all
    mask = np.arange(S)[None, :] < lengths[:, None]
    keys = attention.precompute(params, kind, annotations)
    context, weights = attention.attend(params, kind, query, keys, annotations, jnp.asarray(mask))
    want_context, want_weights = oracle(params, kind, query, annotations, mask)
    np.testing.assert_allclose(weights, want_weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(context, want_context, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(weights)[~mask] == 0.0)  # exactly zero at padding
    np.testing.assert_allclose(np.asarray(weights).sum(-1), (lengths > 0).astype(float), rtol=1e-6)
    assert np.all(np.isfinite(np.asarray(context)))
