"""One check of a machine's accelerator, in one command: the benchmark, numbers-en-fr trained and
evaluated, the numerics tests, and start-up; one JSON record in experiments/results/ with the
device named.

    experiments/accelerator_check.sh [WHEELS]    # installs what the machine lacks, then this
    python3 experiments/accelerator_check.py     # on a machine where s2s_jax imports
    python3 experiments/accelerator_check.py --quick   # minutes on a CPU: toy bench, 200 steps

Every part runs in its own process with a time limit, so one that fails or hangs is recorded and
the others still run, and the JSON is rewritten after each part, so a check stopped midway keeps
what it measured. On an H200 the bench took over 6.5 minutes (the layers alone over 3), the
numbers run 30 s, start-up 2.5 minutes. `--only bench` (or numbers, numerics, startup) runs some
groups of parts: the bench alone on an idle device, say, then the rest beside other work.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
S2S = [sys.executable, "-m", "s2s_jax.cli"]  # works without the `s2s` script on PATH
GROUPS = ("bench", "numbers", "numerics", "startup")
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
    parser.add_argument(
        "--only", default=",".join(GROUPS), help=f"groups to run, of {','.join(GROUPS)}"
    )
    args = parser.parse_args()
    groups = args.only.split(",")
    if unknown := set(groups) - set(GROUPS):
        parser.error(f"--only: unknown group(s) {sorted(unknown)}; choose from {GROUPS}")

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
        # Preallocation and flags change what a measurement means (several processes sharing a
        # device run with preallocation off).
        "xla_env": {k: v for k, v in os.environ.items() if k.startswith(("XLA_", "JAX_"))},
    }
    try:
        import torch

        record["torch"] = torch.__version__
        record["torch_cuda"] = torch.cuda.is_available()
    except ImportError:
        record["torch"] = None
    parts = {}
    record["parts"] = parts
    name = f"accelerator_{record['backend']}_{device.device_kind}_{time.strftime('%Y-%m-%d')}"
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    out = Path(args.out or REPO / "experiments" / "results" / f"{name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        record["ok"] = all(p.get("rc") in (0, None) for p in parts.values())
        out.write_text(json.dumps(record, indent=1) + "\n")

    if "bench" in groups:
        # float32 and bfloat16 side by side (and torch.compile on a GPU), a process per part so
        # that one over its time limit loses only its own groups; `--jsonl` keeps each group
        # finished before the limit. On an H200 the layers took over 180 s for both kinds.
        bench = [*S2S, "bench", "--json", "--dtype", "bfloat16"]
        bench += ["--toy"] if args.quick else []
        for part, only, limit in (
            ("bench_lstm_layer", "lstm_layer", 240),
            ("bench_gru_layer", "gru_layer", 200),
            ("bench_train_step", "train_step", 180),
            ("bench_decode_length", "decode,length_scaling", 150),
        ):
            jsonl = Path(tempfile.mkdtemp()) / "records.jsonl"
            parts[part] = run([*bench, "--only", only, "--jsonl", str(jsonl)], timeout=limit)
            parts[part].pop("stdout")
            lines = jsonl.read_text().splitlines() if jsonl.exists() else []
            parts[part]["records"] = [json.loads(line) for line in lines]
            save()

    if "numbers" in groups:
        with tempfile.TemporaryDirectory() as work:
            workdir = os.path.join(work, "numbers")
            train = [*S2S, "train", "--workdir", workdir, "--no-progress"]
            train += ["--steps", "200"] if args.quick else []
            parts["train_numbers"] = run(train, timeout=300)
            parts["train_numbers"]["metrics"] = last_json(parts["train_numbers"].pop("stdout"))
            save()
            evaluate = [*S2S, "eval", "--workdir", workdir, "--split", "test"]
            parts["eval_numbers"] = run(evaluate, timeout=120)
            parts["eval_numbers"]["metrics"] = last_json(parts["eval_numbers"].pop("stdout"))
            save()

    if "numerics" in groups:
        tests = [sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider"]
        env = None
        if importlib.util.find_spec("xdist") is not None:  # serial took over 285 s on an H200
            tests += ["-n", "4"]
            # The workers share the device: each takes memory as it needs it, not 75% at once.
            env = os.environ | {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
        parts["numerics_tests"] = run([*tests, *NUMERICS], timeout=480, env=env)
        parts["numerics_tests"]["summary"] = (
            parts["numerics_tests"].pop("stdout").strip().splitlines() or [""]
        )[-1]
        save()

    if "startup" in groups:
        startup_json = os.path.join(tempfile.mkdtemp(), "startup.json")
        parts["startup"] = run(
            [sys.executable, "experiments/startup.py", "--out", startup_json], timeout=240
        )
        parts["startup"].pop("stdout")
        if os.path.exists(startup_json):
            parts["startup"]["seconds"] = json.loads(Path(startup_json).read_text())["seconds"]
        save()

    save()
    for key, part in parts.items():
        print(f"{key}: rc={part.get('rc')} {part.get('wall_s', '')} s {part.get('note', '')}")
    print(f"wrote {out}")
    sys.exit(0 if record["ok"] else 1)


if __name__ == "__main__":
    main()
