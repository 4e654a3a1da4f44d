"""Start-up of the `s2s` command, cold and warm: time to the first training step and to the
first translation, as a user launches them.

    python experiments/startup.py                  # prints a table, writes the JSON below
    python experiments/startup.py --task copy --out /tmp/startup.json

Each figure is the wall time of a fresh `s2s` process, from launch to the line the user waits
for: `step 1/...` for `s2s train`, the translation for `s2s translate`. "cold" starts from an
empty compilation cache (every computation compiled), "warm" from the cache the cold launch
filled (the second launch of a user), "off" with the cache disabled (S2S_COMPILE_CACHE=off).
Each is the median of `--rounds` launches. Results: experiments/startup.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The installed command, or the package run from this tree (a machine without the install)
S2S = shutil.which("s2s", path=str(Path(sys.executable).parent)) or shutil.which("s2s")
S2S_ARGV = [S2S] if S2S else [sys.executable, "-m", "s2s_jax.cli"]


def launch(args: list[str], until: str, stream: str, *, cache: str, cwd: Path) -> float:
    """Seconds from launching `s2s args` to its first line on `stream` ("stdout" or "stderr")
    that starts with `until`."""
    env = dict(os.environ, S2S_COMPILE_CACHE=cache, PYTHONUNBUFFERED="1")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    with tempfile.TemporaryFile("w+") as other:
        pipes = {"stdout": other, "stderr": other, stream: subprocess.PIPE}
        start = time.perf_counter()
        proc = subprocess.Popen([*S2S_ARGV, *args], cwd=cwd, env=env, text=True, **pipes)
        watched = proc.stdout if stream == "stdout" else proc.stderr
        seen, lines = None, []
        for line in watched:
            lines.append(line)
            if seen is None and line.startswith(until):
                seen = time.perf_counter() - start
        if proc.wait() != 0 or seen is None:
            other.seek(0)
            raise SystemExit(
                f"s2s {' '.join(args)} failed or never printed {until!r}:\n"
                + "".join(lines[-10:])
                + other.read()[-2000:]
            )
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="numbers-en-fr", help="the built-in task to train")
    parser.add_argument("--rounds", type=int, default=3, help="launches per warm / off figure")
    parser.add_argument(
        "--out", help="JSON file (default experiments/results/startup_<device>.json)"
    )
    args = parser.parse_args()

    import jax

    device = jax.devices()[0]
    work = Path(tempfile.mkdtemp(prefix="s2s-startup-"))
    try:
        train = ["train", "--task", args.task, "--steps", "1", "--no-progress"]
        train += ["--set", "train.log_every=1", "--set", "warmup_steps=0"]
        cache = str(work / "cache")
        runs = itertools.count()

        def train_once(cache_setting):
            argv = [*train, "--workdir", f"w{next(runs)}"]
            return launch(argv, "step 1/", "stderr", cache=cache_setting, cwd=work)

        figures = {"train_cold": train_once(cache)}
        figures["train_warm"] = statistics.median(train_once(cache) for _ in range(args.rounds))
        figures["train_off"] = statistics.median(train_once("off") for _ in range(args.rounds))

        text = "forty-two" if args.task == "numbers-en-fr" else "abc"

        def translate_once(cache_setting):  # to the translation, whatever it is
            argv = ["translate", "--workdir", "w0", text]
            return launch(argv, "", "stdout", cache=cache_setting, cwd=work)

        shutil.rmtree(cache)  # the translation's own cold start
        figures["translate_cold"] = translate_once(cache)
        figures["translate_warm"] = statistics.median(
            translate_once(cache) for _ in range(args.rounds)
        )
        figures["translate_off"] = statistics.median(
            translate_once("off") for _ in range(args.rounds)
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    record = {
        "experiment": "startup",
        "task": args.task,
        "device": device.device_kind,
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "cpus": os.cpu_count(),
        "rounds": args.rounds,
        "date": time.strftime("%Y-%m-%d"),
        "seconds": {k: round(v, 2) for k, v in figures.items()},
    }
    out = Path(
        args.out or REPO / "experiments" / "results" / f"startup_{jax.default_backend()}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    where = f"{device.device_kind} ({jax.default_backend()}), task {args.task}"
    print(f"| {where} | cold | warm | cache off |")
    print("|---|---|---|---|")
    for what, label in (
        ("train", "`s2s train`: launch to step 1"),
        ("translate", "`s2s translate`: launch to output"),
    ):
        row = [figures[f"{what}_{k}"] for k in ("cold", "warm", "off")]
        print(f"| {label} | " + " | ".join(f"{v:.2f} s" for v in row) + " |")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
