"""Training: the loss, one per-device step body, evaluation and the resumable training loop.

The step body is written once; `parallel.DataParallel` runs it under plain `jit`, `shard_map`
or `pmap`. A step is a pure function of (state, batch): dropout keys are `fold_in(key, step)`
and the data order is a function of (seed, epoch), so a run resumed from a checkpoint ends
with the same parameters as an uninterrupted one.
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from s2s_jax import config, metrics, model, parallel, workdir as wd
from s2s_jax.data import Batch, Task, Vocab, encode_pairs, load_task, read_tsv, train_batches
from s2s_jax.data import bucket_lengths, eval_batches
from s2s_jax.data.tasks import recommended_steps
from s2s_jax.errors import ConfigError, S2SError
from s2s_jax.metrics_log import MetricsWriter
from s2s_jax.state import TrainState, init_state, make_optimizer
from s2s_jax.translate import Limits, Translator

Array = jax.Array
SELECT_METRIC = "exact_match"  # chooses the best checkpoint and drives early stopping


class TrainingError(S2SError):
    """Training cannot go on (e.g. a non-finite loss)."""


# --------------------------------------------------------------------------------- the step


def loss_terms(params, batch: Batch, key, *, model_cfg: model.Seq2SeqConfig,
               label_smoothing: float = 0.0) -> tuple[Array, dict]:
    """Summed (not averaged) training loss over the batch's real target tokens.

    Returns:
      the summed (label-smoothed) cross-entropy, and sums of the NLL, the token count and the
      correct argmax predictions. Sums, so that data-parallel shards add up exactly.
    """
    logits = model.forward(params, batch.src, batch.src_len, batch.tgt, cfg=model_cfg, key=key)
    mask = jnp.arange(batch.tgt.shape[1])[None, :] < batch.tgt_len[:, None]
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch.tgt)
    if label_smoothing:
        # (1 - eps) * NLL + eps * mean over the vocabulary of -log p
        uniform = -jnp.mean(jax.nn.log_softmax(logits, axis=-1), axis=-1)
        loss = (1.0 - label_smoothing) * nll + label_smoothing * uniform
    else:
        loss = nll
    correct = (jnp.argmax(logits, axis=-1) == batch.tgt) & mask
    sums = {"nll": jnp.sum(jnp.where(mask, nll, 0.0)), "tokens": jnp.sum(mask).astype(jnp.float32),
            "correct": jnp.sum(correct).astype(jnp.float32)}
    return jnp.sum(jnp.where(mask, loss, 0.0)), sums


def train_step(state: TrainState, batch: Batch, *, model_cfg: model.Seq2SeqConfig,
               train_cfg: config.TrainConfig, axis_name: str | None = None
               ) -> tuple[TrainState, dict]:
    """One optimizer update on one device's share of the batch.

    With `axis_name`, the devices' gradients are summed over that axis (`lax.psum`); each
    device's loss is divided by the global token count, so any split of the batch gives the
    update of the whole batch on one device (a mean of per-device means would not).
    A non-finite loss, gradient or update leaves the state unchanged and sets `metrics["finite"]` to 0,
    so the last good parameters survive for the host to stop on.
    """
    key = jax.random.fold_in(state.key, state.step)
    if axis_name is not None:
        key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
    key = key if model_cfg.dropout > 0 else None
    reduce = (lambda x: jax.lax.psum(x, axis_name)) if axis_name else (lambda x: x)
    tokens = jnp.maximum(reduce(jnp.sum(batch.tgt_len).astype(jnp.float32)), 1.0)

    def loss_fn(params):
        loss, sums = loss_terms(params, batch, key, model_cfg=model_cfg,
                                label_smoothing=train_cfg.label_smoothing)
        return loss / tokens, sums

    grads, sums = jax.grad(loss_fn, has_aux=True)(state.params)
    grads, sums = reduce(grads), reduce(sums)
    updates, opt_state = make_optimizer(train_cfg).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm, param_norm = optax.tree.norm(grads), optax.tree.norm(params)
    finite = jnp.isfinite(sums["nll"]) & jnp.isfinite(grad_norm) & jnp.isfinite(param_norm)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = state._replace(step=state.step + 1, params=keep(params, state.params),
                               opt_state=keep(opt_state, state.opt_state))
    metrics_ = {"loss": sums["nll"] / tokens, "tokens": sums["tokens"],
                "accuracy": sums["correct"] / tokens, "grad_norm": grad_norm,
                "param_norm": param_norm, "finite": finite.astype(jnp.float32)}
    return new_state, metrics_


# --------------------------------------------------------------------------------- the data


def load_data_task(train_cfg: config.TrainConfig) -> Task:
    """The built-in task, or a task made of the configured TSV files."""
    if not train_cfg.train_file:
        return load_task(train_cfg.task, seed=train_cfg.seed)
    train, valid = read_tsv(train_cfg.train_file), read_tsv(train_cfg.valid_file)
    test = read_tsv(train_cfg.test_file) if train_cfg.test_file else valid
    return Task(name="tsv", description=f"pairs from {train_cfg.train_file}", src_kind="char",
                tgt_kind="char", metrics=("exact_match", "token_accuracy", "bleu", "chrf"),
                splits={"train": train, "valid": valid, "test": test})


def build_vocabs(task: Task, train_cfg: config.TrainConfig) -> tuple[Vocab, Vocab]:
    """Vocabularies from the training split only."""
    pairs = task.splits["train"]
    kinds = (train_cfg.src_vocab_kind or task.src_kind, train_cfg.tgt_vocab_kind or task.tgt_kind)
    return tuple(Vocab.build((p[side] for p in pairs), kind, max_size=train_cfg.vocab_size,
                             sp_vocab_size=train_cfg.vocab_size)
                 for side, kind in enumerate(kinds))


# ------------------------------------------------------------------------------- evaluation


_eval_loss = jax.jit(lambda params, batch, cfg: loss_terms(params, batch, None, model_cfg=cfg)[1],
                     static_argnums=2)


def evaluate(translator: Translator, task: Task, split: str, *, beam: int = 1,
             limit: int | None = None) -> dict[str, float]:
    """The task's metrics on (the first `limit` pairs of) a split, plus the teacher-forced
    per-token NLL (`loss`) on the pairs that fit the model's length limits."""
    pairs = task.splits[split][:limit]
    refs_multi = task.refs(split)[:limit]
    if not pairs:
        raise TrainingError(f"split {split!r} of task {task.name} is empty")
    hyps = translator.translate([s for s, _ in pairs], beam=beam)
    out = metrics.compute_metrics(task.metrics, hyps, [t for _, t in pairs], refs_multi,
                                  tokenize=task.metric_tokenize)
    lim = translator.limits
    examples, _ = encode_pairs(pairs, translator.src_vocab, translator.tgt_vocab,
                               max_src_len=lim.max_src_len, max_tgt_len=lim.max_tgt_len)
    sums = [_eval_loss(translator.params, Batch(*map(jnp.asarray, batch)), translator.cfg)
            for batch in eval_batches(examples, batch_size=lim.batch_size,
                                      src_buckets=bucket_lengths(lim.max_src_len, lim.buckets),
                                      tgt_buckets=bucket_lengths(lim.max_tgt_len, lim.buckets))]
    sums = jax.device_get(sums)  # one transfer after all batches are dispatched
    tokens = sum(float(s["tokens"]) for s in sums)
    out["loss"] = sum(float(s["nll"]) for s in sums) / max(tokens, 1.0)
    return out


