"""The resumable training run behind `s2s train`: `fit` plans (`plan.configure`, `plan.prepare`),
locks, restores, trains, evaluates and checkpoints.

The step body (`step.train_step`) runs under `parallel.DataParallel`; the data order is a
function of (seed, epoch) and the checkpoint stores the position, so a run resumed from a
checkpoint ends with the same parameters as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from s2s_jax.data import train_batches
from s2s_jax.data.prefetch import Prefetch
from s2s_jax.errors import S2SError, TrainingError
from s2s_jax.inference import metrics
from s2s_jax.inference.evaluate import EvaluationStopped, evaluate
from s2s_jax.inference.translate import Translator
from s2s_jax.nn import model
from s2s_jax.run import config
from s2s_jax.run import workdir as wd
from s2s_jax.run.mesh import on_any_process
from s2s_jax.run.provenance import devices, provenance
from s2s_jax.run.stopping import Interrupted, StopSignals
from s2s_jax.run.workdir import WorkdirBusy
from s2s_jax.training import parallel
from s2s_jax.training.metrics_log import MetricsWriter
from s2s_jax.training.plan import Prepared, absolute_paths, configure, prepare
from s2s_jax.training.state import init_state, learning_rate_schedule
from s2s_jax.training.step import train_step

TENSORBOARD_SAMPLES = 5  # decoded validation pairs shown in TensorBoard at each evaluation


def fit(
    workdir: str | Path,
    requested: dict[str, dict] | None = None,
    *,
    defaults: dict[str, dict] = config.DEFAULTS,
    progress: bool = True,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
    stop: StopSignals | None = None,
) -> dict:
    """Trains (or resumes training) in `workdir`; returns the last validation metrics.

    Everything is read and checked first (configuration, data, vocabularies), then the
    workdir is locked, the checkpoint restored and verified, and only then written to: a
    refused or failed start changes nothing. From the lock on, SIGINT/SIGTERM stop at the
    next step boundary, saving the step.

    Args:
      workdir: the run's directory (created if needed; resumed if it holds a run); a relative
        path, and relative data paths in `requested`, are taken from the current directory.
      requested: config values `{"model": {...}, "train": {...}}` (from a file and --set).
      defaults: the base of a new run's configuration.
      progress: show a progress bar.
      log: where one-line reports go.
      stop: the signal handlers to stop with (default: installed here, main thread only).

    Raises:
      S2SError: a refused configuration, bad data, a damaged workdir, a failed save, a
        non-finite loss; `stopping.Interrupted` after a signal (the state is saved).
    """
    workdir = wd.resolve(workdir)
    requested = absolute_paths(requested or {})
    with contextlib.ExitStack() as stack:
        if stop is None:
            stop = stack.enter_context(StopSignals())
        prepared = prepare(configure(workdir, requested, defaults=defaults))
        stack.enter_context(_locked(workdir))
        stack.enter_context(stop.deferred())
        if configure(workdir, requested, defaults=defaults) != prepared.plan:
            raise WorkdirBusy(
                f"{workdir} changed while this run was being prepared (another "
                "`s2s train` used it): run the command again"
            )
        return _fit(workdir, prepared, progress=progress, log=log, stop=stop)


@contextlib.contextmanager
def _locked(workdir: Path):
    """Process 0 holds the workdir's lock; every process stops if it cannot."""
    with contextlib.ExitStack() as stack:
        error = None
        if jax.process_index() == 0:
            try:
                stack.enter_context(wd.lock(workdir))
            except S2SError as e:
                error = e
        if on_any_process(error is not None):
            raise error or WorkdirBusy(f"process 0 could not lock {workdir}")
        yield


