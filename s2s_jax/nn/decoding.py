"""Inference: greedy search, sampling and beam search, each one `lax.while_loop` over
`model.decode_step` that exits as soon as every sentence is finished.

Outputs use the training target format: `tokens: int32[B, L]` holds `y_1 .. y_n </s>` then
<pad>, and `lengths` counts the `</s>`, so `model.log_prob(params, src, src_len, tokens, lengths)`
recomputes the returned `scores` exactly (up to float rounding).

Every sentence is decoded independently of the others in its batch: a per-sentence length cap
(`cap`, e.g. derived from the source length) instead of the padded width, and finished sentences
frozen, so results do not change with batch size or padding. A sentence reaching its cap is
made to end there: its last token is forced to `</s>` (scored with the model's own `</s>`
probability, so scores stay true log-probabilities). `<pad>` and `<s>` are never emitted.

Each search takes one model (`params`, `cfg: Seq2SeqConfig`) or an ensemble (`params` a tuple
of pytrees, `cfg` a tuple of configs: `nn.ensemble`, the members' probabilities averaged at
every step); the scores are then the ensemble's log-probabilities.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from s2s_jax.nn import ensemble, model
from s2s_jax.nn.model import Seq2SeqConfig
from s2s_jax.nn.search_rules import length_penalty, step_log_probs, top_k, truncate
from s2s_jax.tokens import BOS, EOS, PAD

Array = jax.Array


class Decoded(NamedTuple):
    """Greedy or sampled outputs."""

    tokens: Array  # int32[B, L]: y_1 .. y_n </s> <pad> ...
    lengths: Array  # int32[B]: n + 1 (the </s> included)
    scores: Array  # float32[B]: log P(tokens | src)
    attention: Array | None = None  # float32[B, L, S] with with_attention (zero after lengths)


class Beams(NamedTuple):
    """Beam search's n-best lists, best first (by length-normalised score)."""

    tokens: Array  # int32[B, K, L]
    lengths: Array  # int32[B, K]
    scores: Array  # float32[B, K]: log P(tokens | src); -inf for an empty slot
    normalized: Array  # float32[B, K]: scores / length_penalty(lengths), the ranking key
    attention: Array | None = None  # float32[B, K, L, S] with with_attention


def _caps(src_len: Array, cap: Array | None, max_len: int) -> Array:
    if cap is None:
        return jnp.full(src_len.shape, max_len, jnp.int32)
    return jnp.clip(cap, 1, max_len).astype(jnp.int32)


Config = Seq2SeqConfig | tuple[Seq2SeqConfig, ...]  # one model, or an ensemble's members


def _functions(cfg: Config):
    """The module that runs `cfg`: `model`, or `ensemble` for a tuple of configs."""
    return ensemble if isinstance(cfg, tuple) else model


def _step(params, enc, state, y_prev, cfg, with_attention):
    """`decode_step`, always as (state, logits, weights or None)."""
    step = _functions(cfg).decode_step
    if with_attention:
        return step(params, enc, state, y_prev, cfg=cfg, with_attention=True)
    return (*step(params, enc, state, y_prev, cfg=cfg), None)


def _search(
    params,
    src,
    src_len,
    *,
    cfg,
    max_len,
    cap,
    choose,
    min_len=0,
    no_repeat_ngram=0,
    with_attention=False,
) -> Decoded:
    """Greedy-style decoding with `choose(t, logp) -> int32[B]` picking each token."""
    params = _functions(cfg).compute_params(params, cfg=cfg)  # once, not at every step
    enc = _functions(cfg).encode(params, src, src_len, cfg=cfg)
    batch = src.shape[0]
    cap = _caps(src_len, cap, max_len)

    def cond(s):
        t, _, _, _, done, _, _, _ = s
        return (t < max_len) & ~jnp.all(done)

    def body(s):
        t, tokens, y_prev, state, done, lengths, scores, attn = s
        state, logits, weights = _step(params, enc, state, y_prev, cfg, with_attention)
        logp = step_log_probs(logits, t, cap, min_len, tokens, no_repeat_ngram)
        y = jnp.where(done, PAD, choose(t, logp))
        scores = scores + jnp.where(done, 0.0, jnp.take_along_axis(logp, y[:, None], -1)[:, 0])
        ended = ~done & (y == EOS)
        lengths = jnp.where(ended, t + 1, lengths)
        tokens = tokens.at[:, t].set(y)
        if with_attention:
            attn = attn.at[:, t].set(jnp.where(done[:, None], 0.0, weights))
        return t + 1, tokens, y, state, done | ended, lengths, scores, attn

    init = (
        jnp.int32(0),
        jnp.full((batch, max_len), PAD, jnp.int32),
        jnp.full((batch,), BOS, jnp.int32),
        _functions(cfg).init_decoder_state(params, enc, cfg=cfg),
        src_len < 0,  # all False
        jnp.zeros((batch,), jnp.int32),
        jnp.zeros((batch,), jnp.float32),
        jnp.zeros((batch, max_len, src.shape[1]), jnp.float32) if with_attention else None,
    )
    _, tokens, _, _, _, lengths, scores, attn = jax.lax.while_loop(cond, body, init)
    return Decoded(tokens, lengths, scores, attn)


