"""Prepared data (`s2s prepare`): a corpus encoded once into a memory-mapped folder that
`s2s train` reads as it reads the text, step for step; a failed prepare leaves nothing; the
encoding in worker processes equals the one in process; a run knows its prepared data."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import test_faults
from test_corpus import write
from test_faults import TINY, assert_one_line, s2s

from s2s_jax.data import Vocab
from s2s_jax.data.corpus import is_prepared
from s2s_jax.data.token_store import TokenStore
from s2s_jax.errors import DataError
from s2s_jax.run import config
from s2s_jax.training import prepared_data

env = test_faults.env


def corpus(tmp_path, n=200):
    """Words and their reversals, three too long for TINY's limits (12), one empty side."""
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefg") for _ in range(rng.randint(2, 10))) for _ in range(n)]
    for i in (3, 50, 100):
        words[i] = "gfedcba" * 2
    lines = [f"{w}\t{w[::-1]}" for w in words]
    lines[7] = f"{words[7]}\t"
    write(tmp_path / "train.tsv", lines)
    write(tmp_path / "valid.tsv", lines[:20])
    (tmp_path / "tiny.toml").write_text(TINY)
    return [(w, w[::-1]) for i, w in enumerate(words) if i != 7]


def test_a_prepared_corpus_trains_as_its_text(tmp_path, env):
    """`s2s prepare` keeps every pair (an empty side skipped and counted) with the vocabularies
    `s2s train` would build; training on the folder gives the losses of training on the TSV,
    step for step (the same batches), with the same pairs dropped for their length."""
    pairs = corpus(tmp_path)
    rc, out, err = s2s("prepare", "--train", "train.tsv", "--out", "prep", cwd=tmp_path, env=env)
    assert rc == 0, err
    manifest = json.loads(out)
    assert (manifest["pairs"], manifest["skipped_empty"]) == (199, 1)
    assert manifest["settings"]["src_vocab_kind"] == "char"
    assert manifest["source"][0]["file"] == str(tmp_path / "train.tsv")
    store = TokenStore.open(tmp_path / "prep", "train")
    vocab = Vocab.load(tmp_path / "prep" / "vocab.src.json")
    tgt_vocab = Vocab.load(tmp_path / "prep" / "vocab.tgt.json")
    decoded = [store.example(i) for i in range(len(store))]
    assert [(vocab.decode(s), tgt_vocab.decode(t)) for s, t in decoded] == pairs
    losses = {}
    for name, data in (("text", ["--train", "train.tsv"]), ("prepared", ["--data", "prep"])):
        train = ["train", "--config", "tiny.toml", "--workdir", name, *data]
        rc, _, err = s2s(*train, "--valid", "valid.tsv", "--no-progress", cwd=tmp_path, env=env)
        assert rc == 0, err
        dropped = [line for line in err.splitlines() if line.startswith("dropped")]
        records = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").open()]
        losses[name] = (dropped, [(r["step"], r["split"], r["loss"]) for r in records])
    assert losses["text"][0] and losses["text"] == losses["prepared"]
    assert "of 199 training pairs longer than max_src_len=12" in losses["text"][0][0]


def test_prepare_in_workers_equals_in_process_and_fails_cleanly(tmp_path, monkeypatch):
    """Two encoding processes write the store one process writes; a prepare that fails leaves
    no folder (not even a partial one) behind; an existing folder is refused."""
    corpus(tmp_path, n=300)
    train_cfg = config.TrainConfig(
        task=config.TSV_TASK,
        train_file=str(tmp_path / "train.tsv"),
        valid_file=str(tmp_path / "valid.tsv"),
    )
    monkeypatch.setattr(prepared_data, "CHUNK_PAIRS", 64)
    prepared_data.prepare_corpus(train_cfg, tmp_path / "one", workers=1, log=lambda s: None)
    monkeypatch.setattr(prepared_data, "POOL_FROM", 0)
    prepared_data.prepare_corpus(train_cfg, tmp_path / "two", workers=2, log=lambda s: None)
    for name in ("tokens", "offsets.npy", "src_len.npy", "tgt_len.npy"):
        one, two = ((tmp_path / d / f"train.{name}").read_bytes() for d in ("one", "two"))
        assert one == two and one
    with pytest.raises(DataError, match="holds prepared data already"):
        prepared_data.prepare_corpus(train_cfg, tmp_path / "one", log=lambda s: None)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(prepared_data, "write_chunks", broken)
    with pytest.raises(OSError):
        prepared_data.prepare_corpus(train_cfg, tmp_path / "three", log=lambda s: None)
    assert sorted(p.name for p in tmp_path.iterdir() if "three" in p.name) == []
    assert is_prepared(tmp_path / "one") and not is_prepared(tmp_path / "train.tsv")


def test_a_run_keeps_to_its_prepared_data(tmp_path, env):
    """A vocabulary setting other than the folder's is refused in one line; a resumed run
    takes its prepared data from a new place, and refuses other prepared data."""
    corpus(tmp_path)
    for out, extra in (("prep", []), ("words", ["--set", "src_vocab_kind=word"])):
        rc, _, err = s2s(
            "prepare", "--train", "train.tsv", "--out", out, *extra, cwd=tmp_path, env=env
        )
        assert rc == 0, err
    train = ["train", "--config", "tiny.toml", "--valid", "valid.tsv", "--no-progress"]
    assert_one_line(
        s2s(
            *train,
            "--workdir",
            "w",
            "--data",
            "prep",
            "--set",
            "src_vocab_kind=word",
            cwd=tmp_path,
            env=env,
        ),
        2,
        "was prepared with src_vocab_kind='char'",
    )
    rc, _, err = s2s(
        *train, "--workdir", "w", "--data", "prep", "--steps", "4", cwd=tmp_path, env=env
    )
    assert rc == 0, err
    (tmp_path / "prep").rename(tmp_path / "moved")
    rc, _, err = s2s(
        *train, "--workdir", "w", "--data", "moved", "--steps", "8", cwd=tmp_path, env=env
    )
    assert rc == 0 and "resuming" in err, err
    assert_one_line(
        s2s(*train, "--workdir", "w", "--data", "words", "--steps", "12", cwd=tmp_path, env=env),
        2,
        "is not the data",
    )
    assert np.all(TokenStore.open(tmp_path / "moved", "train").src_len > 0)


def test_token_batches_train_and_resume_exactly(tmp_path, env):
    """`batch_tokens`: a run stopped after 4 steps and resumed to 8 logs the losses of a run of
    8 steps (the plan of each epoch is a pure function of the seed and the epoch)."""
    corpus(tmp_path)
    train = ["train", "--config", "tiny.toml", "--train", "train.tsv", "--valid", "valid.tsv"]
    train += ["--set", "batch_tokens=96", "--set", "eval_every=8", "--no-progress"]
    for name, stops in (("whole", [8]), ("resumed", [4, 8])):
        for steps in stops:
            rc, _, err = s2s(*train, "--workdir", name, "--steps", steps, cwd=tmp_path, env=env)
            assert rc == 0, err
    records = {
        name: [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").open()]
        for name in ("whole", "resumed")
    }
    losses = {n: [(r["step"], r["loss"]) for r in rs if r["split"] == "train"] for n, rs in
              records.items()}  # fmt: skip
    assert losses["whole"] == losses["resumed"] and len(losses["whole"]) == 4