# ------------------------------------------------------------------------------- the run


# Fields that may change when a run is resumed; the others define the model and the data.
RESUMABLE = {"steps", "eval_every", "eval_examples", "eval_beam", "patience", "log_every",
             "parallel", "max_len_ratio", "max_len_offset"}


def configure(workdir: str | Path, requested: dict[str, dict], *,
              defaults: dict[str, dict] = config.DEFAULTS) -> tuple[dict[str, dict], bool]:
    """The configuration values of a run in `workdir`, and whether it resumes.

    A new run takes `defaults` updated by `requested`. An existing workdir keeps its stored
    configuration; requested values may only change the `RESUMABLE` fields.
    """
    if not wd.exists(workdir):
        values = config.merge(defaults, requested)
        if not values["train"].get("steps"):
            t = values["train"]
            task = None if t.get("train_file") else t.get("task", config.TrainConfig.task)
            values["train"]["steps"] = recommended_steps(task)
        return values, False
    stored = config.to_dict(*config.build(wd.load_json_config(workdir)))
    for section, values in requested.items():
        for name, value in values.items():
            if stored[section][name] != value and not (section == "train" and name in RESUMABLE):
                raise ConfigError(
                    f"{workdir} holds a run with {section}.{name}={stored[section][name]!r}, "
                    f"not {value!r}: use a new --workdir, or drop that setting to resume")
    return config.merge(stored, {"train": requested.get("train", {})}), True


