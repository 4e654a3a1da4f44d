"""Ensembles and checkpoint averaging: the mean of the members' probabilities at every step,
checked against a hand-computed case and against the model alone; through `s2s translate /
score / eval` with several --workdir, and --average N against the mean of the checkpoints read
one by one."""

import functools
import json
import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_vocab import sentencepiece_variant

from s2s_jax import cli
from s2s_jax.data.vocab import Vocab
from s2s_jax.errors import DataError
from s2s_jax.inference.ensemble_vocab import on_first_vocabularies
from s2s_jax.inference.translate import Translator
from s2s_jax.nn import decoding, ensemble, model
from s2s_jax.run import workdir as wd

V = 6  # <pad> <s> </s> <unk>, then two tokens: 4 and 5


def constant_model(probs, *, cell="gru", attention="none", seed=0):
    """A model whose output distribution is `probs` at every step, whatever it reads: the
    output layer's weights are zero and its bias is log(probs)."""
    cfg = model.Seq2SeqConfig(
        src_vocab=V,
        tgt_vocab=V,
        cell=cell,
        attention=attention,
        src_embed=3,
        tgt_embed=3,
        enc_hidden=4,
        dec_hidden=5,
        attn_dim=3,
    )
    params = model.init(cfg, key=jax.random.key(seed))
    params["output"] = {
        "w": jnp.zeros_like(params["output"]["w"]),
        "b": jnp.log(jnp.asarray(probs, jnp.float32)),
    }
    return params, cfg


P_A = [0.05, 0.05, 0.2, 0.1, 0.5, 0.1]
P_B = [0.1, 0.1, 0.2, 0.1, 0.1, 0.4]


def test_scores_are_the_log_of_the_mean_probability_by_hand():
    (pa, ca), (pb, cb) = constant_model(P_A), constant_model(P_B, cell="lstm", attention="bahdanau")
    params, cfg = (pa, pb), (ca, cb)
    src = jnp.array([[4, 5, 4], [5, 0, 0]], jnp.int32)
    src_len = jnp.array([3, 1], jnp.int32)
    tgt = jnp.array([[4, 5, 2], [5, 2, 0]], jnp.int32)
    tgt_len = jnp.array([3, 2], jnp.int32)
    # By hand: token 4 has mean probability (0.5 + 0.1) / 2 = 0.3, token 5 (0.1 + 0.4) / 2 = 0.25
    # and </s> (0.2 + 0.2) / 2 = 0.2.
    want = [math.log(0.3) + math.log(0.25) + math.log(0.2), math.log(0.25) + math.log(0.2)]
    got = jax.jit(functools.partial(ensemble.log_prob, cfg=cfg))(params, src, src_len, tgt, tgt_len)
    np.testing.assert_allclose(got, want, rtol=1e-5)

    # Greedy writes the most probable token of the mean, 4 (0.3), until the cap forces </s>;
    # alone, model B would write 5 (0.4 against 0.1).
    cap = jnp.array([3, 2], jnp.int32)
    d = decoding.greedy(params, src, src_len, cfg=cfg, max_len=4, cap=cap)
    assert d.tokens.tolist() == [[4, 4, 2, 0], [4, 2, 0, 0]]
    np.testing.assert_allclose(
        d.scores, [2 * math.log(0.3) + math.log(0.2), math.log(0.3) + math.log(0.2)], rtol=1e-5
    )
    alone = decoding.greedy(pb, src, src_len, cfg=cb, max_len=4, cap=cap)
    assert alone.tokens[:, 0].tolist() == [5, 5]


def trained_like(seed, cell, attention):
    """Random (untrained) weights: distributions that differ from step to step and model to
    model, unlike `constant_model`'s."""
    cfg = model.Seq2SeqConfig(
        src_vocab=9, tgt_vocab=8, cell=cell, attention=attention, src_embed=5, tgt_embed=4,
        enc_hidden=6, dec_hidden=7, attn_dim=5, bidirectional=True,
    )  # fmt: skip
    return model.init(cfg, key=jax.random.key(seed)), cfg


def batch():
    src_len = jnp.array([5, 1, 7, 3], jnp.int32)
    ids = jax.random.randint(jax.random.key(9), (4, 7), 4, 9, jnp.int32)
    return jnp.where(jnp.arange(7)[None] < src_len[:, None], ids, 0), src_len


