"""The data a run names: its built-in task, or a task made of its TSV files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from s2s_jax.data import Task, load_task, read_tsv, with_references
from s2s_jax.errors import DataError
from s2s_jax.run.config import TrainConfig


def load_task_data(train_cfg: TrainConfig) -> Task:
    """The built-in task, or a task made of the configured TSV files; evaluated with
    `train_cfg.metrics` when given."""
    task = _task_data(train_cfg)
    if train_cfg.metric_names():
        task = dataclasses.replace(task, metrics=train_cfg.metric_names())
    return task


def _task_data(train_cfg: TrainConfig) -> Task:
    if not train_cfg.train_file:
        return load_task(train_cfg.task, seed=train_cfg.seed)
    splits, references = {}, {}
    for split, path in (
        ("train", train_cfg.train_file),
        ("valid", train_cfg.valid_file),
        ("test", train_cfg.test_file),
    ):
        if path:
            splits[split] = read_tsv(path)
            if not splits[split]:
                raise DataError(f"{path} holds no source<TAB>target pairs (the {split} split)")
            if split != "train":  # a source on several lines: any of its targets is right
                splits[split], references[split] = with_references(splits[split])
    return Task(
        name=Path(train_cfg.train_file).name,  # the run is named after its data
        description=f"pairs from {train_cfg.train_file}",
        src_kind=train_cfg.src_vocab_kind or "char",
        tgt_kind=train_cfg.tgt_vocab_kind or "char",
        metrics=("exact_match", "token_accuracy", "bleu", "chrf"),
        splits=splits,  # no test split without a test file
        references=references,
    )