def fit(workdir: str | Path, requested: dict[str, dict] | None = None, *,
        defaults: dict[str, dict] = config.DEFAULTS, progress: bool = True,
        log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> dict:
    """Trains (or resumes training) in `workdir`; returns the last validation metrics.

    Args:
      workdir: the run's directory (created if needed; resumed if it holds a run).
      requested: config values `{"model": {...}, "train": {...}}` (from a file and --set).
      defaults: the base of a new run's configuration.
      progress: show a progress bar.
      log: where one-line reports go.
    """
    workdir = Path(workdir)
    values, resuming = configure(workdir, requested or {}, defaults=defaults)
    model_cfg, train_cfg = config.build(values)
    task = load_data_task(train_cfg)
    if resuming:
        run = wd.load(workdir)
        src_vocab, tgt_vocab = run.src_vocab, run.tgt_vocab
    else:
        src_vocab, tgt_vocab = build_vocabs(task, train_cfg)
        model_cfg = model_cfg.replace(src_vocab=len(src_vocab), tgt_vocab=len(tgt_vocab))
    run = wd.Run(model_cfg, train_cfg, src_vocab, tgt_vocab)
    if jax.process_index() == 0:
        wd.save(workdir, run)

    examples, dropped = encode_pairs(task.splits["train"], src_vocab, tgt_vocab,
                                     max_src_len=train_cfg.max_src_len,
                                     max_tgt_len=train_cfg.max_tgt_len)
    if dropped:
        log(f"dropped {dropped} of {len(task.splits['train'])} training pairs longer than "
            f"max_src_len={train_cfg.max_src_len} / max_tgt_len={train_cfg.max_tgt_len}")
    limits = Limits.of(train_cfg)
    dp = parallel.DataParallel(train_cfg.parallel, functools.partial(
        train_step, model_cfg=model_cfg, train_cfg=train_cfg), batch_size=train_cfg.batch_size)

    ckpts = wd.checkpoints(workdir)
    writer = MetricsWriter(workdir)
    try:
        state = init_state(model_cfg, train_cfg)
        if ckpts.latest_step() is not None:
            state = ckpts.restore(dp.restore_target(state))
            log(f"resuming {workdir} at step {int(state.step)}")
        else:
            log(f"training {model.param_count(state.params):,} parameters on {len(examples):,} "
                f"pairs of task {task.name}; workdir {workdir}")
        state = dp.replicate(state)
        return _loop(state, dp, ckpts, writer, task, examples, run, limits, progress, log)
    finally:
        ckpts.close()
        writer.close()


def _loop(state, dp, ckpts, writer, task, examples, run, limits, progress, log) -> dict:
    train_cfg = run.train_cfg
    step = int(dp.fetch(state.step))
    epoch, index = (int(x) for x in dp.fetch(state.data_pos))
    batches = train_batches(examples, batch_size=train_cfg.batch_size, seed=train_cfg.seed,
                            src_buckets=bucket_lengths(train_cfg.max_src_len, train_cfg.buckets),
                            tgt_buckets=bucket_lengths(train_cfg.max_tgt_len, train_cfg.buckets),
                            start_epoch=epoch, start_index=index)
    bar = tqdm(total=train_cfg.steps, initial=step, disable=not progress or None, unit="step",
               dynamic_ncols=True, file=sys.stderr)
    pending, last_eval, tick = [], {}, (time.perf_counter(), step)
    while step < train_cfg.steps:
        epoch, index, batch = next(batches)
        state, step_metrics = dp.step(state, dp.shard_batch(batch))
        pending.append(step_metrics)
        step += 1
        final = step == train_cfg.steps
        if step % train_cfg.log_every == 0 or final:
            try:
                summary = _summarise(dp.fetch(pending), step, tick)
            except TrainingError as e:
                ckpts.wait()
                kept = ckpts.latest_step()
                raise TrainingError(f"{e}; " + (
                    f"the last good checkpoint (step {kept}) is kept, and a new run resumes from it"
                    if kept is not None else "no checkpoint had been saved yet")) from None
            pending, tick = [], (time.perf_counter(), step)
            writer.write(step, "train", summary)
            bar.set_postfix(loss=f"{summary['loss']:.3f}", tok_s=f"{summary['tokens_per_s']:.0f}")
            bar.update(step - bar.n)
        if step % train_cfg.eval_every == 0 or final:
            state = state._replace(data_pos=dp.replicate(jnp.array([epoch, index + 1], jnp.int32)))
            params = dp.fetch_params(state.params)
            last_eval = evaluate(Translator(params, run.model_cfg, run.src_vocab, run.tgt_vocab,
                                            limits), task, "valid", beam=train_cfg.eval_beam,
                                 limit=train_cfg.eval_examples)
            writer.write(step, "valid", last_eval)
            ckpts.save(step, dp.checkpoint_view(state), metric=last_eval[SELECT_METRIC])
            bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in last_eval.items()))
            best = ckpts.best_step()
            if train_cfg.patience and best is not None and \
                    step - best >= train_cfg.patience * train_cfg.eval_every:
                log(f"early stop at step {step}: no better {SELECT_METRIC} since step {best}")
                break
    bar.close()
    ckpts.wait()
    return last_eval


def _summarise(history: list[dict], step: int, tick: tuple[float, int]) -> dict:
    """Averages the metrics of the steps since the last log; stops on a non-finite loss."""
    finite = np.array([m["finite"] for m in history])
    if not finite.all():
        bad = step - len(history) + int(np.argmin(finite)) + 1
        raise TrainingError(f"the loss became non-finite at step {bad} (that update was skipped): "
                            "lower learning_rate or set clip_norm")
    seconds = time.perf_counter() - tick[0]
    tokens = float(np.sum([m["tokens"] for m in history]))
    keys = ("loss", "accuracy", "grad_norm", "param_norm")
    out = {k: float(np.mean([m[k] for m in history])) for k in keys}
    out.update(tokens_per_s=tokens / max(seconds, 1e-9), steps_per_s=len(history) / max(seconds, 1e-9))
    return out


def evaluate_workdir(workdir: str | Path, *, split: str = "test", beam: int = 1,
                     which: str = "best", limit: int | None = None) -> dict[str, float]:
    """`s2s eval`: the task metrics of a trained workdir on a split."""
    translator = Translator.from_workdir(workdir, which=which)
    task = load_data_task(wd.load(workdir).train_cfg)
    return evaluate(translator, task, split, beam=beam, limit=limit)


