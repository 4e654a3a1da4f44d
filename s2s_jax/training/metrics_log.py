"""Where training metrics go: JSON lines and TensorBoard events (scalars, and a few decoded
validation examples as text), written as they come.

TensorBoard events are written synchronously through tensorboardX's `EventsWriter` (not its
`SummaryWriter`, whose background thread reports a full disk as tracebacks at exit): a failed
write raises here, in one line, and training stops.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import jax

from s2s_jax.errors import WriteError


def _import_tensorboardx() -> None:
    """Imports tensorboardX without torch: its writer module imports torch, when installed, only
    to accept torch tensors (we log floats); that import alone costs a second of start-up."""
    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        import tensorboardX  # noqa: F401

        return
    sys.modules["torch"] = None  # `import torch` raises ImportError, which tensorboardX expects
    try:
        import tensorboardX  # noqa: F401
    finally:
        del sys.modules["torch"]


class MetricsWriter:
    """Appends `{"step", "split", "time", **values}` lines to a JSON-lines file and the same
    scalars to TensorBoard. Only process 0 writes; elsewhere it does nothing."""

    def __init__(self, jsonl: str | Path, tensorboard_dir: str | Path, *, resume_step: int = 0):
        """`resume_step`: the step a resumed run restarts from; TensorBoard then hides the
        events an earlier attempt logged after it (they are logged again)."""
        self._enabled = jax.process_index() == 0
        self._jsonl, self._file, self._tb = Path(jsonl), None, None
        if not self._enabled:
            return
        _import_tensorboardx()
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        with self._reporting(tensorboard_dir):
            self._file = open(self._jsonl, "a", encoding="utf-8")
            Path(tensorboard_dir).mkdir(parents=True, exist_ok=True)
            self._tb = EventsWriter(str(Path(tensorboard_dir) / "events"))
            # What SummaryWriter(purge_step=...) writes: an earlier attempt's events after
            # `resume_step` (logged again now) are hidden.
            self._tb.write_event(
                Event(
                    step=resume_step + 1,
                    wall_time=time.time(),
                    session_log=SessionLog(status=SessionLog.START),
                )
            )
            self._tb.flush()

    @contextlib.contextmanager
    def _reporting(self, where):
        """Turns a failed write (a full disk) into one clear error."""
        try:
            yield
        except OSError as e:
            raise WriteError(f"cannot write the metrics in {where}: {e.strerror or e}") from None

    def write(self, step: int, split: str, values: dict) -> None:
        if not self._enabled:
            return
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import scalar

        values = {k: float(v) for k, v in values.items()}
        now = time.time()
        record = {"step": int(step), "split": split, "time": round(now, 3), **values}
        with self._reporting(self._jsonl.parent):
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
            for name, value in values.items():
                self._tb.write_event(
                    Event(wall_time=now, step=int(step), summary=scalar(f"{split}/{name}", value))
                )
            self._tb.flush()

    def write_samples(self, step: int, split: str, rows: list[tuple[str, str, str]]) -> None:
        """A few decoded examples as a TensorBoard text summary (`{split}/samples`, a markdown
        table of source, reference and hypothesis), so a run can be watched as it learns."""
        if not self._enabled or not rows:
            return
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import text

        def cell(value: str) -> str:  # markdown: a "|" would split the cell, code keeps spaces
            return "`" + value.replace("|", "\\|").replace("`", "'") + "`" if value else " "

        table = ["| source | reference | hypothesis |", "|---|---|---|"]
        table += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
        with self._reporting(self._jsonl.parent):
            event = Event(
                wall_time=time.time(),
                step=int(step),
                summary=text(f"{split}/samples", "\n".join(table)),
            )
            self._tb.write_event(event)
            self._tb.flush()

    def close(self) -> None:
        for handle in (self._file, self._tb):
            try:
                if handle is not None:
                    handle.close()
            except OSError:
                pass  # a failed write has already been reported
