"""Evaluation metrics over decoded strings (host side: BLEU and chrF by sacrebleu, edit
distances by rapidfuzz).

Scales: `exact_match`, `token_accuracy`, `wer` and `per` are fractions in [0, 1];
`bleu` and `chrf` are sacrebleu's corpus scores on its 0-100 scale.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

from rapidfuzz.distance import Levenshtein

from s2s_jax.data.task import METRICS  # the names live with the tasks
from s2s_jax.errors import DataError


def _check_lengths(hyps: Sequence, refs: Sequence) -> None:
    if len(hyps) != len(refs):
        raise DataError(
            f"{len(hyps)} hypotheses but {len(refs)} references; give one "
            "reference (set) per hypothesis"
        )
    if not hyps:
        raise DataError("nothing to score: no hypotheses; check the evaluation data")


def _norm(text: str) -> str:
    return " ".join(text.split())


def exact_match(hyps: Sequence[str], refs: Sequence[str | Sequence[str]]) -> float:
    """Fraction of hypotheses equal to their reference (to any, if given a list of references).

    Whitespace is normalised first (runs of whitespace = one space, ends stripped).
    """
    _check_lengths(hyps, refs)
    hits = 0
    for h, r in zip(hyps, refs):
        options = [r] if isinstance(r, str) else r
        hits += _norm(h) in {_norm(o) for o in options}
    return hits / len(hyps)


def token_accuracy(
    hyp_tokens: Sequence[Sequence[Hashable]], ref_tokens: Sequence[Sequence[Hashable]]
) -> float:
    """Position-wise accuracy over reference tokens.

    `sum_i #{j < len(ref_i): j < len(hyp_i) and hyp_i[j] == ref_i[j]} / sum_i len(ref_i)`:
    each reference position counts once; a missing hypothesis token is wrong; extra hypothesis
    tokens past the reference cost nothing here (exact_match catches them). An insertion shifts
    every later position, so this is strict: use `per`/`wer` for alignment-aware errors.
    Returns 1.0 when all references are empty.
    """
    _check_lengths(hyp_tokens, ref_tokens)
    right = sum(sum(a == b for a, b in zip(h, r)) for h, r in zip(hyp_tokens, ref_tokens))
    total = sum(len(r) for r in ref_tokens)
    return right / total if total else 1.0


def _sacrebleu(name: str, tokenize: str):
    import sacrebleu

    return sacrebleu.BLEU(tokenize=tokenize) if name == "bleu" else sacrebleu.CHRF()


def reference_streams(refs: Sequence[str | Sequence[str]]) -> list[list[str | None]]:
    """sacrebleu's layout of references: one stream per reference slot, each hypothesis's
    references (a string, or a list of them) spread over the slots, None where one has fewer."""
    multi = [[r] if isinstance(r, str) else list(r) for r in refs]
    slots = max((len(r) for r in multi), default=1)
    return [[r[i] if i < len(r) else None for r in multi] for i in range(slots)]


def bleu(hyps: Sequence[str], refs: Sequence[str | Sequence[str]], tokenize: str = "13a") -> float:
    """sacrebleu corpus BLEU, 0-100, against each hypothesis's reference or references.
    `tokenize`: sacrebleu's tokeniser, "13a" (its default, for words) or "char" (for
    character-level targets, which 13a would see as one word)."""
    _check_lengths(hyps, refs)
    metric = _sacrebleu("bleu", tokenize)
    return float(metric.corpus_score(list(hyps), reference_streams(refs)).score)


def chrf(hyps: Sequence[str], refs: Sequence[str | Sequence[str]]) -> float:
    """sacrebleu corpus chrF (character n-gram F-score, beta=2), 0-100, against each
    hypothesis's reference or references."""
    _check_lengths(hyps, refs)
    return float(_sacrebleu("chrf", "").corpus_score(list(hyps), reference_streams(refs)).score)


