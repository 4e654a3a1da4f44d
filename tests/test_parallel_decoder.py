"""A decoder that trains in parallel over time: a linear cell under Luong's attention without
input feeding. Its training step holds no matrix product inside a loop; the searches decode it
step by step from the same parameters and score what teacher forcing scores; the designs that
would train it step by step are refused."""

import functools
import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.errors import ConfigError
from s2s_jax.nn import decoding, ensemble, model

SRC = jnp.array([[4, 5, 6, 4, 5, 7], [6, 4, 0, 0, 0, 0], [5, 8, 7, 0, 0, 0]])
SRC_LEN = jnp.array([6, 2, 3])
TGT = jnp.array([[4, 5, 6, 2], [7, 2, 0, 0], [8, 4, 2, 0]])
TGT_LEN = jnp.array([4, 2, 3])

PARALLEL = dict(
    cell="minlstm",
    dec_cell="mingru",
    bidirectional=True,
    attention="luong_general",
    input_feeding=False,
    dec_layers=2,
    residual=True,
)


def make(seed=0, **kw):
    base = dict(src_vocab=10, tgt_vocab=10, src_embed=8, tgt_embed=8, enc_hidden=8, dec_hidden=8)
    cfg = model.Seq2SeqConfig(**{**base, **PARALLEL, **kw})
    params = model.init(cfg, key=jax.random.key(seed))
    params["output"]["w"] = params["output"]["w"] * 6.0  # sharper: the searches differ
    return cfg, params


def loops_with_products(jaxpr, inside: bool = False) -> int:
    """How many matrix products (`dot_general`) of `jaxpr` run inside a `scan` or `while`
    body, counting through every nested jaxpr (jit, custom gradients, conditionals)."""
    count = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general" and inside:
            count += 1
        in_loop = inside or eqn.primitive.name in ("scan", "while")
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else (value,):
                sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's Jaxpr
                if isinstance(sub, jax.extend.core.Jaxpr):
                    count += loops_with_products(sub, in_loop)
    return count


def training_jaxpr(cfg, params):
    def loss(p):
        logits = model.forward(p, SRC, SRC_LEN, TGT, cfg=cfg, key=jax.random.key(1))
        return -jnp.sum(model.token_log_probs(logits, TGT, TGT_LEN))

    return jax.make_jaxpr(jax.value_and_grad(loss))(params).jaxpr


@pytest.mark.parametrize("cell", ["sru", "mingru", "minlstm"])
def test_a_linear_decoder_trains_with_no_product_inside_a_loop(cell):
    """Loss and gradients of the whole model: every matmul outside any scan; the same model
    with a GRU decoder (or Luong's input feeding on a GRU) has products inside its loops."""
    cfg, params = make(cell=cell, dec_cell=cell, dropout=0.2)
    assert loops_with_products(training_jaxpr(cfg, params)) == 0
    for sequential in (dict(dec_cell="gru"), dict(dec_cell="gru", input_feeding=True)):
        cfg, params = make(cell=cell, **sequential)
        assert loops_with_products(training_jaxpr(cfg, params)) > 0


def test_searches_decode_step_by_step_what_teacher_forcing_scores():
    """Greedy, beam search and sampling decode the parallel model with its step form; the
    parallel teacher-forced path scores their outputs exactly as they did, sentence by
    sentence as in the batch; an ensemble of two decodes and scores alike."""
    cfg, params = make()
    cap = SRC_LEN * 2 + 1
    log_prob = jax.jit(functools.partial(model.log_prob, cfg=cfg))
    searches = {
        "greedy": functools.partial(decoding.greedy, cfg=cfg, max_len=12),
        "sample": functools.partial(decoding.sample, cfg=cfg, max_len=12, key=jax.random.key(4)),
    }
    for name, search in searches.items():
        out = jax.jit(search)(params, SRC, SRC_LEN, cap=cap)
        assert np.all(out.lengths > 1), name  # something before </s>
        scores = log_prob(params, SRC, SRC_LEN, out.tokens, out.lengths)
        np.testing.assert_allclose(out.scores, scores, rtol=1e-5, err_msg=name)
    beam = jax.jit(functools.partial(decoding.beam_search, cfg=cfg, max_len=12, beam=3))
    beams = beam(params, SRC, SRC_LEN, cap=cap)
    for k in range(3):
        scores = log_prob(params, SRC, SRC_LEN, beams.tokens[:, k], beams.lengths[:, k])
        np.testing.assert_allclose(beams.scores[:, k], scores, rtol=1e-5)
    for b in (1, 2):  # alone and unpadded, as in the batch
        n = int(SRC_LEN[b])
        alone = beam(params, SRC[b : b + 1, :n], SRC_LEN[b : b + 1], cap=cap[b : b + 1])
        np.testing.assert_array_equal(beams.tokens[b], alone.tokens[0])

    members = (cfg, cfg.replace(dec_hidden=12))
    both = (params, make(seed=1, dec_hidden=12)[1])
    pair = jax.jit(functools.partial(decoding.greedy, cfg=members, max_len=12))
    out = pair(both, SRC, SRC_LEN, cap=cap)
    scores = jax.jit(functools.partial(ensemble.log_prob, cfg=members))(
        both, SRC, SRC_LEN, out.tokens, out.lengths
    )
    np.testing.assert_allclose(out.scores, scores, rtol=1e-5)


