"""The RNN encoder-decoder (Cho 2014, Sutskever 2014) with optional attention (Bahdanau 2015,
Luong 2015), as pure functions of a parameter pytree and a frozen `Seq2SeqConfig`.

    src ─encode (nn/encoder.py)─▶ Encoded(annotations, keys, context C, mask)
    Encoded, y_{t-1} ─decode_step─▶ logits_t        (one step; inference)
    Encoded, y_{<T}  ─forward────▶ logits[B, T, V]  (teacher forcing, all steps at once)

`forward` and `decode_step` share `_recurrent_step`; `forward` moves everything that does not
depend on the recurrence (embedding projection, readout, output layer) out of its scan, and
where only the state links the steps (no attention, or Luong's without input feeding) runs the
decoder's layers over the whole target, then attention for every step at once.
`scan_implementations` (`model_config`) chooses how the scans run (`scan.run`'s `impl`).

How the context enters the decoder (`Seq2SeqConfig.context`):
  * "init": C, through a tanh bridge, is each decoder layer's initial state (Sutskever);
  * "input": C is concatenated to the decoder input at every step (Cho);
  * "both": both.
With attention, the per-step input is instead the attention context, recomputed at every step
from all annotations; "init"/"both" still initialise the decoder from C.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from s2s_jax.nn import attention, rnn, scan
from s2s_jax.nn.affine import add_bias, affine
from s2s_jax.nn.cells import get_cell

# The config, the parameter pytree and the encoder live in modules of their own; `model.X`
# names them all.
from s2s_jax.nn.encoder import (  # noqa: F401
    ANNOTATION_STREAM,
    WORD_STREAM,
    Encoded,
    encode,
    read_source,
    reverse_within_length,
    with_keys,
)
from s2s_jax.nn.model_config import (  # noqa: F401
    CONTEXT_MODES,
    DTYPES,
    Seq2SeqConfig,
    scan_implementations,
)
from s2s_jax.nn.params import compute_params, init, param_count, reindex_vocab  # noqa: F401
from s2s_jax.tokens import BOS, EOS, PAD, UNK  # noqa: F401 (model.EOS etc. for users)

Array = jax.Array


class DecoderState(NamedTuple):
    """The decoder's recurrent state between steps."""

    carries: tuple  # one cell carry per decoder layer, float32[B, dec_hidden] leaves
    feed: Array  # float32[B, readout] previous readout (Luong input feeding), else float32[B, 0]


def init_decoder_state(params: dict, enc: Encoded, *, cfg: Seq2SeqConfig) -> DecoderState:
    """The decoder state before the first step: from C through the bridge ("init"/"both"),
    zeros otherwise. An LSTM's cell state is float32 whatever `cfg.dtype`."""
    params = compute_params(params, cfg=cfg)
    batch = enc.context.shape[0]
    cell = get_cell(cfg.decoder_cell)
    carries = []
    for layer in range(cfg.dec_layers):
        carry = cell.initial_carry(batch, cfg.dec_hidden, enc.context.dtype)
        if "bridge" in params:
            states = [
                jnp.tanh(affine(enc.context, p["w"], p["b"])) for p in params["bridge"][layer]
            ]
            carry = type(carry)(*(s.astype(z.dtype) for s, z in zip(states, carry)))
        carries.append(carry)
    feed_dim = cfg.readout_dim if cfg.input_fed else 0
    return DecoderState(tuple(carries), jnp.zeros((batch, feed_dim), enc.context.dtype))


def _input_projection(params: dict, enc: Encoded, emb: Array, *, cfg: Seq2SeqConfig) -> Array:
    """The part of the first decoder layer's input projection that does not depend on the
    recurrence: the embedded previous token (and C, when it is a per-step input without
    attention). `emb: float32[B, E]` or `float32[B, T, E]` -> `float32[..., G*H]`.

    Teacher forcing knows every previous token in advance, so `forward` runs this once for all
    steps outside its scan: one large matmul instead of T small ones."""
    p = params["decoder"][0]
    xp = affine(emb, p["w_ih"][: cfg.tgt_embed], p["b_ih"])
    if cfg.attention == "none" and cfg.context != "init":
        c = enc.context @ p["w_ih"][cfg.tgt_embed :]  # float32[B, G*H]
        xp = xp + c.reshape(c.shape[:1] + (1,) * (emb.ndim - 2) + c.shape[1:])
    return xp