def _fit(workdir: Path, prepared: Prepared, *, progress: bool, log, stop) -> dict:
    plan, train_cfg, model_cfg = prepared.plan, prepared.train_cfg, prepared.model_cfg
    owner = jax.process_index() == 0  # on a cluster, process 0 writes the files
    if not plan.resume and wd.exists(workdir):
        log(f"{workdir} holds no checkpoint yet: starting its run again")
    for note in prepared.notes:
        log(note)
    if 0 < train_cfg.steps <= train_cfg.warmup_steps:
        log(
            f"warning: warmup_steps={train_cfg.warmup_steps} is not below steps="
            f"{train_cfg.steps}: the learning rate never reaches {train_cfg.learning_rate:g} "
            f"(--set warmup_steps=N with N < {train_cfg.steps})"
        )
    dp = parallel.DataParallel(
        train_cfg.parallel,
        functools.partial(train_step, model_cfg=model_cfg, train_cfg=train_cfg),
        batch_size=0 if train_cfg.batch_tokens else train_cfg.batch_size,
        micro_batches=train_cfg.accumulate,
    )

    best_metric = config.best_metric(train_cfg)
    options = dict(
        best_mode=metrics.direction(best_metric),
        writer=True,
        max_to_keep=train_cfg.keep_checkpoints,
        log=log,
    )
    # A resumed run's checkpoints follow its workdir's digest policy; a new run's are all
    # digested (this version writes them).
    ckpts = (
        plan.stored.checkpoints(**options)
        if plan.resume
        else wd.checkpoints(workdir, require_digests=True, **options)
    )
    writer = None
    try:
        state = init_state(model_cfg, train_cfg)
        if prepared.init_params is not None:  # fine-tuning: a fresh optimizer on them
            state = state._replace(params=prepared.init_params)
        if plan.resume:
            target = dp.restore_target(state)
            state = ckpts.restore(target)  # verified; an older step if the newest is damaged
            ckpts.verify_best(target)
        step = int(dp.fetch(state.step))
        past = plan.stored.changes if plan.resume else ()
        qualified = [(n if "." in n else f"train.{n}", old, new) for n, old, new in plan.changes]
        changes = past + tuple(
            {"step": step, "field": name, "old": old, "new": new} for name, old, new in qualified
        )
        for name, old, new in qualified:
            log(
                f"{name} changes from {old!r} to {new!r} at step {step} "
                f"(recorded in {workdir / wd.CONFIG})"
            )
        run = wd.Run(
            model_cfg,
            train_cfg,
            prepared.src_vocab,
            prepared.tgt_vocab,
            changes,
            decode_cfg=prepared.decode_cfg,
            started=(plan.stored.started if plan.resume else ())
            + ({"step": step, **provenance()},),
            data=prepared.data,
        )
        # Everything is validated: from here on the workdir is written.
        if owner:
            wd.save(workdir, run, vocabularies=not plan.resume)  # a resumed run's are checked
            wd.truncate_metrics(workdir, step)
        writer = MetricsWriter(workdir / wd.METRICS, workdir / wd.TENSORBOARD, resume_step=step)
        if plan.resume and step >= train_cfg.steps:
            log(
                f"{workdir} has finished its {step} steps: nothing to train (--steps N, more "
                f"than {step}, trains on); its last validation metrics follow"
            )
            return wd.last_metrics(workdir, "valid")
        if plan.resume:
            log(f"resuming {workdir} at step {step}, on {devices()}")
        else:
            log(
                f"training {model.param_count(state.params):,} parameters on "
                f"{len(prepared.examples):,} pairs {_data_source(train_cfg)}, on "
                f"{devices()}; workdir {workdir}"
            )
        state = dp.replicate(state)
        return _loop(
            state,
            dp,
            ckpts,
            writer,
            prepared.task,
            prepared.examples,
            run,
            progress,
            log,
            stop,
            workdir,
        )
    finally:
        ckpts.close()
        if writer is not None:
            writer.close()


