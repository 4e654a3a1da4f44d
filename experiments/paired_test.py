"""Is one system's error rate really lower than another's on the same examples? The paired
comparison behind "inside the noise" in experiments/g2p/README.md.

    s2s eval --workdir runs/g2p-attention --split test --output a.txt
    s2s eval --workdir runs/g2p-attention-dropout03 --split test --output b.txt
    python experiments/paired_test.py --refs data/g2p/test.tsv a.txt b.txt

An example is wrong when its hypothesis matches none of its references (a source on several
lines of the TSV has them all, as `s2s eval` counts it: the G2P word error rate). Prints each
system's error rate, the examples only one of them gets right, McNemar's exact test on those
(two-sided p), and a paired bootstrap 95% interval of the difference B - A. The hypothesis files
hold one line per distinct source, in the TSV's order: what `s2s eval --output` writes.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from scipy.stats import binomtest

from s2s_jax.data import read_tsv, with_references
from s2s_jax.inference import metrics


def wrong(hyps: list[str], refs: list[list[str]], name: str = "hypotheses") -> np.ndarray:
    """bool[N]: the examples whose hypothesis matches none of their references."""
    if len(hyps) != len(refs):
        raise SystemExit(
            f"{name} has {len(hyps)} lines but the references have {len(refs)} distinct "
            "sources: give the hypotheses `s2s eval --output` wrote for that file"
        )
    return np.array([metrics.exact_match([h], [r]) == 0.0 for h, r in zip(hyps, refs)])


def compare(wrong_a: np.ndarray, wrong_b: np.ndarray, resamples: int = 10_000, seed: int = 0):
    """Error rates, discordant counts, McNemar's exact p and the bootstrap interval of B - A."""
    n = len(wrong_a)
    only_a_right = int(np.sum(~wrong_a & wrong_b))
    only_b_right = int(np.sum(wrong_a & ~wrong_b))
    discordant = only_a_right + only_b_right
    p = binomtest(only_a_right, discordant).pvalue if discordant else 1.0
    # Resampling examples only moves the counts of the three kinds of pair (B worse, same,
    # better): a multinomial draw of them is the paired bootstrap, without an index matrix.
    counts = np.random.default_rng(seed).multinomial(
        n, [only_a_right / n, 1 - discordant / n, only_b_right / n], size=resamples
    )
    diffs = (counts[:, 0] - counts[:, 2]) / n
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {
        "examples": n,
        "error_a": float(wrong_a.mean()),
        "error_b": float(wrong_b.mean()),
        "only_a_right": only_a_right,
        "only_b_right": only_b_right,
        "mcnemar_p": float(p),
        "diff_b_minus_a": float(wrong_b.mean() - wrong_a.mean()),
        "diff_95": [float(low), float(high)],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--refs", required=True, help="the TSV the hypotheses were decoded from")
    parser.add_argument("hyps_a")
    parser.add_argument("hyps_b")
    args = parser.parse_args(argv)
    _, refs = with_references(read_tsv(args.refs))
    a, b = (
        wrong(open(path, encoding="utf-8").read().splitlines(), refs, path)
        for path in (args.hyps_a, args.hyps_b)
    )
    print(json.dumps(compare(a, b), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
