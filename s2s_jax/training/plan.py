"""What `s2s train` will do in a workdir, decided and checked before anything is written:
`configure` (a new run or a resumed one, and which settings may change), then `prepare` (the
data read, the vocabularies built or reloaded, the training pairs encoded)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import jax
import numpy as np

from s2s_jax.data import Task, Vocab, encode_pairs
from s2s_jax.data.batching import token_epoch_order
from s2s_jax.data.corpus import corpus_files, is_prepared, line_list
from s2s_jax.data.survey import survey_pairs
from s2s_jax.data.tasks import recommended_steps
from s2s_jax.data.token_store import TokenStore
from s2s_jax.errors import CheckpointError, ConfigError, DataError, S2SError
from s2s_jax.nn import model
from s2s_jax.run import config, data_files
from s2s_jax.run import workdir as wd
from s2s_jax.run.task_data import load_task_data
from s2s_jax.training import corpus_defaults
from s2s_jax.training.prepared_data import open_store, prepared_vocabularies, within_limits
from s2s_jax.training.vocabularies import build_vocabs, choose_kinds


@dataclasses.dataclass(frozen=True)
class Plan:
    """What `s2s train` will do in a workdir, decided (and validated) before anything is
    written."""

    values: dict  # the run's configuration values {"model": {...}, "train": {...}}
    stored: wd.Run | None = None  # the run to resume (it has a checkpoint), checked
    # (field, stored value, requested value) of the TUNABLE fields (bare names) and of the
    # decode section ("decode.beam") that change.
    changes: tuple = ()
    corpus_defaults: tuple = ()  # a new run on files: the `corpus_defaults` it took, by name

    @property
    def resume(self) -> bool:
        return self.stored is not None


def configure(
    workdir: str | Path, requested: dict[str, dict], *, defaults: dict[str, dict] = config.DEFAULTS
) -> Plan:
    """The configuration of a run in `workdir`, and whether it resumes (reads only).

    A new run takes `defaults` updated by `requested`. A workdir whose run never saved a
    checkpoint starts again from its stored configuration updated by `requested`. A workdir
    with checkpoints keeps its stored configuration: requested values may change only the
    `config.RESUMABLE` fields, the `config.TUNABLE` ones (reported in `Plan.changes`) and the
    decode section.

    Raises:
      ConfigError: an invalid configuration, or a change the stored run cannot take.
      CheckpointError: a workdir whose files do not belong together.
    """
    latest, best = _checkpoint_steps(workdir)
    has_checkpoint = latest is not None or best is not None
    if not wd.exists(workdir) and has_checkpoint:
        raise CheckpointError(
            f"{workdir} holds checkpoints but no {wd.CONFIG}: restore that "
            "file, or use another --workdir"
        )
    if not (wd.exists(workdir) and has_checkpoint):
        base, named = defaults, requested
        if wd.exists(workdir):  # started, but killed or failed before its first checkpoint
            try:
                stored = _stored_values(workdir)
                base, named = config.merge(defaults, stored), config.merge(stored, requested)
            except S2SError:
                pass  # nothing was trained with it: the request alone decides
        values = config.merge(base, requested)
        if values["train"].get("init_from"):  # its model section, unless asked otherwise
            source = wd.load(values["train"]["init_from"])
            model_values = config.to_dict(source.model_cfg, source.train_cfg)["model"]
            values = config.merge(base, {"model": model_values}, requested)
        taken = ()
        if values["train"].get("train_file"):  # a corpus: steps decided once it is read
            values, taken = corpus_defaults.before_data(values, named)
        elif not values["train"].get("steps"):
            task = values["train"].get("task", config.TrainConfig.task)
            values["train"]["steps"] = recommended_steps(task)
        config.build(values)  # validates
        return Plan(values, corpus_defaults=taken)
    run = wd.load(workdir)  # the workdir opened once: its config, vocabularies, checkpoints
    stored = config.to_dict(run.model_cfg, run.train_cfg, run.decode_cfg)
    changes = []
    for section, values in requested.items():
        for name, value in values.items():
            old = stored[section][name]
            if old == value:
                continue
            if section == "train" and name == "steps" and stored["train"]["schedule"] == "cosine":
                changes.append((name, old, value))  # the cosine decay stretches: announce it
                continue
            if section == "decode":  # how the run decodes: free to change, and recorded
                changes.append((f"decode.{name}", old, value))
                continue
            if section == "train" and name in config.RESUMABLE:
                continue
            if section == "train" and name in ("train_file", "valid_file"):
                _check_moved(workdir, run, name, old, value)
                changes.append((name, old, value))  # the same data, from a new place
                continue
            if section == "train" and name in config.TUNABLE:
                if name == "clip_norm" and (old == 0) != (value == 0):
                    raise ConfigError(
                        f"{workdir} was trained with clip_norm={old}: clipping "
                        "cannot be switched on or off on resume (the optimizer "
                        "state differs); change its value instead"
                    )
                changes.append((name, old, value))
                continue
            raise ConfigError(
                f"{workdir} holds a run with {section}.{name}={old!r}, not {value!r}: use a "
                "new --workdir, or drop that setting to resume"
            )
    values = config.merge(stored, {s: requested.get(s, {}) for s in ("train", "decode")})
    config.build(values)  # validates
    done, asked = latest, requested.get("train", {}).get("steps")
    if asked is not None and done is not None and asked < done:
        raise ConfigError(
            f"{workdir} has trained {done} steps already: steps={asked} would undo nothing; ask "
            f"for more than {done} to train on, or use another --workdir"
        )
    return Plan(values, stored=run, changes=tuple(changes))


def _check_moved(workdir, run: wd.Run, name: str, old: str, new: str) -> None:
    """A resumed run may read its data from a new place when the files hold the same bytes."""
    split = name.removesuffix("_file")
    recorded = run.data.get(split)
    if recorded is None:
        raise ConfigError(
            f"{workdir} was trained on {old} (its config.json records no checksums to "
            f"recognise a copy by): give that path, or train a new --workdir on {new}"
        )
    if not data_files.same_content(new, recorded):
        raise ConfigError(
            f"{new} is not the data {workdir} was trained on ({old}: size or SHA-256 differ): "
            "resume with the same data, or train a new --workdir"
        )


def _check_data(run: wd.Run, train_cfg: config.TrainConfig, data: dict | None = None) -> None:
    """The files a resumed run reads are there (without `data`) and, given their description
    (`data_files.describe_run`), hold what the run started with."""
    for split in ("train", "valid"):
        spec, recorded = getattr(train_cfg, f"{split}_file"), run.data.get(split)
        if not spec:
            continue
        if data is None and (gone := data_files.missing(spec)):
            raise DataError(
                f"{run.path} was trained on {spec}, but {', '.join(gone)} is gone: give the "
                f"same data's new place (--train NEW --valid NEW; recognised by size and SHA-256)"
            )
        if data is not None and recorded is not None and data_files.differ(data[split], recorded):
            raise DataError(
                f"{spec} has changed since {run.path} started on it (size or SHA-256 differ "
                f"from its config.json): restore the file, or train a new --workdir"
            )


def _stored_values(workdir) -> dict:
    return config.to_dict(*config.build(wd.load_json_config(workdir)))


def _checkpoint_steps(workdir) -> tuple[int | None, int | None]:
    """The latest and the best saved steps (None: none), read once (nothing is restored, so
    config.json need not be read for the digest policy)."""
    ckpts = wd.checkpoints(workdir, require_digests=False)
    try:
        return ckpts.latest_step(), ckpts.best_step()
    finally:
        ckpts.close()


def absolute_paths(requested: dict[str, dict]) -> dict[str, dict]:
    """Data paths made absolute, relative to the current directory (once, here)."""
    train_values = dict(requested.get("train", {}))
    for name in ("train_file", "valid_file", "test_file"):
        if train_values.get(name):
            files = corpus_files(os.path.expanduser(train_values[name]))
            train_values[name] = ",".join(os.path.abspath(f) for f in files)
    for name in ("src_vocab_file", "tgt_vocab_file"):
        if train_values.get(name):
            train_values[name] = os.path.abspath(os.path.expanduser(train_values[name]))
    if train_values.get("init_from"):
        train_values["init_from"] = str(wd.resolve(train_values["init_from"]))
    return {**requested, "train": train_values}


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A run's configuration and data, read and checked; nothing written yet."""

    plan: Plan
    model_cfg: model.Seq2SeqConfig
    train_cfg: config.TrainConfig
    decode_cfg: config.DecodeConfig
    task: Task
    src_vocab: Vocab
    tgt_vocab: Vocab
    examples: TokenStore  # the training pairs, encoded (memory-mapped for prepared data)
    data: dict  # each data file's size and SHA-256 (`data_files.describe_run`)
    notes: list[str]  # what was chosen, skipped or dropped, for the run's log
    init_params: object = None  # fine-tuning: the parameters to start from (`init_from`)