def _readout(params: dict, h: Array, ctx: Array, emb: Array) -> Array:
    """The tanh readout from the top decoder state, the context and the previous token's
    embedding: `float32[..., H], [..., enc_out], [..., E] -> float32[..., R]`."""
    features = jnp.concatenate([h, ctx, emb], axis=-1)
    return jnp.tanh(affine(features, params["readout"]["w"], params["readout"]["b"]))


def _step_params(params: dict, cfg: Seq2SeqConfig) -> dict:
    """What `_recurrent_step` reads: the decoder layers (the first one's `w_ih` cut to its
    non-embedding rows, the embedding rows being `_input_projection`'s), the attention, and the
    readout for Luong's input feeding."""
    first = dict(params["decoder"][0], w_ih=params["decoder"][0]["w_ih"][cfg.tgt_embed :])
    return {
        "decoder": [first, *params["decoder"][1:]],
        "attention": params["attention"],
        "readout": params["readout"] if cfg.input_fed else {},
        "conditional": params["conditional"] if cfg.conditional else {},
    }


def _recurrent_step(
    sp: dict, enc: Encoded, state: DecoderState, xp: Array, emb: Array, *, cfg: Seq2SeqConfig
) -> tuple[DecoderState, tuple[Array, Array]]:
    """One decoder step given `sp = _step_params(params)` and `xp = _input_projection(emb)`
    (float32[B, G*H]): the attention, every decoder layer and (Luong's input feeding only) the
    readout. Returns the new state and `(h, ctx, weights)`: the top layer's output, the context
    and the attention weights float32[B, S] (None without attention; callers that drop them
    cost nothing under jit).

    Every weight appears only in matrix products, so a hoisted scan hoists all of them."""
    cell = get_cell(cfg.decoder_cell)
    attend = lambda query: attention.attend(
        sp["attention"], cfg.attention, query, enc.keys, enc.annotations, enc.mask
    )
    weights = None
    if cfg.attention == "bahdanau" and not cfg.conditional:  # from the previous state s_{i-1}
        ctx, weights = attend(state.carries[-1].h)
        xp = xp + ctx @ sp["decoder"][0]["w_ih"]
    elif cfg.input_fed:
        xp = xp + state.feed @ sp["decoder"][0]["w_ih"]
    else:
        ctx = enc.context
    carries, x = [], None
    for layer, (p, carry) in enumerate(zip(sp["decoder"], state.carries)):
        carry, h = cell.step(p, carry, xp if layer == 0 else cell.project(p, x))
        if layer == 0 and cfg.conditional:  # the query has read y_{t-1}: s'_t, not s_{t-1}
            ctx, weights = attend(h)
            pc = sp["conditional"]
            carry, h = cell.step(pc, carry, cell.project(pc, ctx))
        x = h + x if cfg.residual and layer > 0 else h
        carries.append(carry)
    feed = state.feed
    if cfg.luong:  # context from the new state h_t
        ctx, weights = attend(x)
    if cfg.input_fed:  # the readout feeds the next step
        feed = _readout(sp, x, ctx, emb)
    return DecoderState(tuple(carries), feed), (x, ctx, weights)


def output_logits(params: dict, readout: Array) -> Array:
    """`float32[..., R] -> float32[..., V]` (tied: through the target embedding); float32
    under mixed precision too, for the softmax and the loss."""
    out = params["output"]
    w = out["w"] if "w" in out else params["tgt_embed"].T
    # A float32 result from bfloat16 operands: rounding the logits to bfloat16 before the softmax
    # would move log P by up to ~0.5% (relative) at realistic widths.
    logits = jnp.matmul(readout.astype(w.dtype), w, preferred_element_type=jnp.float32)
    return add_bias(logits, out["b"].astype(jnp.float32))


