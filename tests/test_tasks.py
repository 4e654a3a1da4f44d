"""Built-in tasks (determinism, disjoint splits, content) and TSV files."""

import random
import re

import pytest
from num2words import num2words

from s2s_jax.data import tasks
from s2s_jax.data.tsv import read_tsv, write_tsv
from s2s_jax.errors import DataError

SMALL = {"n_train": 400, "n_valid": 30, "n_test": 50}


def _sources(task, split):
    return [s for s, _ in task.splits[split]]


def _assert_disjoint(task):
    train, valid, test = (set(_sources(task, s)) for s in tasks.SPLITS)
    assert not train & valid and not train & test and not valid & test


@pytest.mark.parametrize("name", ["numbers-en-fr", "copy", "reverse", "sort", "addition"])
def test_generated_tasks_are_deterministic_disjoint_and_sized(name):
    a = tasks.load_task(name, seed=3, **SMALL)
    b = tasks.load_task(name, seed=3, **SMALL)
    c = tasks.load_task(name, seed=4, **SMALL)
    assert a.splits == b.splits
    assert a.splits["train"] != c.splits["train"]
    assert [len(a.splits[s]) for s in tasks.SPLITS] == [400, 30, 50]
    _assert_disjoint(a)
    for split in tasks.SPLITS:  # sources are unique within a split too
        assert len(set(_sources(a, split))) == len(a.splits[split])
    assert a.refs("test") == [[t] for _, t in a.splits["test"]]


def test_french_example():
    assert tasks.english_number_words(342) == "three hundred forty-two"
    assert tasks.number_pairs([342]) == [("three hundred forty-two", "trois cent quarante-deux")]
    assert tasks.number_pairs([0, 21_000, 1_001]) == [
        ("zero", "zéro"),
        ("twenty-one thousand", "vingt et un mille"),
        ("one thousand one", "mille un"),
    ]


def test_fast_number_words_match_num2words():
    rng = random.Random(0)
    numbers = [
        1000,
        1001,
        80_000,
        80_080,
        100_000,
        200_000,
        200_100,
        201_000,
        300_300,
        71_071,
        999_999,
    ] + [rng.randrange(1_000_000) for _ in range(300)]
    expected = [
        (num2words(n, lang="en").replace(",", "").replace(" and ", " "), num2words(n, lang="fr"))
        for n in numbers
    ]
    assert tasks.number_pairs(numbers) == expected


def test_numbers_task_content():
    task = tasks.numbers_en_fr(seed=0, n_train=2000, n_valid=100, n_test=100)
    assert (task.src_kind, task.tgt_kind) == ("word", "word")
    assert task.metrics == ("exact_match", "token_accuracy", "bleu", "chrf")
    for en, _ in task.splits["train"]:
        assert "," not in en and " and " not in en
    # 0..99 are the lexicon: never held out.
    small = {en for en, _ in tasks.number_pairs(range(100))}
    assert not small & set(_sources(task, "valid") + _sources(task, "test"))
    # Uniform number of digits (1..6) then dedup: the 10 one-digit numbers are all drawn early,
    # and 5- and 6-digit numbers (all with "thousand") are a clear majority but not everything.
    sources = set(_sources(task, "train"))
    assert {en for en, _ in tasks.number_pairs(range(10))} <= sources
    thousands = sum("thousand" in s for s in sources) / len(sources)
    assert 0.4 < thousands < 0.8


def test_addition_targets_are_sums():
    task = tasks.addition_task(seed=1, **SMALL)
    for src, tgt in task.splits["train"] + task.splits["test"]:
        a, b = src.split("+")
        assert 0 <= int(a) <= 999 and 0 <= int(b) <= 999
        assert int(tgt) == int(a) + int(b)


def test_diagnostic_targets():
    src, tgt = tasks.sort_task(seed=0, **SMALL).splits["train"][5]
    assert tgt == "".join(sorted(src))
    src, tgt = tasks.reverse_task(seed=0, **SMALL).splits["valid"][0]
    assert tgt == src[::-1]
    for src, tgt in tasks.copy_task(seed=0, **SMALL).splits["test"]:
        assert src == tgt and 1 <= len(src) <= 20 and set(src) <= set("abcdefghij")