def prepare(plan: Plan) -> Prepared:
    """Reads the data, builds (or reloads) the vocabularies and encodes the training pairs.

    Raises:
      DataError: unreadable data, or more than `max_dropped` of a corpus's training pairs too
        long (a built-in task only reports those it drops).
    """
    model_cfg, train_cfg, decode_cfg = config.build(plan.values)
    if plan.resume:
        _check_data(plan.stored, train_cfg)  # there: else a message, not "no such file"
    task = load_task_data(train_cfg)
    data = data_files.describe_run(train_cfg)  # each file hashed once: checked, then recorded
    if plan.resume:
        _check_data(plan.stored, train_cfg, data)
    config.best_metric(train_cfg, task)  # one the evaluations compute
    notes = []
    init_params = None
    prepared = bool(train_cfg.train_file) and is_prepared(train_cfg.train_file)
    if plan.resume:
        src_vocab, tgt_vocab = plan.stored.src_vocab, plan.stored.tgt_vocab
    elif train_cfg.init_from:
        if prepared:
            raise ConfigError(
                "init_from takes its source's vocabularies, but prepared data is encoded with "
                "its own: fine-tune on the text files instead"
            )
        train_cfg, src_vocab, tgt_vocab, init_params, note = _start_from(train_cfg, model_cfg)
        notes.append(note)
    else:
        if prepared:
            src_vocab, tgt_vocab, train_cfg = prepared_vocabularies(train_cfg)
        else:
            sides = survey_pairs(task.splits["train"])
            train_cfg, notes = choose_kinds(sides, train_cfg)
            kinds = (task.src_kind, task.tgt_kind)
            src_vocab, tgt_vocab = build_vocabs(sides, train_cfg, kinds)
        if train_cfg.src_vocab_file or train_cfg.tgt_vocab_file:  # the kinds the files hold
            kinds = dict(src_vocab_kind=src_vocab.kind, tgt_vocab_kind=tgt_vocab.kind)
            train_cfg = dataclasses.replace(train_cfg, **kinds)
        model_cfg = model_cfg.replace(src_vocab=len(src_vocab), tgt_vocab=len(tgt_vocab))
        if _by_bleu(train_cfg, task, tgt_vocab):
            train_cfg = dataclasses.replace(train_cfg, best_metric="bleu")  # recorded
            notes.append(
                "the best checkpoint: the one of highest validation BLEU (the targets are "
                "sentences; --set best_metric=loss to choose by the loss)"
            )
    if prepared:
        store = open_store(train_cfg.train_file)
        examples, dropped = within_limits(store, train_cfg)
        lengths = store.src_len, store.tgt_len + 1
    else:
        pairs = task.splits["train"]
        examples, dropped = encode_pairs(
            pairs,
            src_vocab,
            tgt_vocab,
            max_src_len=train_cfg.max_src_len,
            max_tgt_len=train_cfg.max_tgt_len,
        )
        examples = TokenStore.from_examples(examples)  # once: the loop batches from it
        lengths = None
        if dropped > train_cfg.max_dropped * len(pairs):
            lengths = (
                [len(src_vocab.encode(p[0])) for p in pairs],
                [
                    len(tgt_vocab.encode(p[1])) + 1
                    for p in pairs  # </s> counts
                ],
            )
    n_pairs = len(examples) + dropped
    if not len(examples):
        raise DataError(
            f"none of the {n_pairs} training pairs fits max_src_len={train_cfg.max_src_len} "
            f"/ max_tgt_len={train_cfg.max_tgt_len}: raise them (--set max_src_len=...)"
        )
    if train_cfg.train_file and dropped > train_cfg.max_dropped * n_pairs:
        kinds = src_vocab.kind, tgt_vocab.kind
        raise DataError(_too_long_message(*lengths, dropped, kinds, train_cfg))
    files = {"train": train_cfg.train_file, "valid": train_cfg.valid_file}
    files["test"] = train_cfg.test_file
    for split, lines in task.skipped.items():
        notes.append(
            f"skipped {len(lines)} {split} pair(s) with an empty side: line(s) "
            f"{line_list(lines)} of {files[split]}"
        )
    if dropped:
        notes.append(
            f"dropped {dropped} of {n_pairs} training pairs longer than max_src_len="
            f"{train_cfg.max_src_len} / max_tgt_len={train_cfg.max_tgt_len} tokens"
        )
    per_epoch = _batches_per_epoch(examples, train_cfg)
    if not train_cfg.steps:  # a new run on a corpus: its size decides
        train_cfg = dataclasses.replace(train_cfg, steps=corpus_defaults.steps(per_epoch))
    taken = plan.corpus_defaults
    if note := corpus_defaults.note(taken, model_cfg, train_cfg, decode_cfg, per_epoch):
        notes.append(note)
    return Prepared(
        plan,
        model_cfg,
        train_cfg,
        decode_cfg,
        task,
        src_vocab,
        tgt_vocab,
        examples,
        data,
        notes,
        init_params,
    )


