"""Mixed precision (`Seq2SeqConfig.dtype = "bfloat16"`): matmuls and activations in bfloat16,
the parameters, their gradients, the LSTM cell state, the softmaxes and the loss in float32.
Checked against float32 on the same parameters, across the scan implementations, and through
the command (a bfloat16 run trains, records its dtype, translates and scores)."""

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax import cli
from s2s_jax.errors import ConfigError
from s2s_jax.inference.translate import Translator
from s2s_jax.nn import decoding, model
from s2s_jax.run import workdir as wd

B, S, T = 4, 9, 7

DESIGNS = {
    "lstm-bahdanau": dict(cell="lstm", attention="bahdanau", bidirectional=True, enc_layers=2),
    "gru-luong": dict(cell="gru", attention="luong_general", context="both"),
    "lstm-cho": dict(cell="lstm", attention="none", context="both", dec_layers=2),
    "rnn-init": dict(cell="rnn", attention="none", reverse_source=True),
}


def setup(design: str, dtype: str = "bfloat16", **extra):
    cfg = model.Seq2SeqConfig(
        src_vocab=13, tgt_vocab=11, src_embed=16, tgt_embed=16, enc_hidden=32, dec_hidden=24,
        attn_dim=16, dtype=dtype, **DESIGNS[design], **extra,
    )  # fmt: skip
    params = model.init(cfg, key=jax.random.key(0))
    src_len = jnp.array([9, 4, 1, 6], jnp.int32)
    tgt_len = jnp.array([7, 3, 5, 1], jnp.int32)
    src = jax.random.randint(jax.random.key(1), (B, S), 4, 13, jnp.int32)
    tgt = jax.random.randint(jax.random.key(2), (B, T), 4, 11, jnp.int32)
    src = jnp.where(jnp.arange(S)[None] < src_len[:, None], src, 0)
    tgt = jnp.where(jnp.arange(T)[None] < tgt_len[:, None], tgt, 0)
    return cfg, params, (src, src_len, tgt, tgt_len)


def f32(cfg):
    return dataclasses.replace(cfg, dtype="float32")


def test_dtype_is_validated():
    with pytest.raises(ConfigError, match="dtype must be float32 or bfloat16"):
        model.Seq2SeqConfig(dtype="float16")


@pytest.mark.parametrize("design", sorted(DESIGNS))
def test_bfloat16_logits_and_log_prob_are_near_float32(design):
    """Same parameters: bfloat16 log-probabilities within 0.05 nats per token of float32's,
    and the outputs in float32."""
    cfg, params, (src, src_len, tgt, tgt_len) = setup(design)
    low = jax.jit(functools.partial(model.forward, cfg=cfg))(params, src, src_len, tgt)
    high = jax.jit(functools.partial(model.forward, cfg=f32(cfg)))(params, src, src_len, tgt)
    assert low.dtype == jnp.float32
    lp_low, lp_high = jax.nn.log_softmax(low), jax.nn.log_softmax(high)
    assert float(jnp.max(jnp.abs(lp_low - lp_high))) < 0.05
    assert not np.array_equal(low, high)  # it did compute in bfloat16
    score = lambda logits: jnp.sum(model.token_log_probs(logits, tgt, tgt_len), axis=-1)
    np.testing.assert_allclose(score(low), score(high), atol=0.05 * T)


@pytest.mark.parametrize(
    "design, extra",
    [
        ("lstm-bahdanau", {}),
        ("gru-luong", {}),
        ("lstm-cho", {"remat": True, "projection": "inside"}),
    ],
)
def test_bfloat16_gradients_agree_across_implementations_and_are_float32(design, extra):
    """The fused and hoisted backward passes against plain autodiff, all in bfloat16; and
    against float32 gradients, within bfloat16's precision."""
    cfg, params, (src, src_len, tgt, tgt_len) = setup(design, **extra)

    def grads(c):
        loss = lambda p: -jnp.sum(model.log_prob(p, src, src_len, tgt, tgt_len, cfg=c))
        return jax.jit(jax.grad(loss))(params)

    fused, autodiff = grads(cfg), grads(dataclasses.replace(cfg, fused=False))
    full = grads(f32(cfg))
    flat = lambda g: np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)])
    norm = lambda x: float(np.linalg.norm(x))
    total = norm(flat(full))
    # Measured: 0.3% between the implementations, 0.5% from float32 (of the gradient's norm).
    assert norm(flat(fused) - flat(autodiff)) <= 0.01 * total
    assert norm(flat(fused) - flat(full)) <= 0.02 * total
    for a, b, c in zip(*map(jax.tree.leaves, (fused, autodiff, full))):
        assert a.dtype == jnp.float32 and b.dtype == jnp.float32
        # Each leaf within 5% of itself, or (the few leaves whose gradient is near 0)
        # within 0.1% of the whole gradient.
        assert norm(np.ravel(a - c)) <= 0.05 * norm(np.ravel(c)) + 1e-3 * total


