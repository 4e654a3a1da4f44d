"""A user's own data, through the real `s2s` command: vocabulary kinds chosen from the text,
limits that refuse a corpus they would mostly drop, a corpus's own defaults, given
vocabularies, and a workdir that knows its data by content (moved files resumed, changed files
refused)."""

from __future__ import annotations

import hashlib
import json
import random

import test_faults
from test_corpus import write
from test_faults import TINY, assert_one_line, s2s

from s2s_jax.data.tasks import recommended_steps
from s2s_jax.data.vocab_kind import KindChoice, suggest_kind
from s2s_jax.run import config
from s2s_jax.run import workdir as wd
from s2s_jax.training import plan

env = test_faults.env


def test_vocabulary_kind_follows_the_text():
    """Single words: characters; a closed set of space-separated symbols (phonemes): words;
    sentences of an open vocabulary: sentencepiece. Half the lines with several words is the
    line between words and text."""
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    word = lambda: "".join(rng.choice(letters) for _ in range(rng.randint(3, 8)))
    assert suggest_kind(["hello", "world", "new york", "paris"]).kind == "char"
    assert suggest_kind(["new york", "los angeles", "paris", "rome"]).kind != "char"
    phonemes = [f"P{i}" for i in range(40)]
    lines = [" ".join(rng.choice(phonemes) for _ in range(5)) for _ in range(200)]
    assert suggest_kind(lines) == KindChoice("word", "40 distinct space-separated symbols")
    # The same symbols seen too rarely to be a closed set (under 20 times each): subwords.
    assert suggest_kind(lines[:100]).kind == "sentencepiece"
    lexicon = [word() for _ in range(1500)]
    text = [" ".join(rng.choice(lexicon) for _ in range(8)) for _ in range(300)]
    assert suggest_kind(text) == KindChoice("sentencepiece", "sentences, over 1,000 distinct words")


def sentence_corpus(tmp_path, n_train=300, n_valid=20):
    """Made-up sentences of an open vocabulary, targets their words reversed in capitals."""
    rng = random.Random(1)
    lexicon = [
        "".join(rng.choice("abcdefghij") for _ in range(rng.randint(3, 7))) for _ in range(2000)
    ]
    pairs = []
    for _ in range(n_train + n_valid):
        words = [rng.choice(lexicon) for _ in range(rng.randint(4, 12))]
        pairs.append(f"{' '.join(words)}\t{' '.join(words[::-1]).upper()}")
    write(tmp_path / "train.tsv", pairs[:n_train])
    write(tmp_path / "valid.tsv", pairs[n_train:])


def test_sentences_get_subwords_and_too_many_long_pairs_are_refused(tmp_path, env):
    """`s2s train` on a TSV of sentences chooses sentencepiece for both sides, says so and
    records it; eval scores BLEU with sacreBLEU's 13a words. With characters forced, most
    sentences exceed the limits: refused before anything is written, naming the limits that
    would keep 99%; with `max_dropped=1`, a corpus of which no pair fits is still refused."""
    sentence_corpus(tmp_path)
    (tmp_path / "tiny.toml").write_text(TINY)
    train = ["train", "--config", "tiny.toml", "--no-progress", "--steps", "2"]
    train += ["--train", "train.tsv", "--valid", "valid.tsv", "--set", "max_tgt_len=64"]
    rc, out, err = s2s(
        *train, "--set", "max_src_len=64", "--workdir", "words", cwd=tmp_path, env=env
    )
    assert rc == 0, err
    assert "source sentencepiece (sentences, over 1,000 distinct words)" in err
    assert "target sentencepiece" in err and "dropped" not in err
    run = wd.load(tmp_path / "words")
    assert run.train_cfg.src_vocab_kind == run.src_vocab.kind == "sentencepiece"
    assert run.train_cfg.tgt_vocab_kind == run.tgt_vocab.kind == "sentencepiece"
    assert "the best checkpoint: the one of highest validation BLEU" in err
    assert run.train_cfg.best_metric == "bleu"  # recorded: a later default cannot reread it
    # The config file's dropout and the --steps given win; the beam left open takes a corpus's.
    assert "defaults for a corpus: beam 5 in translate and eval;" in err
    assert (run.model_cfg.dropout, run.train_cfg.steps, run.decode_cfg.beam) == (0.1, 2, 5)
    rc, out, err = s2s("eval", "--workdir", "words", "--split", "valid", cwd=tmp_path, env=env)
    assert rc == 0 and "tok:13a" in json.loads(out)["bleu_signature"], err
    assert "the best by bleu" in err
    chars = [*train, "--set", "src_vocab_kind=char", "--set", "max_src_len=40"]
    line = assert_one_line(
        s2s(*chars, "--workdir", "chars", cwd=tmp_path, env=env), 2, "max_src_len=40"
    )
    longer = sum(
        len(p.split("\t")[0]) > 40 for p in (tmp_path / "train.tsv").read_text().splitlines()
    )
    assert line.startswith(f"s2s: error: {longer} of 300 training pairs") and longer > 15, line
    assert "more than max_dropped=0.05 allows: --set max_src_len=" in line
    assert not (tmp_path / "chars").exists()
    none = [*chars, "--set", "max_dropped=1", "--set", "max_src_len=2", "--workdir", "none"]
    assert_one_line(s2s(*none, cwd=tmp_path, env=env), 2, "none of the 300 training pairs fits")
    assert not (tmp_path / "none").exists()


