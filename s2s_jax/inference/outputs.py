"""What `Translator` takes and gives beside strings: sampling settings, ranked hypotheses and
alignments."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from s2s_jax.errors import DataError


class Sampling(NamedTuple):
    """How `Translator.translate` samples (`decoding.sample`)."""

    seed: int = 0
    temperature: float = 1.0
    top_k: int = 0  # 0: every token
    top_p: float = 1.0  # 1: no nucleus truncation

    def check(self, vocab_size: int) -> None:
        """`DataError` naming the first setting a target vocabulary of `vocab_size` cannot
        sample with."""
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise DataError(f"temperature must be a number > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise DataError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise DataError(f"top_k must be >= 0 (0: every token), got {self.top_k}")
        if self.top_k > vocab_size:
            raise DataError(f"top_k must be at most {vocab_size}, the target vocabulary's size")


class Hypothesis(NamedTuple):
    """One of a sentence's n best translations."""

    text: str
    log_prob: float  # log P(text </s> | source), natural log
    score: float  # the ranking key: log_prob / ((5 + length) / 6) ** alpha (GNMT), length with </s>


class Alignment(NamedTuple):
    """A translation with what it attended to (`Translator.align`)."""

    text: str
    source: list[str]  # the source's tokens, as the model read them
    target: list[str]  # the tokens written, </s> included
    weights: np.ndarray  # float32[len(target), len(source)]: each row sums to 1

    def pairs(self) -> list[tuple[int, int]]:
        """Hard alignment, as fairseq's `--print-alignment`: for each written token j (not
        </s>), (i, j) with i the source token it attended to most. 0-based."""
        if not self.source:
            return []
        return [(int(np.argmax(row)), j) for j, row in enumerate(self.weights[:-1])]


def check_search(texts, beam, n_best, sample, min_len, no_repeat_ngram, vocab_size) -> None:
    """`DataError` naming what `Translator.hypotheses` cannot do as asked."""
    if isinstance(texts, str):
        raise DataError(
            "texts is one string: pass a list of sentences (e.g. [text]); a string would be "
            "read as one sentence per character"
        )
    if sample is not None:
        if beam != 1 or n_best != 1:
            raise DataError("sampling draws one translation per input: no beam, no n-best")
        sample.check(vocab_size)
    if min_len < 0 or no_repeat_ngram < 0:
        raise DataError(
            f"min_len and no_repeat_ngram must be >= 0, got {min_len}, {no_repeat_ngram}"
        )
    if beam < 1 or not 1 <= n_best <= beam:
        raise DataError(
            f"need beam >= 1 and 1 <= n_best <= beam (got beam={beam}, n_best={n_best})"
        )
