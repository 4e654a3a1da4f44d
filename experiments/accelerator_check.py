"""One check of a machine's accelerator, in one command: the benchmark, numbers-en-fr trained and
evaluated, the numerics tests, and start-up; one JSON record in experiments/results/ with the
device named.

    experiments/accelerator_check.sh [WHEELS]    # installs what the machine lacks, then this
    python3 experiments/accelerator_check.py     # on a machine where s2s_jax imports
    python3 experiments/accelerator_check.py --quick   # minutes on a CPU: toy bench, 200 steps

Every part runs in its own process with a time limit, so one that fails or hangs is recorded and
the others still run. The full check is sized for about 8 minutes on one GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
S2S = [sys.executable, "-m", "s2s_jax.cli"]  # works without the `s2s` script on PATH
NUMERICS = [
    "tests/test_cells.py",
    "tests/test_scan.py",
    "tests/test_attention.py",
    "tests/test_model.py",
    "tests/test_decoding.py",
    "tests/test_alignment.py",
    "tests/test_mixed_precision.py",
]


def run(argv: list[str], timeout: float, **kw) -> dict:
    """Runs `argv`; returns its exit status, wall time and output (stdout whole, stderr's tail)."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO, **kw)
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = "timeout", e.stdout or "", e.stderr or ""
        out, err = (x.decode() if isinstance(x, bytes) else x for x in (out, err))
    record = {"argv": argv[1:] if argv[0] == sys.executable else argv, "rc": rc}
    record["wall_s"] = round(time.perf_counter() - start, 2)
    record["stderr_tail"] = err[-1500:]
    return record | {"stdout": out}


def last_json(text: str):
    """The output's JSON: the whole of it (`s2s bench --json`) or its last line (a command
    that logs first); None if neither parses."""
    for candidate in (text, *reversed(text.strip().splitlines())):
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="toy bench, 200 training steps")
    parser.add_argument("--out", help="JSON file (default experiments/results/accelerator_...)")
    args = parser.parse_args()

    import jax

    device = jax.devices()[0]
    record = {
        "experiment": "accelerator_check",
        "device": device.device_kind,
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "quick": args.quick,
    }
    try:
        import torch

        record["torch"] = torch.__version__
        record["torch_cuda"] = torch.cuda.is_available()
    except ImportError:
        record["torch"] = None
    parts = {}

    # float32 and bfloat16 side by side (and torch.compile on a GPU), in three processes so
    # that one over its time limit loses only its own groups.
    bench = [*S2S, "bench", "--json", "--dtype", "bfloat16", *(["--toy"] if args.quick else [])]
    for part, only, limit in (
        ("bench_layers", "lstm_layer,gru_layer", 180),
        ("bench_train_step", "train_step", 180),
        ("bench_decode_length", "decode,length_scaling", 150),
    ):
        parts[part] = run([*bench, "--only", only], timeout=limit)
        parts[part]["records"] = last_json(parts[part].pop("stdout"))

    with tempfile.TemporaryDirectory() as work:
        workdir = os.path.join(work, "numbers")
        train = [*S2S, "train", "--workdir", workdir, "--no-progress"]
        train += ["--steps", "200"] if args.quick else []
        parts["train_numbers"] = run(train, timeout=300)
        parts["train_numbers"]["metrics"] = last_json(parts["train_numbers"].pop("stdout"))
        evaluate = [*S2S, "eval", "--workdir", workdir, "--split", "test"]
        parts["eval_numbers"] = run(evaluate, timeout=120)
        parts["eval_numbers"]["metrics"] = last_json(parts["eval_numbers"].pop("stdout"))

    tests = [sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider"]
    # Serial (no xdist on the GPU machines): 5.0 min was too short on this 2-core CPU.
    parts["numerics_tests"] = run([*tests, *NUMERICS], timeout=480)
    parts["numerics_tests"]["summary"] = (
        parts["numerics_tests"].pop("stdout").strip().splitlines() or [""]
    )[-1]

    startup_json = os.path.join(tempfile.mkdtemp(), "startup.json")
    parts["startup"] = run(
        [sys.executable, "experiments/startup.py", "--out", startup_json], timeout=240
    )
    parts["startup"].pop("stdout")
    if os.path.exists(startup_json):
        parts["startup"]["seconds"] = json.loads(Path(startup_json).read_text())["seconds"]

    record["parts"] = parts
    record["ok"] = all(p.get("rc") in (0, None) for p in parts.values())
    name = f"accelerator_{record['backend']}_{device.device_kind}_{time.strftime('%Y-%m-%d')}"
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    out = Path(args.out or REPO / "experiments" / "results" / f"{name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    for key, part in parts.items():
        print(f"{key}: rc={part.get('rc')} {part.get('wall_s', '')} s {part.get('note', '')}")
    print(f"wrote {out}")
    sys.exit(0 if record["ok"] else 1)


if __name__ == "__main__":
    main()
