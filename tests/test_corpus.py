"""Corpora as users bring them: two line-aligned files or TSV, plain or gzipped; pairs with an
empty side skipped and counted; format errors named by file and line. The reader against
hand-written files, then the real `s2s` command on them."""

from __future__ import annotations

import gzip
import hashlib
import json
import random

import pytest
import test_faults
from test_faults import TINY, assert_one_line, s2s

from s2s_jax.data.corpus import corpus_files, line_list, read_corpus
from s2s_jax.data.vocab_kind import KindChoice, suggest_kind
from s2s_jax.errors import DataError
from s2s_jax.run import workdir as wd

env = test_faults.env

SRC = ["a b", "c", "", "d e f", "g", "h"]
TGT = ["B A", "C", "X", "F E D", "", "H"]  # lines 3 and 5 have an empty side


def write(path, lines, *, gz=False, ending="\n"):
    data = "".join(line + ending for line in lines).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_two_files_plain_and_gzipped(tmp_path):
    src = write(tmp_path / "train.en.gz", SRC, gz=True)  # gzip read by its bytes, not its name
    tgt = write(tmp_path / "train.de", TGT, ending="\r\n")
    corpus = read_corpus(f"{src},{tgt}")
    assert corpus.pairs == [("a b", "B A"), ("c", "C"), ("d e f", "F E D"), ("h", "H")]
    assert corpus.empty == (3, 5)
    assert corpus.files == (str(src), str(tgt))
    # The same pairs from a TSV file (gzipped under a plain name): the same corpus.
    tsv = tmp_path / "train.tsv"
    write(tsv, [f"{s}\t{t}" for s, t in zip(SRC, TGT)], gz=True)
    assert read_corpus(tsv).pairs == corpus.pairs and read_corpus(tsv).empty == (3, 5)


def test_format_errors_name_file_and_line(tmp_path):
    src = write(tmp_path / "a.en", ["one", "two", "three"])
    tgt = write(tmp_path / "a.de", ["eins", "zwei"])
    with pytest.raises(DataError, match=r"a\.en has 3 lines but .*a\.de has 2"):
        read_corpus(f"{src},{tgt}")
    bad = tmp_path / "bad.de"
    bad.write_bytes(gzip.compress(b"eins\nzwei\ndr\xffei\n"))
    with pytest.raises(DataError, match=r"bad\.de:3: not UTF-8"):
        read_corpus(f"{src},{bad}")
    with pytest.raises(DataError, match="no such file: .*missing.de"):
        read_corpus(f"{src},{tmp_path / 'missing.de'}")
    with pytest.raises(DataError, match="two line-aligned files as SRC,TGT"):
        corpus_files("a,b,c")
    broken = tmp_path / "cut.gz"
    broken.write_bytes(gzip.compress(b"x\n" * 1000)[:30])
    with pytest.raises(DataError, match="damaged gzip file"):
        read_corpus(f"{src},{broken}")
    odd = write(tmp_path / "odd,name.tsv", ["x\ty"])  # a comma in an existing file's name
    assert corpus_files(odd) == (str(odd),) and read_corpus(odd).pairs == [("x", "y")]
    assert line_list(tuple(range(1, 13))) == "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ... (12 in all)"