def decode_step(
    params: dict,
    enc: Encoded,
    state: DecoderState,
    y_prev: Array,
    *,
    cfg: Seq2SeqConfig,
    with_attention: bool = False,
) -> tuple:
    """One inference step: `y_prev: int32[B]` -> (new state, logits float32[B, V]), and with
    `with_attention` the attention weights float32[B, S] as a third element (the model must
    have attention)."""
    params = compute_params(params, cfg=cfg)
    emb = params["tgt_embed"][y_prev]
    xp = _input_projection(params, enc, emb, cfg=cfg)
    sp = _step_params(params, cfg)
    state, (h, ctx, weights) = _recurrent_step(sp, enc, state, xp, emb, cfg=cfg)
    readout = state.feed if cfg.input_fed else _readout(params, h, ctx, emb)
    if with_attention:
        if weights is None:
            raise ValueError("this model has no attention (attention='none'): nothing to align")
        return state, output_logits(params, readout), weights
    return state, output_logits(params, readout)


def teacher_forced_attention(
    params: dict, src: Array, src_len: Array, tgt: Array, *, cfg: Seq2SeqConfig
) -> Array:
    """The attention weights float32[B, T, S] of reading `tgt: int32[B, T]` (`y_1 .. </s>`)
    behind `<s>`, step by step with `decode_step`: what a search that wrote `tgt` attended to."""
    enc = encode(params, src, src_len, cfg=cfg)

    def step(state, y_prev):
        state, _, weights = decode_step(params, enc, state, y_prev, cfg=cfg, with_attention=True)
        return state, weights

    state = init_decoder_state(params, enc, cfg=cfg)
    _, weights = jax.lax.scan(step, state, shift_right(tgt).T)
    return jnp.swapaxes(weights, 0, 1)


def shift_right(tgt: Array) -> Array:
    """Decoder inputs under teacher forcing: `<s> y_1 .. y_{T-1}` from `tgt: int32[B, T]`."""
    bos = jnp.full((tgt.shape[0], 1), BOS, tgt.dtype)
    return jnp.concatenate([bos, tgt[:, :-1]], axis=1)


def forward(
    params: dict, src: Array, src_len: Array, tgt: Array, *, cfg: Seq2SeqConfig, key=None
) -> Array:
    """Teacher-forced logits: `decode_step` over all target positions, rearranged for speed.

    Only the recurrence (attention, decoder layers) runs inside the `lax.scan`; the embedding
    half of the first layer's input matmul, the readout (except under Luong's input feeding,
    where it feeds the next step) and the output layer run once for all steps outside it.

    Args:
      src: int32[B, S]; src_len: int32[B].
      tgt: int32[B, T] target ids `y_1 .. y_n </s>` right-padded; the decoder reads them
        shifted right behind `<s>`.
      key: dropout keys (training), one per row `key[B]` or one for the batch (`rnn.row_keys`);
        None at inference. Row b's masks depend on its key alone, not on the rows beside it.

    Returns:
      logits float32[B, T, V]: logits[:, t] predicts tgt[:, t].
    """
    enc_key = dec_keys = None
    key = rnn.row_keys(key, src.shape[0])
    if key is not None:
        enc_key, *dec_keys = rnn.split_rows(key, 3)
    enc = encode(params, src, src_len, cfg=cfg, key=enc_key)
    return teacher_forced_logits(params, enc, tgt, cfg=cfg, dropout_keys=dec_keys)


def teacher_forced_logits(
    params: dict, enc: Encoded, tgt: Array, *, cfg: Seq2SeqConfig, dropout_keys=None
) -> Array:
    """The decoder half of `forward`: logits float32[B, T, V] of reading `tgt: int32[B, T]`
    behind `<s>`, given the encoded source. `dropout_keys`: (embedding keys, readout keys), each
    one per row `key[B]` or one for the batch (`rnn.row_keys`), or None at inference."""
    params = compute_params(params, cfg=cfg)
    emb_key, out_key = dropout_keys if dropout_keys is not None else (None, None)
    emb_key, out_key = (rnn.row_keys(k, tgt.shape[0]) for k in (emb_key, out_key))
    emb = params["tgt_embed"][shift_right(tgt)]
    if emb_key is not None:
        word_key = rnn.fold_in_rows(emb_key, WORD_STREAM)
        emb = rnn.dropout(emb, cfg.tgt_word_dropout, word_key, whole_vectors=True)
        emb = rnn.dropout(emb, cfg.dropout, emb_key)
    if cfg.recurrent_input:
        readouts = _stepped_readouts(params, enc, emb, cfg=cfg)
    else:
        readouts = _layered_readouts(params, enc, emb, cfg=cfg)
    if out_key is not None:
        readouts = rnn.dropout(readouts, cfg.dropout, out_key)
    return output_logits(params, readouts)


