"""The rest of the book's RNN family (Goodfellow et al. ch. 10), as small models on the runner.

| figure | model | function |
|---|---|---|
| 10.3 / 10.11 | same-length sequence to sequence, (bi)directional | `tagger` |
| 10.5 | sequence to vector (one output at the end) | `seq_to_vector` |
| 10.9 | vector to sequence (the vector is an input at every step) | `vector_to_seq` |
| 10.4 | output-to-hidden recurrence, trained with teacher forcing | `output_recurrent` |
| 10.10 | conditional RNN feeding back the previous output | `conditional_rnn` |

All are teacher-forced where outputs feed back: the true previous output `y_prev` is read.
Parameters are dicts; `cell` is a `cells.Cell`; lengths mask padding as in `scan.run`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from s2s_jax.nn import rnn, scan
from s2s_jax.nn.affine import affine
from s2s_jax.nn.cells import Cell

Array = jax.Array


def _linear(key, n_in: int, n_out: int) -> dict:
    return {"w": jax.random.normal(key, (n_in, n_out)) / jnp.sqrt(n_in), "b": jnp.zeros((n_out,))}


def _apply(p: dict, x: Array) -> Array:
    return affine(x, p["w"], p["b"])


def init_tagger(
    key, cell: Cell, in_dim: int, hidden: int, n_out: int, *, bidirectional: bool = False
) -> dict:
    k1, k2 = jax.random.split(key)
    width = hidden * (2 if bidirectional else 1)
    return {
        "rnn": rnn.init_stack(k1, cell, in_dim, hidden, bidirectional=bidirectional),
        "out": _linear(k2, width, n_out),
    }


def tagger(params: dict, xs: Array, lengths: Array, *, cell: Cell) -> Array:
    """Figs. 10.3 / 10.11: `o_t = V h_t + c` (h_t = [forward; backward] when bidirectional).
    `xs: float32[B, T, I]` -> `float32[B, T, O]` (zeros at padding)."""
    hs, _ = rnn.run_stack(cell, params["rnn"], xs, lengths)
    mask = scan.length_mask(lengths, xs.shape[1])[..., None]
    return jnp.where(mask, _apply(params["out"], hs), 0.0)


def init_seq_to_vector(key, cell: Cell, in_dim: int, hidden: int, n_out: int) -> dict:
    return init_tagger(key, cell, in_dim, hidden, n_out)


def seq_to_vector(params: dict, xs: Array, lengths: Array, *, cell: Cell) -> Array:
    """Fig. 10.5: one output from the state after each sequence's last real step.
    `xs: float32[B, T, I]` -> `float32[B, O]`."""
    _, finals = rnn.run_stack(cell, params["rnn"], xs, lengths)
    return _apply(params["out"], finals[-1][0].h)


def init_vector_to_seq(key, cell: Cell, vec_dim: int, vocab: int, embed: int, hidden: int) -> dict:
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "embed": jax.random.normal(k1, (vocab, embed)) * 0.1,
        "rnn": cell.init(k2, vec_dim + embed, hidden),
        "out": _linear(k3, hidden, vocab),
    }


def vector_to_seq(params: dict, x: Array, y_prev: Array, *, cell: Cell) -> Array:
    """Fig. 10.9 (e.g. image captioning): the vector `x: float32[B, D]` is an input at every
    step beside the previous true token `y_prev: int32[B, T]`. Returns logits float32[B, T, V]."""
    emb = params["embed"][y_prev]
    xs = jnp.concatenate([jnp.broadcast_to(x[:, None], emb.shape[:2] + x.shape[-1:]), emb], -1)
    hs, _ = scan.run(cell, params["rnn"], xs)
    return _apply(params["out"], hs)


def init_output_recurrent(key, in_dim: int, hidden: int, n_out: int) -> dict:
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "u": _linear(k1, in_dim, hidden),
        "w": jax.random.normal(k2, (n_out, hidden)) * 0.1,
        "out": _linear(k3, hidden, n_out),
    }


def output_recurrent(params: dict, xs: Array, y_prev: Array) -> Array:
    """Fig. 10.4: `h_t = tanh(b + W o_{t-1} + U x_t)`, `o_t = c + V h_t`, the only recurrence
    going through the output. Under teacher forcing `o_{t-1}` is the true previous output
    (one-hot `y_prev: int32[B, T]`), so no step waits for another: one batched computation
    over all steps, no scan. `xs: float32[B, T, I]` -> logits float32[B, T, O]."""
    h = jnp.tanh(_apply(params["u"], xs) + params["w"][y_prev])  # W @ one_hot(y) = row y of W
    return _apply(params["out"], h)


def output_recurrent_generate(params: dict, xs: Array, *, first: int = 0) -> Array:
    """Fig. 10.4 at test time: feeds back the model's own argmax output. int32[B, T]."""

    def body(y, x_t):
        logits = _apply(params["out"], jnp.tanh(_apply(params["u"], x_t) + params["w"][y]))
        y = jnp.argmax(logits, -1)
        return y, y

    y0 = jnp.full((xs.shape[0],), first, jnp.int32)
    _, ys = jax.lax.scan(body, y0, jnp.swapaxes(xs, 0, 1))
    return jnp.swapaxes(ys, 0, 1)


def init_conditional_rnn(key, cell: Cell, in_dim: int, vocab: int, embed: int, hidden: int) -> dict:
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "embed": jax.random.normal(k1, (vocab, embed)) * 0.1,
        "rnn": cell.init(k2, in_dim + embed, hidden),
        "out": _linear(k3, hidden, vocab),
    }


def conditional_rnn(params: dict, xs: Array, lengths: Array, y_prev: Array, *, cell: Cell) -> Array:
    """Fig. 10.10: maps `xs: float32[B, T, I]` to a distribution over same-length outputs,
    with a connection from the previous output `y_prev: int32[B, T]` to the state, so outputs
    are not conditionally independent given x. Returns logits float32[B, T, V]."""
    inputs = jnp.concatenate([xs, params["embed"][y_prev]], axis=-1)
    hs, _ = scan.run(cell, params["rnn"], inputs, lengths)
    return _apply(params["out"], hs)
