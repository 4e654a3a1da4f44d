"""The Multi30k figures from trained workdirs: each model (or ensemble) decoded on the validation
set and on test_2016_flickr and test_2017_flickr, scored three ways (the shared tasks' tokenised
lowercased BLEU against the distributed `.lc.norm.tok` references, sacreBLEU on the raw text,
chrF), its training curves, and attention heatmaps of test sentences.

    python experiments/multi30k/report.py --data DATA --pair en-de --average 5 \
        --out experiments/multi30k/results/en-de attention=runs/m30k-en-de

DATA is the dataset's `data/task1` folder (`raw/` and `tok/`, as github.com/multi30k/dataset
has them). A NAME=WORKDIR[,WORKDIR...] with several workdirs is their ensemble. With
`--average N`, each model is also decoded from the average of its N latest checkpoints, and the
option (best checkpoint or average) with the higher validation sacreBLEU is the one reported as
NAME: every choice is made on the validation set, never on a test set. Writes
`OUT/NAME.json`, `OUT/curves.png`, `OUT/heatmaps/*.png` and the hypotheses `OUT/hyps/*.txt`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from s2s_jax.errors import S2SError
from s2s_jax.inference.evaluate import evaluate_workdir

SPLITS = ("val", "test_2016_flickr", "test_2017_flickr")
KEEP = ("examples", "members", "beam", "alpha", "bleu_tok", "bleu", "chrf")


def score(
    workdirs: list[str],
    data: Path,
    pair: tuple[str, str],
    split: str,
    out: Path,
    *,
    average: int,
    limit: int | None = None,
) -> dict:
    src, tgt = pair
    result = evaluate_workdir(
        workdirs,
        file=f"{data}/raw/{split}.{src}.gz,{data}/raw/{split}.{tgt}.gz",
        average=average,
        limit=limit,
        output=out,
        tok_bleu=tgt,
        tok_refs=data / "tok" / f"{split}.lc.norm.tok.{tgt}",
        log=lambda _: None,
    )
    return {k: result[k] for k in (*KEEP, "bleu_signature", "bleu_tok_signature") if k in result}


def training_hours(workdir: str, rows: list[dict]):
    """A metrics record's hours of training: the wall time since the first record, less the
    time the run stood stopped (from its last record before each restart to that restart,
    which the workdir's config.json records)."""
    from datetime import datetime

    from s2s_jax.run import workdir as wd

    restarts = [
        datetime.strptime(start["time"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
        for start in wd.load(workdir).started[1:]
    ]
    stopped = []  # (restart time, seconds stood stopped before it)
    for restart in restarts:
        before = [r["time"] for r in rows if r["time"] < restart]
        if before:
            stopped.append((restart, restart - max(before)))
    first = rows[0]["time"]
    return lambda r: (r["time"] - first - sum(s for t, s in stopped if t <= r["time"])) / 3600


def curves(runs: dict[str, str], path: Path) -> None:
    """Validation sacreBLEU and loss, and the training loss, against hours of training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_bleu, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    for name, workdir in runs.items():
        rows = [json.loads(x) for x in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
        hours = training_hours(workdir, rows)
        valid = [r for r in rows if r["split"] == "valid"]
        train = [r for r in rows if r["split"] == "train"]
        ax_bleu.plot([hours(r) for r in valid], [r["bleu"] for r in valid], "o-", label=name)
        ax_loss.plot(
            [hours(r) for r in train], [r["loss"] for r in train], alpha=0.5, label=f"{name} train"
        )
        ax_loss.plot(
            [hours(r) for r in valid], [r["loss"] for r in valid], "o-", label=f"{name} valid"
        )
    ax_bleu.set(xlabel="hours of training", ylabel="validation sacreBLEU (greedy)")
    ax_loss.set(xlabel="hours of training", ylabel="loss per token", yscale="log")
    for ax in (ax_bleu, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def heatmaps(workdir: str, data: Path, src: str, out: Path, lines: list[int]) -> None:
    """Attention heatmaps of a few test_2016_flickr sentences (1-based line numbers)."""
    import gzip

    from s2s_jax.inference.heatmap import save_heatmap
    from s2s_jax.inference.translate import Translator

    sources = gzip.open(data / "raw" / f"test_2016_flickr.{src}.gz", "rt").read().splitlines()
    translator = Translator.from_workdir(workdir, log=lambda _: None)
    out.mkdir(parents=True, exist_ok=True)
    for line, alignment in zip(lines, translator.align([sources[i - 1] for i in lines])):
        save_heatmap(alignment, out / f"test_2016_flickr_{line:04d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="the dataset's data/task1")
    parser.add_argument("--pair", required=True, help="source-target languages, e.g. en-de")
    parser.add_argument("--out", required=True, type=Path, help="a folder for the results")
    parser.add_argument("--average", type=int, default=0, help="also try the N latest averaged")
    parser.add_argument("--heatmaps", default="1,2,3", help="test_2016 lines to draw (1-based)")
    parser.add_argument("--limit", type=int, help="the first N sentences of each set (a trial)")
    parser.add_argument("models", nargs="+", metavar="NAME=WORKDIR[,WORKDIR...]")
    args = parser.parse_args()
    try:
        import matplotlib  # noqa: F401  (checked before the decoding, which the plots follow)
    except ImportError:
        sys.exit('report.py: the plots need matplotlib: pip install -e ".[plots]"')
    pair = tuple(args.pair.split("-"))
    (args.out / "hyps").mkdir(parents=True, exist_ok=True)
    singles = {}
    try:
        for spec in args.models:
            name, _, dirs = spec.partition("=")
            workdirs = dirs.split(",")
            if len(workdirs) == 1:
                singles[name] = workdirs[0]
            options = [0, args.average] if args.average else [0]
            chosen, start = None, time.perf_counter()
            for average in options:
                label = f"average{average}" if average else "best"
                hyps = args.out / "hyps" / f"{name}.{label}.val.txt"
                valid = score(
                    workdirs, args.data, pair, "val", hyps, average=average, limit=args.limit
                )
                print(f"{name} {label}: validation sacreBLEU {valid['bleu']:.2f}", file=sys.stderr)
                if chosen is None or valid["bleu"] > chosen[1]["bleu"]:
                    chosen = (average, valid, label)
            average, valid, label = chosen
            result = {
                "model": name,
                "workdirs": workdirs,
                "chosen_on_validation": label,
                "val": valid,
            }
            for split in SPLITS[1:]:
                hyps = args.out / "hyps" / f"{name}.{split}.txt"
                result[split] = score(
                    workdirs, args.data, pair, split, hyps, average=average, limit=args.limit
                )
            result["decode_seconds"] = round(time.perf_counter() - start, 1)
            (args.out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
            t16, t17 = result["test_2016_flickr"], result["test_2017_flickr"]
            print(
                f"{name} ({label}): test_2016 BLEU(tok) {t16['bleu_tok']:.2f} sacreBLEU "
                f"{t16['bleu']:.2f} chrF {t16['chrf']:.2f}; test_2017 BLEU(tok) "
                f"{t17['bleu_tok']:.2f} sacreBLEU {t17['bleu']:.2f} chrF {t17['chrf']:.2f}"
            )
        if singles:
            curves(singles, args.out / "curves.png")
            first = next(iter(singles.values()))
            lines = [int(x) for x in args.heatmaps.split(",") if x]
            heatmaps(first, args.data, pair[0], args.out / "heatmaps", lines)
    except S2SError as e:
        sys.exit(f"report.py: {e}")


if __name__ == "__main__":
    main()
