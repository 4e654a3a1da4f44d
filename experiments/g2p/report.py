"""The figures of experiments/g2p/README.md from trained workdirs: each model (or ensemble)
decoded on the test words, WER and PER overall and by word length, and the training curves, as
JSON and PNG plots in experiments/g2p/results/.

    python experiments/g2p/report.py --test data/g2p/test.tsv \
        sutskever=runs/g2p-sutskever cho=runs/g2p-cho attention=runs/g2p-attention \
        ensemble=runs/g2p-attention,runs/g2p-attention-s1,runs/g2p-attention-s2

A NAME=WORKDIR[,WORKDIR...] with several workdirs is their ensemble; `--average N` averages
each run's N latest checkpoints. With `--valid valid.tsv --average N`, each model is instead
decoded twice on the validation words, from its best checkpoint (by the run's validation
metric) and from the average of its N latest, and the option with the lower validation WER is
the one decoded on test: every choice is made on the validation words, never on test.
`--hyps DIR` keeps each model's hypotheses (DIR/NAME.test.txt, and DIR/NAME.valid.txt for the
chosen option), one per word, for `experiments/paired_test.py`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from s2s_jax import bench
from s2s_jax.data import read_tsv, with_references
from s2s_jax.errors import S2SError
from s2s_jax.inference import metrics
from s2s_jax.inference.translate import Translator

RESULTS = Path(__file__).parent / "results"
LENGTHS = ((1, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 99))  # letters, inclusive


def by_length(words, hyps, refs) -> list[dict]:
    """WER and PER of the words of each length band."""
    rows = []
    for lo, hi in LENGTHS:
        idx = [i for i, w in enumerate(words) if lo <= len(w) <= hi]
        if not idx:
            continue
        h, r = [hyps[i] for i in idx], [refs[i] for i in idx]
        rows.append({
            "letters": f"{lo}-{hi}" if hi < 99 else f"{lo}+",
            "words": len(idx),
            "wer": metrics.wer(h, r),
            "per": metrics.per([x.split() for x in h], [[y.split() for y in ys] for ys in r]),
        })  # fmt: skip
    return rows


def select_checkpoint(paths, args, valid) -> tuple[Translator, dict | None, list[str]]:
    """The model to report: with `valid` (pairs, references) and `args.average`, whichever of
    the best checkpoint and the average of the N latest has the lower validation WER (ties:
    the best checkpoint), and the figures behind the choice; else as `args.average` says. An
    ensemble's members all take the same option. The best checkpoint was itself chosen on
    these validation words (greedy), so its figure here leans low: the choice favours it.
    The third value: the chosen option's validation hypotheses (none without `valid`)."""
    if valid is None:
        return Translator.from_workdirs(paths, average=args.average), None, []
    options = {"best": 0, f"average{args.average}": args.average}
    translators, hyps, wer = {}, {}, {}
    for name, average in options.items():
        translators[name] = Translator.from_workdirs(paths, average=average)
        hyps[name] = translators[name].translate([w for w, _ in valid[0]], beam=args.beam)
        wer[name] = metrics.wer(hyps[name], valid[1])
    chosen = min(options, key=wer.get)
    selection = {"valid_words": len(valid[0]), "valid_wer": wer, "chosen": chosen}
    return translators[chosen], selection, hyps[chosen]


def training_wall_seconds(workdir, pause_s: float = 600.0) -> float:
    """The run's wall time from metrics.jsonl: the sum of the gaps between consecutive records
    (training logs and evaluations), leaving out gaps over `pause_s`, where the run was stopped
    and resumed later. On a shared machine it includes the time other jobs took."""
    lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
    times = sorted(json.loads(x)["time"] for x in lines if x.strip())
    return sum(b - a for a, b in zip(times, times[1:]) if b - a <= pause_s)