def greedy(
    params: dict | tuple,
    src: Array,
    src_len: Array,
    *,
    cfg: Config,
    max_len: int,
    cap: Array | None = None,
    min_len: int = 0,
    no_repeat_ngram: int = 0,
    with_attention: bool = False,
) -> Decoded:
    """Greedy decoding.

    Args:
      src: int32[B, S]; src_len: int32[B].
      max_len: static width L of the output (counting </s>).
      cap: optional int32[B] per-sentence maximum length (<= max_len), e.g. from the source length.
      min_len: </s> is not chosen before this many tokens (unless the cap comes first).
      no_repeat_ngram: N > 0 never writes an n-gram of N tokens twice in an output (unless
        every other token is banned too).
      with_attention: also return the attention weights of each written token (`attention`);
        off, the loop carries no such buffer.
    """
    return _search(
        params,
        src,
        src_len,
        cfg=cfg,
        max_len=max_len,
        cap=cap,
        min_len=min_len,
        no_repeat_ngram=no_repeat_ngram,
        with_attention=with_attention,
        choose=lambda t, logp: jnp.argmax(logp, axis=-1).astype(jnp.int32),
    )


def sample(
    params: dict | tuple,
    src: Array,
    src_len: Array,
    *,
    cfg: Config,
    max_len: int,
    key,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    cap: Array | None = None,
    min_len: int = 0,
    no_repeat_ngram: int = 0,
    with_attention: bool = False,
) -> Decoded:
    """Ancestral sampling: each token drawn from the model's distribution at `temperature`,
    restricted to its `top_k` most likely tokens (0: all) and to the smallest set of most
    likely tokens whose probability reaches `top_p` (nucleus sampling; 1: all). `scores` are
    the model's log P (temperature 1). Seeded by `key`: the same inputs in the same batch give
    the same samples."""
    if temperature <= 0 or top_k < 0 or not 0 < top_p <= 1:
        raise ValueError(
            f"need temperature > 0, top_k >= 0 and 0 < top_p <= 1 (got {temperature}, "
            f"{top_k}, {top_p})"
        )

    def choose(t, logp):
        logits = truncate(logp / temperature, top_k, top_p)
        return jax.random.categorical(jax.random.fold_in(key, t), logits).astype(jnp.int32)

    return _search(
        params,
        src,
        src_len,
        cfg=cfg,
        max_len=max_len,
        cap=cap,
        choose=choose,
        min_len=min_len,
        no_repeat_ngram=no_repeat_ngram,
        with_attention=with_attention,
    )


class _BeamState(NamedTuple):
    t: Array  # int32[]
    live_tokens: Array  # int32[B, K, L]
    live_attn: Array | None  # float32[B, K, L, S] (with_attention only)
    fin_attn: Array | None  # float32[B, K, L, S]
    live_scores: Array  # float32[B, K]: log P of each live prefix (-inf: empty slot)
    dec: model.DecoderState | tuple  # leaves [B*K, ...] (a tuple of them for an ensemble)
    fin_tokens: Array  # int32[B, K, L]
    fin_lengths: Array  # int32[B, K]
    fin_scores: Array  # float32[B, K]
    fin_norm: Array  # float32[B, K]: ranking key, -inf: empty slot


def _gather_beams(x: Array, idx: Array) -> Array:
    """`x[b, idx[b, j]]` for `x: [B, K, ...]`, `idx: int32[B, J]`."""
    return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


