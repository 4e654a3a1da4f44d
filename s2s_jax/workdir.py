"""A training workdir: self-describing, so `translate`, `eval` and resuming need only its path.

    DIR/config.json        model and training configuration
    DIR/vocab.src.json     source vocabulary (sentencepiece models embedded)
    DIR/vocab.tgt.json     target vocabulary
    DIR/checkpoints/       orbax checkpoints: latest/ (the last few) and best/ (by valid metric)
    DIR/metrics.jsonl      one JSON object per log or evaluation
    DIR/tb/                TensorBoard events
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from s2s_jax import config, state
from s2s_jax.checkpoint import Checkpoints, load_json, save_json
from s2s_jax.data import Vocab
from s2s_jax.errors import CheckpointError
from s2s_jax.model import Seq2SeqConfig

CONFIG, CHECKPOINTS = "config.json", "checkpoints"
SRC_VOCAB, TGT_VOCAB = "vocab.src.json", "vocab.tgt.json"


@dataclasses.dataclass(frozen=True)
class Run:
    """What a workdir describes."""

    model_cfg: Seq2SeqConfig
    train_cfg: config.TrainConfig
    src_vocab: Vocab
    tgt_vocab: Vocab


def exists(path: str | Path) -> bool:
    return (Path(path) / CONFIG).is_file()


def save(path: str | Path, run: Run) -> None:
    """Writes config and vocabularies (call on process 0 only)."""
    path = Path(path)
    save_json(path / CONFIG, config.to_dict(run.model_cfg, run.train_cfg))
    run.src_vocab.save(path / SRC_VOCAB)
    run.tgt_vocab.save(path / TGT_VOCAB)


def load_json_config(path: str | Path) -> dict:
    return load_json(Path(path) / CONFIG)


def load(path: str | Path) -> Run:
    """Reads a workdir's config and vocabularies, with a clear error if it holds none."""
    path = Path(path)
    if not exists(path):
        raise CheckpointError(f"{path} holds no trained model (no {CONFIG}): "
                              f"train first with `s2s train --workdir {path}`")
    model_cfg, train_cfg = config.build(load_json_config(path))
    return Run(model_cfg, train_cfg, Vocab.load(path / SRC_VOCAB), Vocab.load(path / TGT_VOCAB))


def checkpoints(path: str | Path, *, best_mode: str = "max") -> Checkpoints:
    return Checkpoints(Path(path) / CHECKPOINTS, best_mode=best_mode)


def restore_params(path: str | Path, model_cfg: Seq2SeqConfig, train_cfg: config.TrainConfig, *,
                   which: str = "best"):
    """The parameters of the `which` ("best" or "latest") checkpoint; falls back to the latest
    when no evaluation has produced a best one yet."""
    ckpts = checkpoints(path)
    try:
        if which == "best" and ckpts.best_step() is None:
            which = "latest"
        return ckpts.restore(state.abstract_state(model_cfg, train_cfg), which=which).params
    finally:
        ckpts.close()
