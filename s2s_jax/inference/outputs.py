"""What `Translator` takes and gives beside strings: the decoding settings and their usable
ranges (one rule for `Translator`, `s2s translate` and `s2s serve`), sampling settings, ranked
hypotheses and alignments."""

from __future__ import annotations

import json
import numbers
from typing import NamedTuple

import numpy as np

from s2s_jax.errors import DataError


class Range(NamedTuple):
    """The values a decoding setting may take: a whole number or a real number between `low`
    and `high` (inclusive; `low` excluded when `open_low`; `high` None: no bound of its own)."""

    low: float
    high: float | None
    integer: bool
    open_low: bool = False

    def holds(self, value) -> bool:
        kind = numbers.Integral if self.integer else numbers.Real
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, kind):
            return False
        # Written so that NaN fails every comparison, and a huge int is compared exactly.
        above = self.low < value if self.open_low else self.low <= value
        return above and (self.high is None or value <= self.high)

    def describe(self) -> str:
        if self.integer:
            bounds = f">= {self.low}" if self.high is None else f"in {self.low}..{self.high}"
            return f"an integer {bounds}"
        if self.high is None:
            return f"a number {'>' if self.open_low else '>='} {self.low:g}"
        return f"a number in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}]"


# Each decoding setting's usable range, whatever the model (the model and a server may narrow
# the high ends: `check_setting`'s `high`). Why these bounds:
MAX_BEAM = 1024  # each beam width is a compilation and K times the memory of greedy search
MAX_LENGTH = 1_000_000  # tokens: beyond any output cap; min_len past a cap just meets the cap
MAX_ALPHA = 10.0  # ((5 + L) / 6) ** alpha stays finite in float32 for any L below 40,000
# Temperatures outside [1e-6, 1e6] are argmax and uniform draws already; further out, float32
# rounds 1 / temperature or log P / temperature to 0 or infinity, and the draws to nonsense.
TEMPERATURES = (1e-6, 1e6)
RANGES = {
    "beam": Range(1, MAX_BEAM, True),
    "n_best": Range(1, MAX_BEAM, True),  # and at most the beam
    "alpha": Range(0.0, MAX_ALPHA, False),
    "min_len": Range(0, MAX_LENGTH, True),
    "no_repeat_ngram": Range(0, MAX_LENGTH, True),
    "seed": Range(0, 2**32 - 1, True),  # what a PRNG key is made from
    "temperature": Range(*TEMPERATURES, False),
    "top_k": Range(0, None, True),  # at most the target vocabulary's size; 0: every token
    "top_p": Range(0.0, 1.0, False, open_low=True),  # 1: no truncation
}


def shown(value) -> str:
    """A value as a message may quote it: short, one line, whatever it is."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    if value is None or isinstance(value, (bool, str, int, float)):
        text = json.dumps(value) if isinstance(value, (str, bool)) or value is None else repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    if isinstance(value, (list, tuple)):
        return "a list"
    return "an object" if isinstance(value, dict) else f"a {type(value).__name__}"


def check_setting(name: str, value, high: float | None = None, why: str = ""):
    """`value` as the setting `name` takes it (an int or a float), or `DataError` naming its
    usable range (narrowed to `high`, `why` saying why, where the model or caller must)."""
    rule = RANGES[name]
    if high is not None and (rule.high is None or high < rule.high):
        rule = rule._replace(high=high)
    if not rule.holds(value):
        because = f" ({why})" if why else ""
        raise DataError(f"{name} must be {rule.describe()}{because}, got {shown(value)}")
    return int(value) if rule.integer else float(value)


def check_given(**settings) -> None:
    """`check_setting` for each setting given (not None): command-line flags, checked before
    a model loads."""
    for name, value in settings.items():
        if value is not None:
            check_setting(name, value)


class Sampling(NamedTuple):
    """How `Translator.translate` samples (`decoding.sample`)."""

    seed: int = 0
    temperature: float = 1.0
    top_k: int = 0  # 0: every token
    top_p: float = 1.0  # 1: no nucleus truncation

    def check(self, vocab_size: int | None = None) -> None:
        """`DataError` naming the first setting out of its usable range (`RANGES`); top_k
        at most `vocab_size`, the target vocabulary's size, when known."""
        for name, value in self._asdict().items():
            high = vocab_size if name == "top_k" else None
            check_setting(name, value, high, "the target vocabulary's size" if high else "")


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


def check_search(texts, beam, n_best, sample, min_len, no_repeat_ngram, alpha, vocab_size) -> None:
    """`DataError` naming what `Translator.hypotheses` cannot do as asked: every setting
    within its usable range (`RANGES`), n_best at most the beam, sampling without a beam."""
    if isinstance(texts, str):
        raise DataError(
            "texts is one string: pass a list of sentences (e.g. [text]); a string would be "
            "read as one sentence per character"
        )
    check_setting("beam", beam)
    check_setting("n_best", n_best, beam, "at most the beam")
    check_setting("alpha", alpha)
    check_setting("min_len", min_len)
    check_setting("no_repeat_ngram", no_repeat_ngram)
    if sample is not None:
        if beam != 1 or n_best != 1:
            raise DataError("sampling draws one translation per input: no beam, no n-best")
        sample.check(vocab_size)
