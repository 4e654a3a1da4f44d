"""Corpora of different kinds and sizes on which the defaults for a user's own data are chosen.

Writes, into OUT, one folder per corpus with train.tsv, valid.tsv and test.tsv:

    m30k-3k, m30k-12k   Multi30k English→German sentences: 3,000 / 12,000 training pairs drawn
                        from its 29,000; 500 validation pairs from val; test = test_2016_flickr
    g2p-5k, g2p-30k     CMUdict words → ARPAbet phonemes: 5,000 / 30,000 training words of the
                        CNTK split's training part; 1,000 validation words held out of it; test =
                        2,000 words of its test part (all pronunciations of each word)

The draws use a fixed seed, so the same data gives the same corpora.

    python experiments/defaults/corpora.py --multi30k ../shared/data/multi30k \
        --cmudict ../shared/data/g2p_cmudict_split --out data/defaults
"""

from __future__ import annotations

import argparse
import gzip
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "g2p"))
from cmudict_split import read_dictionary  # noqa: E402  (the G2P study's reader)

SENTENCE_SIZES = {"m30k-3k": 3000, "m30k-12k": 12000}
WORD_SIZES = {"g2p-5k": 5000, "g2p-30k": 30000}
VALID_PAIRS, TEST_WORDS, VALID_WORDS = 500, 2000, 1000


def read_side(path: Path) -> list[str]:
    """A side's lines, a tab inside a sentence (there are a few) made a space for the TSV."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n").replace("\t", " ") for line in f]


def parallel(raw: Path, split: str) -> list[tuple[str, str]]:
    return list(zip(read_side(raw / f"{split}.en.gz"), read_side(raw / f"{split}.de.gz")))


def by_word(pairs, words) -> list[tuple[str, str]]:
    keep = set(words)
    return [p for p in pairs if p[0] in keep]


def write(folder: Path, splits: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, pairs in splits.items():
        (folder / f"{name}.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs), "utf-8")
    sizes = ", ".join(f"{name} {len(pairs)}" for name, pairs in splits.items())
    print(f"{folder}: {sizes} lines")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--multi30k", required=True, help="Multi30k's data/task1 folder")
    parser.add_argument("--cmudict", required=True, help="the folder holding the CNTK split")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    out, rng = Path(args.out), random.Random(0)
    raw = Path(args.multi30k) / "raw"
    train, valid = parallel(raw, "train"), parallel(raw, "val")
    test = parallel(raw, "test_2016_flickr")
    valid = rng.sample(valid, VALID_PAIRS)
    for name, size in SENTENCE_SIZES.items():
        write(out / name, {"train": rng.sample(train, size), "valid": valid, "test": test})
    cmudict = Path(args.cmudict)
    entries = read_dictionary(cmudict / "cmudict-0.7b.train")
    words = sorted({w for w, _ in entries})
    rng.shuffle(words)
    valid_words, rest = words[:VALID_WORDS], words[VALID_WORDS:]
    test_entries = read_dictionary(cmudict / "cmudict-0.7b.test")
    test_words = rng.sample(sorted({w for w, _ in test_entries}), TEST_WORDS)
    for name, size in WORD_SIZES.items():
        splits = {
            "train": by_word(entries, rest[:size]),
            "valid": by_word(entries, valid_words),
            "test": by_word(test_entries, test_words),
        }
        write(out / name, splits)
    return 0


if __name__ == "__main__":
    sys.exit(main())