def _batches_per_epoch(examples: TokenStore, train_cfg: config.TrainConfig) -> float:
    """Batches in a pass over the training pairs (with `batch_tokens`, in the first epoch's
    plan: the count varies a little from epoch to epoch)."""
    if not train_cfg.batch_tokens:
        return len(examples) / train_cfg.batch_size
    plan = token_epoch_order(
        examples,
        batch_tokens=train_cfg.batch_tokens,
        row_unit=jax.device_count() * train_cfg.accumulate,
        src_buckets=train_cfg.src_buckets(),
        tgt_buckets=train_cfg.tgt_buckets(),
        seed=train_cfg.seed,
        epoch=0,
    )
    return len(plan)


def _by_bleu(train_cfg: config.TrainConfig, task: Task, tgt_vocab: Vocab) -> bool:
    """Whether a new run on sentences chooses its best checkpoint by BLEU rather than the loss:
    the validation loss bottoms out long before BLEU does (on 3,000 Multi30k pairs the loss
    chose step 400, at validation BLEU 10.8, against 17.0 at step 1,200)."""
    metrics = train_cfg.metric_names() or task.metrics
    sentences = train_cfg.train_file and tgt_vocab.kind == "sentencepiece"
    return bool(sentences) and not train_cfg.best_metric and "bleu" in metrics


