"""The defaults of a new run on the user's own files, where they differ from the built-in tasks':
dropout, a number of steps that grows with the corpus, and beam search for translate and eval.

The built-in tasks are generated, so their training pairs never repeat and their models need no
dropout; a corpus is finite, and without dropout a model learns its training pairs by heart
(training loss far under the validation loss). The values were chosen on sentences and on
words, at several corpus sizes (`experiments/defaults/README.md`). A run's request (a config
file, `--set`) always wins, and what was chosen is recorded in its `config.json`.
"""

from __future__ import annotations

import math

DROPOUT = 0.3
EPOCHS = 20  # passes over the training pairs ...
MIN_STEPS = 2000  # ... but never fewer steps than this (small corpora)
BEAM = 5  # translate's and eval's beam width (training's evaluations stay greedy: eval_beam)


def before_data(values: dict, named: dict) -> tuple[dict, tuple[str, ...]]:
    """`values` of a new run on files with the dropout, the beam and the steps that `named`
    (the request, and a restarted run's stored values) leaves open, and the names of those
    taken. The steps are left at 0: `steps` decides them once the corpus is read.

    A fine-tuned run (`init_from`) keeps its source's model section, dropout included.
    """
    model, train = dict(values["model"]), dict(values["train"])
    decode = dict(values.get("decode", {}))
    taken = []
    if "dropout" not in named.get("model", {}) and not train.get("init_from"):
        model["dropout"] = DROPOUT
        taken.append("dropout")
    if not named.get("train", {}).get("steps"):
        train["steps"] = 0
        taken.append("steps")
    if "beam" not in named.get("decode", {}):
        decode["beam"] = BEAM
        taken.append("beam")
    return {**values, "model": model, "train": train, "decode": decode}, tuple(taken)


def steps(batches_per_epoch: float) -> int:
    """Training steps for a corpus of `batches_per_epoch` batches: `EPOCHS` passes over it, at
    least `MIN_STEPS`."""
    return max(MIN_STEPS, math.ceil(EPOCHS * batches_per_epoch))


def note(taken, model_cfg, train_cfg, decode_cfg, batches_per_epoch: float) -> str | None:
    """The start line's account of the defaults a run took (`before_data`'s names)."""
    said = {
        "dropout": f"dropout {model_cfg.dropout:g}",
        "steps": f"{train_cfg.steps:,} steps (about "
        f"{train_cfg.steps / batches_per_epoch:.0f} passes over the pairs)",
        "beam": f"beam {decode_cfg.beam} in translate and eval",
    }
    if not taken:
        return None
    return (
        f"defaults for a corpus: {', '.join(said[name] for name in taken)}; set dropout, steps "
        "or decode.beam to choose otherwise"
    )