def curves(workdirs, out: Path) -> None:
    """Validation WER against the step of each run (metrics.jsonl)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, path in workdirs.items():
        records = [json.loads(x) for x in (Path(path) / "metrics.jsonl").read_text().splitlines()]
        valid = [r for r in records if r.get("split") == "valid" and "wer" in r]
        ax.plot([r["step"] for r in valid], [100 * r["wer"] for r in valid], label=name)
    ax.set(xlabel="step", ylabel="validation WER (%)", title="CMUdict G2P: validation WER")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def length_plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    colors = plt.get_cmap("tab20").colors
    for i, (name, r) in enumerate(results.items()):
        bands = [b["letters"] for b in r["by_length"]]
        # Ensembles dashed, so that the single models stay readable among them.
        style = "--" if len(r["workdirs"]) > 1 else "-"
        for ax, key in zip(axes, ("wer", "per")):
            ys = [100 * b[key] for b in r["by_length"]]
            ax.plot(bands, ys, style, marker="o", color=colors[i % 20], label=name)
    for ax, key in zip(axes, ("WER", "PER")):
        ax.set(xlabel="word length (letters)", ylabel=f"test {key} (%)")
        ax.grid(alpha=0.3)
    # One legend under both plots: inside them it hides the lines once there are many models.
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize="small", frameon=False)
    fig.suptitle("CMUdict G2P test words by length")
    fig.tight_layout(rect=(0, 0.05 + 0.045 * ((len(results) + 2) // 3), 1, 1))
    fig.savefig(out, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--test", required=True, help="test.tsv from cmudict_split.py")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--average", type=int, default=0, help="N latest checkpoints averaged")
    parser.add_argument("--valid", help="valid.tsv: choose best vs --average N on it")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--hyps", help="a folder for each model's hypotheses (paired_test.py)")
    parser.add_argument("models", nargs="+", metavar="NAME=WORKDIR[,WORKDIR...]")
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401  (checked before the decoding, which the plots follow)
    except ImportError:
        sys.exit('report.py: the plots need matplotlib: pip install -e ".[plots]"')
    if args.valid and not args.average:
        parser.error("--valid chooses between the best checkpoint and --average N: give N")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    hyps_dir = Path(args.hyps) if args.hyps else None
    if hyps_dir:
        hyps_dir.mkdir(parents=True, exist_ok=True)
    pairs, refs = with_references(read_tsv(args.test))
    words = [w for w, _ in pairs]
    valid = with_references(read_tsv(args.valid)) if args.valid else None
    machine = bench.machine(with_torch=False)
    results, singles = {}, {}
    for spec in args.models:
        name, _, paths = spec.partition("=")
        paths = paths.split(",")
        if len(paths) == 1:
            singles[name] = paths[0]
        translator, selection, valid_hyps = select_checkpoint(paths, args, valid)
        start = time.perf_counter()
        hyps = translator.translate(words, beam=args.beam)
        seconds = time.perf_counter() - start
        if hyps_dir:
            for split, lines in (("test", hyps), ("valid", valid_hyps)):
                if lines:
                    (hyps_dir / f"{name}.{split}.txt").write_text("".join(h + "\n" for h in lines))
        overall = metrics.compute_metrics(["wer", "per"], hyps, [t for _, t in pairs], refs)
        results[name] = {
            "workdirs": paths,
            "loaded": translator.loaded,
            **({"selection": selection} if selection else {}),
            "beam": args.beam,
            "test_words": len(words),
            **overall,
            "by_length": by_length(words, hyps, refs),
            "decode_seconds": round(seconds, 1),
            "training_wall_seconds": [round(training_wall_seconds(p)) for p in paths],
            "machine": machine,
        }
        (out / f"{name}.json").write_text(json.dumps(results[name], indent=1) + "\n")
        print(f"{name}: WER {100 * overall['wer']:.2f}%  PER {100 * overall['per']:.2f}%")
    if singles:
        curves(singles, out / "curves.png")
    length_plot(results, out / "by_length.png")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except S2SError as e:  # a workdir, checkpoint or file that cannot serve: one line, no trace
        sys.exit(f"report.py: {e}")