def test_a_corpus_gets_dropout_steps_and_beam_by_default(tmp_path):
    """A new run on files takes dropout 0.3, 20 passes over its pairs (at least 2,000 steps) and
    beam 5 where its request leaves them open, and says so; what the request names wins; a
    built-in task keeps its own defaults (no dropout, greedy, its recommended steps)."""
    sentence_corpus(tmp_path)  # 300 training pairs, all within the default limits
    files = {"train_file": str(tmp_path / "train.tsv"), "valid_file": str(tmp_path / "valid.tsv")}

    def prepared(name, requested):
        p = plan.prepare(plan.configure(tmp_path / name, requested))
        return p.model_cfg.dropout, p.train_cfg.steps, p.decode_cfg.beam, p.notes[-1]

    dropout, steps, beam, note = prepared("small", {"train": {**files, "batch_size": 2}})
    assert (dropout, steps, beam) == (0.3, 20 * 300 // 2, 5)
    assert note.startswith("defaults for a corpus: dropout 0.3, 3,000 steps (about 20 passes")
    assert prepared("batch64", {"train": files})[1] == 2000  # 20 passes would be 94 steps
    asked = {"model": {"dropout": 0.0}, "train": {**files, "steps": 7}, "decode": {"beam": 1}}
    dropout, steps, beam, note = prepared("asked", asked)
    assert (dropout, steps, beam) == (0.0, 7, 1) and not note.startswith("defaults")
    values = plan.configure(tmp_path / "task", {}).values
    model_cfg, train_cfg, decode_cfg = config.build(values)
    assert (model_cfg.dropout, decode_cfg.beam) == (0.0, 1)
    assert train_cfg.steps == recommended_steps(train_cfg.task)


def test_a_workdir_knows_its_data_by_content(tmp_path, env):
    """The data moved: eval of a file reads only that file, eval of a split says where its
    file was and how to score the copy, and the run resumes from the new place, recognised by
    size and SHA-256 (the move recorded); other data, or a file changed in place, is refused."""
    words = [w * k for w in "abcdef" for k in range(1, 5)]
    (tmp_path / "tiny.toml").write_text(TINY)
    (tmp_path / "a").mkdir()
    write(tmp_path / "a" / "train.tsv", [f"{w}\t{w.upper()}" for w in words])
    write(tmp_path / "a" / "valid.tsv", [f"{w}\t{w.upper()}" for w in words[:8]])
    train = ["train", "--config", "tiny.toml", "--no-progress", "--workdir", "run"]
    rc, out, err = s2s(*train, "--train", "a/train.tsv", "--valid", "a/valid.tsv", "--steps", "4",
                       cwd=tmp_path, env=env)  # fmt: skip
    assert rc == 0, err
    recorded = wd.load(tmp_path / "run").data
    data = (tmp_path / "a" / "train.tsv").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert recorded["train"] == [
        {"file": str(tmp_path / "a" / "train.tsv"), "bytes": len(data), "sha256": digest}
    ]
    (tmp_path / "a").rename(tmp_path / "b")
    evaluate = ["eval", "--workdir", "run"]
    rc, out, err = s2s(*evaluate, "--file", "b/valid.tsv", cwd=tmp_path, env=env)
    assert rc == 0 and json.loads(out)["examples"] == 8, err
    gone = f"was read from {tmp_path / 'a' / 'valid.tsv'}, but"
    assert_one_line(s2s(*evaluate, "--split", "valid", cwd=tmp_path, env=env), 2, gone)
    resume = [*train, "--steps", "6"]
    assert_one_line(s2s(*resume, cwd=tmp_path, env=env), 2, "give the same data's new place")
    moved = ["--train", "b/train.tsv", "--valid", "b/valid.tsv"]
    rc, out, err = s2s(*resume, *moved, cwd=tmp_path, env=env)
    assert rc == 0 and "resuming" in err, err
    assert f"train.train_file changes from '{tmp_path / 'a' / 'train.tsv'}' to" in err
    run = wd.load(tmp_path / "run")
    assert run.data["train"][0]["file"] == str(tmp_path / "b" / "train.tsv")
    assert run.data["train"][0]["sha256"] == digest
    write(tmp_path / "b" / "other.tsv", [f"{w}\t{w.upper()}" for w in words[:-1]])
    other = [*resume[:-1], "8", "--train", "b/other.tsv", "--valid", "b/valid.tsv"]
    assert_one_line(s2s(*other, cwd=tmp_path, env=env), 2, "is not the data")
    with open(tmp_path / "b" / "train.tsv", "a") as f:
        f.write("xyz\tXYZ\n")
    changed = [*resume[:-1], "8"]
    assert_one_line(s2s(*changed, cwd=tmp_path, env=env), 2, "has changed since")


def test_existing_vocabularies_are_used_as_given(tmp_path, env):
    """`src_vocab_file`: another workdir's vocabulary JSON; `tgt_vocab_file`: a sentencepiece
    model trained elsewhere with the specials at ids 0-3. Both are used as they are (the
    kinds recorded); a model with sentencepiece's default ids, or a file of neither kind, is
    refused in one line naming the fix."""
    import io

    import sentencepiece as spm

    from s2s_jax.data import Vocab

    sentence_corpus(tmp_path)
    (tmp_path / "tiny.toml").write_text(TINY)
    targets = [line.split("\t")[1] for line in (tmp_path / "train.tsv").read_text().splitlines()]
    specials = dict(pad_id=0, bos_id=1, eos_id=2, unk_id=3, pad_piece="<pad>", bos_piece="<s>",
                    eos_piece="</s>", unk_piece="<unk>")  # fmt: skip
    for name, ids in (("good.model", specials), ("default.model", {})):
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(targets), model_writer=buf,
                                       vocab_size=300, minloglevel=2, **ids)  # fmt: skip
        (tmp_path / name).write_bytes(buf.getvalue())
    chars = Vocab.build(["abcdefghij "], "char")
    chars.save(tmp_path / "chars.json")
    train = ["train", "--config", "tiny.toml", "--no-progress", "--steps", "1"]
    train += ["--train", "train.tsv", "--valid", "valid.tsv", "--set", "max_dropped=1"]
    train += ["--set", "max_src_len=200", "--set", "max_tgt_len=64"]
    given = ["--set", "src_vocab_file=chars.json", "--set", "tgt_vocab_file=good.model"]
    rc, out, err = s2s(*train, *given, "--workdir", "given", cwd=tmp_path, env=env)
    assert rc == 0, err
    run = wd.load(tmp_path / "given")
    assert run.src_vocab == chars and run.train_cfg.src_vocab_kind == "char"
    pieces = spm.SentencePieceProcessor(model_file=str(tmp_path / "good.model"))
    assert run.tgt_vocab.tokens == tuple(pieces.id_to_piece(i) for i in range(300))
    assert run.train_cfg.tgt_vocab_kind == "sentencepiece"
    assert "vocabularies chosen" not in err
    # spm_train's default normaliser (nmt_nfkc) may turn a character into a space: such a
    # model encodes whole texts, not word by word, and encode_many still equals encode.
    assert not run.tgt_vocab._sp_by_word
    odd = ["a\u3000b", "x\u00a0 y  z", *targets[:20]]
    assert run.tgt_vocab.encode_many(odd)[1] == [i for t in odd for i in run.tgt_vocab.encode(t)]
    default = [*train, "--set", "tgt_vocab_file=default.model", "--workdir", "default"]
    assert_one_line(s2s(*default, cwd=tmp_path, env=env), 2, "train it with --pad_id=0")
    neither = [*train, "--set", "tgt_vocab_file=tiny.toml", "--workdir", "neither"]
    assert_one_line(s2s(*neither, cwd=tmp_path, env=env), 2, "is neither a vocabulary JSON")
