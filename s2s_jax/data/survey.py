"""One pass over a training corpus for what its vocabularies need, in memory bounded whatever
the corpus's size: for each side, the counts of its space-separated pieces (what char and word
vocabularies count) and a uniform sample of its texts (what a side's kind is chosen from and
what sentencepiece learns from)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np

from s2s_jax.data.corpus import CHUNK_PAIRS
from s2s_jax.data.sentencepiece_models import SP_SAMPLE
from s2s_jax.data.vocab import PieceCounts


@dataclasses.dataclass
class SideText:
    """What a vocabulary is built from, for one side of a corpus.

    Attributes:
      sample: every text while there are at most `size` of them, in corpus order; past that, a
        uniform sample of `size` texts (reservoir sampling, seeded: the same corpus gives the
        same sample).
      counts: the pieces of every text.
      texts: how many texts were seen.
    """

    sample: list[str] = dataclasses.field(default_factory=list)
    counts: PieceCounts = dataclasses.field(default_factory=PieceCounts)
    texts: int = 0
    size: int = SP_SAMPLE
    seed: int = 0

    def __post_init__(self):
        self._rng = np.random.default_rng(self.seed)

    def add(self, texts: Sequence[str]) -> None:
        self.counts.add(texts)
        room = max(0, self.size - len(self.sample))
        self.sample += texts[:room]
        rest = texts[room:]
        if rest:  # text number i (0-based) replaces a random one with probability size / (i+1)
            seen = self.texts + room + np.arange(1, len(rest) + 1)
            slots = self._rng.integers(0, seen)
            for i in np.flatnonzero(slots < self.size):  # in order: a later text wins its slot
                self.sample[slots[i]] = rest[i]
        self.texts += len(texts)

    def __add__(self, other: SideText) -> SideText:
        """Both sides as one (a joint vocabulary): the texts of both samples, all counts."""
        return SideText(
            self.sample + other.sample, self.counts + other.counts, self.texts + other.texts
        )


def survey(
    chunks: Iterable[Sequence[tuple[str, str]]], size: int = SP_SAMPLE
) -> tuple[SideText, SideText]:
    """Each side's `SideText`, from a corpus's pairs given chunk by chunk."""
    sides = SideText(size=size), SideText(size=size, seed=1)
    for pairs in chunks:
        for side, text in zip(sides, zip(*pairs) if pairs else ((), ())):
            side.add(list(text))
    return sides


def survey_pairs(pairs: Sequence[tuple[str, str]]) -> tuple[SideText, SideText]:
    """`survey` of pairs in memory, a corpus chunk's worth at a time."""
    step = CHUNK_PAIRS
    return survey(pairs[i : i + step] for i in range(0, len(pairs), step))
