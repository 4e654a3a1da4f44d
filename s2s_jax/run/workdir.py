"""A run directory (workdir): self-describing, locked while trained, validated on every load.

    DIR/config.json        model and training configuration, vocabulary fingerprints, the data
                           files' sizes and checksums, and the changes made on resume (written
                           last: it marks a started run)
    DIR/vocab.src.json     source vocabulary (sentencepiece models embedded)
    DIR/vocab.tgt.json     target vocabulary
    DIR/checkpoints/       orbax checkpoints: latest/ (the last few), best/ (by valid metric),
                           digests/ (checksums), damaged/ (steps that failed verification)
    DIR/metrics.jsonl      one JSON object per log or evaluation
    DIR/tb/                TensorBoard events
    DIR/train.lock         locked by the `s2s train` that writes here (released when it ends,
                           however it ends: the lock belongs to the open file)

Paths are made absolute once, by `resolve`, at the boundary (CLI, `Translator.from_workdir`,
`loop.fit`), so nothing depends on the current directory afterwards. `load` opens a workdir
once: the `Run` it returns carries its configuration, vocabularies and path, and restores its
checkpoints (`restore_params`, `Run.checkpoints`) without reading config.json again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from s2s_jax.data import Vocab
from s2s_jax.data.vocab import SRC_VOCAB, TGT_VOCAB
from s2s_jax.errors import CheckpointError, WorkdirError, WriteError
from s2s_jax.files import write_atomically
from s2s_jax.nn import model
from s2s_jax.run import config
from s2s_jax.run.checkpoint import Checkpoints, load_json, save_json

CONFIG, CHECKPOINTS, METRICS, TENSORBOARD = "config.json", "checkpoints", "metrics.jsonl", "tb"
LOCK = "train.lock"


class WorkdirBusy(WorkdirError):
    """Another process is training in this workdir."""


@dataclasses.dataclass(frozen=True)
class Run:
    """What a workdir describes; `load` gives it with the `path` it was read from."""

    model_cfg: model.Seq2SeqConfig
    train_cfg: config.TrainConfig
    src_vocab: Vocab
    tgt_vocab: Vocab
    changes: tuple = ()  # {"step", "field", "old", "new"} for each field changed on resume
    decode_cfg: config.DecodeConfig = config.DecodeConfig()
    path: Path | None = None  # the workdir (None: a run not read from one)
    # One `provenance.provenance()` (with its "step") per start of the run, oldest first.
    started: tuple = ()
    # Written by a version that digests every step (its config names vocabulary checksums):
    # a step without a digest is then damage, not an older format.
    digests_required: bool = True
    # Each data file's path, size and SHA-256 per split (`data_files.describe_run`); {} for a
    # built-in task or a workdir of an earlier version.
    data: dict = dataclasses.field(default_factory=dict)

    def checkpoints(self, **options) -> Checkpoints:
        """The workdir's checkpoints (`options` as for `checkpoints`)."""
        if self.path is None:
            raise CheckpointError("this run was not read from a workdir: it has no checkpoints")
        return checkpoints(self.path, require_digests=self.digests_required, **options)


def resolve(path: str | os.PathLike) -> Path:
    """The absolute form of a workdir path given relative to the current directory."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def exists(path: str | Path) -> bool:
    """Whether a run has started here (its configuration is written)."""
    return (Path(path) / CONFIG).is_file()


def save(path: str | Path, run: Run, *, vocabularies: bool = True) -> None:
    """Writes the vocabularies (unless told they are there already), then the config naming
    their fingerprints (process 0 only)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if vocabularies:
        run.src_vocab.save(path / SRC_VOCAB)
        run.tgt_vocab.save(path / TGT_VOCAB)
    values = config.to_dict(run.model_cfg, run.train_cfg, run.decode_cfg)
    values["vocab"] = {
        "src_sha256": run.src_vocab.fingerprint(),
        "tgt_sha256": run.tgt_vocab.fingerprint(),
    }
    values["changes"] = list(run.changes)
    values["started"] = list(run.started)
    values["data"] = run.data
    save_json(path / CONFIG, values)


def load_json_config(path: str | Path) -> dict:
    """The workdir's config.json, with the keys of earlier versions where they are now."""
    return config.migrate(load_json(Path(path) / CONFIG))