def beam_search(
    params: dict | tuple,
    src: Array,
    src_len: Array,
    *,
    cfg: Config,
    max_len: int,
    beam: int = 5,
    alpha: float = 0.6,
    cap: Array | None = None,
    min_len: int = 0,
    no_repeat_ngram: int = 0,
    with_attention: bool = False,
) -> Beams:
    """Batched beam search returning `beam` hypotheses per sentence, best first.

    Args:
      src: int32[B, S]; src_len: int32[B].
      max_len: static output width L (counting </s>).
      beam: K, the beam width and the n-best size.
      alpha: length normalisation exponent (0: rank by raw log-probability).
      cap: optional int32[B] per-sentence maximum length.
      min_len: </s> is not chosen before this many tokens (unless the cap comes first).
      no_repeat_ngram: N > 0 never writes an n-gram of N tokens twice in a hypothesis.
      with_attention: also return each hypothesis's attention weights (`attention`), carried
        with its tokens; off, the loop carries no such buffer.

    A sentence is finished when its K-th best finished hypothesis already beats the best score
    any live prefix could still reach; the loop exits when every sentence is finished.
    """
    batch, k = src.shape[0], beam
    cap = _caps(src_len, cap, max_len)
    params = _functions(cfg).compute_params(params, cfg=cfg)  # once, not at every step
    enc = _functions(cfg).encode(params, src, src_len, cfg=cfg)
    tile = lambda x: jnp.repeat(x, k, axis=0)
    enc_k = jax.tree.map(tile, enc)
    cap_k = tile(cap)
    best_penalty = length_penalty(cap, alpha)  # the largest penalty a sentence can reach
    neg_inf = jnp.float32(-jnp.inf)

    def done(s: _BeamState) -> Array:
        # Live scores only fall and the penalty only grows up to the cap, so this bounds
        # what any live prefix can still reach.
        best_live = s.live_scores[:, 0] / best_penalty
        return s.fin_norm[:, -1] >= best_live

    def cond(s):
        return (s.t < max_len) & ~jnp.all(done(s))

    def body(s: _BeamState) -> _BeamState:
        frozen = done(s)
        y_prev = jnp.where(s.t == 0, BOS, s.live_tokens[:, :, jnp.maximum(s.t - 1, 0)])
        dec, logits, weights = _step(params, enc_k, s.dec, y_prev.reshape(-1), cfg, with_attention)
        history = s.live_tokens.reshape(batch * k, -1)
        logp = step_log_probs(logits, s.t, cap_k, min_len, history, no_repeat_ngram)
        vocab = logp.shape[-1]
        cand = (s.live_scores[:, :, None] + logp.reshape(batch, k, vocab)).reshape(batch, -1)
        cand_scores, cand_idx = top_k(cand, 2 * k)  # over K * V candidates
        origin, token = cand_idx // vocab, cand_idx % vocab
        cand_tokens = _gather_beams(s.live_tokens, origin).at[:, :, s.t].set(token)
        cand_attn = None
        if with_attention:  # each candidate: its origin's weights so far, then this step's
            step_weights = _gather_beams(weights.reshape(batch, k, -1), origin)
            cand_attn = _gather_beams(s.live_attn, origin).at[:, :, s.t].set(step_weights)
        is_eos = token == EOS

        # Finished: merge hypotheses ending here with those already finished, keep the K best.
        new_norm = jnp.where(is_eos, cand_scores / length_penalty(s.t + 1, alpha), neg_inf)
        all_norm = jnp.concatenate([s.fin_norm, new_norm], axis=1)
        fin_norm, pick = jax.lax.top_k(all_norm, k)
        merge = lambda old, new: _gather_beams(jnp.concatenate([old, new], axis=1), pick)
        fin_tokens = merge(s.fin_tokens, cand_tokens)
        fin_scores = merge(s.fin_scores, jnp.where(is_eos, cand_scores, neg_inf))
        fin_lengths = merge(s.fin_lengths, jnp.full(is_eos.shape, s.t + 1, jnp.int32))
        fin_attn = merge(s.fin_attn, cand_attn) if with_attention else None

        # Live: the K best candidates that did not end.
        live_scores, pick = jax.lax.top_k(jnp.where(is_eos, neg_inf, cand_scores), k)
        live_tokens = _gather_beams(cand_tokens, pick)
        live_attn = _gather_beams(cand_attn, pick) if with_attention else None
        flat_origin = (_gather_beams(origin, pick) + jnp.arange(batch)[:, None] * k).reshape(-1)
        dec = jax.tree.map(lambda x: x[flat_origin], dec)

        keep = lambda old, new: jnp.where(
            frozen.reshape((batch,) + (1,) * (old.ndim - 1)), old, new
        )
        return _BeamState(
            s.t + 1,
            keep(s.live_tokens, live_tokens),
            keep(s.live_attn, live_attn) if with_attention else None,
            keep(s.fin_attn, fin_attn) if with_attention else None,
            keep(s.live_scores, live_scores),
            dec,  # a frozen sentence's decoder state is never read again
            keep(s.fin_tokens, fin_tokens),
            keep(s.fin_lengths, fin_lengths),
            keep(s.fin_scores, fin_scores),
            keep(s.fin_norm, fin_norm),
        )

    first_only = jnp.where(jnp.arange(k) == 0, 0.0, neg_inf)  # all beams start identical
    no_attn = jnp.zeros((batch, k, max_len, src.shape[1]), jnp.float32) if with_attention else None
    init = _BeamState(
        t=jnp.int32(0),
        live_tokens=jnp.full((batch, k, max_len), PAD, jnp.int32),
        live_attn=no_attn,
        fin_attn=no_attn,
        live_scores=jnp.tile(first_only, (batch, 1)),
        dec=_functions(cfg).init_decoder_state(params, enc_k, cfg=cfg),
        fin_tokens=jnp.full((batch, k, max_len), PAD, jnp.int32),
        fin_lengths=jnp.zeros((batch, k), jnp.int32),
        fin_scores=jnp.full((batch, k), neg_inf),
        fin_norm=jnp.full((batch, k), neg_inf),
    )
    s = jax.lax.while_loop(cond, body, init)
    return Beams(s.fin_tokens, s.fin_lengths, s.fin_scores, s.fin_norm, s.fin_attn)