def test_alignments_are_the_steps_attention_weights():
    """`with_attention`: the weights the step form's attention gave each written token equal
    teacher forcing's step by step (`teacher_forced_attention`), rows summing to one."""
    cfg, params = make()
    out = decoding.greedy(
        params, SRC, SRC_LEN, cfg=cfg, max_len=8, cap=SRC_LEN * 2 + 1, with_attention=True
    )
    again = model.teacher_forced_attention(params, SRC, SRC_LEN, out.tokens, cfg=cfg)
    for b in range(3):
        n = int(out.lengths[b])
        np.testing.assert_allclose(out.attention[b, :n], again[b, :n], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.sum(out.attention[b, :n], -1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(attention="bahdanau", input_feeding=True), "mingru decoder would train step by"),
        (dict(input_feeding=True), "mingru decoder would train step by step: Luong's input"),
        (
            dict(attention="bahdanau", input_feeding=True, conditional=True),
            "would train step by step: bahdanau",
        ),
        (dict(dec_cell="gru", attention="bahdanau"), "input_feeding = false applies to"),
        (dict(dec_cell="transformer"), "dec_cell must be one of"),
    ],
)
def test_designs_that_would_train_a_linear_decoder_step_by_step_are_refused(change, match):
    with pytest.raises(ConfigError, match=match):
        make(**change)


PARALLEL_SETS = [
    "cell=sru", "dec_cell=minlstm", "attention=luong_dot", "input_feeding=false",
    "bidirectional=false", "src_embed=8", "tgt_embed=8", "enc_hidden=16", "dec_hidden=16",
    "batch_size=8", "eval_examples=8", "warmup_steps=0", "buckets=2", "sentences_per_batch=4",
]  # fmt: skip


def test_the_user_path_trains_translates_exports_and_serves_it(tmp_path, capsys):
    """Through the `s2s` command: train, translate (beam, n-best, alignments), export with the
    standalone loader, and the server's batcher: each answer Translator's."""
    from s2s_jax import cli
    from s2s_jax.inference import export
    from s2s_jax.inference.translate import Translator
    from s2s_jax.serve.batcher import Batcher
    from s2s_jax.serve.requests import Limits, parse

    sets = [arg for item in PARALLEL_SETS for arg in ("--set", item)]
    workdir = tmp_path / "run"
    argv = ["train", "--workdir", workdir, "--task", "copy", "--steps", "30", "--no-progress"]
    assert cli.main([str(a) for a in argv] + sets) == 0
    config = json.loads((workdir / "config.json").read_text())
    assert config["model"]["dec_cell"] == "minlstm" and not config["model"]["input_feeding"]
    capsys.readouterr()

    texts = ["abc", "jihgfed", "a"]
    translator = Translator.from_workdir(workdir, log=lambda s: None)
    want = translator.translate(texts, beam=2)
    assert cli.main(["translate", "--workdir", str(workdir), "--beam", "2", *texts]) == 0
    assert capsys.readouterr().out.splitlines() == want
    assert cli.main(["translate", "--workdir", str(workdir), "--align", "abc"]) == 0
    assert capsys.readouterr().out.strip()

    path = tmp_path / "model.s2s"
    path.write_bytes(export.export(translator, beam=2, platforms=("cpu",)))
    loader = importlib.util.spec_from_file_location(
        "standalone", pathlib.Path(export.__file__).with_name("standalone.py")
    )
    standalone = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(standalone)
    assert standalone.load(path).translate(texts) == want

    batcher = Batcher(translator, max_batch=4, max_wait=0.01, max_queue=16)
    batcher.start()
    try:
        body = json.dumps({"inputs": texts, "beam": 2, "n_best": 2}).encode()
        results = batcher.submit(parse(body, translator, Limits())).result(timeout=120)
    finally:
        batcher.stop()
    assert [r.hypotheses for r in results] == translator.translate(texts, beam=2, n_best=2)