def test_an_ensemble_of_a_model_with_itself_is_the_model():
    params, cfg = trained_like(1, "lstm", "bahdanau")
    src, src_len = batch()
    pair, pair_cfg = (params, params), (cfg, cfg)
    for search in (
        functools.partial(decoding.greedy, max_len=9),
        functools.partial(decoding.beam_search, max_len=9, beam=3, with_attention=True),
    ):
        alone = jax.jit(functools.partial(search, cfg=cfg))(params, src, src_len)
        both = jax.jit(functools.partial(search, cfg=pair_cfg))(pair, src, src_len)
        assert np.array_equal(alone.tokens, both.tokens)
        np.testing.assert_allclose(alone.scores, both.scores, rtol=1e-5, atol=1e-5)
        if both.attention is not None:
            np.testing.assert_allclose(alone.attention, both.attention, atol=1e-6)
    d = decoding.greedy(params, src, src_len, cfg=cfg, max_len=9)
    np.testing.assert_allclose(
        ensemble.log_prob(pair, src, src_len, d.tokens, d.lengths, cfg=pair_cfg),
        model.log_prob(params, src, src_len, d.tokens, d.lengths, cfg=cfg),
        rtol=1e-5,
    )


def test_ensemble_searches_score_what_they_write():
    """Two models of different architectures: greedy's and beam search's scores are the
    ensemble's teacher-forced log P of their outputs, and the ensemble's greedy output is the
    argmax of the mean of the members' next-token probabilities (numpy, member by member)."""
    (pa, ca), (pb, cb) = trained_like(1, "lstm", "bahdanau"), trained_like(2, "gru", "none")
    params, cfg = (pa, pb), (ca, cb)
    src, src_len = batch()
    d = decoding.greedy(params, src, src_len, cfg=cfg, max_len=9)
    np.testing.assert_allclose(
        d.scores, ensemble.log_prob(params, src, src_len, d.tokens, d.lengths, cfg=cfg), rtol=1e-5
    )
    probs = [  # each member's P(y_t | the greedy prefix) under teacher forcing
        np.asarray(jax.nn.softmax(model.forward(p, src, src_len, d.tokens, cfg=c), axis=-1))
        for p, c in ((pa, ca), (pb, cb))
    ]
    mean = (probs[0] + probs[1]) / 2
    mean[..., :2] = 0  # <pad> and <s> are never written
    first = np.argmax(mean[:, 0], axis=-1)  # before any cap: the first token is free
    assert d.tokens[:, 0].tolist() == first.tolist()
    b = decoding.beam_search(params, src, src_len, cfg=cfg, max_len=9, beam=3)
    flat = lambda x: x.reshape((-1,) + x.shape[2:])
    rep = lambda x: jnp.repeat(x, 3, axis=0)
    np.testing.assert_allclose(
        flat(b.scores),
        ensemble.log_prob(params, rep(src), rep(src_len), flat(b.tokens), flat(b.lengths), cfg=cfg),
        rtol=1e-4,
    )


# ---------------------------------------------------------------------------- the commands


def run(capsys, *argv, stdin=None, monkeypatch=None):
    if stdin is not None:
        import io

        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


