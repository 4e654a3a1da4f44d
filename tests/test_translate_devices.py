"""Decoding spread over (fake) devices gives the single-device translations and scores."""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json, jax
    from s2s_jax.nn import model
    from s2s_jax.data import Vocab
    from s2s_jax.inference.translate import Translator
    from s2s_jax.run.config import DecodeConfig, TrainConfig
    assert jax.device_count() == 4
    vocab = Vocab.build(["abcdefgh"], "char")
    cfg = model.Seq2SeqConfig(src_vocab=len(vocab), tgt_vocab=len(vocab), attention="bahdanau",
                              bidirectional=True, enc_hidden=8, dec_hidden=8, attn_dim=8)
    params = model.init(cfg, key=jax.random.key(0))
    params["output"]["w"] = params["output"]["w"] * 5
    lengths = TrainConfig(max_src_len=16, max_tgt_len=12, buckets=2)
    texts = ["abc", "", "hgfedcba", "a", "bb", "cab", "ddd"]
    pairs = [(t, t[::-1]) for t in texts]
    out = {}
    for name, devices in (("one", jax.devices()[:1]), ("four", None)):
        t = Translator(params, cfg, vocab, vocab, lengths, DecodeConfig(sentences_per_batch=8),
                       devices=devices)
        out[name] = [t.translate(texts), t.translate(texts, beam=3, n_best=2), t.score(pairs)]
    print(json.dumps(out))
""")


def test_translations_equal_on_one_and_four_devices():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    one, four = out["one"], out["four"]
    assert one[0] == four[0]
    assert [[h[0] for h in r] for r in one[1]] == [[h[0] for h in r] for r in four[1]]
    for a, b in zip(one[2], four[2]):
        assert abs(a - b) < 1e-4 * max(1.0, abs(a))
    assert len(set(one[0])) > 1  # the model does not emit one constant output


def test_translations_do_not_depend_on_the_padded_lengths():
    """Sources padded to 16 (multiples of 8) or to their batch's longest (multiples of 1): the
    masks make padding invisible, so translations, beams and scores agree."""
    import jax

    from s2s_jax.data import Vocab
    from s2s_jax.inference.translate import Translator
    from s2s_jax.nn import model
    from s2s_jax.run.config import DecodeConfig, TrainConfig

    vocab = Vocab.build(["abcdefgh"], "char")
    cfg = model.Seq2SeqConfig(
        src_vocab=len(vocab), tgt_vocab=len(vocab), attention="bahdanau", bidirectional=True,
        enc_hidden=8, dec_hidden=8, attn_dim=8,
    )  # fmt: skip
    params = model.init(cfg, key=jax.random.key(1))
    params["output"]["w"] = params["output"]["w"] * 5
    texts = ["abc", "hgfedcba", "a", "bb", "cab"]
    pairs = [(t, t[::-1]) for t in texts]
    out = []
    for buckets, multiple in ((2, 8), (16, 1)):
        lengths = TrainConfig(
            max_src_len=16, max_tgt_len=12, buckets=buckets, bucket_multiple=multiple
        )
        t = Translator(params, cfg, vocab, vocab, lengths, DecodeConfig(sentences_per_batch=8))
        out.append([t.translate(texts), t.translate(texts, beam=3, n_best=2), t.score(pairs)])
    coarse, fine = out
    assert coarse[0] == fine[0] and len(set(coarse[0])) > 1
    assert [[h[0] for h in r] for r in coarse[1]] == [[h[0] for h in r] for r in fine[1]]
    for a, b in zip(coarse[2], fine[2]):
        assert abs(a - b) < 1e-4 * max(1.0, abs(a))
