"""What a search may write at each step, shared by greedy search, sampling and beam search:
<pad> and <s> never, </s> forced at a sentence's cap and banned before its minimum length,
no repeated n-gram when asked; sampling's top-k / top-p truncation; and beam search's length
penalty; and an exact top-k that ranks a few blocks of a long row, not all of it."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from s2s_jax.tokens import BOS, EOS, PAD

Array = jax.Array


def length_penalty(length: Array, alpha: float) -> Array:
    """GNMT's ((5 + |y|) / 6) ** alpha; 1 when alpha = 0 (no normalisation)."""
    return ((5.0 + length.astype(jnp.float32)) / 6.0) ** alpha


def step_log_probs(
    logits: Array,
    t: Array,
    cap: Array,
    min_len: int = 0,
    tokens: Array | None = None,
    no_repeat_ngram: int = 0,
) -> Array:
    """Log-softmax over the full vocabulary, with <pad>/<s> banned, </s> forced at the cap and
    banned before `min_len` tokens (unless the cap comes first), and with `no_repeat_ngram`
    > 0 every token banned that would repeat an n-gram of `tokens` (the output so far,
    int32[N, L], written up to t). `logits: float32[N, V]`, `cap: int32[N]`."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    vocab = jnp.arange(logp.shape[-1])[None, :]  # int32[1, V]
    logp = jnp.where((vocab == PAD) | (vocab == BOS), -jnp.inf, logp)
    at_cap = (t >= cap - 1)[:, None]
    logp = jnp.where(at_cap & (vocab != EOS), -jnp.inf, logp)
    too_early = (t < min_len) & ~at_cap
    logp = jnp.where(too_early & (vocab == EOS), -jnp.inf, logp)
    if no_repeat_ngram:
        ban = repeats(tokens, t, no_repeat_ngram, logp.shape[-1])
        # A row the ban would leave without any token keeps its repeats instead.
        ban = ban & jnp.any((logp > -jnp.inf) & ~ban, axis=-1, keepdims=True)
        logp = jnp.where(ban, -jnp.inf, logp)
    return logp


def repeats(tokens: Array, t: Array, n: int, vocab: int) -> Array:
    """`bool[N, V]`: the tokens that, written at position t after `tokens[:, :t]`, would
    repeat an n-gram already there (fairseq's and Hugging Face's `no_repeat_ngram_size`)."""
    rows, length = tokens.shape
    width = length - n + 1  # windows i covering positions i .. i + n - 1
    if width < 1:
        return jnp.zeros((rows, vocab), bool)
    last = jax.lax.dynamic_slice_in_dim(tokens, jnp.maximum(t - (n - 1), 0), n - 1, axis=1)
    match = (jnp.arange(width) + n - 1 < t)[None, :] & (t >= n - 1)  # windows written already
    for j in range(n - 1):  # whose first n - 1 tokens are the last n - 1 written
        match = match & (tokens[:, j : j + width] == last[:, j : j + 1])
    completes = tokens[:, n - 1 :]  # int32[N, W]: the token each window ends with
    row = jnp.broadcast_to(jnp.arange(rows)[:, None], completes.shape)
    return jnp.zeros((rows, vocab), jnp.int32).at[row, completes].max(match.astype(jnp.int32)) > 0


def truncate(logits: Array, top_k: int, top_p: float) -> Array:
    """`logits: float32[N, V]` with every token outside the top-k / the top-p nucleus at -inf."""
    neg_inf = jnp.float32(-jnp.inf)
    if top_k:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]  # float32[N, 1]
        logits = jnp.where(logits < kth, neg_inf, logits)
    if top_p < 1.0:
        ordered = -jnp.sort(-logits, axis=-1)  # descending
        probs = jax.nn.softmax(ordered, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # the mass of the more likely tokens
        # The most likely token is always kept: a top_p that float32 rounds to 0 (1e-300)
        # would otherwise keep none, and the draw would fall on a banned token.
        first = jax.lax.broadcasted_iota(jnp.int32, ordered.shape, ordered.ndim - 1) == 0
        kept = jnp.where((before < top_p) | first, ordered, jnp.inf)
        threshold = jnp.min(kept, axis=-1, keepdims=True)  # the least likely token kept
        logits = jnp.where(logits < threshold, neg_inf, logits)
    return logits


def top_k(x: Array, k: int, block: int | None = None) -> tuple[Array, Array]:
    """`lax.top_k(x, k)` of `x: float32[N, M]` (values and indices, ties to the lower index),
    ranking k blocks of each row instead of all of it. The k blocks of `block` entries with the
    largest maxima hold the k largest entries: an entry of any other block is beaten by those k
    maxima. So one pass takes every block's maximum, and only the chosen blocks, gathered in
    index order (which keeps lax.top_k's ties), are ranked. XLA:CPU ranks a row by sorting it
    whole: beam search's rows of beam x vocabulary candidates cost it milliseconds a step.
    `block`: None takes a divisor of M near 128 where there is one (no padding to copy)."""
    rows, width = x.shape
    if block is None:
        divisors = [d for d in range(32, 513) if width % d == 0]
        block = min(divisors, key=lambda d: abs(d - 128)) if divisors else 128
    blocks = -(-width // block)
    if blocks <= k:
        return jax.lax.top_k(x, k)
    padded = (
        x
        if blocks * block == width
        else jnp.pad(x, ((0, 0), (0, blocks * block - width)), constant_values=-jnp.inf)
    )
    padded = padded.reshape(rows, blocks, block)
    _, chosen = jax.lax.top_k(jnp.max(padded, axis=-1), k)  # int32[N, k]
    chosen = jnp.sort(chosen, axis=-1)
    picked = jnp.take_along_axis(padded, chosen[..., None], axis=1).reshape(rows, k * block)
    values, at = jax.lax.top_k(picked, k)
    start = jnp.take_along_axis(chosen, at // block, axis=-1) * block
    return values, start + at % block