def _loop(state, dp, ckpts, writer, task, examples, run, progress, log, stop, workdir) -> dict:
    train_cfg = run.train_cfg
    best_metric = config.best_metric(train_cfg)
    step = int(dp.fetch(state.step))
    epoch, index = (int(x) for x in dp.fetch(state.data_pos))
    next_pos = (epoch, index)  # the data position after the last step taken
    batches = Prefetch(  # each process gathers only its rows of each global batch
        train_batches(
            examples,
            batch_size=train_cfg.batch_size,
            seed=train_cfg.seed,
            src_buckets=train_cfg.src_buckets(),
            tgt_buckets=train_cfg.tgt_buckets(),
            start_epoch=epoch,
            start_index=index,
            part=(jax.process_index(), jax.process_count()),
            batch_tokens=train_cfg.batch_tokens,
            row_unit=dp.n_devices * train_cfg.accumulate,
        )
    )
    bar = tqdm(
        total=train_cfg.steps,
        initial=step,
        disable=not progress or None,
        unit="step",
        dynamic_ncols=True,
        file=sys.stderr,
    )

    def save(metric=None) -> bool:
        nonlocal state
        if pending:
            check(pending)  # never save a state whose last updates were skipped
        state = state._replace(data_pos=dp.replicate(jnp.array(next_pos, jnp.int32)))
        return ckpts.save(step, dp.checkpoint_view(state), metric=metric)

    def check(pending):
        try:
            return _summarise(dp.fetch(pending), step, tick)
        except TrainingError as e:
            kept = ckpts.latest_step()
            lr = train_cfg.learning_rate / 2
            clip = (
                f" (or a lower clip_norm than {train_cfg.clip_norm:g})"
                if train_cfg.clip_norm
                else ""
            )
            raise TrainingError(
                f"{e}; "
                + (
                    f"the last good checkpoint (step {kept}) is kept: resume from it with a lower "
                    f"learning rate{clip}, e.g. "
                    f"`s2s train --workdir {workdir} --set learning_rate={lr:g}`"
                    if kept is not None
                    else "no checkpoint had been saved yet: start again with a "
                    f"lower learning rate{clip}, e.g. --set learning_rate={lr:g}"
                )
            ) from None

    schedule, started = learning_rate_schedule(train_cfg), time.perf_counter()
    plain = bar.disable  # no bar (not a terminal, or --no-progress): plain log lines instead
    bar.set_description("compiling")
    if plain:
        log("compiling the training step (the first step waits for it)")
    # tick: (when the current throughput window started, how many of its steps are untimed)
    pending, last_eval, tick, stopped_early = [], {}, (time.perf_counter(), 0), False
    compiled = cut = False
    # One process may leave a validation on a signal; several must agree on the step first.
    interruptible = (lambda: stop.requested is not None) if jax.process_count() == 1 else None
    with stop.deferred(), contextlib.closing(batches):
        while step < train_cfg.steps and not stop.agreed(step, train_cfg.log_every):
            epoch, index, batch = next(batches)
            state, step_metrics = dp.step(state, dp.shard_batch(batch, local=True))
            step, next_pos = step + 1, (epoch, index + 1)
            pending.append(step_metrics)
            if not compiled:  # that call compiled the step: not part of the throughput
                compiled, tick = True, (time.perf_counter(), len(pending))
                bar.set_description("")
            final = step == train_cfg.steps
            if step % train_cfg.log_every == 0 or final:
                summary = check(pending)
                summary["learning_rate"] = float(schedule(step - 1))  # of this step's update
                summary["data_wait_s"] = waited = batches.take_waited()  # the step starved
                pending, tick = [], (time.perf_counter(), 0)
                writer.write(step, "train", summary)
                rate = summary.get("tokens_per_s")
                bar.set_postfix(loss=f"{summary['loss']:.3f}", tok_s=f"{rate or 0:.0f}")
                bar.update(step - bar.n)
                if plain:
                    elapsed = time.strftime("%H:%M:%S", time.gmtime(time.perf_counter() - started))
                    log(
                        f"step {step}/{train_cfg.steps}: loss {summary['loss']:.4f}, learning "
                        f"rate {summary['learning_rate']:.3g}"
                        + (f", {rate:,.0f} tokens/s" if rate is not None else "")
                        + (f", {waited:.1f} s waiting for data" if waited >= 0.1 else "")
                        + f", {elapsed} elapsed"
                    )
            evaluating = step % train_cfg.eval_every == 0 or final
            if train_cfg.save_every and step % train_cfg.save_every == 0 and not evaluating:
                save()  # a preempted run loses at most save_every steps
            if evaluating:
                params = dp.fetch_params(state.params)
                hyps: list[str] = []
                vocabs = (run.src_vocab, run.tgt_vocab)
                translator = Translator(params, run.model_cfg, *vocabs, train_cfg, run.decode_cfg)
                try:
                    last_eval = evaluate(
                        translator,
                        task,
                        "valid",
                        beam=train_cfg.eval_beam,
                        limit=train_cfg.eval_examples,
                        hyps_out=hyps,
                        stop=interruptible,
                    )
                except EvaluationStopped:  # a signal: save this step unvalidated, and stop
                    cut = True
                    break
                writer.write(step, "valid", last_eval)
                # The same first pairs each time, so that TensorBoard shows them improve.
                pairs = task.splits["valid"][:TENSORBOARD_SAMPLES]
                writer.write_samples(step, "valid", [(*p, h) for p, h in zip(pairs, hyps)])
                tick = (time.perf_counter(), len(pending))  # the evaluation is not timed
                saved = save(metric=last_eval[best_metric])
                report = f"step {step} ({'saved' if saved else 'not saved: on disk already'}): "
                report += ", ".join(f"{k} {v:.4g}" for k, v in last_eval.items())
                if plain:
                    log(report)
                else:
                    bar.write(report, file=sys.stderr)  # stdout holds only the final result
                best = ckpts.improved_at()
                if (
                    train_cfg.patience
                    and best is not None
                    and step - best >= train_cfg.patience * train_cfg.eval_every
                ):
                    log(f"early stop at step {step}: no better {best_metric} since step {best}")
                    stopped_early = True
                    break
        if stop.requested is not None and (step < train_cfg.steps or cut) and not stopped_early:
            name = signal.Signals(stop.requested).name
            bar.close()
            if step == 0:
                raise Interrupted(
                    stop.requested,
                    f"{name} before the first step: nothing to "
                    "save; run the same command to start again",
                )
            if step != ckpts.latest_step():
                save()
            raise Interrupted(
                stop.requested,
                f"{name} at step {step}: step {step} is saved; run the same command to resume",
            )
    bar.close()
    return last_eval


def _data_source(train_cfg: config.TrainConfig) -> str:
    """Where a run's pairs come from, as its log says: a built-in task or a file."""
    return f"from {train_cfg.train_file}" if train_cfg.train_file else f"of task {train_cfg.task}"


def _summarise(history: list[dict], step: int, tick: tuple[float, int]) -> dict:
    """Averages the metrics of the steps since the last log; stops on a non-finite loss."""
    finite = np.array([m["finite"] for m in history])
    if not finite.all():
        bad = step - len(history) + int(np.argmin(finite)) + 1
        raise TrainingError(f"the loss became non-finite at step {bad} (that update was skipped)")
    keys = ("loss", "accuracy", "grad_norm", "param_norm")
    out = {k: float(np.mean([m[k] for m in history])) for k in keys}
    timed = history[tick[1] :]  # not the step that compiled, nor those before an evaluation
    if timed:
        seconds = max(time.perf_counter() - tick[0], 1e-9)
        tokens = float(np.sum([m["tokens"] for m in timed]))
        out.update(tokens_per_s=tokens / seconds, steps_per_s=len(timed) / seconds)
    return out
