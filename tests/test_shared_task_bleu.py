"""The shared tasks' tokenised BLEU against hand-computed values and the Moses conventions of
the distributed reference files."""

from __future__ import annotations

import math

import pytest

from s2s_jax.errors import DataError
from s2s_jax.inference.shared_task_bleu import moses_tokenize, tokenized_bleu


def test_moses_preparation_matches_the_reference_files_conventions():
    # Lines as Multi30k's raw and .lc.norm.tok files hold them (XML escapes, hyphens kept).
    raw = [
        "Ein Boston Terrier läuft über saftig-grünes Gras vor einem weißen Zaun.",
        'Ein Mann hält ein Schild, auf dem steht: "Come on now".',
    ]
    assert moses_tokenize(raw, "de") == [
        "ein boston terrier läuft über saftig-grünes gras vor einem weißen zaun .",
        "ein mann hält ein schild , auf dem steht : &quot; come on now &quot; .",
    ]
    assert moses_tokenize(["Un homme tient une guitare tandis qu'un autre l'observe."], "fr") == [
        "un homme tient une guitare tandis qu&apos; un autre l&apos; observe ."
    ]


def test_bleu_by_hand():
    """`the cat sat on the mat .` against `the cat sat on a mat .`: clipped n-gram precisions
    6/7, 4/6, 2/5, 1/4, equal lengths (no brevity penalty): BLEU = (6/7*4/6*2/5*1/4)^(1/4), as
    multi-bleu.perl computes it."""
    want = 100 * math.prod([6 / 7, 4 / 6, 2 / 5, 1 / 4]) ** 0.25  # 48.89
    score, signature = tokenized_bleu(
        ["The cat sat on the mat."], [["The cat sat on a mat."]], "en"
    )
    assert score == pytest.approx(want, abs=1e-9)
    assert "tok:none" in signature and "prep:moses-norm-lc-tok.en" in signature
    tok_refs = [["the cat sat on a mat ."]]  # the same reference, prepared already
    assert tokenized_bleu(["The cat sat on the mat."], tok_refs, "en", refs_tokenized=True)[0] == (
        pytest.approx(want, abs=1e-9)
    )
    # Case, punctuation spacing and quotes do not count; a second reference can only help.
    hyps = ["A DOG runs .", 'He says "hi" now.']
    refs = [["A dog runs."], ['He says " hi " now .']]
    assert tokenized_bleu(hyps, refs, "en")[0] == pytest.approx(100.0)
    two = [["The cat sat on a mat.", "The cat sat on the mat."]]
    assert tokenized_bleu(["The cat sat on the mat."], two, "en")[0] == pytest.approx(100.0)
    with pytest.raises(DataError, match="2 hypotheses but 1 pairs"):
        tokenized_bleu(hyps, refs[:1], "en")