def test_s2s_trains_and_evaluates_on_two_files(tmp_path, env):
    """`s2s train --train SRC,TGT` (gzipped), one vocabulary for both sides: the skipped lines
    reported; `s2s eval --file SRC,TGT` scores exactly as the TSV file; `translate --input`
    reads a gzipped file as its text; mismatched files refused in one line."""
    words = [w * k for w in "abcdef" for k in range(1, 5)]
    (tmp_path / "tiny.toml").write_text(TINY)
    write(tmp_path / "train.src.gz", [*words[:3], "", *words[3:]], gz=True)
    targets = [w.upper() for w in words]
    write(tmp_path / "train.tgt", [*targets[:3], "ORPHAN", *targets[3:]])
    write(tmp_path / "valid.src", words[:8])
    write(tmp_path / "valid.tgt", [w.upper() for w in words[:8]])
    write(tmp_path / "valid.tsv", [f"{w}\t{w.upper()}" for w in words[:8]])
    train = ["train", "--config", "tiny.toml", "--no-progress", "--steps", "4"]
    train += ["--train", "train.src.gz,train.tgt", "--valid", "valid.src,valid.tgt"]
    train += ["--set", "joint_vocab=true"]  # targets in capitals: one vocabulary of both
    rc, out, err = s2s(*train, "--workdir", "run", cwd=tmp_path, env=env)
    assert rc == 0, err
    assert "skipped 1 train pair(s) with an empty side: line(s) 4 of" in err
    run = wd.load(tmp_path / "run")
    assert run.src_vocab == run.tgt_vocab and {"a", "A"} <= set(run.src_vocab.tokens)
    assert f"{tmp_path / 'train.src.gz'},{tmp_path / 'train.tgt'}" in err  # absolute, both
    scores = []
    for data in ("valid.src,valid.tgt", "valid.tsv"):
        rc, out, err = s2s("eval", "--workdir", "run", "--file", data, cwd=tmp_path, env=env)
        assert rc == 0, err
        record = json.loads(out)
        scores.append({k: v for k, v in record.items() if k not in ("provenance", "file")})
    assert scores[0] == scores[1] and scores[0]["examples"] == 8
    # A source on two lines: scored once, but its hypothesis written on both lines.
    write(tmp_path / "dup.src", [words[0], words[1], words[0]])
    write(tmp_path / "dup.tgt", [targets[0], targets[1], targets[0]])
    evaluate = ["eval", "--workdir", "run", "--file", "dup.src,dup.tgt", "--output", "h.txt"]
    rc, out, err = s2s(*evaluate, cwd=tmp_path, env=env)
    assert rc == 0 and json.loads(out)["examples"] == 2, err
    hyps = (tmp_path / "h.txt").read_text().splitlines()
    assert len(hyps) == 3 and hyps[0] == hyps[2]
    rc, out, err = s2s("translate", "--workdir", "run", words[0], words[1], cwd=tmp_path, env=env)
    assert out.splitlines() == hyps[:2]
    # The shared tasks' BLEU: against the references prepared here, or against a file of them
    # prepared already (lowercase words: the Moses rules leave them as they are), the same.
    write(tmp_path / "valid.tok", words[:8])
    tok = []
    for extra in ([], ["--tok-refs", "valid.tok"]):
        evaluate = ["eval", "--workdir", "run", "--split", "valid", "--tok-bleu", "en", *extra]
        rc, out, err = s2s(*evaluate, cwd=tmp_path, env=env)
        assert rc == 0, err
        tok.append(json.loads(out)["bleu_tok"])
    assert tok[0] == tok[1]
    write(tmp_path / "short.tok", ["x"])
    evaluate[-1] = "short.tok"
    assert_one_line(s2s(*evaluate, cwd=tmp_path, env=env), 2, "short.tok has 1 lines for 8 pairs")
    rc, out, err = s2s(*evaluate[:-4], "--tok-refs", "valid.tok", cwd=tmp_path, env=env)
    assert_one_line((rc, out, err), 2, "--tok-refs goes with --tok-bleu")
    write(tmp_path / "in.gz", words[:5], gz=True)
    write(tmp_path / "in.txt", words[:5])
    outs = [
        s2s("translate", "--workdir", "run", "--input", name, cwd=tmp_path, env=env)
        for name in ("in.gz", "in.txt")
    ]
    assert outs[0][0] == 0 and outs[0][1] == outs[1][1] and len(outs[0][1].splitlines()) == 5
    write(tmp_path / "short.tgt", ["x"])
    bad = [*train[:-6], "--train", "train.src.gz,short.tgt", "--valid", "valid.tsv"]
    assert_one_line(s2s(*bad, "--workdir", "run2", cwd=tmp_path, env=env), 2, "has 25 lines but")
    assert not (tmp_path / "run2").exists()
    # An experiment file that names no data is not a reason to train the default task.
    no_data = ["train", "--config", "tiny.toml", "--workdir", "run3"]
    assert_one_line(s2s(*no_data, cwd=tmp_path, env=env), 2, "tiny.toml names no data")
    assert not (tmp_path / "run3").exists()


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
    would keep 99%; `max_dropped=1` trains on what fits, and says how many it dropped."""
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
    rc, out, err = s2s("eval", "--workdir", "words", "--split", "valid", cwd=tmp_path, env=env)
    assert rc == 0 and "tok:13a" in json.loads(out)["bleu_signature"], err
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
    rc, out, err = s2s(
        *chars, "--set", "max_dropped=1", "--workdir", "chars", cwd=tmp_path, env=env
    )
    assert (
        rc == 0 and f"dropped {longer} of 300 training pairs longer than max_src_len=40" in err
    ), err


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
    default = [*train, "--set", "tgt_vocab_file=default.model", "--workdir", "default"]
    assert_one_line(s2s(*default, cwd=tmp_path, env=env), 2, "train it with --pad_id=0")
    neither = [*train, "--set", "tgt_vocab_file=tiny.toml", "--workdir", "neither"]
    assert_one_line(s2s(*neither, cwd=tmp_path, env=env), 2, "is neither a vocabulary JSON")
