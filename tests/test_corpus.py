"""Corpora as users bring them: two line-aligned files or TSV, plain or gzipped; pairs with an
empty side skipped and counted; format errors named by file and line. The reader against
hand-written files, then the real `s2s` command on them."""

from __future__ import annotations

import gzip
import json

import pytest
import test_faults
from test_faults import TINY, assert_one_line, s2s

from s2s_jax.data import corpus
from s2s_jax.data.corpus import corpus_chunks, corpus_files, line_list, read_corpus
from s2s_jax.data.survey import survey
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


def test_files_read_in_blocks_and_chunks_are_read_whole(tmp_path, monkeypatch):
    """Blocks of any size cut the same lines (multi-byte characters, CRLF, a byte order mark,
    gzip), and name the line of a bad byte; chunks of pairs add up to the whole corpus, the
    empty lines each counted once."""
    lines = ["zwei Männer", "", "ein Hund läuft", "x", "€uro", "y z"] * 7
    data = ("\ufeff" + "\r\n".join(lines) + "\r\n").encode()
    plain, gz = tmp_path / "a.txt", tmp_path / "a.gz"
    plain.write_bytes(data)
    gz.write_bytes(gzip.compress(data))
    bad = tmp_path / "bad.txt"
    bad.write_bytes("\n".join(lines).encode() + b"\nsch\xf6n\n")
    write(tmp_path / "b.txt", [line.upper() for line in lines])
    whole = read_corpus(f"{plain},{tmp_path / 'b.txt'}")
    for block in (1, 2, 3, 5, 64, 1 << 24):
        monkeypatch.setattr(corpus, "BLOCK", block)
        assert corpus.read_lines(str(plain)) == lines == corpus.read_lines(str(gz)), block
        with pytest.raises(DataError, match=rf"bad\.txt:{len(lines) + 1}: not UTF-8"):
            corpus.read_lines(str(bad))
        for size in (1, 4, 1000):
            chunks = list(corpus_chunks(f"{gz},{tmp_path / 'b.txt'}", size))
            assert [p for c in chunks for p in c.pairs] == whole.pairs
            assert tuple(n for c in chunks for n in c.empty) == whole.empty
            assert all(len(c.pairs) <= size for c in chunks)
    assert len(whole.pairs) == 35 and whole.empty == tuple(range(2, 42, 6))


def test_a_survey_samples_uniformly_within_its_bound():
    """Up to its size a side's sample is every text in order; past it, a sample of that size,
    the same on every run, drawn from the whole corpus (not its start or its end)."""
    pairs = [(f"s{i}", f"t{i} x") for i in range(10_000)]
    src, tgt = survey((pairs[i : i + 300] for i in range(0, 10_000, 300)), size=20_000)
    assert src.sample == [p[0] for p in pairs] and tgt.texts == 10_000
    assert tgt.counts.pieces["x"] == 10_000 and tgt.counts.spaces == 10_000
    sampled = [survey([pairs[:5000], pairs[5000:]], size=1000)[0].sample for _ in range(2)]
    assert sampled[0] == sampled[1] and len(set(sampled[0])) == 1000
    numbers = [int(text[1:]) for text in sampled[0]]
    assert 0.45 < sum(n < 5000 for n in numbers) / 1000 < 0.55
    assert 0.2 < sum(n >= 7500 for n in numbers) / 1000 < 0.3


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