def test_the_lstm_cell_state_stays_float32():
    cfg, params, (src, src_len, _, _) = setup("lstm-cho")
    enc = model.encode(params, src, src_len, cfg=cfg)
    assert enc.annotations.dtype == jnp.bfloat16 and enc.context.dtype == jnp.bfloat16
    state = model.init_decoder_state(params, enc, cfg=cfg)
    state, logits = model.decode_step(params, enc, state, src[:, 0], cfg=cfg)
    for carry in state.carries:
        assert carry.h.dtype == jnp.bfloat16 and carry.c.dtype == jnp.float32
    assert logits.dtype == jnp.float32


@pytest.mark.parametrize("design", ["lstm-bahdanau", "gru-luong"])
def test_bfloat16_searches_score_what_they_write(design):
    cfg, params, (src, src_len, _, _) = setup(design)
    d = jax.jit(functools.partial(decoding.greedy, cfg=cfg, max_len=8))(params, src, src_len)
    b = jax.jit(functools.partial(decoding.beam_search, cfg=cfg, max_len=8, beam=3))(
        params, src, src_len
    )
    forced = model.log_prob(params, src, src_len, d.tokens, d.lengths, cfg=cfg)
    np.testing.assert_allclose(d.scores, forced, atol=0.05)
    assert d.scores.dtype == jnp.float32 and np.all(np.isfinite(b.scores[:, 0]))


# ---------------------------------------------------------------------------- the commands

TASK = [
    "--task", "reverse", "--steps", "200", "--no-progress",
    "--set", "cell=gru", "--set", "attention=bahdanau", "--set", "bidirectional=true",
    "--set", "src_embed=16", "--set", "tgt_embed=16", "--set", "enc_hidden=32",
    "--set", "dec_hidden=32", "--set", "attn_dim=16", "--set", "max_src_len=8",
    "--set", "max_tgt_len=9", "--set", "buckets=1", "--set", "batch_size=32",
    "--set", "eval_every=200", "--set", "eval_examples=200", "--set", "warmup_steps=20",
    "--set", "learning_rate=0.01",
]  # fmt: skip


def train(capsys, workdir, *extra):
    code = cli.main([str(a) for a in ["train", "--workdir", workdir, *TASK, *extra]])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1])


def readable(result: dict, examples: int = 200) -> float:
    """Exact match over the validation sources that fit max_src_len (the others count as
    wrong in `exact_match`, and are counted in `too_long`)."""
    return result["exact_match"] * examples / (examples - result.get("too_long", 0))


def test_a_bfloat16_run_learns_what_a_float32_run_learns(tmp_path, capsys, monkeypatch):
    full = train(capsys, tmp_path / "f32")
    half = train(capsys, tmp_path / "bf16", "--set", "dtype=bfloat16")
    assert readable(full) >= 0.95 and full["too_long"] == half["too_long"] > 0
    assert readable(half) >= readable(full) - 0.02, (half, full)

    run = wd.load(tmp_path / "bf16")
    assert run.model_cfg.dtype == "bfloat16"  # recorded in the workdir
    params, _ = wd.restore_params(run)
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}

    t = Translator.from_workdir(tmp_path / "bf16")
    src = "abcd"
    code = cli.main(["translate", "--workdir", str(tmp_path / "bf16"), src])
    out, _ = capsys.readouterr()
    assert code == 0 and out.strip() == t.translate([src])[0]
    import io

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(f"{src}\t{src[::-1]}\n".encode())))
    code = cli.main(["score", "--workdir", str(tmp_path / "bf16")])
    out, _ = capsys.readouterr()
    assert code == 0 and float(out) == pytest.approx(t.score([(src, src[::-1])])[0], abs=1e-4)


def test_bfloat16_output_layer_is_not_rounded_to_bfloat16():
    """The output layer's bfloat16 matmul keeps a float32 result: against a float64 numpy
    product of the same bfloat16-rounded readout and weights, at a realistic width, the logits
    differ by float32 accumulation error, far below bfloat16's rounding (2^-9 relative)."""
    ks = jax.random.split(jax.random.key(0), 3)
    readout = jnp.tanh(jax.random.normal(ks[0], (8, 5, 512)))
    w = (jax.random.normal(ks[1], (512, 2000)) / np.sqrt(512)).astype(jnp.bfloat16)
    b = (0.1 * jax.random.normal(ks[2], (2000,))).astype(jnp.bfloat16)
    for tied in (False, True):
        params = {"output": {"b": b}, "tgt_embed": w.T} if tied else {"output": {"w": w, "b": b}}
        got = model.output_logits(params, readout)
        assert got.dtype == jnp.float32
        as64 = lambda x: np.asarray(x.astype(jnp.float32), np.float64)
        want = as64(readout.astype(jnp.bfloat16)) @ as64(w) + as64(b)
        scale = np.abs(want).max()
        assert np.abs(np.asarray(got) - want).max() < 1e-5 * scale
