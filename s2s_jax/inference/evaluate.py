"""Evaluation: a trained model's task metrics and teacher-forced loss on a split."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp

from s2s_jax.data import Batch, Task, bucket_lengths, encode_pairs, eval_batches
from s2s_jax.errors import DataError
from s2s_jax.inference import metrics
from s2s_jax.inference.translate import Translator
from s2s_jax.training import config
from s2s_jax.training import workdir as wd
from s2s_jax.training.step import loss_terms

_eval_loss = jax.jit(
    lambda params, batch, cfg: loss_terms(params, batch, None, model_cfg=cfg)[1], static_argnums=2
)


def evaluate(
    translator: Translator,
    task: Task,
    split: str,
    *,
    beam: int | None = None,
    limit: int | None = None,
) -> dict[str, float]:
    """The task's metrics on (the first `limit` pairs of) a split, decoded with a beam of
    `beam` (None: the translator's `decode_cfg.beam`), plus the teacher-forced per-token NLL
    (`loss`) on the pairs that fit the model's length limits."""
    pairs = task.splits[split][:limit]
    refs_multi = task.refs(split)[:limit]
    if not pairs:
        raise DataError(f"split {split!r} of task {task.name} is empty")
    hyps = translator.translate([s for s, _ in pairs], beam=beam)
    out = metrics.compute_metrics(
        task.metrics, hyps, [t for _, t in pairs], refs_multi, tokenize=task.metric_tokenize
    )
    lim = translator.train_cfg
    examples, _ = encode_pairs(
        pairs,
        translator.src_vocab,
        translator.tgt_vocab,
        max_src_len=lim.max_src_len,
        max_tgt_len=lim.max_tgt_len,
    )
    sums = [
        _eval_loss(translator.params, Batch(*map(jnp.asarray, batch)), translator.cfg)
        for batch in eval_batches(
            examples,
            batch_size=translator.decode_cfg.sentences_per_batch,
            src_buckets=bucket_lengths(lim.max_src_len, lim.buckets),
            tgt_buckets=bucket_lengths(lim.max_tgt_len, lim.buckets),
        )
    ]
    sums = jax.device_get(sums)  # one transfer after all batches are dispatched
    tokens = sum(float(s["tokens"]) for s in sums)
    out["loss"] = sum(float(s["nll"]) for s in sums) / max(tokens, 1.0)
    return out


def evaluate_workdir(
    workdir: str | Path,
    *,
    split: str = "test",
    beam: int | None = None,
    which: str = "best",
    limit: int | None = None,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
) -> dict[str, float]:
    """`s2s eval`: the task metrics of a trained workdir on a split."""
    if limit is not None and limit < 1:
        raise DataError(f"limit must be >= 1, got {limit}")
    workdir = wd.resolve(workdir)
    run = wd.load(workdir)  # read and checked once, for the model and for the task's data
    translator = Translator.from_workdir(workdir, which=which, log=log, run=run)
    task = config.load_task_data(run.train_cfg)
    return evaluate(translator, task, split, beam=beam, limit=limit)