def _stepped_readouts(params: dict, enc: Encoded, emb: Array, *, cfg: Seq2SeqConfig) -> Array:
    """Teacher forcing where a step's input depends on the step before (Bahdanau's attention,
    Luong's input feeding): attention and every decoder layer in one scan over a step.
    `emb: float32[B, T, E]` -> readouts float32[B, T, R]."""
    xp = _input_projection(params, enc, emb, cfg=cfg)

    def step(sp, enc_data, mask, state, inputs):
        xp_t, emb_t = inputs
        enc_t = Encoded(*enc_data, mask)
        state, (h, ctx, _) = _recurrent_step(sp, enc_t, state, xp_t, emb_t, cfg=cfg)
        return state, (state.feed if cfg.input_fed else (h, ctx))

    sp, state0 = _step_params(params, cfg), init_decoder_state(params, enc, cfg=cfg)
    out, _ = scan.run(
        step,
        sp,
        (xp, emb),
        initial_carry=state0,
        data=enc[:3],
        consts=enc.mask,
        unroll=cfg.unroll,
        remat=cfg.remat,
        impl=scan_implementations(cfg)[2],
    )
    return out if cfg.input_fed else _readout(params, *out, emb)


def _layered_readouts(params: dict, enc: Encoded, emb: Array, *, cfg: Seq2SeqConfig) -> Array:
    """Teacher forcing where only the decoder state links the steps (no attention, or Luong's
    without input feeding): each decoder layer runs over the whole target as an encoder layer
    does (a linear cell: in parallel over time), then attention reads every step's state at
    once. `emb: float32[B, T, E]` -> readouts float32[B, T, R]."""
    cell = get_cell(cfg.decoder_cell)
    steps = emb.shape[1]
    broadcast = lambda c: jnp.broadcast_to(c[:, None], (c.shape[0], steps) + c.shape[1:])
    x = emb
    if cfg.attention == "none" and cfg.context != "init":  # C is part of every step's input
        x = jnp.concatenate([emb, broadcast(enc.context)], axis=-1)
    kw = dict(
        unroll=cfg.unroll,
        projection=cfg.projection,
        remat=cfg.remat,
        impl=scan_implementations(cfg)[1],
    )
    state0 = init_decoder_state(params, enc, cfg=cfg)
    for layer, (p, carry) in enumerate(zip(params["decoder"], state0.carries)):
        h, _ = scan.run(cell, p, x, initial_carry=carry, **kw)
        x = h + x if cfg.residual and layer > 0 else h
    if cfg.luong:  # one batched attention: every step's state asks at once
        attend = lambda query: attention.attend(
            params["attention"], cfg.attention, query, enc.keys, enc.annotations, enc.mask
        )[0]
        ctx = jax.vmap(attend, in_axes=1, out_axes=1)(x)
    else:  # the fixed context C at every step
        ctx = broadcast(enc.context)
    return _readout(params, x, ctx, emb)


def token_log_probs(logits: Array, tgt: Array, tgt_len: Array) -> Array:
    """`log P(tgt[b, t] | ...)` as float32[B, T], zero at t >= tgt_len[b]."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(logp, tgt[..., None], axis=-1)[..., 0]
    return jnp.where(scan.length_mask(tgt_len, tgt.shape[1]), picked, 0.0)


def log_prob(
    params: dict, src: Array, src_len: Array, tgt: Array, tgt_len: Array, *, cfg: Seq2SeqConfig
) -> Array:
    """Scores given outputs: `log P(y | x)` per sequence, float32[B] (Cho 2014's rescoring).

    `tgt: int32[B, T]` holds `y_1 .. y_n </s>`; `tgt_len: int32[B]` counts the `</s>`.
    """
    logits = forward(params, src, src_len, tgt, cfg=cfg)
    return jnp.sum(token_log_probs(logits, tgt, tgt_len), axis=-1)
