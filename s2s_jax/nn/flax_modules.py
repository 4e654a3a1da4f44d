"""The model as `flax.nnx` modules over the same parameters and the same pure functions, so a
Flax user can put our encoder or decoder into an nnx model and train it with `nnx.Optimizer`.

    Encoder(cfg, params)   {src_embed, encoder}          -> model.read_source
    Decoder(cfg, params)   the rest (attention, decoder,  -> model.with_keys, then
                           bridge, readout, output, tgt_embed)  model.teacher_forced_logits
    Seq2Seq(cfg, params)   .encoder and .decoder          -> model.forward

Each module keeps its part of `model.init`'s pytree as `nnx.Param`s, in the same nesting;
`module.pytree()` gives it back as plain arrays (`Seq2Seq.pytree()` is exactly the model's
parameter pytree), and `Seq2Seq(cfg, params)` builds one from any such pytree: fresh
(`model.init`), or a trained workdir's (`Translator.from_workdir(W).params`).
"""

from __future__ import annotations

import jax
from flax import nnx

from s2s_jax.nn import model

Array = jax.Array

ENCODER_KEYS = ("src_embed", "encoder")  # what read_source reads; the decoder has the rest


def _params(cfg: model.Seq2SeqConfig, params: dict | None, rngs: nnx.Rngs | None) -> dict:
    if params is not None:
        return params
    if rngs is None:
        raise ValueError("give the parameters, or rngs to initialise them (nnx.Rngs(0))")
    return model.init(cfg, key=rngs.params())


class _Part(nnx.Module):
    """A part of the parameter pytree held as nnx.Params, in the pytree's own nesting."""

    def __init__(self, cfg: model.Seq2SeqConfig, part: dict):
        self.cfg = cfg
        self.params = nnx.data(jax.tree.map(nnx.Param, part))

    def pytree(self) -> dict:
        """The parameters as plain arrays, nested as `model.init` nests them."""
        return jax.tree.map(
            lambda v: v[...], self.params, is_leaf=lambda v: isinstance(v, nnx.Variable)
        )


def _dropout_key(rngs: nnx.Rngs | None):
    return None if rngs is None else rngs.dropout()


class Encoder(_Part):
    """The encoder (embedding and RNN stack): `(src, src_len) -> model.Encoded` without keys."""

    def __init__(self, cfg: model.Seq2SeqConfig, params: dict | None = None, *, rngs=None):
        params = _params(cfg, params, rngs)
        super().__init__(cfg, {k: params[k] for k in ENCODER_KEYS})

    def __call__(self, src: Array, src_len: Array, *, rngs: nnx.Rngs | None = None):
        """`src: int32[B, S]`, `src_len: int32[B]`; `rngs` with a "dropout" stream trains."""
        return model.read_source(self.pytree(), src, src_len, cfg=self.cfg, key=_dropout_key(rngs))


class Decoder(_Part):
    """The decoder with its attention, bridge, readout and output layer: teacher-forced logits
    float32[B, T, V] of a target given an `Encoder`'s output."""

    def __init__(self, cfg: model.Seq2SeqConfig, params: dict | None = None, *, rngs=None):
        params = _params(cfg, params, rngs)
        super().__init__(cfg, {k: v for k, v in params.items() if k not in ENCODER_KEYS})

    def __call__(self, enc: model.Encoded, tgt: Array, *, rngs: nnx.Rngs | None = None):
        """`tgt: int32[B, T]` holds `y_1 .. y_n </s>`; the decoder reads it behind `<s>`."""
        params = self.pytree()
        key = _dropout_key(rngs)
        keys = None if key is None else tuple(jax.random.split(key))
        enc = model.with_keys(params, enc, cfg=self.cfg)
        return model.teacher_forced_logits(params, enc, tgt, cfg=self.cfg, dropout_keys=keys)


class Seq2Seq(nnx.Module):
    """The whole model: `(src, src_len, tgt) -> logits float32[B, T, V]`, as `model.forward`
    (the same dropout for the same key)."""

    def __init__(self, cfg: model.Seq2SeqConfig, params: dict | None = None, *, rngs=None):
        params = _params(cfg, params, rngs)
        self.cfg = cfg
        self.encoder, self.decoder = Encoder(cfg, params), Decoder(cfg, params)

    def pytree(self) -> dict:
        """Exactly the model's parameter pytree (as `model.init` returns it)."""
        return {**self.encoder.pytree(), **self.decoder.pytree()}

    def __call__(self, src: Array, src_len: Array, tgt: Array, *, rngs: nnx.Rngs | None = None):
        return model.forward(self.pytree(), src, src_len, tgt, cfg=self.cfg, key=_dropout_key(rngs))
