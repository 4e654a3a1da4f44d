"""The vocabulary kind that suits one side of a corpus, for a run that names none: characters
for single words (spellings, names, codes), words for a small closed set of space-separated
symbols (phonemes, tags), sentencepiece subwords for text in a language's words."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

SENTENCE_SHARE = 0.5  # at least this share of lines holds several words: text in words
# At most this many distinct words, each seen this many times on average: a closed set of
# symbols (CMUdict's 69 phonemes), not a language's open vocabulary.
CLOSED_SET_TYPES = 1000
CLOSED_SET_REPEATS = 20


@dataclasses.dataclass(frozen=True)
class KindChoice:
    kind: str  # "char", "word" or "sentencepiece"
    reason: str  # what in the text decided it, for the run's start line


def suggest_kind(texts: Iterable[str]) -> KindChoice:
    """The kind for a side whose training texts are `texts` (one pass, bounded memory)."""
    lines = several = tokens = 0
    types: set[str] = set()
    for text in texts:
        words = text.split()
        lines += 1
        several += len(words) > 1
        tokens += len(words)
        if len(types) <= CLOSED_SET_TYPES:  # past it the count no longer matters
            types.update(words)
    if several < SENTENCE_SHARE * max(lines, 1):
        return KindChoice("char", f"{several / max(lines, 1):.0%} of lines hold several words")
    if len(types) <= CLOSED_SET_TYPES and tokens >= CLOSED_SET_REPEATS * len(types):
        return KindChoice("word", f"{len(types)} distinct space-separated symbols")
    many = f"over {CLOSED_SET_TYPES:,}" if len(types) > CLOSED_SET_TYPES else f"{len(types):,}"
    return KindChoice("sentencepiece", f"sentences, {many} distinct words")
