"""The scaling study's table (markdown, on stdout) and its log-log plot of cost against corpus
size, from `measure.py`'s records.

    python experiments/data_scale/scaling/plot.py results.jsonl scaling.png
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(argv=None) -> int:
    records_file, png = (argv or sys.argv[1:])[:2]
    records = [json.loads(line) for line in open(records_file)]
    print(
        "| pairs | from text: launch → first step | from text: peak memory | s2s prepare | "
        "prepare: pairs/s | prepare: peak memory | prepared: launch → first step | "
        "prepared: peak memory | batches: pairs/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in records:
        text = r.get("text")
        cells = [
            f"{r['pairs']:,}",
            f"{text['seconds']:.1f} s" if text else "not run",
            f"{text['peak_rss_gb']:.2f} GB" if text else "not run",
            f"{r['prepare']['seconds']:.0f} s",
            f"{r['prepare']['pairs_per_s']:,}",
            f"{r['prepare']['peak_rss_gb']:.2f} GB",
            f"{r['prepared']['seconds']:.1f} s",
            f"{r['prepared']['peak_rss_gb']:.2f} GB",
            f"{r['batch_pairs_per_s']:,}",
        ]
        print("| " + " | ".join(cells) + " |")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    pairs = [r["pairs"] for r in records]
    for ax, key, label in ((axes[0], "seconds", "launch → first step (s)"),
                           (axes[1], "peak_rss_gb", "peak memory of s2s train (GB)")):  # fmt: skip
        with_text = [r for r in records if r.get("text")]
        ax.loglog([r["pairs"] for r in with_text], [r["text"][key] for r in with_text], "o-",
                  label="from the text (TSV)")  # fmt: skip
        ax.loglog(pairs, [r["prepared"][key] for r in records], "s-", label="prepared data")
        ax.set_xlabel("training pairs")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"s2s train's start against corpus size ({records[0]['machine']})")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
