"""The CMUdict G2P split behind the published results, as the TSV files `s2s train` reads.

The split is the one Microsoft CNTK ships (Examples/SequenceToSequence/CMUDict/Data/ of
github.com/microsoft/CNTK): `cmudict-0.7b.train` and `cmudict-0.7b.test`, one
`WORD  PH PH ...` line per pronunciation (a word with several pronunciations on several lines).
This script writes, into OUT:

    train.tsv  the training words but VALID_WORDS of them, one line per pronunciation
    valid.tsv  VALID_WORDS training words held out by word (all their pronunciations), drawn
               with a fixed seed: what chooses checkpoints and settings
    test.tsv   the test words, untouched: what the results page reports

each line `WORD<TAB>PH PH ...`. A word on several lines is one example with several
references, as `s2s eval` reads it.

    python experiments/g2p/cmudict_split.py --data ../shared/data/g2p_cmudict_split --out data/g2p
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
from pathlib import Path

VALID_WORDS = 2000
FILES = {  # the sha256 of the files this page's results were measured on
    "cmudict-0.7b.train": "58cba5cd56d28bcb529c85e752123b00c1f748f8163eacbe368ab844d7f8d6a6",
    "cmudict-0.7b.test": "f216624c0432a201179d22a6ef9fb7ebd25ff65342ac2a0214a0752c6b6d3550",
}


def read_dictionary(path: Path) -> list[tuple[str, str]]:
    """(word, pronunciation) per line of a `WORD  PH PH ...` file, in file order."""
    pairs = []
    for number, line in enumerate(path.read_text(encoding="latin-1").splitlines(), 1):
        if not line.strip():
            continue
        word, _, phones = line.partition("  ")
        if not word or not phones.strip():
            sys.exit(f"{path}:{number}: expected WORD, two spaces, then phonemes")
        pairs.append((word.strip(), " ".join(phones.split())))
    return pairs


def split_valid(pairs, n_words: int, seed: int = 0):
    """(train, valid): `n_words` distinct words, drawn with `seed`, and all their lines."""
    words = sorted({w for w, _ in pairs})
    held = set(random.Random(seed).sample(words, n_words))
    return [p for p in pairs if p[0] not in held], [p for p in pairs if p[0] in held]


def write_tsv(path: Path, pairs) -> None:
    path.write_text("".join(f"{w}\t{p}\n" for w, p in pairs), encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the folder holding the CNTK split")
    parser.add_argument("--out", required=True, help="where train/valid/test.tsv go")
    parser.add_argument("--valid-words", type=int, default=VALID_WORDS)
    args = parser.parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    for name, want in FILES.items():
        if not (data / name).is_file():
            sys.exit(f"{data / name} is missing: get the split from CNTK (see this file's top)")
        got = hashlib.sha256((data / name).read_bytes()).hexdigest()
        if got != want:
            print(f"warning: {name} differs from the file the results were measured on",
                  file=sys.stderr)  # fmt: skip
    train, valid = split_valid(read_dictionary(data / "cmudict-0.7b.train"), args.valid_words)
    test = read_dictionary(data / "cmudict-0.7b.test")
    out.mkdir(parents=True, exist_ok=True)
    for name, pairs in (("train", train), ("valid", valid), ("test", test)):
        write_tsv(out / f"{name}.tsv", pairs)
        words = len({w for w, _ in pairs})
        print(f"{out / name}.tsv: {len(pairs)} lines, {words} words")
    return 0


if __name__ == "__main__":
    sys.exit(main())
