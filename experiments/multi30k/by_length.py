"""BLEU by source sentence length: where a fixed-size context C loses to attention (the book's
point), from the hypotheses `report.py` wrote.

    python experiments/multi30k/by_length.py --data DATA --pair en-de \
        --out experiments/multi30k/results/en-de attention fixed

Reads `OUT/hyps/NAME.SPLIT.txt` for each model NAME and both test sets, groups the sentences of
the two sets together by the source's length in words, and scores each group with the shared
tasks' tokenised BLEU against the distributed `.lc.norm.tok` references. Writes
`OUT/by_length.json` and `OUT/by_length.png` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

from s2s_jax.inference.shared_task_bleu import tokenized_bleu

SPLITS = ("test_2016_flickr", "test_2017_flickr")
GROUPS = ((1, 9), (10, 14), (15, 19), (20, 1000))  # source words, both ends included


def read_lines(path: Path) -> list[str]:
    if not path.is_file():
        hint = " (report.py writes it)" if path.parent.name == "hyps" else ""
        raise SystemExit(f"by_length.py: no file {path}{hint}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


def by_length(data: Path, pair: tuple[str, str], out: Path, names: list[str]) -> dict:
    """{name: [{"words": "a-b", "sentences": n, "bleu_tok": x}, ...]} over both test sets."""
    src, tgt = pair
    sources, refs, hyps = [], [], {name: [] for name in names}
    for split in SPLITS:
        sources += read_lines(data / "raw" / f"{split}.{src}.gz")
        refs += read_lines(data / "tok" / f"{split}.lc.norm.tok.{tgt}")
        for name in names:
            hyps[name] += read_lines(out / "hyps" / f"{name}.{split}.txt")
    lengths = [len(s.split()) for s in sources]
    table = {}
    for name in names:
        if len(hyps[name]) != len(sources):
            raise SystemExit(f"by_length.py: {name}: {len(hyps[name])} hypotheses, "
                             f"{len(sources)} sources")  # fmt: skip
        rows = []
        for low, high in GROUPS:
            pick = [i for i, n in enumerate(lengths) if low <= n <= high]
            score, _ = tokenized_bleu(
                [hyps[name][i] for i in pick], [[refs[i]] for i in pick], tgt, refs_tokenized=True
            )
            label = f"{low}-{high}" if high < 1000 else f"{low}+"
            rows.append({"words": label, "sentences": len(pick), "bleu_tok": round(score, 2)})
        table[name] = rows
    return table


def plot(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rows in table.items():
        ax.plot([r["words"] for r in rows], [r["bleu_tok"] for r in rows], "o-", label=name)
    ax.set(xlabel="source words (test 2016 and 2017 together)", ylabel="BLEU (tokenised)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="the dataset's data/task1")
    parser.add_argument("--pair", required=True, help="source-target languages, e.g. en-de")
    parser.add_argument("--out", required=True, type=Path, help="report.py's output folder")
    parser.add_argument("models", nargs="+", metavar="NAME", help="models report.py scored")
    args = parser.parse_args()
    try:
        import matplotlib  # noqa: F401  (checked before the scoring)
    except ImportError:
        sys.exit('by_length.py: the plots need matplotlib: pip install -e ".[plots]"')
    table = by_length(args.data, tuple(args.pair.split("-")), args.out, args.models)
    (args.out / "by_length.json").write_text(json.dumps(table, indent=1) + "\n")
    plot(table, args.out / "by_length.png")
    names = list(table)
    print("| source words | sentences | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for i, row in enumerate(table[names[0]]):
        scores = " | ".join(f"{table[n][i]['bleu_tok']:.2f}" for n in names)
        print(f"| {row['words']} | {row['sentences']} | {scores} |")


if __name__ == "__main__":
    main()