def signature(name: str, tokenize: str = "13a", refs: Sequence[str | Sequence[str]] = ("",)) -> str:
    """sacrebleu's signature of `bleu` or `chrf` as computed here on `refs` (their number per
    hypothesis, `nrefs`, is part of it): what a paper cites next to the score."""
    metric = _sacrebleu(name, tokenize)
    streams = reference_streams(refs)
    metric.corpus_score([""] * len(streams[0]), streams)  # sacrebleu counts references on use
    return str(metric.get_signature())


def wer(hyps: Sequence[str], refs_multi: Sequence[Sequence[str]]) -> float:
    """Word error rate in the g2p sense: fraction of words (hypotheses) that match none of
    their references. Equals `1 - exact_match(hyps, refs_multi)`; in [0, 1]."""
    return 1.0 - exact_match(hyps, refs_multi)


def per(
    hyp_tokens: Sequence[Sequence[Hashable]],
    refs_multi_tokens: Sequence[Sequence[Sequence[Hashable]]],
) -> float:
    """Phoneme (token) error rate against the closest reference.

    For each hypothesis pick the reference with the smallest edit distance (ties: the shorter
    one, which gives the larger rate, i.e. no advantage from ties); return
    `sum(distances) / sum(lengths of the chosen references)`, >= 0 (can exceed 1 with many
    insertions). Returns 0.0 if every chosen reference is empty and every hypothesis too.
    """
    _check_lengths(hyp_tokens, refs_multi_tokens)
    dist = length = 0
    for h, refs in zip(hyp_tokens, refs_multi_tokens):
        if not refs:
            raise DataError("a hypothesis has no reference; give at least one per hypothesis")
        d, n = min((Levenshtein.distance(h, r), len(r)) for r in refs)
        dist, length = dist + d, length + n
    if length == 0:
        return 0.0 if dist == 0 else float("inf")
    return dist / length


LOWER_IS_BETTER = frozenset({"wer", "per", "loss"})  # the others (and accuracy) are maximised


def direction(name: str) -> str:
    """ "min" if a smaller value of metric `name` is better (error rates, the loss), else "max"."""
    return "min" if name in LOWER_IS_BETTER else "max"


def compute_metrics(
    names: Sequence[str],
    hyps: Sequence[str],
    refs: Sequence[str],
    refs_multi: Sequence[Sequence[str]] | None = None,
    tokenize: Callable[[str], Sequence[Hashable]] = str.split,
    bleu_tokenize: str = "13a",
) -> dict[str, float]:
    """Computes the named metrics.

    Args:
      names: metric names, each one of `METRICS`.
      hyps: decoded hypotheses.
      refs: the first reference of each hypothesis (for token_accuracy).
      refs_multi: all acceptable references of each hypothesis (for every other metric);
        None means `[[r] for r in refs]`.
      tokenize: splits a string into tokens for token_accuracy and per (`str.split` for words
        or phonemes, `list` for characters).
      bleu_tokenize: sacrebleu's tokeniser for bleu ("char" for character-level targets).

    Returns:
      `{name: value}`; fractions in [0, 1] except bleu/chrf (0-100).
    """
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise DataError(f"unknown metric(s) {', '.join(unknown)}; use: {', '.join(METRICS)}")
    _check_lengths(hyps, refs)
    multi = refs_multi if refs_multi is not None else [[r] for r in refs]
    _check_lengths(hyps, multi)
    out = {}
    for name in names:
        if name == "exact_match":
            out[name] = exact_match(hyps, multi)
        elif name == "wer":
            out[name] = wer(hyps, multi)
        elif name == "token_accuracy":
            out[name] = token_accuracy([tokenize(h) for h in hyps], [tokenize(r) for r in refs])
        elif name == "per":
            out[name] = per(
                [tokenize(h) for h in hyps], [[tokenize(r) for r in rs] for rs in multi]
            )
        elif name == "bleu":
            out[name] = bleu(hyps, multi, bleu_tokenize)
        else:
            out[name] = chrf(hyps, multi)
    return out
