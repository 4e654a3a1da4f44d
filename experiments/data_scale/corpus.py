"""Synthetic parallel corpora of any size, for measuring what the data path costs as a corpus
grows: `source<TAB>target` lines of 5-50 words drawn from a Zipfian lexicon of 20,000 made-up
words, each target the source's words translated word for word (a fixed lexicon mapping) in
reverse order. The same seed and size give the same file.

    python experiments/data_scale/corpus.py --pairs 1000000 --out data/scale/1m.tsv
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

LEXICON, CHUNK = 20_000, 100_000


def lexicon(rng: np.random.Generator) -> np.ndarray:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lengths = rng.integers(2, 10, LEXICON)
    return np.array(["".join(rng.choice(letters, n)) for n in lengths])


def write(path: str, pairs: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    words = lexicon(rng)
    translated = words[rng.permutation(LEXICON)]
    zipf = 1.0 / np.arange(1, LEXICON + 1)
    zipf /= zipf.sum()
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, pairs, CHUNK):
            n = min(CHUNK, pairs - start)
            lengths = rng.integers(5, 51, n)
            ids = rng.choice(LEXICON, lengths.sum(), p=zipf)
            ends = np.cumsum(lengths)
            lines = []
            for sentence in np.split(ids, ends[:-1]):
                source, target = " ".join(words[sentence]), " ".join(translated[sentence[::-1]])
                lines.append(f"{source}\t{target}\n")
            f.writelines(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write(args.out, args.pairs, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
