"""SIGTERM to exit: how long `s2s train` takes to stop, and what it keeps, when the signal
comes while it compiles, trains, or validates. Kubernetes gives 30 s between SIGTERM and
SIGKILL (`terminationGracePeriodSeconds`), Slurm's default `KillWait` is 30 s too.

    python experiments/preemption/sigterm.py --root runs/sigterm \
        --out experiments/preemption/results

Each case starts a fresh run of the default task with a 6.0M-parameter model (512-wide encoder
and decoder), waits for its moment in the log, sends SIGTERM and times the exit. Writes
`sigterm.json` (the machine named) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

MODEL = ["--set", "enc_hidden=512", "--set", "dec_hidden=512", "--set", "attn_dim=256"]
SCHEDULE = ["--set", "eval_every=100", "--set", "log_every=25", "--set", "eval_examples=1000"]
# (case, the log line to wait for, seconds to wait after it): the step-100 log line comes just
# before that step's validation, the step-50 one in steady training.
CASES = (
    ("compiling", r"^compiling the training step", 1.0),
    ("training", r"^step 50/", 0.0),
    ("validating", r"^step 100/", 1.0),
)


def run_case(s2s: str, workdir: Path, pattern: str, delay: float, limit: float) -> dict:
    shutil.rmtree(workdir, ignore_errors=True)
    argv = [s2s, "train", "--workdir", str(workdir), "--no-progress", *MODEL, *SCHEDULE]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    lines, seen = [], threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if re.search(pattern, line):
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not seen.wait(limit):
        proc.kill()
        return {"error": f"never saw {pattern!r}", "log_tail": lines[-5:]}
    time.sleep(delay)
    sent = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = "killed"
    seconds = time.perf_counter() - sent
    reader.join(5)
    saved = next((ln for ln in reversed(lines) if "SIGTERM at step" in ln), "")
    step = re.search(r"step (\d+) is saved", saved)
    return {
        "seconds_to_exit": round(seconds, 2),
        "exit_status": rc,
        "saved_step": int(step.group(1)) if step else None,
        "last_line": lines[-1] if lines else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="runs/sigterm", help="where the workdirs go")
    parser.add_argument("--out", default="experiments/preemption/results", help="where to write")
    parser.add_argument("--limit", type=float, default=600, help="seconds a case may take")
    args = parser.parse_args()
    s2s = shutil.which("s2s", path=str(Path(sys.executable).parent)) or "s2s"
    import jax

    results = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "devices": [str(d) for d in jax.devices()],
            "jax": jax.__version__,
            "load_avg_1m": os.getloadavg()[0],
            "date": time.strftime("%Y-%m-%d"),
        },
        "command": f"s2s train {' '.join(MODEL + SCHEDULE)}",
        "cases": {},
    }
    for case, pattern, delay in CASES:
        results["cases"][case] = run_case(s2s, Path(args.root) / case, pattern, delay, args.limit)
        print(case, results["cases"][case], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sigterm.json").write_text(json.dumps(results, indent=1) + "\n")
    print("| SIGTERM while | seconds to exit | exit status | step saved |")
    print("|---|---|---|---|")
    for case, r in results["cases"].items():
        cells = [case, *(r.get(k) for k in ("seconds_to_exit", "exit_status", "saved_step"))]
        print("| " + " | ".join(map(str, cells)) + " |")


if __name__ == "__main__":
    main()