SMALL = [
    "--set", "src_embed=8", "--set", "tgt_embed=8", "--set", "enc_hidden=16",
    "--set", "dec_hidden=16", "--set", "attn_dim=8", "--set", "buckets=1",
    "--set", "batch_size=8", "--set", "eval_every=3", "--set", "eval_examples=8",
    "--set", "log_every=3", "--set", "max_src_len=12", "--set", "max_tgt_len=14",
    "--set", "warmup_steps=0",
]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs of the copy task (a GRU; an LSTM with attention and another seed), keeping
    three checkpoints, and a run on other data (another vocabulary)."""
    root = tmp_path_factory.mktemp("ensemble")
    made = {}
    for name, extra in (
        ("gru", ["--task", "copy", "--set", "keep_checkpoints=3"]),
        ("lstm", ["--task", "copy", "--set", "cell=lstm", "--set", "attention=bahdanau",
                  "--set", "seed=1"]),
    ):  # fmt: skip
        steps = "9" if name == "gru" else "3"  # three checkpoints to average; one
        argv = ["train", "--workdir", root / name, "--steps", steps, "--no-progress", *SMALL]
        assert cli.main([str(a) for a in [*argv, *extra]]) == 0
        made[name] = root / name
    tsv = root / "other.tsv"
    tsv.write_text("xyz\tzyx\nzz\tzz\nyx\txy\n", encoding="utf-8")
    argv = ["train", "--workdir", root / "other", "--train", tsv, "--valid", tsv, "--steps", "3"]
    assert cli.main([str(a) for a in [*argv, "--no-progress", *SMALL]]) == 0
    made["other"] = root / "other"
    return made


def test_the_commands_take_several_workdirs(runs, capsys, monkeypatch):
    gru, lstm = runs["gru"], runs["lstm"]
    texts = ["abc", "ba", "cabbage"]
    pair = Translator.from_workdirs([gru, lstm])
    code, out, err = run(capsys, "translate", "--workdir", gru, "--workdir", lstm, *texts)
    assert code == 0 and out.splitlines() == pair.translate(texts), err
    assert f"{gru}: step 9" in err and f"{lstm}: step 3" in err

    # A workdir with itself: the model's own translations and scores.
    alone = Translator.from_workdir(gru)
    code, out, _ = run(capsys, "translate", "--workdir", gru, "--workdir", gru, "--beam", "3",
                       *texts)  # fmt: skip
    assert code == 0 and out.splitlines() == alone.translate(texts, beam=3)
    pairs = "abc\tabc\nba\tab\n"
    code, out, _ = run(capsys, "score", "--workdir", gru, "--workdir", gru, stdin=pairs,
                       monkeypatch=monkeypatch)  # fmt: skip
    want = alone.score([("abc", "abc"), ("ba", "ab")])
    np.testing.assert_allclose([float(x) for x in out.split()], want, rtol=1e-5)
    code, out, _ = run(capsys, "score", "--workdir", gru, "--workdir", lstm, stdin=pairs,
                       monkeypatch=monkeypatch)  # fmt: skip
    np.testing.assert_allclose(
        [float(x) for x in out.split()], pair.score([("abc", "abc"), ("ba", "ab")]), rtol=1e-5
    )

    args = ["eval", "--split", "valid", "--limit", "8"]
    code, out, _ = run(capsys, *args, "--workdir", gru)
    single = json.loads(out)
    code, out, _ = run(capsys, *args, "--workdir", gru, "--workdir", gru)
    double = json.loads(out)
    assert code == 0 and double["exact_match"] == single["exact_match"]
    assert double["loss"] == pytest.approx(single["loss"], rel=1e-5)
    assert [m["workdir"] for m in double["members"]] == [str(gru), str(gru)]
    assert [m["step"] for m in double["members"]] == [single["members"][0]["step"]] * 2
    assert set(double) == set(single)  # one schema


def test_an_ensemble_of_other_vocabularies_is_refused(runs, capsys):
    code, out, err = run(capsys, "translate", "--workdir", runs["gru"], "--workdir",
                         runs["other"], "abc")  # fmt: skip
    assert code == 2 and "Traceback" not in err
    line = [x for x in err.splitlines() if x.startswith("s2s: error:")]
    assert len(line) == 1 and "another source vocabulary" in line[0], err
    assert "13 token(s) in only one of them ('a', 'b', 'c'" in line[0], err  # a-j; x-z


def test_members_with_the_same_tokens_numbered_otherwise_are_re_indexed(runs):
    """The two copy runs drew their data with other seeds, so their vocabularies number the
    same characters otherwise: either order of the ensemble gives the same scores and
    translations, each member read through the first's numbering."""
    gru, lstm = Translator.from_workdir(runs["gru"]), Translator.from_workdir(runs["lstm"])
    assert gru.tgt_vocab.tokens != lstm.tgt_vocab.tokens
    assert sorted(gru.tgt_vocab.tokens) == sorted(lstm.tgt_vocab.tokens)
    one = Translator.from_workdirs([runs["gru"], runs["lstm"]])
    other = Translator.from_workdirs([runs["lstm"], runs["gru"]])
    pairs = [("abc", "abc"), ("ba", "ab"), ("cab", "cb")]
    np.testing.assert_allclose(one.score(pairs), other.score(pairs), rtol=1e-5)
    texts = ["abc", "ba", "cabbage", "a"]
    assert one.translate(texts, beam=3) == other.translate(texts, beam=3)
    # And a member alone on the other's numbering is the member.
    alone = Translator(
        one.params[1], one.cfg[1], gru.src_vocab, gru.tgt_vocab, gru.train_cfg, gru.decode_cfg
    )
    np.testing.assert_allclose(alone.score(pairs), lstm.score(pairs), rtol=1e-5)
    assert alone.translate(texts) == lstm.translate(texts)


