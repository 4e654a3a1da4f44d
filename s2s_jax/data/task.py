"""A task: parallel data in train/valid/test splits, with its vocabulary kinds and metrics; and
the helpers that generated tasks split their data with (disjoint by source)."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Hashable, Sequence

from s2s_jax.errors import DataError

SPLITS = ("train", "valid", "test")
# The metrics an evaluation can compute (s2s_jax.inference.metrics), a task's `metrics` among them.
METRICS = ("exact_match", "token_accuracy", "bleu", "chrf", "wer", "per")
DEFAULT_TASK = "numbers-en-fr"

Pairs = list[tuple[str, str]]


@dataclasses.dataclass(frozen=True)
class Task:
    """A dataset with its vocabulary kinds and evaluation metrics.

    Attributes:
      name: registry name.
      description: one line for `s2s tasks`.
      src_kind: vocabulary kind of the sources ("char", "word" or "sentencepiece").
      tgt_kind: vocabulary kind of the targets.
      metrics: names understood by `s2s_jax.inference.metrics.compute_metrics`.
      splits: "train", "valid", "test" -> list of (source, target) pairs.
      references: per split, all acceptable targets of each pair's source (same order and
        length as `splits[split]`), for multi-reference tasks; None (or a missing split) means
        the pair's target is the only reference.
      skipped: per split read from files, the line numbers of pairs skipped for an empty side.
    """

    name: str
    description: str
    src_kind: str
    tgt_kind: str
    metrics: tuple[str, ...]
    splits: dict[str, Pairs] = dataclasses.field(repr=False)
    references: dict[str, list[list[str]]] | None = dataclasses.field(default=None, repr=False)
    skipped: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict, repr=False)

    def refs(self, split: str) -> list[list[str]]:
        """All acceptable targets of each pair of `split`."""
        if split not in self.splits:
            raise DataError(
                f"task {self.name} has no split {split!r}; use one of: {', '.join(self.splits)}"
            )
        if self.references is not None and split in self.references:
            return self.references[split]
        return [[tgt] for _, tgt in self.splits[split]]


# --------------------------------------------------------------------------------- splitting


def draw_unique(draw: Callable[[], Hashable], total: int, limit: int) -> list:
    """Calls `draw` until `total` distinct values; keeps first-draw order."""
    if total > limit:
        raise DataError(
            f"asked for {total} distinct examples, at most {limit} can be drawn; ask for fewer"
        )
    seen: dict = {}
    while len(seen) < total:
        seen.setdefault(draw(), None)
    return list(seen)


def hold_out(
    items: Sequence,
    n_valid: int,
    n_test: int,
    rng: random.Random,
    eligible: Callable = lambda x: True,
) -> tuple[list, list, list]:
    """Random disjoint valid/test subsets of the eligible items; the rest (in order) is train."""
    candidates = [i for i, x in enumerate(items) if eligible(x)]
    if n_valid + n_test > len(candidates):
        raise DataError(
            f"only {len(candidates)} items can be held out, asked for "
            f"{n_valid + n_test}; ask for fewer valid/test examples"
        )
    held = rng.sample(candidates, n_valid + n_test)
    held_set = set(held)
    train = [x for i, x in enumerate(items) if i not in held_set]
    return train, [items[i] for i in held[:n_valid]], [items[i] for i in held[n_valid:]]


def check_sizes(**sizes: int) -> None:
    for name, n in sizes.items():
        if not isinstance(n, int) or n < 0:
            raise DataError(f"{name}={n!r}; give a non-negative integer")