def load(path: str | Path) -> Run:
    """Reads a workdir's config and vocabularies, and checks them against each other.

    Raises:
      CheckpointError: no run here, or files that do not belong together (a vocabulary of
        another size or content than the one the model was built with).
    """
    path = Path(path)
    if not exists(path):
        raise CheckpointError(_not_a_workdir(path))
    values = load_json_config(path)
    model_cfg, train_cfg, decode_cfg = config.build(values)
    fingerprints = values.get("vocab", {})  # absent in workdirs of earlier versions
    vocabs = []
    for side, name, size in (
        ("src", SRC_VOCAB, model_cfg.src_vocab),
        ("tgt", TGT_VOCAB, model_cfg.tgt_vocab),
    ):
        vocab = Vocab.load(path / name)
        if len(vocab) != size:
            raise CheckpointError(
                f"{path / name} has {len(vocab)} tokens but the model was built "
                f"with {size}: the file does not belong to this workdir"
            )
        want = fingerprints.get(f"{side}_sha256")
        if want is not None and vocab.fingerprint() != want:
            raise CheckpointError(
                f"{path / name} differs from the vocabulary this model was "
                f"trained with ({CONFIG} holds its checksum): restore the file"
            )
        vocabs.append(vocab)
    changes = tuple(values.get("changes", ()))
    return Run(
        model_cfg,
        train_cfg,
        *vocabs,
        changes=changes,
        decode_cfg=decode_cfg,
        path=path,
        started=tuple(values.get("started", ())),  # absent in workdirs of earlier versions
        digests_required="vocab" in values,
        data=values.get("data", {}),
    )


def _not_a_workdir(path: Path) -> str:
    """What is wrong with a path given as a workdir that holds no run, and the fix."""
    if not path.exists():
        return f"no such workdir: {path} does not exist (train one with `s2s train --workdir`)"
    if not path.is_dir():
        return f"{path} is a file, not a workdir (a folder that `s2s train --workdir` made)"
    inside = next((p for p in path.parents if exists(p)), None)
    if inside is not None:
        return f"{path} is inside the workdir {inside}: give --workdir {inside}"
    return (
        f"{path} holds no trained model (no {CONFIG}): "
        f"train first with `s2s train --workdir {path}`"
    )


def checkpoints(
    path: str | Path,
    *,
    best_mode: str = "max",
    writer: bool = False,
    max_to_keep: int = 2,
    log: Callable[[str], None] | None = None,
    require_digests: bool | None = None,
) -> Checkpoints:
    """The workdir's checkpoints; `writer` only for the process holding the lock. A workdir
    written by this version (its config names vocabulary checksums) must have a digest for
    every step: one missing is damage, not an older format (`require_digests`; None: read
    from config.json, which `Run.checkpoints` has read already)."""
    if require_digests is None:
        try:
            require_digests = "vocab" in load_json_config(path)
        except CheckpointError:
            require_digests = False
    return Checkpoints(
        Path(path) / CHECKPOINTS,
        best_mode=best_mode,
        writer=writer,
        max_to_keep=max_to_keep,
        require_digests=require_digests,
        log=log,
    )


def restore_params(
    run: Run,
    *,
    which: str = "best",
    average: int = 0,
    log: Callable[[str], None] | None = None,
) -> tuple[Any, dict]:
    """The parameters of the `which` ("best", "latest", or a kept step's number) checkpoint of
    the workdir `run` was read from (`load`), verified, and nothing
    else (inference needs no optimizer state); falls back to the latest when there is no
    usable best one, and to older steps past damaged ones.

    `average` N > 0: instead, the mean of the parameters of the N latest checkpoints (the run
    keeps `train.keep_checkpoints` of them), each verified; a damaged one is an error here.

    Returns the parameters and what was loaded: `{"checkpoint": "best" | "latest", "step": N}`
    (plus `metric`, the run's `best_metric`, and its value for a best one; `{"checkpoint":
    "average", "step": newest, "steps": [...]}` for an average); `log` gets it as one line.
    """
    path, metric = run.path, config.best_metric(run.train_cfg)
    target = {"params": jax.eval_shape(lambda: model.init(run.model_cfg, key=jax.random.key(0)))}
    ckpts = run.checkpoints(log=log)
    try:
        if average:
            return _average(path, ckpts, target, average, log)
        if str(which).isdigit():
            return _one_step(path, ckpts, target, int(which), log)
        params = ckpts.restore(target, which=which, partial=True)["params"]
        name, step = ckpts.restored
        loaded = {"checkpoint": name, "step": step}
        why = "the latest"
        if name == "best" and ckpts.best_metric() is not None:
            loaded |= {"metric": metric, "value": ckpts.best_metric()}
            why = f"the best by {loaded['metric']} ({loaded['value']:.4g})"
        if log is not None:
            log(f"{path}: step {step}, {why}")
        return params, loaded
    finally:
        ckpts.close()


