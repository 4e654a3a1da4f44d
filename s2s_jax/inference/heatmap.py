"""Attention heatmaps: one PNG per translation, source tokens across, target tokens down
(`s2s translate --heatmap DIR`). Needs matplotlib (`pip install -e ".[plots]"`)."""

from __future__ import annotations

import os
from pathlib import Path

from s2s_jax.data.vocab import WORD_PREFIX
from s2s_jax.errors import DataError
from s2s_jax.inference.outputs import Alignment


def _label(token: str) -> str:
    return token.replace(WORD_PREFIX, "") or token  # words print without their boundary mark


def save_heatmap(alignment: Alignment, path: str | os.PathLike) -> None:
    """Writes `alignment.weights` (float32[target, source]) as a PNG heatmap at `path`."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise DataError('--heatmap needs matplotlib: pip install -e ".[plots]"') from None
    rows, cols = alignment.weights.shape
    fig, ax = plt.subplots(figsize=(1.0 + 0.35 * max(cols, 4), 1.0 + 0.35 * max(rows, 4)))
    try:
        image = ax.imshow(alignment.weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(cols), [_label(t) for t in alignment.source], rotation=90)
        ax.set_yticks(range(rows), [_label(t) for t in alignment.target])
        ax.set_xlabel("source")
        ax.set_ylabel("output")
        ax.set_title(alignment.text, fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.04)
        fig.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
