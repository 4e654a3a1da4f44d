"""Small character-level diagnostics: copy, reverse or sort a random string over a..j, and
add two numbers. Each builder is deterministic given its seed and sizes."""

from __future__ import annotations

import random
from collections.abc import Callable

from s2s_jax.data.task import SPLITS, Task, check_sizes, draw_unique, hold_out

DESCRIPTIONS = {
    "copy": "diagnostic: copy a string over a..j, length 1..20",
    "reverse": "diagnostic: reverse a string over a..j",
    "sort": "diagnostic: sort the characters of a string over a..j",
    "addition": "diagnostic: '123+45' -> '168', operands 0..999",
}

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
    check_sizes(n_train=n_train, n_valid=n_valid, n_test=n_test, max_len=max_len)
    rng = random.Random(seed)

    def draw() -> str:
        return "".join(rng.choices(_ALPHABET, k=rng.randint(1, max_len)))

    limit = sum(len(_ALPHABET) ** k for k in range(1, max_len + 1)) // 2  # stay far from full.
    sources = draw_unique(draw, n_train + n_valid + n_test, limit)
    parts = hold_out(sources, n_valid, n_test, rng)
    return Task(
        name=name,
        description=DESCRIPTIONS[name],
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
    check_sizes(n_train=n_train, n_valid=n_valid, n_test=n_test, max_operand=max_operand)
    rng = random.Random(seed)

    def draw() -> str:
        return f"{rng.randint(0, max_operand)}+{rng.randint(0, max_operand)}"

    sources = draw_unique(draw, n_train + n_valid + n_test, limit=(max_operand + 1) ** 2 // 2)
    parts = hold_out(sources, n_valid, n_test, rng)

    def pair(s: str) -> tuple[str, str]:
        a, b = s.split("+")
        return s, str(int(a) + int(b))

    return Task(
        name="addition",
        description=DESCRIPTIONS["addition"],
        src_kind="char",
        tgt_kind="char",
        metrics=("exact_match", "token_accuracy"),
        splits={s: [pair(x) for x in part] for s, part in zip(SPLITS, parts)},
    )
