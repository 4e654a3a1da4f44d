"""Data: vocabularies, built-in tasks, TSV files, and padded fixed-shape batches."""

from s2s_jax.data.batching import (
    Batch,
    bucket_lengths,
    encode_pairs,
    epoch_order,
    eval_batches,
    num_batches,
    pad_batch,
    train_batches,
)
from s2s_jax.data.task import SPLITS, Task
from s2s_jax.data.tasks import DEFAULT_TASK, describe_tasks, load_task, task_names
from s2s_jax.data.tsv import read_tsv, with_references, write_tsv
from s2s_jax.data.vocab import BOS, EOS, KINDS, PAD, SPECIALS, UNK, Vocab
from s2s_jax.errors import DataError

__all__ = [
    "BOS",
    "DEFAULT_TASK",
    "EOS",
    "KINDS",
    "PAD",
    "SPECIALS",
    "SPLITS",
    "UNK",
    "Batch",
    "DataError",
    "Task",
    "Vocab",
    "bucket_lengths",
    "describe_tasks",
    "encode_pairs",
    "epoch_order",
    "eval_batches",
    "load_task",
    "num_batches",
    "pad_batch",
    "read_tsv",
    "task_names",
    "train_batches",
    "with_references",
    "write_tsv",
]
