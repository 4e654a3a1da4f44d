"""The length-scaling plot of the linear cells: forward+backward time per token against T, each
cell's parallel form (solid) and step form (dashed), our GRU and LSTM layers, and the PyTorch
linear recurrences, from `s2s bench` records.

    s2s bench --only linear_scaling --jsonl experiments/results/linear_scaling_cpu.jsonl
    python experiments/linear_scaling_plot.py experiments/results/linear_scaling_cpu.jsonl \
        --out experiments/results/linear_scaling_cpu.png

Needs matplotlib (`pip install -e ".[plots]"`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_records(path: Path) -> list[dict]:
    """A JSON list (`s2s bench --json`) or JSON lines (`--jsonl`)."""
    text = path.read_text()
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def curves(records: list[dict], mode: str) -> dict[str, list[tuple[int, float]]]:
    """impl -> [(T, microseconds per token)], sorted by T, for `mode`'s linear_scaling records;
    torch's thread variants folded into its faster one at each T."""
    best: dict[tuple[str, int], float] = {}
    for r in records:
        if r["bench"] != "linear_scaling" or r["mode"] != mode:
            continue
        impl = r["impl"].removesuffix("_1thread")
        key = (impl, r["T"])
        best[key] = min(best.get(key, float("inf")), 1e6 * r["median_s"] / (r["B"] * r["T"]))
    out: dict[str, list[tuple[int, float]]] = {}
    for (impl, T), us in sorted(best.items(), key=lambda kv: kv[0][1]):
        out.setdefault(impl, []).append((T, us))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", type=Path, help="s2s bench --json or --jsonl output")
    parser.add_argument("--out", type=Path, default=Path("linear_scaling.png"))
    parser.add_argument("--mode", choices=("fwd", "fwd_bwd"), default="fwd_bwd")
    args = parser.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('needs matplotlib: pip install -e ".[plots]"', file=sys.stderr)
        return 2
    records = read_records(args.records)
    lines = curves(records, args.mode)
    if not lines:
        print(f"{args.records}: no linear_scaling records", file=sys.stderr)
        return 2
    first = next(r for r in records if r["bench"] == "linear_scaling")
    colours = {"sru": "C0", "mingru": "C1", "minlstm": "C2", "gru": "C3", "lstm": "C4"}
    fig, ax = plt.subplots(figsize=(8, 5))
    for impl, points in lines.items():
        cell = impl.split("_")[0] if not impl.startswith("torch") else impl
        style = dict(color=colours.get(cell, None), marker="o", markersize=3)
        if impl.endswith("_steps"):
            style["linestyle"] = "--"
        elif impl.endswith(("_sequential", "_associative", "_log")):
            continue  # the scans behind the parallel form: in the records, not on the plot
        elif impl.startswith("torch"):
            style["linestyle"] = ":"
        ts, us = zip(*points)
        ax.plot(ts, us, label=impl, **style)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T")
    ax.set_ylabel(f"{args.mode} time per token (µs)")
    ax.set_title(f"One layer, B={first['B']}, I=H={first['H']}: {first.get('device')}")
    ax.legend(fontsize=8, ncol=2, loc="best")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