def _one_step(path, ckpts: Checkpoints, target, step: int, log) -> tuple[Any, dict]:
    """The parameters of one kept step, latest or best (`restore_params`)."""
    kept = ckpts.latest_steps()
    best = ckpts.best_step()
    if step not in kept and step != best:
        raise CheckpointError(
            f"{path} keeps no step {step}: it keeps {', '.join(map(str, kept)) or 'none'}"
            + (f" and the best, {best}" if best is not None and best not in kept else "")
            + " (train.keep_checkpoints sets how many it keeps)"
        )
    which = "latest" if step in kept else "best"
    params = ckpts.restore(target, which=which, step=step, partial=True)["params"]
    if log is not None:
        log(f"{path}: step {step}, as asked")
    return params, {"checkpoint": "step", "step": step}


def _average(path, ckpts: Checkpoints, target, n: int, log) -> tuple[Any, dict]:
    """The mean of the last `n` latest checkpoints' parameters (`restore_params`)."""
    if n < 1:
        raise CheckpointError(f"average must be >= 1 checkpoints, got {n}")
    steps = ckpts.latest_steps()[-n:]
    if len(steps) < n:
        raise CheckpointError(
            f"{path} keeps {len(steps)} checkpoint(s) ({', '.join(map(str, steps)) or 'none'}), "
            f"not the {n} to average: train with --set train.keep_checkpoints={n} (a resumed "
            "run may change it), or average fewer"
        )
    total = None
    for step in steps:
        params = ckpts.restore(target, which="latest", step=step, partial=True)["params"]
        total = params if total is None else jax.tree.map(jnp.add, total, params)
    if log is not None:
        log(f"{path}: the mean of steps {', '.join(map(str, steps))}")
    mean = jax.tree.map(lambda x: x / n, total)
    return mean, {"checkpoint": "average", "step": steps[-1], "steps": steps}


@contextlib.contextmanager
def lock(path: str | Path) -> Iterator[None]:
    """Holds the workdir's training lock; `WorkdirBusy` if another process holds it.

    An advisory `flock` on DIR/train.lock: the kernel releases it when the holder exits,
    even by SIGKILL, so a crash never leaves a workdir locked. The file keeps the holder's
    pid and host for the message.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        f = open(path / LOCK, "a+b", buffering=0)  # unbuffered: a full disk fails here
    except OSError as e:
        raise WriteError(f"cannot write {path / LOCK}: {e.strerror or e}") from None
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().decode("utf-8", "replace").strip() or "another process"
            raise WorkdirBusy(
                f"{path} is being trained by {holder}: wait for it to finish or "
                "stop it, or use another --workdir"
            ) from None
        try:
            f.truncate(0)
            f.write(f"pid {os.getpid()} on {socket.gethostname()}".encode())
        except OSError as e:
            raise WriteError(f"cannot write {path / LOCK}: {e.strerror or e}") from None
        yield
    finally:
        f.close()  # releases the lock


def last_metrics(path: str | Path, split: str) -> dict:
    """The metrics of the last record of `split` in metrics.jsonl ({} if none): without its
    step, split and time, as the evaluation returned them."""
    file = Path(path) / METRICS
    last = {}
    if file.exists():
        for line in file.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash
            if record.get("split") == split:
                last = {k: v for k, v in record.items() if k not in ("step", "split", "time")}
    return last


def truncate_metrics(path: str | Path, step: int) -> None:
    """Drops the metrics.jsonl records after `step`: a resumed run logs those steps again."""
    file = Path(path) / METRICS
    if not file.exists():
        return
    lines = file.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            if int(json.loads(line)["step"]) <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            pass  # a line cut short by a crash
    if len(kept) != len(lines):
        write_atomically(file, "".join(kept))
