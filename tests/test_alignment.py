"""Attention you can see: the weights that greedy and beam search return sum to 1 over the real
source positions, are zero on padding and after the end, equal a teacher-forced pass over the
same output, and cost nothing unless asked for; `s2s translate --align / --heatmap`."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax import cli
from s2s_jax.data import Vocab
from s2s_jax.errors import DataError
from s2s_jax.inference.translate import Translator
from s2s_jax.nn import decoding, model

B, L, S, K = 4, 10, 8, 3  # distinct sizes: a buffer of shape [B, L, S] is recognisable


def setup(kind: str, reverse: bool = False):
    cfg = model.Seq2SeqConfig(
        src_vocab=12,
        tgt_vocab=11,
        cell="lstm" if kind == "bahdanau" else "gru",
        src_embed=6,
        tgt_embed=5,
        enc_hidden=9 if kind == "luong_dot" else 7,  # dot: the decoder size
        dec_hidden=9,
        attention=kind,
        attn_dim=6,
        bidirectional=kind != "luong_dot",
        reverse_source=reverse,
    )
    params = model.init(cfg, key=jax.random.key(3))
    src_len = jnp.array([5, 1, 8, 3], jnp.int32)
    ids = jax.random.randint(jax.random.key(4), (B, S), 4, cfg.src_vocab, jnp.int32)
    src = jnp.where(jnp.arange(S)[None] < src_len[:, None], ids, 0)
    return cfg, params, src, src_len


def check_against_teacher_forcing(cfg, params, src, src_len, tokens, lengths, weights):
    """`tokens int32[N, L]`, `lengths int32[N]`, `weights float32[N, L, S]` of N outputs."""
    forced = model.teacher_forced_attention(params, src, src_len, tokens, cfg=cfg)
    written = np.arange(L)[None, :, None] < np.asarray(lengths)[:, None, None]
    real = np.arange(S)[None, None, :] < np.asarray(src_len)[:, None, None]
    w = np.asarray(weights)
    np.testing.assert_allclose(w.sum(-1), written[..., 0].astype(np.float32), atol=1e-5)
    assert np.all(w[~(written & real)] == 0.0)  # padding, and after </s>
    np.testing.assert_allclose(w, np.where(written, forced, 0.0), atol=1e-5)


@pytest.mark.parametrize("kind", ["bahdanau", "luong_general", "luong_dot"])
def test_greedy_attention_matches_a_teacher_forced_pass(kind):
    cfg, params, src, src_len = setup(kind)
    search = functools.partial(decoding.greedy, cfg=cfg, max_len=L)
    d = jax.jit(functools.partial(search, with_attention=True))(params, src, src_len)
    plain = jax.jit(search)(params, src, src_len)
    assert np.array_equal(d.tokens, plain.tokens) and np.array_equal(d.scores, plain.scores)
    check_against_teacher_forcing(cfg, params, src, src_len, d.tokens, d.lengths, d.attention)


@pytest.mark.parametrize("kind", ["bahdanau", "luong_general"])
def test_beam_attention_follows_each_hypothesis(kind):
    cfg, params, src, src_len = setup(kind)
    search = functools.partial(decoding.beam_search, cfg=cfg, max_len=L, beam=K)
    d = jax.jit(functools.partial(search, with_attention=True))(params, src, src_len)
    plain = jax.jit(search)(params, src, src_len)
    assert np.array_equal(d.tokens, plain.tokens) and np.array_equal(d.scores, plain.scores)
    assert np.all(np.isfinite(d.scores))  # every slot holds a hypothesis here
    tile = lambda x: jnp.repeat(x, K, axis=0)
    check_against_teacher_forcing(
        cfg,
        params,
        tile(src),
        tile(src_len),
        d.tokens.reshape(B * K, L),
        d.lengths.reshape(-1),
        d.attention.reshape(B * K, L, S),
    )


def test_no_attention_buffer_unless_asked():
    cfg, params, src, src_len = setup("bahdanau")
    for search, shape in (
        (functools.partial(decoding.greedy, cfg=cfg, max_len=L), f"f32[{B},{L},{S}]"),
        (
            functools.partial(decoding.beam_search, cfg=cfg, max_len=L, beam=K),
            f"f32[{B},{K},{L},{S}]",
        ),
    ):
        assert shape not in str(jax.make_jaxpr(search)(params, src, src_len))
        asked = functools.partial(search, with_attention=True)
        assert shape in str(jax.make_jaxpr(asked)(params, src, src_len))


def test_translator_alignments_in_the_users_source_order():
    """With a reversed source the encoder reads backwards; the alignment is given in the
    source's own order, equal to the unreversed model's when the weights are mirrored."""
    vocab = Vocab.build(["abcdefgh"], "char")
    cfg = setup("bahdanau", reverse=True)[0].replace(src_vocab=len(vocab), tgt_vocab=len(vocab))
    params = model.init(cfg, key=jax.random.key(5))
    translator = Translator(params, cfg, vocab, vocab)
    texts = ["abc", "", "hgfedcba", "d"]
    aligned = translator.align(texts, beam=2)
    assert [a.text for a in aligned] == translator.translate(texts, beam=2)
    for a, text in zip(aligned, texts):
        assert a.source == list(text)
        assert a.weights.shape == (len(a.target), len(text))
        if text:
            assert a.target[-1] == "</s>" and np.allclose(a.weights.sum(1), 1.0, atol=1e-5)
            assert [j for _, j in a.pairs()] == list(range(len(a.target) - 1))
    # the weights, mirrored back, are what the search saw (the same source, cap and beam)
    src, src_len = jnp.array([vocab.encode("hgfedcba")], jnp.int32), jnp.array([8], jnp.int32)
    d = decoding.beam_search(
        params,
        src,
        src_len,
        cfg=cfg,
        max_len=translator.train_cfg.max_tgt_len,
        cap=jnp.asarray(translator._caps(np.asarray(src_len))),
        beam=2,
        with_attention=True,
    )
    m = int(d.lengths[0, 0])
    np.testing.assert_allclose(aligned[2].weights, d.attention[0, 0, :m, ::-1], atol=1e-6)
    plain = cfg.replace(attention="none")
    plain_translator = Translator(model.init(plain, key=jax.random.key(0)), plain, vocab, vocab)
    with pytest.raises(DataError, match="no attention"):
        plain_translator.align(["a"])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("bahdanau")
    config = os.path.join(os.path.dirname(__file__), "..", "experiments", "bahdanau2015.toml")
    argv = ["train", "--config", config, "--smoke", "--workdir", str(path), "--no-progress"]
    assert cli.main(argv) == 0
    return path


def test_translate_align_and_heatmap_through_the_command(workdir, tmp_path, capsys):
    texts = ["dcba", "b", "cabd"]
    heatmaps = tmp_path / "maps"
    argv = ["translate", "--workdir", str(workdir), "--beam", "2"]
    assert cli.main([*argv, "--align", "--heatmap", str(heatmaps), *texts]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = Translator.from_workdir(workdir).align(texts, beam=2)
    assert lines == [a.text + "\t" + " ".join(f"{i}-{j}" for i, j in a.pairs()) for a in expected]
    for line, text in zip(lines, texts):
        output, pairs = line.split("\t")
        pairs = [tuple(map(int, p.split("-"))) for p in pairs.split()]
        assert [j for _, j in pairs] == list(range(len(output)))  # characters: one per token
        assert all(0 <= i < len(text) for i, _ in pairs)
    pngs = sorted(os.listdir(heatmaps))
    assert pngs == ["0001.png", "0002.png", "0003.png"]
    assert all((heatmaps / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)

    assert cli.main(["translate", "--workdir", str(workdir), "--align", "--sample", "abc"]) == 2
    assert "--align and --heatmap show the best translation" in capsys.readouterr().err
