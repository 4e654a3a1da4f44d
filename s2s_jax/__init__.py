"""s2s-jax: RNN encoder-decoder (sequence-to-sequence) models in JAX.

The package is layered as the data flows (docs/architecture.md):

    s2s_jax.nn         the maths: cells, scans, attention, model, decoding (pure functions)
    s2s_jax.data       vocabularies, tasks, TSV files, batches
    s2s_jax.run        a run: config, workdir, checkpoints, its data, the device mesh, signals
    s2s_jax.training   state, step, parallel, the plan and the resumable run (loop.fit)
    s2s_jax.inference  Translator, evaluation, metrics
    s2s_jax.cli, s2s_jax.serve, s2s_jax.bench   front ends (the `s2s` command, its server)

The names below are the public API. They are imported on first use, so that `import
s2s_jax.errors` (and `s2s --help`) does not wait for JAX.
"""

from __future__ import annotations

import importlib
import importlib.metadata

try:
    __version__ = importlib.metadata.version("s2s-jax")
except importlib.metadata.PackageNotFoundError:  # a source tree that is not installed
    __version__ = "unknown"

# public name -> (module, attribute or None for the module itself)
_API = {
    # the maths
    "cells": ("s2s_jax.nn.cells", None),
    "scan": ("s2s_jax.nn.scan", None),
    "rnn": ("s2s_jax.nn.rnn", None),
    "attention": ("s2s_jax.nn.attention", None),
    "model": ("s2s_jax.nn.model", None),
    "decoding": ("s2s_jax.nn.decoding", None),
    "family": ("s2s_jax.nn.family", None),
    "Seq2SeqConfig": ("s2s_jax.nn.model", "Seq2SeqConfig"),
    # data
    "data": ("s2s_jax.data", None),
    "Vocab": ("s2s_jax.data", "Vocab"),
    "Batch": ("s2s_jax.data", "Batch"),
    "load_task": ("s2s_jax.data", "load_task"),
    # a run
    "TrainConfig": ("s2s_jax.run.config", "TrainConfig"),
    "DecodeConfig": ("s2s_jax.run.config", "DecodeConfig"),
    "Checkpoints": ("s2s_jax.run.checkpoint", "Checkpoints"),
    # training
    "TrainState": ("s2s_jax.training.state", "TrainState"),
    "train_step": ("s2s_jax.training.step", "train_step"),
    "DataParallel": ("s2s_jax.training.parallel", "DataParallel"),
    "fit": ("s2s_jax.training.loop", "fit"),
    # inference
    "Translator": ("s2s_jax.inference.translate", "Translator"),
    "Hypothesis": ("s2s_jax.inference.outputs", "Hypothesis"),
    "Sampling": ("s2s_jax.inference.outputs", "Sampling"),
    "Alignment": ("s2s_jax.inference.outputs", "Alignment"),
    "evaluate": ("s2s_jax.inference.evaluate", "evaluate"),
    "evaluate_workdir": ("s2s_jax.inference.evaluate", "evaluate_workdir"),
    # errors
    "S2SError": ("s2s_jax.errors", "S2SError"),
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 's2s_jax' has no attribute {name!r}")
    module, attribute = _API[name]
    value = importlib.import_module(module)
    return value if attribute is None else getattr(value, attribute)


def __dir__():
    return sorted(set(globals()) | set(_API))