FAKE_CMUDICT = {
    "read": [["R", "EH1", "D"], ["R", "IY1", "D"]],
    "a": [["AH0"], ["EY1"], ["AH1"]],  # AH0 and AH1 merge once stress is removed.
    "cat": [["K", "AE1", "T"]],
    "a.": [["EY1"]],  # not ^[a-z']+$: dropped
    "o'neil": [["OW0", "N", "IY1", "L"]],
}


def test_g2p_train_has_every_pronunciation_without_stress():
    task = tasks.g2p_from_dict(FAKE_CMUDICT, percent=(100, 0, 0))
    assert task.splits["train"] == [
        ("a", "AH"),
        ("a", "EY"),
        ("cat", "K AE T"),
        ("o'neil", "OW N IY L"),
        ("read", "R EH D"),
        ("read", "R IY D"),
    ]
    assert task.splits["valid"] == task.splits["test"] == []


def test_g2p_eval_has_one_pair_per_word_with_all_references():
    task = tasks.g2p_from_dict(FAKE_CMUDICT, percent=(0, 100, 0))
    assert task.splits["valid"] == [
        ("a", "AH"),
        ("cat", "K AE T"),
        ("o'neil", "OW N IY L"),
        ("read", "R EH D"),
    ]
    assert task.refs("valid") == [["AH", "EY"], ["K AE T"], ["OW N IY L"], ["R EH D", "R IY D"]]
    assert tasks.strip_stress(["AH0", "B", "ER2"]) == "AH B ER"


def test_g2p_real_cmudict():
    task = tasks.load_task("g2p")
    _assert_disjoint(task)
    n = {s: len(set(_sources(task, s))) for s in tasks.SPLITS}
    total = sum(n.values())
    assert 0.85 < n["train"] / total < 0.95 and 0.03 < n["test"] / total < 0.07
    for split in ("valid", "test"):
        assert len(task.refs(split)) == len(task.splits[split])
        for (word, pron), refs in zip(task.splits[split], task.refs(split)):
            assert re.fullmatch(r"[a-z']+", word) and refs[0] == pron
            assert tasks.g2p_split_of(word) == split
    assert not any(re.search(r"\d", t) for _, t in task.splits["train"])
    assert any(len(r) > 1 for r in task.refs("test"))
    assert task.metrics[:2] == ("wer", "per")


def test_registry_and_errors():
    assert tasks.task_names()[0] == tasks.DEFAULT_TASK == "numbers-en-fr"
    assert [n for n, _ in tasks.describe_tasks()] == tasks.task_names()
    with pytest.raises(DataError, match="numbers-en-fr, g2p, copy"):
        tasks.load_task("nope")
    with pytest.raises(DataError, match="n_train"):
        tasks.load_task("copy", n_trian=5)
    with pytest.raises(DataError, match="fewer"):
        tasks.load_task("copy", n_train=10, n_valid=0, n_test=0, max_len=1)


# ----------------------------------------------------------------------------- TSV


def test_tsv_round_trip_skips_blank_lines(tmp_path):
    path = tmp_path / "d.tsv"
    pairs = [("trois", "three"), ("l'été", "the summer")]
    write_tsv(path, pairs)
    assert read_tsv(path) == pairs
    path.write_text("a\tb\n\n  \nc d\te f\r\n", encoding="utf-8")
    assert read_tsv(path) == [("a", "b"), ("c d", "e f")]


@pytest.mark.parametrize(
    "content,message",
    [
        ("a\tb\n\nno tab here\n", ":3: no tab between source and target"),
        ("a\tb\nx\ty\tz\n", ":2: 2 tabs"),
        ("a\tb\n\tb\n", ":2: empty source"),
    ],
)
def test_tsv_errors_give_line_numbers(tmp_path, content, message):
    path = tmp_path / "bad.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(str(path) + message)):
        read_tsv(path)


def test_tsv_missing_and_unwritable(tmp_path):
    with pytest.raises(DataError, match="no such file: .*missing.tsv"):
        read_tsv(tmp_path / "missing.tsv")
    with pytest.raises(DataError, match="tab or line break"):
        write_tsv(tmp_path / "x.tsv", [("a\tb", "c")])
