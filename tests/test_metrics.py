"""Metrics against hand-computed values."""

import math

import pytest

from s2s_jax.errors import DataError
from s2s_jax.inference import metrics


@pytest.mark.parametrize(
    "a,b,d",
    [
        ("kitten", "sitting", 3),
        ("flaw", "lawn", 2),
        ("", "abc", 3),
        ("abc", "", 3),
        ("abc", "abc", 0),
        ("ab", "ba", 2),
    ],
)
def test_per_counts_edits_per_reference_token(a, b, d):
    """Edit distances computed by hand (insertions, deletions, substitutions cost 1 each)."""
    for hyp, ref in ((a, b), (b, a)):
        expected = d / len(ref) if ref else (math.inf if d else 0.0)
        assert metrics.per([list(hyp)], [[list(ref)]]) == expected


def test_exact_match_single_and_multi_reference():
    assert metrics.exact_match(["a b", " c  d ", "e"], ["a b", "c d", "f"]) == pytest.approx(2 / 3)
    assert metrics.exact_match(["R EH D", "AH"], [["R IY D", "R EH D"], ["EY"]]) == 0.5


def test_token_accuracy_is_positional_over_reference():
    hyps = [["a", "b", "c"], [], ["x", "y", "z", "w"]]
    refs = [["a", "x", "c", "d"], ["a"], ["x", "y"]]
    # 2 of 4 + 0 of 1 + 2 of 2 (extra hypothesis tokens cost nothing) = 4 / 7
    assert metrics.token_accuracy(hyps, refs) == pytest.approx(4 / 7)


def test_wer_counts_a_word_right_if_any_reference_matches():
    hyps = ["R EH D", "K AE", "AH"]
    refs = [["R IY D", "R EH D"], ["K AE T"], ["EY", "AH"]]
    assert metrics.wer(hyps, refs) == pytest.approx(1 / 3)


def test_per_uses_the_closest_reference():
    hyps = [["R", "EH", "D"], ["K", "AE"]]
    refs = [[["R", "IY", "D"], ["R", "EH", "D"]], [["K", "AE", "T"]]]
    assert metrics.per(hyps, refs) == pytest.approx((0 + 1) / (3 + 3))
    # Tie on distance (1 each): the shorter reference is chosen, 1 / 1.
    assert metrics.per([["A"]], [[["B"], ["B", "A"]]]) == 1.0
    assert metrics.per([["A", "B", "C"]], [[[]]]) == math.inf
    assert metrics.per([[]], [[[]]]) == 0.0


def test_bleu_hand_computed():
    hyp, ref = "the cat sat on the mat", "the cat sat on a mat"
    # Same length (BP = 1); n-gram precisions 5/6, 3/5, 2/4, 1/3.
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert metrics.bleu([hyp], [ref]) == pytest.approx(expected, abs=0.01)
    assert metrics.bleu([ref, "a b c d"], [ref, "a b c d"]) == pytest.approx(100.0)


def test_bleu_of_character_targets_counts_characters_and_names_its_signature():
    """13a sees a target without spaces as one word (0 BLEU for one wrong character); "char"
    scores the characters, and the signature says which tokeniser was used."""
    hyps, refs = ["abcdefgh"], ["abcdefgx"]
    assert metrics.bleu(hyps, refs) == 0.0
    assert 70 < metrics.bleu(hyps, refs, tokenize="char") < 100
    assert "tok:char" in metrics.signature("bleu", "char")
    assert "tok:13a" in metrics.signature("bleu") and "nrefs:1" in metrics.signature("bleu")
    assert "nc:6|nw:0" in metrics.signature("chrf")  # chrF: 6 character n-grams, no words


def test_chrf_extremes():
    assert metrics.chrf(["trois cent"], ["trois cent"]) == pytest.approx(100.0)
    assert metrics.chrf(["xyz"], ["abc"]) == pytest.approx(0.0)
    assert 0 < metrics.chrf(["trois cents"], ["trois cent"]) < 100


def test_compute_metrics():
    hyps = ["R EH D", "K AE"]
    refs = ["R IY D", "K AE T"]
    multi = [["R IY D", "R EH D"], ["K AE T"]]
    out = metrics.compute_metrics(
        ("wer", "per", "exact_match", "token_accuracy"), hyps, refs, refs_multi=multi
    )
    assert out == pytest.approx(
        {"wer": 0.5, "per": 1 / 6, "exact_match": 0.5, "token_accuracy": 4 / 6}
    )
    chars = metrics.compute_metrics(["token_accuracy", "per"], ["abd"], ["abc"], tokenize=list)
    assert chars == pytest.approx({"token_accuracy": 2 / 3, "per": 1 / 3})
    assert set(metrics.compute_metrics(["bleu", "chrf"], hyps, refs)) == {"bleu", "chrf"}


def test_errors():
    with pytest.raises(DataError, match="unknown metric"):
        metrics.compute_metrics(["accuracy"], ["a"], ["a"])
    with pytest.raises(DataError, match="2 hypotheses but 1"):
        metrics.exact_match(["a", "b"], ["a"])
    with pytest.raises(DataError, match="nothing to score"):
        metrics.bleu([], [])


def test_bleu_and_chrf_take_every_reference_and_say_how_many():
    """A hypothesis equal to its second reference scores 100 against both references, as exact
    match counts it right; the signature names the references' number (`var` when it varies)."""
    hyps = ["the cat sat on the mat", "a dog runs in the park"]
    first_only = ["the cat sat on a mat", "a dog runs in the park"]
    both = [["the cat sat on a mat", "the cat sat on the mat"], ["a dog runs in the park"]]
    assert metrics.bleu(hyps, first_only) < 100.0 and metrics.chrf(hyps, first_only) < 100.0
    assert metrics.bleu(hyps, both) == pytest.approx(100.0)
    assert metrics.chrf(hyps, both) == pytest.approx(100.0)
    got = metrics.compute_metrics(["bleu", "chrf", "exact_match"], hyps, first_only, both)
    assert got == pytest.approx({"bleu": 100.0, "chrf": 100.0, "exact_match": 1.0})
    assert "nrefs:var" in metrics.signature("bleu", refs=both)
    assert "nrefs:2" in metrics.signature("chrf", refs=[["a", "b"], ["c", "d"]])