def _start_from(train_cfg: config.TrainConfig, model_cfg: model.Seq2SeqConfig) -> tuple:
    """Fine-tuning: the vocabularies and best parameters of the `init_from` workdir, checked to
    fit this run's model; its vocabulary kinds recorded in the returned configuration."""
    source = wd.load(train_cfg.init_from)
    want = jax.eval_shape(lambda: model.init(model_cfg, key=jax.random.key(0)))
    have = jax.eval_shape(lambda: model.init(source.model_cfg, key=jax.random.key(0)))
    if jax.tree.structure(want) != jax.tree.structure(have) or any(
        a.shape != b.shape for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(have))
    ):
        theirs = dataclasses.asdict(source.model_cfg)
        differ = [
            f"{k}={v!r} (it has {theirs[k]!r})"
            for k, v in dataclasses.asdict(model_cfg).items()
            if theirs[k] != v
        ]
        raise ConfigError(
            f"init_from={train_cfg.init_from}: its parameters do not fit this model: "
            f"{', '.join(differ)}; drop those settings to fine-tune its model"
        )
    lines = []
    params, _ = wd.restore_params(source, which="best", log=lines.append)
    kinds = dict(src_vocab_kind=source.src_vocab.kind, tgt_vocab_kind=source.tgt_vocab.kind)
    note = f"starting from the parameters and vocabularies of {lines[-1]}"
    return dataclasses.replace(train_cfg, **kinds), source.src_vocab, source.tgt_vocab, params, note


def _too_long_message(src_lens, tgt_lens, dropped: int, kinds, train_cfg) -> str:
    """Refusing a corpus whose pairs are too long too often: the limits that would keep 99%
    (`src_lens`, `tgt_lens`: each pair's, the target's with its `</s>`)."""
    at99 = lambda lens: int(np.sort(lens)[min(len(lens) - 1, int(0.99 * len(lens)))])
    n = len(src_lens)
    return (
        f"{dropped} of {n} training pairs ({dropped / n:.1%}) are longer than "
        f"max_src_len={train_cfg.max_src_len} / max_tgt_len={train_cfg.max_tgt_len} tokens "
        f"({kinds[0]} / {kinds[1]}), more than max_dropped="
        f"{train_cfg.max_dropped:g} allows: --set max_src_len={at99(src_lens)} --set "
        f"max_tgt_len={at99(tgt_lens)} keeps 99% of each side (or --set max_dropped=1 drops "
        "them all)"
    )