def test_an_evaluation_counts_sources_too_long_to_read_instead_of_stopping(runs):
    """The copy task's validation sources go beyond max_src_len=12: the runs above finished,
    and their evaluations counted those sources as wrong."""
    records = [json.loads(x) for x in (runs["gru"] / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["split"] == "valid"]
    assert [r["step"] for r in valid] == [3, 6, 9] and all(r["too_long"] > 0 for r in valid)


def test_average_is_the_mean_of_the_latest_checkpoints(runs, capsys, monkeypatch):
    gru = runs["gru"]
    run_ = wd.load(gru)
    target = {"params": jax.eval_shape(lambda: model.init(run_.model_cfg, key=jax.random.key(0)))}
    ckpts = wd.checkpoints(gru)
    assert ckpts.latest_steps() == [3, 6, 9]  # keep_checkpoints=3
    one_by_one = [
        ckpts.restore(target, which="latest", step=s, partial=True)["params"] for s in (6, 9)
    ]
    ckpts.close()
    averaged = Translator.from_workdir(gru, average=2)
    assert averaged.loaded == {"checkpoint": "average", "step": 9, "steps": [6, 9]}
    for got, a, b in zip(*map(jax.tree.leaves, (averaged.params, *one_by_one))):
        np.testing.assert_allclose(got, (np.asarray(a) + np.asarray(b)) / 2, rtol=1e-6)
    assert not all(np.array_equal(a, b) for a, b in zip(*map(jax.tree.leaves, one_by_one)))

    code, out, err = run(capsys, "score", "--workdir", gru, "--average", "2", stdin="ab\tab\n",
                         monkeypatch=monkeypatch)  # fmt: skip
    assert code == 0 and "the mean of steps 6, 9" in err
    assert float(out) == pytest.approx(averaged.score([("ab", "ab")])[0], rel=1e-5)
    code, out, _ = run(capsys, "eval", "--workdir", gru, "--average", "3", "--limit", "4",
                       "--split", "valid")  # fmt: skip
    assert code == 0 and json.loads(out)["members"][0]["steps"] == [3, 6, 9]

    for argv, match in (
        (["--average", "4"], "keeps 3 checkpoint(s) (3, 6, 9), not the 4 to average"),
        (["--average", "2", "--checkpoint", "best"], "drop --checkpoint, or --average"),
    ):
        code, out, err = run(capsys, "translate", "--workdir", gru, *argv, "abc")
        line = [x for x in err.splitlines() if x.startswith("s2s: error:")]
        assert code == 2 and len(line) == 1 and match in line[0], err
    with pytest.raises(SystemExit) as exit_:  # argparse's own usage error
        cli.main(["translate", "--workdir", str(gru), "--average", "0", "abc"])
    assert exit_.value.code == 2 and "--average: must be >= 1, got 0" in capsys.readouterr().err


def test_any_kept_step_can_be_loaded(runs, capsys, monkeypatch):
    """`--checkpoint STEP` loads that step's parameters (against orbax's own restore of it);
    a step the run does not keep is refused, naming those it keeps."""
    gru = runs["gru"]
    run_ = wd.load(gru)
    target = {"params": jax.eval_shape(lambda: model.init(run_.model_cfg, key=jax.random.key(0)))}
    ckpts = wd.checkpoints(gru)
    six = ckpts.restore(target, which="latest", step=6, partial=True)["params"]
    ckpts.close()
    loaded = Translator.from_workdir(gru, which="6")
    assert loaded.loaded == {"checkpoint": "step", "step": 6}
    for got, want in zip(*map(jax.tree.leaves, (loaded.params, six))):
        np.testing.assert_array_equal(got, want)
    code, out, err = run(capsys, "score", "--workdir", gru, "--checkpoint", "6", stdin="ab\tab\n",
                         monkeypatch=monkeypatch)  # fmt: skip
    assert code == 0 and "step 6, as asked" in err
    assert float(out) == pytest.approx(loaded.score([("ab", "ab")])[0], rel=1e-6)
    code, out, err = run(capsys, "translate", "--workdir", gru, "--checkpoint", "5", "abc")
    line = [x for x in err.splitlines() if x.startswith("s2s: error:")]
    assert code == 2 and len(line) == 1 and "keeps no step 5: it keeps 3, 6, 9" in line[0], err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["translate", "--workdir", str(gru), "--checkpoint", "first", "abc"])
    assert exit_.value.code == 2 and "give best, latest or a step number" in capsys.readouterr().err


def test_sentencepiece_members_read_otherwise_join_and_others_are_refused():
    """Two runs whose sentencepiece models differ only in how they read their training text
    (a model trained before sampling was bounded, one after) are one vocabulary: the member's
    parameters are taken as they are. A model that encodes otherwise is refused."""
    texts = [f"a {w} cat sat on mat {i}" for i in range(40) for w in ("red", "big")]
    vocab = Vocab.build(texts, "sentencepiece", sp_vocab_size=30)
    params = {"src_embed": jnp.arange(len(vocab) * 2.0).reshape(len(vocab), 2)}
    first = SimpleNamespace(src_vocab=vocab, tgt_vocab=vocab, params=params)

    def unbounded(proto):
        proto.trainer_spec.ClearField("input_sentence_size")
        proto.trainer_spec.ClearField("shuffle_input_sentence")

    older = sentencepiece_variant(vocab, unbounded)
    member = SimpleNamespace(src_vocab=older, tgt_vocab=older, params=params)
    got = on_first_vocabularies(member, first, "older", "first")
    np.testing.assert_array_equal(got["src_embed"], params["src_embed"])

    def rescore(proto):
        proto.pieces[8].score += 2.0

    other = SimpleNamespace(src_vocab=sentencepiece_variant(vocab, rescore), tgt_vocab=vocab,
                            params=params)  # fmt: skip
    with pytest.raises(DataError, match="other has another source vocabulary than first"):
        on_first_vocabularies(other, first, "other", "first")
