"""The data a run names: its built-in task, or a task made of its corpus files (TSV, or two
line-aligned files; a prepared training corpus is left to `training.prepared_data`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from s2s_jax.data import Task, load_task, with_references
from s2s_jax.data.corpus import corpus_files, is_prepared, read_corpus
from s2s_jax.errors import DataError
from s2s_jax.run.config import TrainConfig

SPLITS = ("train", "valid", "test")


def load_task_data(train_cfg: TrainConfig, splits: tuple[str, ...] = SPLITS) -> Task:
    """The built-in task, or a task made of the configured corpus files (only those of
    `splits`: a command reads just what it uses); evaluated with `train_cfg.metrics` when
    given."""
    task = _task_data(train_cfg, splits)
    if train_cfg.metric_names():
        task = dataclasses.replace(task, metrics=train_cfg.metric_names())
    return task


def _task_data(train_cfg: TrainConfig, wanted: tuple[str, ...]) -> Task:
    if not train_cfg.train_file:
        return load_task(train_cfg.task, seed=train_cfg.seed)
    splits, references, skipped = {}, {}, {}
    for split, spec in (
        ("train", train_cfg.train_file),
        ("valid", train_cfg.valid_file),
        ("test", train_cfg.test_file),
    ):
        if split == "train" and spec and is_prepared(spec):
            continue  # encoded already: a run reads it as a token store (s2s prepare)
        if spec and split in wanted:
            corpus = read_corpus(spec)
            if not corpus.pairs:
                what = "source<TAB>target" if len(corpus.files) == 1 else "non-empty line"
                raise DataError(f"{spec} holds no {what} pairs (the {split} split)")
            splits[split] = corpus.pairs
            if corpus.empty:
                skipped[split] = corpus.empty
            if split != "train":  # a source on several lines: any of its targets is right
                splits[split], references[split] = with_references(splits[split])
    return Task(
        name=corpus_name(train_cfg.train_file),  # the run is named after its data
        description=f"pairs from {train_cfg.train_file}",
        src_kind=train_cfg.src_vocab_kind or "char",
        tgt_kind=train_cfg.tgt_vocab_kind or "char",
        metrics=("exact_match", "token_accuracy", "bleu", "chrf"),
        splits=splits,  # no test split without a test file
        references=references,
        skipped=skipped,
    )


def corpus_name(spec: str) -> str:
    """A corpus's name for the run: the TSV file's, or `train.en,train.de` for two files."""
    return ",".join(Path(f).name for f in corpus_files(spec))
