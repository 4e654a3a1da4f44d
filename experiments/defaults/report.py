"""The table of the defaults study: for each corpus and setting that `study.sh` trained, the
number of steps, the last training loss, the best checkpoint as the run chose it (by its
`best_metric`: BLEU for sentences, the loss for G2P) with its validation loss and score, and
the test score greedy and with beam 5 (BLEU for sentences, exact match for G2P, where a word is
right when its whole pronunciation is).

    python experiments/defaults/report.py runs/defaults > experiments/defaults/results.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SCORE = {"m30k": "bleu", "g2p": "exact_match"}


def row(runs: Path, name: str) -> str | None:
    corpus, setting = name.split(".", 1)
    beams = [runs / f"{name}.beam{b}.json" for b in (1, 5)]
    if not all(p.exists() for p in beams):
        return None
    metric = SCORE[corpus.split("-")[0]]
    records = [json.loads(line) for line in (runs / name / "metrics.jsonl").open()]
    train = [r for r in records if r["split"] == "train"]
    valid = [r for r in records if r["split"] == "valid"]
    recorded = json.loads((runs / name / "config.json").read_text())["train"]["best_metric"]
    chosen_by = recorded or "loss"  # a corpus's default when its targets are not sentences
    sign = -1 if chosen_by == "loss" else 1  # the run's own choice of its best checkpoint
    best = max(valid, key=lambda r: (sign * r[chosen_by], r["step"]))
    test = [json.loads(p.read_text())[metric] for p in beams]
    scale = 100 if metric == "exact_match" else 1
    return (
        f"| {corpus} | {setting} | {train[-1]['step']:,} | {train[-1]['loss']:.3f} | "
        f"{best['loss']:.3f} | {best['step']:,} | {best[metric] * scale:.2f} | "
        f"{test[0] * scale:.2f} | {test[1] * scale:.2f} |"
    )


def main(argv=None) -> int:
    runs = Path((argv or sys.argv[1:])[0])
    names = sorted(p.name for p in runs.iterdir() if p.is_dir())
    print(
        "| corpus | setting | steps | train loss (last) | valid loss (best) | best step | "
        "valid score (best) | test greedy | test beam 5 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        if line := row(runs, name):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
