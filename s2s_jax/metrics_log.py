"""Where training metrics go: JSON lines and TensorBoard events."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax


class MetricsWriter:
    """Appends `{"step", "split", "time", **values}` lines to a JSON-lines file and the same
    scalars to TensorBoard. Only process 0 writes; elsewhere it does nothing."""

    def __init__(self, jsonl: str | Path, tensorboard_dir: str | Path, *, resume_step: int = 0):
        """`resume_step`: the step a resumed run restarts from; TensorBoard then discards the
        events an earlier attempt logged after it (they are logged again)."""
        self._enabled = jax.process_index() == 0
        self._file = self._tb = None
        if self._enabled:
            Path(jsonl).parent.mkdir(parents=True, exist_ok=True)
            self._file = open(jsonl, "a", encoding="utf-8")
            from tensorboardX import SummaryWriter  # heavy import, only where it writes

            self._tb = SummaryWriter(str(tensorboard_dir),
                                     purge_step=resume_step + 1 if resume_step else None)

    def write(self, step: int, split: str, values: dict) -> None:
        if not self._enabled:
            return
        values = {k: float(v) for k, v in values.items()}
        record = {"step": int(step), "split": split, "time": round(time.time(), 3), **values}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        for name, value in values.items():
            self._tb.add_scalar(f"{split}/{name}", value, int(step))

    def close(self) -> None:
        if self._enabled:
            self._file.close()
            self._tb.close()
