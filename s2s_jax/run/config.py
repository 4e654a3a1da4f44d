"""A run's configuration: `TrainConfig`, `DecodeConfig`, experiment files and `--set key=value`
overrides (one truth for `s2s train`, the workdir's config.json and every reader of it).

An experiment is a TOML file with a `[model]` table (fields of `model.Seq2SeqConfig`), a
`[train]` table (fields of `TrainConfig`), a `[decode]` table (fields of `DecodeConfig`) and
optionally `[smoke.model]` / `[smoke.train]` / `[smoke.decode]` overrides for a tiny variant that
the tests run. Keys given with `--set` may be qualified (`model.cell=lstm`, `train.steps=100`)
or bare when the name is unique (`cell=lstm`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
import typing
from pathlib import Path

from s2s_jax.data import Task, bucket_lengths
from s2s_jax.data.task import METRICS
from s2s_jax.errors import ConfigError
from s2s_jax.nn.model import Seq2SeqConfig
from s2s_jax.run import mesh

TSV_TASK = "tsv"  # the task name of a run on --train/--valid files


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train: data, optimisation, evaluation. Defaults train the default task well."""

    task: str = "numbers-en-fr"  # a built-in task (s2s tasks); "tsv" when train_file is given
    train_file: str = ""  # TSV (source<TAB>target) or SRC,TGT line-aligned files; replaces task
    valid_file: str = ""  # pairs as train_file, to validate on (and choose the best checkpoint by)
    test_file: str = ""  # pairs as train_file, for `s2s eval --split test`
    # For files, "" chooses from the training text: char for single words, word for a closed set
    # of symbols (phonemes), sentencepiece for sentences (the start line says which and why).
    src_vocab_kind: str = ""  # char | word | sentencepiece; "" = the task's, or chosen (above)
    tgt_vocab_kind: str = ""  # as src_vocab_kind, for the targets
    vocab_size: int = 8000  # largest word vocabulary / sentencepiece size
    src_vocab_size: int = 0  # the source side's, when it differs; 0 = vocab_size
    tgt_vocab_size: int = 0  # the target side's, when it differs; 0 = vocab_size
    # An existing vocabulary instead of one built: a vocab.*.json that s2s wrote, or a
    # sentencepiece .model with <pad> <s> </s> <unk> at ids 0-3 (the kind follows the file).
    src_vocab_file: str = ""  # the source side's (with joint_vocab: both sides')
    tgt_vocab_file: str = ""  # the target side's
    joint_vocab: bool = False  # one vocabulary of both sides' texts (same kind; vocab_size)
    sp_model_type: str = "unigram"  # unigram | bpe: how sentencepiece splits words
    vocab_min_count: int = 1  # char/word vocabularies: tokens seen fewer times are <unk>
    max_src_len: int = 64  # longer training pairs are dropped (and counted); longer inputs refused
    max_tgt_len: int = 64  # counting </s>
    max_dropped: float = 0.05  # refuse to train when a larger share of a file's pairs is too long
    buckets: int = 4  # padded lengths per side: few shapes, few compilations
    # Padded lengths are multiples of this. A step's time grows with its padded length: short
    # sequences (words, G2P) train ~20% faster with 2 (and buckets = 16) than with 8.
    bucket_multiple: int = 8  # padded lengths are multiples of this
    batch_size: int = 64  # global batch, split across devices
    # Batches of a token budget instead (fairseq's --max-tokens): as many pairs as fit N padded
    # tokens (rows x the wider side), one row count per padded width, so few shapes compile.
    batch_tokens: int = 0  # N; 0: batches of batch_size pairs
    # Gradient accumulation: each device's rows run as N micro-batches one after another, their
    # gradients summed into one update: the update of the whole batch, 1/N of its activations.
    accumulate: int = 1  # N micro-batches a batch (batch_size a multiple of N x devices)
    steps: int = 0  # 0: the task's recommended number (s2s tasks); a corpus: 20 epochs, >= 2000
    seed: int = 0  # parameters, data order and dropout
    optimizer: str = "adam"  # adam | adamw
    learning_rate: float = 3e-3  # peak, after the warmup
    warmup_steps: int = 200  # linear warmup from 0
    schedule: str = "cosine"  # constant | cosine | rsqrt (after the linear warmup)
    weight_decay: float = 0.0  # adamw only
    clip_norm: float = 1.0  # clip gradients by global norm; 0 = off
    label_smoothing: float = 0.0  # eps: (1 - eps) * NLL + eps * mean -log p over the vocabulary
    eval_every: int = 400  # validate (loss + task metric) and checkpoint every N steps
    keep_checkpoints: int = 2  # the latest checkpoints kept (s2s translate --average N needs N)
    save_every: int = 0  # also checkpoint every N steps between evaluations (0: at them only)
    init_from: str = ""  # a trained workdir whose best parameters and vocabularies start this run
    eval_examples: int = 1000  # validation pairs decoded at each evaluation
    eval_beam: int = 1  # 1 = greedy
    # The validation and test metrics, comma-separated, among exact_match, token_accuracy, bleu,
    # chrf, wer and per. "": the task's (exact_match, token_accuracy, bleu, chrf for TSV data).
    metrics: str = ""  # e.g. "wer,per" (see above); "": the task's
    # The validation metric that chooses the best checkpoint and drives early stopping: one of
    # the task's metrics or "loss" (error rates and the loss are minimised, the others
    # maximised; ties go to the later step). "": exact_match for built-in tasks; for files, bleu
    # when a new run's targets are sentences (recorded in its config.json), else loss.
    best_metric: str = ""  # a task metric or "loss" (see above); "": the task's default
    patience: int = 0  # stop after this many evaluations without improvement; 0 = never
    log_every: int = 100  # steps between training log lines
    parallel: str = "auto"  # auto | shard_map | pmap | none

    def __post_init__(self):
        choices = {
            "optimizer": ("adam", "adamw"),
            "schedule": ("constant", "cosine", "rsqrt"),
            "sp_model_type": ("unigram", "bpe"),
            "parallel": mesh.MODES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, not {getattr(self, name)!r}")
        for name in (
            "max_src_len",
            "max_tgt_len",
            "buckets",
            "bucket_multiple",
            "batch_size",
            "accumulate",
            "eval_every",
            "keep_checkpoints",
            "eval_examples",
            "eval_beam",
            "log_every",
            "vocab_min_count",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.joint_vocab and (self.src_vocab_size or self.tgt_vocab_size):
            raise ConfigError(
                "joint_vocab builds one vocabulary of vocab_size; src_vocab_size and "
                "tgt_vocab_size are for separate ones"
            )
        if min(self.src_vocab_size, self.tgt_vocab_size) < 0:
            raise ConfigError("src_vocab_size and tgt_vocab_size must be >= 0 (0: vocab_size)")
        counts = ("steps", "patience", "warmup_steps", "save_every", "batch_tokens")
        if min(getattr(self, name) for name in counts) < 0:
            raise ConfigError(f"{', '.join(counts[:-1])} and {counts[-1]} must be >= 0")
        if self.batch_size % self.accumulate:
            raise ConfigError(
                f"batch_size {self.batch_size} does not split into accumulate={self.accumulate} "
                "micro-batches: make it a multiple"
            )
        if not 0.0 <= self.max_dropped <= 1.0:
            raise ConfigError(f"max_dropped must be a share in [0, 1], got {self.max_dropped}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        _non_negative(self, "learning_rate", "clip_norm", "weight_decay")
        unknown = [m for m in self.metric_names() if m not in METRICS]
        if unknown or len(set(self.metric_names())) != len(self.metric_names()):
            raise ConfigError(
                f"metrics={self.metrics!r}: give distinct names, comma-separated, among "
                f"{', '.join(METRICS)}"
            )
        if bool(self.train_file) != bool(self.valid_file):
            raise ConfigError("give both --train and --valid files, or neither")
        if self.train_file and self.task != TSV_TASK:
            # The data are the files: recorded as such, so another task is refused on resume.
            object.__setattr__(self, "task", TSV_TASK)

    def src_buckets(self) -> tuple[int, ...]:
        """The padded source lengths of training, evaluation and translation."""
        return bucket_lengths(self.max_src_len, self.buckets, self.bucket_multiple)

    def tgt_buckets(self) -> tuple[int, ...]:
        """The padded target lengths (counting `</s>`)."""
        return bucket_lengths(self.max_tgt_len, self.buckets, self.bucket_multiple)

    def metric_names(self) -> tuple[str, ...]:
        """`metrics` as a tuple of names (empty: the task's)."""
        return tuple(m.strip() for m in self.metrics.split(",") if m.strip())


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    """How a trained model decodes by default (`s2s translate`, `s2s eval`; their flags override
    it). Training's evaluations use `train.eval_beam` with the rest of this section."""

    beam: int = 1  # beam width; 1 = greedy (a run on a corpus: 5)
    alpha: float = 0.6  # beam length normalisation: scores divided by ((5 + length) / 6) ** alpha
    max_len_ratio: float = 2.0  # output cap per sentence: ratio * source length + offset
    max_len_offset: int = 10  # (see max_len_ratio)
    sentences_per_batch: int = 64  # sentences decoded together

    def __post_init__(self):
        for name in ("beam", "sentences_per_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        _non_negative(self, "alpha", "max_len_ratio", "max_len_offset")


def _non_negative(cfg, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{name} must be a number >= 0, got {value}")


SECTIONS = {"model": Seq2SeqConfig, "train": TrainConfig, "decode": DecodeConfig}
# Keys that moved to another section: still read from earlier workdirs and experiment files.
MOVED = {
    ("train", "max_len_ratio"): ("decode", "max_len_ratio"),
    ("train", "max_len_offset"): ("decode", "max_len_offset"),
}

# Train fields a resumed run may change: they neither shape the model nor order the data.
# (Every decode field may change too.)
RESUMABLE = frozenset(
    {
        "steps",
        "eval_every",
        "keep_checkpoints",
        "save_every",
        "eval_examples",
        "eval_beam",
        "metrics",
        "patience",
        "log_every",
        "parallel",
        "test_file",
        "max_dropped",
    }
)
# Optimisation settings a resumed run may change, e.g. a lower learning rate after the loss
# diverged: the run then leaves the trajectory an uninterrupted one would have taken, so each
# change is announced and recorded in the workdir's config.json ("changes").
TUNABLE = frozenset(
    {"learning_rate", "schedule", "warmup_steps", "clip_norm", "label_smoothing", "weight_decay"}
)


def field_comments(cls) -> dict[str, str]:
    """The comment on each field's line in a config class's source (`s2s config` shows it)."""
    import inspect
    import re

    comments = {}
    for line in inspect.getsource(cls).splitlines():
        match = re.match(r"\s+(\w+): [^#]+?#\s*(.+)$", line)
        if match:
            comments[match.group(1)] = match.group(2)
    return comments


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    return repr(value)  # int, float (TOML reads inf and nan too)


def to_toml(*configs) -> str:
    """`to_dict`'s values as an experiment file: a table per section, every field with its
    comment; `load_file` reads it back to the same configs (`s2s config > run.toml`)."""
    lines = ["# Every key of a run with its value (s2s config); train with --config THIS_FILE."]
    for (section, cls), cfg in zip(SECTIONS.items(), configs):
        comments = field_comments(cls)
        lines += ["", f"[{section}]"]
        for field in dataclasses.fields(cls):
            value, comment = getattr(cfg, field.name), f"  # {comments[field.name]}"
            if value is None:  # TOML has no null: left out, so that the default applies
                lines.append(f"# {field.name} = (none){comment}")
            else:
                lines.append(f"{field.name} = {_toml_value(value)}{comment}")
    return "\n".join(lines) + "\n"


def _fields(cls) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _parse(value: str, kind) -> object:
    """A `--set` string as the field's type."""
    if kind is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if kind in (int, float, str):
        return kind(value)
    return None if value.lower() in ("none", "") else value  # str | None


def resolve_key(key: str) -> tuple[str, str]:
    """`"cell"` or `"model.cell"` -> `("model", "cell")`; a clear error for unknown keys."""
    section, _, name = key.rpartition(".")
    section, name = MOVED.get((section, name), (section, name))
    owners = [s for s in SECTIONS if (not section or s == section) and name in _fields(SECTIONS[s])]
    if len(owners) == 1:
        return owners[0], name
    if len(owners) > 1:
        raise ConfigError(
            f"{key!r} is ambiguous: write {' or '.join(f'{s}.{name}' for s in owners)}"
        )
    known = [f"{s}.{n}" for s in SECTIONS for n in _fields(SECTIONS[s])]
    close = difflib.get_close_matches(key, known + [k.split(".")[1] for k in known], n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `s2s config` lists the keys"
    raise ConfigError(f"unknown config key {key!r}{hint}")


def parse_overrides(items: list[str]) -> dict[str, dict]:
    """`["cell=lstm", "train.steps=100"]` ->
    `{"model": {"cell": "lstm"}, "train": {"steps": 100}}`."""
    out: dict[str, dict] = {s: {} for s in SECTIONS}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: write key=value")
        section, name = resolve_key(key.strip())
        kind = _fields(SECTIONS[section])[name]
        try:
            out[section][name] = _parse(value.strip(), kind)
        except ValueError as e:
            raise ConfigError(f"--set {item!r}: {e}") from None
    return out


def load_file(path: str | Path, *, smoke: bool = False) -> dict[str, dict]:
    """An experiment TOML as `{"model": {...}, "train": {...}}` (smoke overrides applied)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no such config file: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    out = migrate({s: dict(data.get(s, {})) for s in SECTIONS})
    if smoke:
        out = merge(out, migrate(data.get("smoke", {})))
    unknown = set(data) - set(SECTIONS) - {"smoke"}
    if unknown:
        tables = ", ".join(f"[{s}]" for s in SECTIONS)
        raise ConfigError(f"{path}: unknown table(s) {sorted(unknown)}; use {tables}")
    for s, values in out.items():
        for name in values:
            resolve_key(f"{s}.{name}")
    return out


def migrate(values: dict) -> dict:
    """`values` with the keys of `MOVED` in their current sections (earlier workdirs and
    experiment files)."""
    out = {s: dict(values.get(s, {})) for s in SECTIONS} | {
        k: v for k, v in values.items() if k not in SECTIONS
    }
    for (old_section, name), (section, new_name) in MOVED.items():
        if name in out[old_section]:
            out[section].setdefault(new_name, out[old_section].pop(name))
    return out


def merge(*layers: dict[str, dict]) -> dict[str, dict]:
    out = {s: {} for s in SECTIONS}
    for layer in layers:
        for s in SECTIONS:
            out[s].update(layer.get(s, {}))
    return out


def build(values: dict[str, dict]) -> tuple[Seq2SeqConfig, TrainConfig, DecodeConfig]:
    """Config objects from plain values (validated by their constructors)."""
    try:
        return tuple(cls(**values.get(s, {})) for s, cls in SECTIONS.items())
    except TypeError as e:
        raise ConfigError(f"bad config: {e}") from None


def to_dict(*configs) -> dict[str, dict]:
    """`build`'s inverse: `to_dict(model_cfg, train_cfg, decode_cfg)`."""
    return {s: dataclasses.asdict(c) for s, c in zip(SECTIONS, configs)}


# The base of every `s2s train` run, under its --config file and --set values (`s2s config`
# prints them): tuned on the default task (numbers-en-fr), a bidirectional GRU encoder with
# additive attention (Bahdanau 2015). The Python dataclasses keep plain defaults of their own.
DEFAULTS: dict[str, dict] = {
    "model": {
        "cell": "gru",
        "bidirectional": True,
        "attention": "bahdanau",
        "context": "init",
        "src_embed": 64,
        "tgt_embed": 64,
        "enc_hidden": 128,
        "dec_hidden": 256,
        "attn_dim": 128,
    },
    "train": {},
    "decode": {},
}


def best_metric(train_cfg: TrainConfig, task: Task | None = None) -> str:
    """The metric that chooses the best checkpoint (see `TrainConfig.best_metric`); with
    `task`, checked to be one the run's evaluations compute."""
    name = train_cfg.best_metric or ("loss" if train_cfg.train_file else "exact_match")
    if task is not None and name not in (*task.metrics, "loss"):
        raise ConfigError(
            f"best_metric={name!r} is not computed for task {task.name}: use one of "
            f"{', '.join((*task.metrics, 'loss'))}"
        )
    return name
