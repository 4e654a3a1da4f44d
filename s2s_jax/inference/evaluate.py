"""Evaluation: a trained model's task metrics and teacher-forced loss on a split or a file."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp

from s2s_jax.data import (
    Batch,
    Task,
    encode_pairs,
    eval_batches,
    with_references,
)
from s2s_jax.data.corpus import corpus_files, line_list, read_corpus, read_lines
from s2s_jax.errors import DataError
from s2s_jax.files import write_atomically
from s2s_jax.inference import metrics
from s2s_jax.inference.shared_task_bleu import tokenized_bleu
from s2s_jax.inference.translate import Translator
from s2s_jax.nn import ensemble
from s2s_jax.nn.loss import loss_terms
from s2s_jax.run import data_files
from s2s_jax.run import workdir as wd
from s2s_jax.run.provenance import provenance
from s2s_jax.run.task_data import load_task_data

_CITED = ("workdir", "checkpoint", "step", "steps")  # what `s2s eval` says of each model


@functools.partial(jax.jit, static_argnums=2)
def _eval_loss(params, batch: Batch, cfg) -> dict:
    """Sums of the teacher-forced NLL and of the target tokens of one batch; an ensemble's NLL
    is that of its averaged probabilities."""
    if isinstance(cfg, tuple):
        nll = -jnp.sum(ensemble.log_prob(params, *batch, cfg=cfg))
        return {"nll": nll, "tokens": jnp.sum(batch.tgt_len).astype(jnp.float32)}
    return loss_terms(params, batch, None, model_cfg=cfg)[1]


STOP_CHECK_BATCHES = 4  # batches decoded between two looks at `stop`


class EvaluationStopped(Exception):
    """`evaluate` was told to stop before it finished."""


def _character_level(translator: Translator) -> bool:
    """Targets written in characters: metrics then count characters (BLEU included; sacrebleu's
    word tokeniser would see one word per target and read 0 at 99% exact match)."""
    return translator.tgt_vocab.kind == "char"


def evaluate(
    translator: Translator,
    task: Task,
    split: str,
    *,
    beam: int | None = None,
    alpha: float | None = None,
    limit: int | None = None,
    hyps_out: list | None = None,
    stop: Callable[[], bool] | None = None,
) -> dict[str, float]:
    """The task's metrics on (the first `limit` pairs of) a split, decoded with `beam` and
    `alpha` (None: the translator's decode section), plus the teacher-forced per-token NLL
    (`loss`) on the pairs that fit the model's length limits. A source longer than
    `max_src_len` is not translated (an empty hypothesis, counted in `too_long`). `hyps_out`,
    when given, receives the hypotheses. `stop`: asked between chunks of a few batches;
    `EvaluationStopped` when it says yes (a training run told to stop does not wait for a
    whole validation)."""
    pairs = task.splits[split][:limit]
    refs_multi = task.refs(split)[:limit]
    if not pairs:
        raise DataError(f"split {split!r} of task {task.name} is empty")
    # A source longer than the model reads (max_src_len) gets no translation: it counts as
    # wrong, and is counted, rather than stopping a training run at its first evaluation.
    most = translator.train_cfg.max_src_len
    fits = [i for i, (s, _) in enumerate(pairs) if len(translator.src_vocab.encode(s)) <= most]
    hyps = [""] * len(pairs)
    sources, translated = [pairs[i][0] for i in fits], []
    chunk = (
        len(sources)
        if stop is None
        else STOP_CHECK_BATCHES * translator.decode_cfg.sentences_per_batch
    )
    for start in range(0, len(sources), max(chunk, 1)):
        if stop is not None and stop():
            raise EvaluationStopped(f"stopped after {start} of {len(sources)} sentences")
        translated += translator.translate(sources[start : start + chunk], beam=beam, alpha=alpha)
    for i, text in zip(fits, translated):
        hyps[i] = text
    if hyps_out is not None:
        hyps_out.extend(hyps)
    char = _character_level(translator)
    out = metrics.compute_metrics(
        task.metrics,
        hyps,
        [t for _, t in pairs],
        refs_multi,
        tokenize=list if char else str.split,
        bleu_tokenize="char" if char else "13a",
    )
    lengths = translator.train_cfg
    examples, _ = encode_pairs(
        pairs,
        translator.src_vocab,
        translator.tgt_vocab,
        max_src_len=lengths.max_src_len,
        max_tgt_len=lengths.max_tgt_len,
    )
    sums = [
        _eval_loss(translator.params, Batch(*map(jnp.asarray, batch)), translator.cfg)
        for batch in eval_batches(
            examples,
            batch_size=translator.decode_cfg.sentences_per_batch,
            src_buckets=lengths.src_buckets(),
            tgt_buckets=lengths.tgt_buckets(),
        )
    ]
    sums = jax.device_get(sums)  # one transfer after all batches are dispatched
    tokens = sum(float(s["tokens"]) for s in sums)
    out["loss"] = sum(float(s["nll"]) for s in sums) / max(tokens, 1.0)
    if len(fits) < len(pairs):
        out["too_long"] = len(pairs) - len(fits)
    return out


def _file_task(spec: str, task: Task) -> Task:
    """The pairs of a corpus (a TSV file, or SRC,TGT files) as the split "file" of `task`'s kind
    (its metrics). A pair with an empty side is refused: skipping it would change the score."""
    corpus = read_corpus(spec)
    if corpus.empty:
        raise DataError(
            f"{spec}: line(s) {line_list(corpus.empty)} have an empty side; "
            "every pair scored needs a source and a reference"
        )
    pairs, refs = with_references(corpus.pairs)
    if not pairs:
        raise DataError(f"{spec} holds no source<TAB>target pairs")
    return Task(
        name=task.name,
        description=f"pairs from {spec}",
        src_kind=task.src_kind,
        tgt_kind=task.tgt_kind,
        metrics=task.metrics,
        splits={"file": pairs},
        references={"file": refs},
    )


def _check_split_data(run: wd.Run, split: str, log: Callable[[str], None]) -> None:
    """A split's files are where the run found them (else: how to score a copy), and a file
    that changed since is said to have changed."""
    spec = getattr(run.train_cfg, f"{split}_file", "")
    if not spec:
        return
    if gone := data_files.missing(spec):
        raise DataError(
            f"the {split} split of {run.path} was read from {spec}, but {', '.join(gone)} is "
            f"gone: score its new place with --file NEW"
        )
    recorded = run.data.get(split)
    if recorded is not None and not data_files.same_content(spec, recorded):
        log(f"note: {spec} has changed since {run.path} started (size or SHA-256 differ)")


def evaluate_workdir(
    workdir: str | Path | Sequence[str | Path],
    *,
    split: str = "test",
    file: str | os.PathLike | None = None,
    beam: int | None = None,
    alpha: float | None = None,
    which: str = "best",
    average: int = 0,
    limit: int | None = None,
    output: str | os.PathLike | None = None,
    tok_bleu: str | None = None,
    tok_refs: str | os.PathLike | None = None,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
) -> dict:
    """`s2s eval`: the task metrics of a trained workdir on one of its splits, or on a TSV
    `file` of source<TAB>target pairs (a source on several lines counts as right when the
    output matches any of its targets). Several workdirs: their ensemble, on the first one's
    data (`Translator.from_workdirs`); `which` and `average` as for `Translator.from_workdir`.

    Returns the metrics with what a reader needs to cite them: the split or file, the number
    of examples, the checkpoint and step (for an ensemble, `members`: each run's workdir,
    checkpoint and step), the decoding settings, sacrebleu's signatures, and the versions,
    command line, host and devices (`provenance`).
    `output`: a file that receives the hypotheses, one per line of the pairs' file (a source on
    several lines has its one hypothesis on each), in order, so that the file lines up with the
    references for sacrebleu; for a built-in task, one per pair.
    `tok_bleu`: a target language code; adds `bleu_tok`, the shared tasks' tokenised lowercased
    BLEU (`shared_task_bleu`), against the references prepared here or, with `tok_refs`, against
    that file's lines (one per pair, already prepared).
    """
    if limit is not None and limit < 1:
        raise DataError(f"limit must be >= 1, got {limit}")
    workdirs = [workdir] if isinstance(workdir, (str, os.PathLike)) else list(workdir)
    workdir = wd.resolve(workdirs[0])
    run = wd.load(workdir)  # read and checked once, for the model and for the task's data
    if file is not None:
        file = ",".join(os.path.abspath(f) for f in corpus_files(file))
        task, split = _file_task(file, load_task_data(run.train_cfg, splits=())), "file"
    else:
        _check_split_data(run, split, log)
        task = load_task_data(run.train_cfg, splits=(split,))
        if split not in task.splits:
            cfg = run.train_cfg
            names = [s for s in ("train", "valid", "test") if getattr(cfg, f"{s}_file")]
            hint = "evaluate a file with --file"
            hint = f"train with --test FILE, or {hint}" if cfg.train_file else hint
            raise DataError(
                f"{workdir} has no {split} split (its data: "
                f"{', '.join(names if cfg.train_file else task.splits)}): {hint}"
            )
    if len(workdirs) == 1:
        translator = Translator.from_workdir(
            workdir, which=which, average=average, log=log, run=run
        )
    else:
        translator = Translator.from_workdirs(workdirs, which=which, average=average, log=log)
    beam = translator.decode_cfg.beam if beam is None else beam
    alpha = translator.decode_cfg.alpha if alpha is None else alpha
    hyps: list[str] = []
    scores = evaluate(translator, task, split, beam=beam, alpha=alpha, limit=limit, hyps_out=hyps)
    if output is not None:
        spec = file if file is not None else _split_file(run.train_cfg, split)
        lines = _line_hyps(spec, task.splits[split], hyps) if spec else hyps
        write_atomically(Path(output), "".join(h + "\n" for h in lines))
    if tok_bleu is not None:
        scores |= _tokenized_bleu(hyps, task.refs(split), tok_bleu, tok_refs)
    char = _character_level(translator)
    refs = task.refs(split)[: len(hyps)]
    signatures = {
        f"{name}_signature": metrics.signature(name, "char" if char else "13a", refs)
        for name in ("bleu", "chrf")
        if name in scores
    }
    return {
        **({"file": str(file)} if file is not None else {"split": split}),
        "examples": len(hyps),
        "members": [  # one schema for one model and an ensemble: each model, what it loaded
            {k: v for k, v in member.items() if k in _CITED}
            for member in translator.loaded.get("members")
            or [{"workdir": str(workdir), **translator.loaded}]
        ],
        "beam": beam,
        "alpha": alpha,
        **scores,
        **signatures,
        "provenance": provenance(),
    }


def _tokenized_bleu(hyps: list[str], refs: list[list[str]], lang: str, tok_refs) -> dict:
    """`bleu_tok` and its signature, against `refs` (every pair's; the hypotheses may cover the
    first ones only) or the lines of the file `tok_refs`."""
    if tok_refs is not None:
        lines = read_lines(os.fspath(tok_refs))
        if len(lines) != len(refs):
            raise DataError(
                f"{tok_refs} has {len(lines)} lines for {len(refs)} pairs: give one tokenised "
                "reference per pair, in order"
            )
        refs = [[line] for line in lines]
    refs = refs[: len(hyps)]  # `limit`
    score, signature = tokenized_bleu(hyps, refs, lang, refs_tokenized=tok_refs is not None)
    return {"bleu_tok": score, "bleu_tok_signature": signature}


def _split_file(train_cfg, split: str) -> str | None:
    """The corpus a run's split was read from; None for a built-in task."""
    if not train_cfg.train_file:
        return None
    return {"valid": train_cfg.valid_file, "test": train_cfg.test_file}.get(split) or None


def _line_hyps(spec: str, pairs: list[tuple[str, str]], hyps: list[str]) -> list[str]:
    """One hypothesis per line of the corpus `spec`, from one per distinct source (`pairs`, of
    which `hyps` may cover the first ones only: `limit`)."""
    by_source = dict(zip((src for src, _ in pairs), hyps))
    return [by_source[src] for src, _ in read_corpus(spec).pairs if src in by_source]
